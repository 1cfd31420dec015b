"""The claims suite's pytest plugin (entry point ``pytest11: tdlib``): options, fixtures, the verdict
table and the report. The only module of tdlib that imports pytest.

Options, checked once when pytest starts if any is given, else when the first claim is collected (one usage
error, before any work; a run that neither collects a claim nor gives an option imports nothing of tdlib
beyond this module, and no torch):

- ``--claims-profile {smoke,default,paper}`` (default smoke) and ``--claims-seeds`` (a count, ``5``, or a
  list, ``0,3,7``; more than :data:`MAX_SEEDS` needs ``--claims-many-seeds``);
- ``--claims-device {cpu,cuda}``; ``--claims-cache`` (default ``cache/`` under the rootdir);
- ``--claims-executor {local,inprocess,submitit}`` and ``--claims-workers``: where the runs train, before
  the first claim, with a progress bar across runs (:mod:`tdlib.executors`);
- ``--claims-select C1,C3``: only these claims, by exact id (``-k C1`` matches C10-C13 too), judged as
  members of the whole registered family, like any partial run;
- ``--claims-budget N``: the most seeds of the sequence a condition may reach (default: the profile's);
- ``--claims-continue``: train further seeds of the profile's sequence for every part left undecided, up
  to the profile's budget, judging after each round (:mod:`tdlib.claims.continuation`; a full run only). Without
  it, every part is still judged on every seed of the sequence the cache holds;
- ``--claims-report PATH``: write the report there (``CLAIMS.md``, with ``claims.json`` and ``figures/``
  beside it, swapped in whole). Without it, no report is written: a plain or ``-k`` run never
  overwrites one.
- ``--claims-stored-only``: train and measure nothing; judge and draw from the runs and measurements
  already stored. A run or measurement the cache lacks is an error, and the report is written only
  if every claim was judged whole from what is stored (``python -m tdlib report``).
- ``--claims-archive DIR``: a run archive (:mod:`tdlib.claims.archive`), such as ``archive/paper`` in git: the
  runs the cache lacks are taken from it before the plan (without their weights), and at the end every
  finished run of the profile is written back to it, with its measurements.
- ``--claims-measure-finished``: train nothing; measure all a whole report needs of the runs that are
  finished, standing in for the others (whose slots' numbers are thrown away), and write no report.
  With ``--claims-archive``, a long computation that trains over several machines keeps what each measured.

Every test made by :func:`tdlib.claims.claim.claim` is marked ``@pytest.mark.claim(id)``. The *registered
family* is every claim defined in the claim modules pytest collected, before ``-k``/``-m``
deselection; a duplicate id is a usage error. A claim test passes when its evidence is sound,
whatever the verdict. The verdicts come at the end, judged once over the registered family: a run
that selected some of the claims judges them as members of the whole family, never more strongly,
and says it is partial.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tdlib.claims.claim import Claim, Findings, Judged
    from tdlib.claims.session import ClaimsSession

MAX_SEEDS = 50
XDIST_REFUSED = (
    "the claims suite cannot run under pytest-xdist (-n): its family is judged once, in one process, after "
    "every claim; run the claims without -n (their training is cached and shared between runs anyway)"
)

EVIDENCE = pytest.StashKey[object]()
FINDINGS = pytest.StashKey["Findings"]()
FAMILY = pytest.StashKey["list[Claim]"]()
SELECTED = pytest.StashKey["list[Claim]"]()
JUDGED = pytest.StashKey["Judged"]()
STARTED = pytest.StashKey[float]()
SETTINGS = pytest.StashKey["ClaimsSession"]()
SPECS = pytest.StashKey[list]()
REPORT_ERROR = pytest.StashKey[str]()
CONTINUE_ERROR = pytest.StashKey[str]()
ARCHIVED = pytest.StashKey[str]()
MEASURED = pytest.StashKey[str]()
STOOD_IN = pytest.StashKey[int]()  # --claims-measure-finished: how many unfinished runs are stood in for
_OPTION_DEFAULTS: dict[str, object] = {}  # each --claims-* option's dest -> its default


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims", "claim verification (tdlib)")
    group.addoption("--claims-profile", default="smoke", metavar="NAME",
                    help="training profile of the claims suite: smoke (default), default, paper, or one a conftest.py "
                    "registers (tdlib.claims.profiles.register_profile)")
    group.addoption("--claims-seeds", default=None, metavar="N|LIST",
                    help="a number of seeds (5) or a list (0,3,7); default: the profile's")
    group.addoption("--claims-many-seeds", action="store_true",
                    help=f"allow more than {MAX_SEEDS} seeds")
    group.addoption("--claims-device", default="cpu", choices=("cpu", "cuda"), help="where to train (default: cpu)")
    group.addoption("--claims-executor", default="local", choices=("local", "inprocess", "submitit"),
                    help="where runs train: local worker processes (default), this process, or submitit")
    group.addoption("--claims-workers", default=2, type=int, metavar="N",
                    help="local worker processes (default: 2, one torch thread each)")
    group.addoption("--claims-continue", action="store_true",
                    help="train further seeds of the profile's sequence for every undecided part, up to its budget")
    group.addoption("--claims-select", default=None, metavar="IDS",
                    help="judge only these claims, by exact id (C1,C3), as members of the whole family; unlike -k "
                    "C1, which also matches C10-C13")
    group.addoption("--claims-budget", default=None, type=int, metavar="N",
                    help="the most seeds of the sequence a condition may reach (default: the profile's budget)")
    group.addoption("--claims-cache", default=None, metavar="DIR",
                    help="where trained runs and measurements are kept (default: cache/ under the rootdir)")
    group.addoption("--claims-stored-only", action="store_true",
                    help="train and measure nothing: judge and draw the report from what the cache stores")
    group.addoption("--claims-archive", default=None, metavar="DIR",
                    help="a run archive (e.g. archive/paper): runs the cache lacks are taken from it, and the "
                    "finished runs and their measurements are written back to it at the end")
    group.addoption("--claims-measure-finished", action="store_true",
                    help="train nothing: measure all a whole report needs of the finished runs, and write no report")
    group.addoption("--claims-report", default=None, metavar="PATH",
                    help="write the report to PATH (e.g. reports/CLAIMS.md), claims.json and figures/ beside it; "
                    "default: no report")
    _OPTION_DEFAULTS.update((option.dest, option.default) for option in group.options)


def pytest_configure(config: pytest.Config) -> None:
    """Options given are checked now, before any work. A run that gives none (any project's test run,
    where tdlib happens to be installed) imports nothing of tdlib's until it collects a claim."""
    config.addinivalue_line("markers", "claim(id): a registered claim of the claims suite (tdlib)")
    config.stash[STARTED] = time.perf_counter()
    if _claims_options_given(config):
        _settings_of(config)


