"""The pytest plugin of the claims suite (options, fixtures, the report) lives here.

The claims suite itself is still to come; until then this only makes the repository root importable
for the tests and benchmarks.
"""
