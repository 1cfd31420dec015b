"""The claims framework: claims as pytest tests with pre-registered rules, judged on per-seed evidence.

- :mod:`~tdlib.claims.claim`: the ``@claim`` decorator, a claim's finding and the registered family;
- :mod:`~tdlib.claims.stats`, :mod:`~tdlib.claims.sequences`: verdicts and their guarantee (the exact,
  anytime-valid test of the typical run, Holm over the family);
- :mod:`~tdlib.claims.conditions`, :mod:`~tdlib.claims.profiles`: what a claims run trains, and how much;
- :mod:`~tdlib.claims.evidence`, :mod:`~tdlib.claims.continuation`, :mod:`~tdlib.claims.archive`: per-seed
  measurements, the sequence of seeds continued where parts are open, and run archives to commit;
- :mod:`~tdlib.claims.report` (with :mod:`~tdlib.claims.by_length`, :mod:`~tdlib.claims.savings_report`,
  :mod:`~tdlib.claims.findings`): the markdown report, its sections, and the README's findings block;
- :mod:`~tdlib.claims.plugin`: the pytest plugin; :mod:`~tdlib.claims.cli`: ``python -m tdlib train``,
  ``report`` and ``findings``.

It stands on the ML library (:mod:`tdlib`: data, model, targeted dropout, pruning, compression, training and
the run cache), which never imports it. Importing this package imports nothing else, so that the plugin
costs a pytest run without claims nothing.
"""