def _claims_options_given(config: pytest.Config) -> bool:
    """Whether any ``--claims-*`` option differs from its default."""
    return any(config.getoption(dest) != default for dest, default in _OPTION_DEFAULTS.items())


def _settings_of(config: pytest.Config) -> ClaimsSession:
    """The session's checked options, checked on first use."""
    if SETTINGS not in config.stash:
        config.stash[SETTINGS] = _settings(config)
    return config.stash[SETTINGS]


def _settings(config: pytest.Config) -> ClaimsSession:
    """The options, checked: a bad one is one usage error, raised before any test or training."""
    from tdlib.claims.profiles import PROFILES, parse_seeds

    try:
        profile = PROFILES.named(config.getoption("claims_profile"))
    except ValueError as error:
        raise pytest.UsageError(f"--claims-profile: {error}") from None
    seeds_text = config.getoption("claims_seeds")
    if seeds_text is not None:
        try:
            profile = profile.with_seeds(parse_seeds(seeds_text))
        except ValueError as error:
            raise pytest.UsageError(str(error).replace("--seeds", "--claims-seeds")) from None
        if len(profile.seeds) > MAX_SEEDS and not config.getoption("claims_many_seeds"):
            raise pytest.UsageError(
                f"--claims-seeds {seeds_text} asks for {len(profile.seeds)} seeds, which trains up to "
                f"{len(profile.seeds)} runs per condition; more than {MAX_SEEDS} needs --claims-many-seeds"
            )
    device = config.getoption("claims_device")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError("--claims-device cuda: this machine has no CUDA device torch can use")
    cache = config.getoption("claims_cache")
    cache_dir = Path(cache) if cache else config.rootpath / "cache"
    if cache_dir.exists() and not cache_dir.is_dir():
        raise pytest.UsageError(f"--claims-cache {str(cache_dir)!r}: not a directory")
    report = config.getoption("claims_report")
    report_path = None
    if report is not None:
        from tdlib.claims.report import ReportError, check_report_path

        try:
            report_path = check_report_path(report)
        except ReportError as error:
            raise pytest.UsageError(f"--claims-report {report!r}: {error}") from None
    workers = config.getoption("claims_workers")
    if workers < 1:
        raise pytest.UsageError(f"--claims-workers must be at least 1, got {workers}")
    from tdlib.runs import lock_timeout

    try:
        lock_timeout()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    follow = config.getoption("claims_continue")
    budget = config.getoption("claims_budget")
    if budget is not None:
        if budget < len(profile.seeds):
            raise pytest.UsageError(f"--claims-budget {budget}: the sequence begins with the profile's "
                                    f"{len(profile.seeds)} seeds, so its budget is at least that")
        profile = replace(profile, budget=budget)
    from tdlib.claims.profiles import FRESH_SEEDS_FROM

    if max(profile.seeds) >= FRESH_SEEDS_FROM:
        raise pytest.UsageError(f"--claims-seeds: a profile's own seeds must be under {FRESH_SEEDS_FROM}, where "
                                f"its sequence's fresh seeds begin; got {max(profile.seeds)}")
    stored_only, measure_finished = config.getoption("claims_stored_only"), config.getoption("claims_measure_finished")
    if measure_finished and (stored_only or follow or report_path is not None):
        other = "--claims-stored-only" if stored_only else "--claims-continue" if follow else "--claims-report"
        raise pytest.UsageError(f"--claims-measure-finished measures the finished runs and writes no report; it "
                                f"cannot go with {other}")
    archive = config.getoption("claims_archive")
    if archive is not None and Path(archive).exists() and not Path(archive).is_dir():
        raise pytest.UsageError(f"--claims-archive {archive!r}: not a directory")
    if report_path is not None:  # the report's directory is replaced whole when it is written
        for option, place in (("--claims-cache", cache_dir), ("--claims-archive", archive)):
            if place is not None and Path(place).absolute().is_relative_to(report_path.parent):
                raise pytest.UsageError(f"{option} {str(place)!r} lies inside the report's directory "
                                        f"{str(report_path.parent)!r}, which is replaced whole when the report is "
                                        "written: put it elsewhere")
    from tdlib.claims.session import ClaimsSession

    return ClaimsSession(profile, cache_dir, device, report_path, config.getoption("claims_executor"), workers,
                         follow, stored_only, measure_finished, None if archive is None else Path(archive))


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Claims collected by a pytest-xdist worker are refused, as a collection error the controller shows."""
    if hasattr(collector.config, "workerinput") and _is_claim(getattr(obj, "claim", None)):
        raise collector.CollectError(XDIST_REFUSED)


def _is_claim(found: object) -> bool:
    """Whether ``found`` is a :class:`~tdlib.claims.claim.Claim`. None can exist before a claims file has imported
    :mod:`tdlib.claims.claim`, so a run that collects no claim never imports it (nor torch) to find out."""
    claim_module = sys.modules.get("tdlib.claims.claim")
    return claim_module is not None and isinstance(found, claim_module.Claim)


def _claim_of(item: pytest.Item) -> Claim | None:
    """The claim a collected test was made from by :func:`tdlib.claims.claim.claim`, or None."""
    found = getattr(getattr(item, "obj", None), "claim", None)
    return found if _is_claim(found) else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before ``-k``/``-m`` deselect anything: mark the claim tests and fix the registered family."""
    claim_items = [item for item in items if _claim_of(item) is not None]
    if not claim_items:
        return
    from tdlib.claims.claim import registered_family

    _settings_of(config)
    modules = {id(item.module): item.module for item in claim_items}  # type: ignore[attr-defined]
    try:
        config.stash[FAMILY] = registered_family(modules.values())
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    for item in claim_items:
        item.add_marker(pytest.mark.claim(item.obj.claim.id))  # type: ignore[attr-defined]
    select = config.getoption("claims_select")
    if select is not None:
        wanted = [s.strip() for s in select.split(",") if s.strip()]
        registered = [c.id for c in config.stash[FAMILY]]
        if not wanted or (unknown := [i for i in wanted if i not in registered]):
            raise pytest.UsageError(f"--claims-select {select!r}: no registered claim "
                                    f"{', '.join(unknown) if wanted else '(none named)'} (registered: "
                                    f"{', '.join(registered)})")
        dropped = [item for item in claim_items if item.obj.claim.id not in wanted]  # type: ignore[attr-defined]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if item not in dropped]


