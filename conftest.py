"""The claims suite's pytest plugin: options, fixtures, the verdict table and the report.

It only gathers and prints; tdlib computes. Options:

- ``--profile {smoke,default,paper}`` (default smoke) and ``--seeds`` (a count, ``5``, or a list, ``0,3,7``);
- ``--device {cpu,cuda}``, ``--cache-dir`` (default ``cache/``), ``--report PATH`` (default
  ``reports/CLAIMS.md``; figures go to ``figures/`` beside it).

A claim test passes when its evidence is sound and a verdict can be reached, whatever the verdict; it
fails when the evidence is broken (a run missing, a value not finite, the baseline under the profile's
accuracy floor). The verdicts come at the end, when every comparison of the run is judged together.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims", "claim verification")
    group.addoption("--profile", default="smoke", choices=("smoke", "default", "paper"), help="training profile")
    group.addoption("--seeds", default=None, help="a number of seeds (5) or a list (0,3,7); default: the profile's")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda"), help="where to train")
    group.addoption("--cache-dir", default=str(ROOT / "cache"), help="where trained runs are kept")
    group.addoption("--report", default=str(ROOT / "reports" / "CLAIMS.md"), help="where to write the report")


@pytest.fixture(scope="session")
def evidence(request: pytest.FixtureRequest):
    from tdlib.evidence import Evidence
    from tdlib.profiles import PROFILES, parse_seeds
    from tdlib.runs import RunCache

    config = request.config
    profile = PROFILES[config.getoption("profile")]
    if config.getoption("seeds") is not None:
        try:
            profile = profile.with_seeds(parse_seeds(config.getoption("seeds")))
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None
    cache = RunCache(config.getoption("cache_dir"), progress=config.getoption("verbose") >= 0)
    ev = Evidence(profile, cache, device=config.getoption("device"))
    config.stash[EVIDENCE] = ev
    return ev


@pytest.fixture(scope="session")
def findings(request: pytest.FixtureRequest):
    from tdlib.claim import Findings

    request.config.stash[FINDINGS] = Findings()
    return request.config.stash[FINDINGS]


EVIDENCE = pytest.StashKey[object]()
FINDINGS = pytest.StashKey[object]()
RESULTS = pytest.StashKey[list]()
STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[STARTED] = time.perf_counter()


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if FINDINGS not in config.stash or not config.stash[FINDINGS].items:
        return
    from tdlib.report import write_report

    results = config.stash[FINDINGS].judge()
    config.stash[RESULTS] = results
    write_report(Path(config.getoption("report")), results, config.stash[EVIDENCE],
                 session_seconds=time.perf_counter() - config.stash[STARTED])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if RESULTS not in config.stash:
        return
    terminalreporter.section("claims: verdicts")
    for result in config.stash[RESULTS]:
        effects = "; ".join(f"{j.comparison.name}: {j.mean:+.2f}" for p in result.parts for j in p.judgements)
        terminalreporter.write_line(f"{result.claim.id:>4} {result.verdict.value:<12} {effects}")
    terminalreporter.write_line(f"report: {config.getoption('report')}")