def pytest_collection_finish(session: pytest.Session) -> None:
    """The plan: which claims run, the runs they need, and how many are cached."""
    config = session.config
    if FAMILY not in config.stash:
        return
    selected = [c for c in map(_claim_of, session.items) if c is not None]
    config.stash[SELECTED] = selected
    if not selected:
        return
    from tdlib.plan import plan

    settings = _settings_of(config)
    profile, device = settings.profile, settings.device
    baseline = profile.baseline
    conditions = [baseline, *sorted({c for claim_ in selected for c in claim_.conditions} - {baseline})]
    for claim_ in selected:
        for name in claim_.conditions:
            try:
                profile.spec(name, profile.seeds[0], device)
            except ValueError as error:
                raise pytest.UsageError(f"claim {claim_.id} names an unregistered condition: {error}") from None
    specs = [profile.spec(c, seed, device) for c in conditions for seed in profile.seeds]
    from tdlib.factories import check_names

    for spec in {(s.condition, s.model, s.dataset): s for s in specs}.values():
        try:
            check_names(spec)
        except ValueError as error:
            raise pytest.UsageError(f"condition {spec.condition}: {error}") from None
    if settings.report is not None or settings.measure_finished:
        from tdlib.claims.report import FIGURES, section_runs

        for claim_ in selected:
            if unknown := [name for name in claim_.figures if name not in FIGURES]:
                raise pytest.UsageError(f"claim {claim_.id} names figures no one registered: {', '.join(unknown)} "
                                        f"(registered: {', '.join(FIGURES)}; see tdlib.claims.report.register_figure)")
        if len(selected) == len(config.stash[FAMILY]):  # a whole report has the registered sections' runs too
            specs += [s for s in section_runs(profile, device) if s not in specs]
    if settings.follow and len(selected) < len(config.stash[FAMILY]):
        raise pytest.UsageError(
            f"--claims-continue continues the whole registered family; this run selected {len(selected)} of its "
            f"{len(config.stash[FAMILY])} claims (drop -k/-m, or --claims-continue)"
        )
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if settings.archive is not None:
        from tdlib.claims.archive import restore
        from tdlib.runs import RunCache

        moved = restore(settings.archive, RunCache(settings.cache, progress=False))
        if reporter is not None:
            reporter.write_line(moved.restored(settings.archive))
    the_plan = plan(specs, settings.cache, settings.workers, settings.executor)
    if settings.measure_finished:
        config.stash[STOOD_IN] = len(the_plan.to_train)
        if reporter is not None:
            reporter.write_line(f"claims: {len(selected)} of {len(config.stash[FAMILY])} registered claims; measuring "
                                f"the {len(the_plan.cached)} finished of {len(specs)} runs (the other "
                                f"{len(the_plan.to_train)} are stood in for, and train nothing)")
        return
    if settings.stored_only and the_plan.to_train:
        names = ", ".join(s.name for s in the_plan.to_train[:5]) + (", ..." if len(the_plan.to_train) > 5 else "")
        raise pytest.UsageError(
            f"--claims-stored-only: {len(the_plan.to_train)} of the {len(specs)} runs this session needs are not in "
            f"the cache {settings.cache} ({names}); train them first (python -m tdlib train, or the report command)"
        )
    if the_plan.to_train:  # before any worker starts, not inside one
        from tdlib.data import DataError
        from tdlib.factories import check_data

        try:
            check_data(list(the_plan.to_train))
        except DataError as error:
            raise pytest.UsageError(f"claims: {len(the_plan.to_train)} runs to train, but {error}") from None
    config.stash[SPECS] = list(the_plan.to_train)
    if reporter is not None:
        reporter.write_line(f"claims: {len(selected)} of {len(config.stash[FAMILY])} registered claims; "
                            + the_plan.summary())


@pytest.fixture(scope="session")
def evidence(request: pytest.FixtureRequest):
    """The session's :class:`~tdlib.claims.evidence.Evidence`: runs of the chosen profile, trained once and cached."""
    from tdlib.runs import RunCache

    config = request.config
    settings = _settings_of(config)
    to_train = config.stash.get(SPECS, [])
    if to_train:  # train them all now, on the chosen engine, with progress shown past pytest's capture
        from tdlib.executors import train_all

        with _uncaptured(config):
            train_all(to_train, settings.cache, engine=settings.executor, workers=settings.workers)
    cache = RunCache(settings.cache, progress=config.getoption("verbose") >= 0)
    ev = settings.evidence(cache)
    config.stash[EVIDENCE] = ev
    return ev


@pytest.fixture(scope="session")
def findings(request: pytest.FixtureRequest) -> Findings:
    """Where each claim test leaves its finding, for the judging at the end."""
    from tdlib.claims.claim import Findings

    request.config.stash[FINDINGS] = Findings()
    return request.config.stash[FINDINGS]


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if FINDINGS not in config.stash or not config.stash[FINDINGS].items:
        if SETTINGS in config.stash and config.stash[SETTINGS].archive is not None and EVIDENCE in config.stash:
            _export(session)  # what the runs trained is kept, even when no claim could be judged
        return
    settings = _settings_of(config)
    judged = _judge(session)
    config.stash[JUDGED] = judged
    report = settings.report
    unwhole = _not_whole(config, judged) if settings.stored_only else ""
    if report is not None and unwhole:
        how = (" (a partial report is drawn without --claims-stored-only, which measures what it lacks; the whole "
               "one, without -k/-m/--claims-select)" if judged.partial else "")
        config.stash[REPORT_ERROR] = (f"--claims-stored-only: {unwhole}, so the stored evidence gives no whole "
                                      f"report{how}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif settings.measure_finished:  # all a whole report measures, drawn nowhere
        from tdlib.claims.report import measure_report

        done = measure_report(judged, config.stash[EVIDENCE], _functions(session))  # type: ignore[arg-type]
        config.stash[MEASURED] = "measured: " + ", ".join(f"{what} {seconds:.0f} s" for what, seconds, _ in done)
        if failures := [f"  {what}: {error}" for what, _, error in done if error]:
            config.stash[REPORT_ERROR] = "NOT measured (the rest is stored):\n" + "\n".join(failures)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif report is not None:
        from tdlib.claims.report import write_report

        try:
            write_report(report, judged, config.stash[EVIDENCE],  # type: ignore[arg-type]
                         session_seconds=time.perf_counter() - config.stash[STARTED], functions=_functions(session))
        except Exception:  # the verdicts are still printed; the old report stays whole
            config.stash[REPORT_ERROR] = traceback.format_exc()
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if settings.archive is not None:
        _export(session)


def _export(session: pytest.Session) -> None:
    """Write the profile's finished runs, with their measurements, to the archive. A failure, or an entry
    it refuses to overwrite, is reported and fails the session, but loses nothing: the cache keeps all."""
    from tdlib.claims.archive import export
    from tdlib.runs import RunCache

    config = session.config
    settings = _settings_of(config)
    profile = settings.profile

    def of_profile(spec) -> bool:
        return (spec.epochs, spec.batch_size, spec.data) == (profile.epochs, profile.batch_size, profile.data)

    try:
        moved = export(RunCache(settings.cache, progress=False), settings.archive, keep=of_profile)
        config.stash[ARCHIVED] = (f"archive {settings.archive}: {len(moved.written)} runs written or grown, "
                                  f"{len(moved.unchanged)} unchanged"
                                  + "".join(f"\n  NOT written {r}" for r in moved.refused))
        if moved.refused:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    except Exception:
        config.stash[ARCHIVED] = f"archive {settings.archive}: NOT written\n{traceback.format_exc()}"
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _not_whole(config: pytest.Config, judged: Judged) -> str:
    """What keeps a stored-only session from giving the whole report ('' if nothing does)."""
    if judged.partial:
        return f"claims {', '.join(c.id for c in judged.missing)} were not judged (deselected, or their tests failed)"
    if errors := [r.claim.id for r in judged.results if r.error]:
        return f"claims {', '.join(errors)} could not be judged"
    if CONTINUE_ERROR in config.stash:
        return "judging the sequence failed"
    if judged.sequence is not None and judged.sequence.errors:
        return f"claims {', '.join(judged.sequence.errors)} could not be judged on their further seeds"
    return ""


def _functions(session: pytest.Session) -> dict:
    """Claim id -> its claim function, for the claims the session ran."""
    return {claim_.id: item.obj.evaluate for item in session.items  # type: ignore[attr-defined]
            if (claim_ := _claim_of(item)) is not None}


def _uncaptured(config: pytest.Config):
    """A context in which output reaches the terminal whatever pytest's capture (progress bars, round lines)."""
    import contextlib

    capture = config.pluginmanager.get_plugin("capturemanager")
    return capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()


def _judge(session: pytest.Session) -> Judged:
    """Judge every part on every stored seed of the profile's sequence, continuing it where parts are open
    when asked. A failure there keeps the verdicts on the profile's own seeds (valid on their own: the
    sequence's tests allow stopping anywhere) and fails the session."""
    from tdlib.claims.continuation import Sequence, continue_sequence, judge_sequence

    config = session.config
    findings, settings = config.stash[FINDINGS], _settings_of(config)
    family = config.stash.get(FAMILY, None)
    ev = config.stash[EVIDENCE]
    alpha = settings.profile.alpha
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def log(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    try:
        with _uncaptured(config):
            if settings.follow:
                judged, _ = continue_sequence(findings, _functions(session), ev, family, alpha,  # type: ignore
                                              engine=settings.executor, workers=settings.workers, log=log)
                return judged
            return judge_sequence(findings, _functions(session), ev, family, alpha,  # type: ignore[arg-type]
                                  Sequence(settings.profile.sequence()))
    except Exception:
        config.stash[CONTINUE_ERROR] = traceback.format_exc()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return findings.judge(family, alpha=alpha)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if ARCHIVED in config.stash:
        terminalreporter.write_line(config.stash[ARCHIVED], red="NOT written" in config.stash[ARCHIVED])
    if JUDGED not in config.stash:
        report = config.stash[SETTINGS].report if SETTINGS in config.stash else None
        ran = any(terminalreporter.stats.get(what) for what in ("passed", "failed", "error"))
        if report is not None and config.stash.get(SELECTED, []) and ran:  # else a usage error said why
            terminalreporter.write_line(f"report: NOT written to {report}: no claim could be judged (their tests "
                                        "failed); any earlier one is unchanged", red=True)
        return
    from tdlib.claims.report import guarantee

    judged = config.stash[JUDGED]
    terminalreporter.section("claims: verdicts")
    for result in judged.results:
        if result.error:
            terminalreporter.write_line(f"{result.claim.id:>4} NOT JUDGED   {result.error}", red=True)
            continue
        effects = "; ".join(f"{j.comparison.name}: {j.k_support} of {j.n} seeds, median {j.median:+.2f}"
                            for p in result.parts for j in p.judgements)
        terminalreporter.write_line(f"{result.claim.id:>4} {result.verdict.value:<12} {effects}")
    if judged.sequence is not None and (judged.sequence.rounds or judged.sequence.ended):
        seq = judged.sequence
        terminalreporter.write_line(f"sequence: {len(seq.trained)} runs trained over {seq.rounds} round(s); "
                                    f"ended: {seq.ended}")
    terminalreporter.write_line(guarantee(judged))
    if CONTINUE_ERROR in config.stash:
        terminalreporter.write_line(config.stash[CONTINUE_ERROR], red=True)
        terminalreporter.write_line("sequence: FAILED (the error above); the verdicts are those of the profile's own "
                                    "seeds", red=True)
    report = _settings_of(config).report
    if config.stash[SETTINGS].measure_finished:
        terminalreporter.write_line(config.stash.get(MEASURED, "measured: nothing"))
        if REPORT_ERROR in config.stash:
            terminalreporter.write_line(config.stash[REPORT_ERROR], red=True)
        why = ("the verdicts above stand in for runs still training and mean nothing" if config.stash.get(STOOD_IN, 0)
               else "every run is finished, so run again without the option to judge them and write the report")
        terminalreporter.write_line(f"report: not written (--claims-measure-finished); {why}", yellow=True)
        return
    if REPORT_ERROR in config.stash:
        terminalreporter.write_line(config.stash[REPORT_ERROR], red=True)
        terminalreporter.write_line(f"report: NOT written to {report} (the error above); any earlier one is unchanged",
                                    red=True)
    else:
        terminalreporter.write_line(f"report: {report}" if report else "report: not written (--claims-report PATH)")
