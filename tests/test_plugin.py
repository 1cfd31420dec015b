"""The claims plugin as a user meets it, through pytest's own ``pytester``: options, usage errors, the
marker, duplicate ids, reports only when asked, and the same verdicts whichever claims a run selects.

Runs that write a report run in subprocesses: drawing it imports torch modules that register operator
libraries once per process, and an in-process run's module clean-up would make the next one register
them again (a failure that depended on which tests ran before)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# Imported once here, before any in-process pytester run: such a run forgets the modules it imported, and
# torch, numpy and matplotlib imported a second time in one process fail (whatever tests ran before).
import tdlib.claims.evidence
import tdlib.claims.report  # noqa: F401
from tdlib.claims.findings import block

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

CLAIM_FILE = '''
from tdlib.claims.claim import Comparison, Finding, Part, claim


@claim("X1", quote="B learns", rule="B's dense accuracy > 30%", conditions=("B",))
def test_x1_b_learns(ev):
    return Finding([Part("learns", (Comparison("B dense", ev.accuracy("B"), 30.0, "greater", "%"),))])


@claim("X2", quote="B is not perfect", rule="B's dense accuracy < 99.9%", conditions=("B",))
def test_x2_b_is_not_perfect(ev):
    return Finding([Part("imperfect", (Comparison("B dense", ev.accuracy("B"), 99.9, "less", "%"),))])
'''


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("claims-cache")


def usage_error(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    return result.stderr.str()


def test_help_lists_the_namespaced_options(pytester: pytest.Pytester) -> None:
    """An empty directory, no conftest: the options come from the installed entry point."""
    result = pytester.runpytest("--help")
    for option in ("--claims-profile", "--claims-seeds", "--claims-device", "--claims-cache", "--claims-report"):
        result.stdout.fnmatch_lines([f"*{option}*"])
    assert "--profile" not in result.stdout.str().replace("--claims-profile", "")


UNRELATED_TEST = '''
import sys


def test_the_installed_plugin_imported_nothing_heavy():
    assert "torch" not in sys.modules
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "tdlib")
    assert loaded == ["tdlib", "tdlib.claims", "tdlib.claims.plugin"]
'''


def test_a_project_without_claims_imports_neither_torch_nor_the_rest_of_tdlib(pytester: pytest.Pytester) -> None:
    """Installing tdlib costs an unrelated project's pytest runs next to nothing (the benchmark
    ``test_plugin_startup`` measures how little); a ``--claims-*`` option is checked, torch and all."""
    pytester.makepyfile(test_other=UNRELATED_TEST)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    given = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--claims-seeds", "3")
    given.assert_outcomes(failed=1)  # the option is checked, which imports the profiles, and torch with them
    assert "AssertionError" in given.stdout.str()
    bad = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--claims-seeds", "abc")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR and "--claims-seeds must be a count" in bad.stderr.str()


def test_the_wheel_declares_the_pytest11_entry_point(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("tdlib-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        text = archive.read(entry_points).decode()
        assert "[pytest11]" in text and "tdlib = tdlib.claims.plugin" in text
        assert {"tdlib/claims/plugin.py", "tdlib/compress/module.py", "tdlib/compress/chain.py"} <= set(
            archive.namelist())
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = {line.split(":", 1)[1].split(";")[0].strip().split(">")[0].split("=")[0].strip()
                for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert {"pytest", "torch"} <= required and "torchvision" not in required  # a plugin that brings its pytest


USER_CLAIM_FILE = '''
from tdlib import TargetedDropout
from tdlib.claims.claim import Comparison, Finding, Part, claim
from tdlib.claims.conditions import Condition, register

register(Condition("TW70", "weight-level targeted dropout, gamma 0.7, alpha 0.5",
                   targeted=TargetedDropout.constant("weight", 0.7, 0.5)))


@claim("U1", quote="TW70 survives weight pruning better than B",
       rule="TW70 keeps more accuracy than B at 70% weight pruning", conditions=("TW70", "B"))
def test_u1_tw70_prunes_better(ev):
    gain = ev.pruned("TW70", "weight", 70) - ev.pruned("B", "weight", 70)
    return Finding([Part("weight 70%", (Comparison("TW70 - B, weight 70%", gain, 0.0, "greater"),))])
'''


def test_a_strangers_claim_file_with_its_own_condition_runs_in_an_empty_directory(pytester: pytest.Pytester,
                                                                                   tmp_path: Path) -> None:
    """No conftest, no claims/ package: only the installed plugin, a 15-line file and its own condition."""
    assert len(USER_CLAIM_FILE.strip().splitlines()) <= 15
    pytester.makepyfile(test_mine=USER_CLAIM_FILE)
    result = pytester.runpytest_subprocess("--claims-profile", "smoke", "--claims-cache", str(tmp_path),
                                           "--claims-executor", "inprocess")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*claims: 1 of 1 registered claims; 4 runs, 0 cached, 4 to train*",
                                 "*U1 INCONCLUSIVE*TW70 - B, weight 70%*"])  # 2 smoke seeds never decide
    assert len(list(tmp_path.glob("TW70-s*/record.json"))) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--claims-seeds", "abc"], "--claims-seeds must be a count or a comma-separated list"),
        (["--claims-seeds", "0,0"], "--claims-seeds must name distinct"),
        (["--claims-seeds", "60"], "needs --claims-many-seeds"),
        (["--claims-seeds", "1000000000"], "a profile's own seeds lie under 100"),  # no MemoryError first
        (["--claims-cache", "test_claims.py"], "--claims-cache 'test_claims.py': not a directory"),
        (["--claims-cache", "out/cache", "--claims-report", "out/CLAIMS.md"], "lies inside the report's directory"),
        (["--claims-archive", "out/archive", "--claims-report", "out/CLAIMS.md"], "lies inside the report's directory"),
        (["--claims-report", ""], "needs a markdown file's path"),
        (["--claims-report", "out.txt"], "give a path ending in .md"),
        (["--claims-profile", "huge"], "--claims-profile: profile must be one of default, paper, smoke, got 'huge'"),
        (["--claims-workers", "0"], "--claims-workers must be at least 1"),
        (["--claims-executor", "ray"], "invalid choice: 'ray'"),
        (["--claims-seeds", "98,99,100"], "a profile's own seeds must be under 100"),
        (["--claims-seeds", "3", "--claims-budget", "2"], "--claims-budget 2: the sequence begins with"),
        (["--claims-continue", "-k", "x1"], "--claims-continue continues the whole registered family"),
        (["--claims-select", "X1,X11"], "--claims-select 'X1,X11': no registered claim X11 (registered: X1, X2)"),
    ],
)
def test_a_bad_option_is_one_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE)
    result = pytester.runpytest(*args)
    err = usage_error(result)
    assert message in err
    assert err.count("ERROR") <= 1 and "passed" not in result.stdout.str()


def test_a_bad_lock_timeout_is_one_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE)
    monkeypatch.setenv("TDLIB_LOCK_TIMEOUT", "abc")
    assert "TDLIB_LOCK_TIMEOUT='abc': give the seconds" in usage_error(pytester.runpytest("--claims-profile", "smoke"))


def test_cuda_without_a_gpu_is_a_usage_error_and_leaves_nothing(pytester: pytest.Pytester) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    pytester.makepyfile(test_claims=CLAIM_FILE)
    cache = pytester.path / "cache"
    assert "no CUDA device" in usage_error(pytester.runpytest("--claims-device", "cuda", "--claims-cache", str(cache)))
    assert not cache.exists()


def test_a_report_directory_that_cannot_be_written_is_refused_before_any_work(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE)
    (pytester.path / "a-file").write_text("")
    assert "not a directory this process can write to" in usage_error(
        pytester.runpytest("--claims-report", str(pytester.path / "a-file" / "CLAIMS.md")))
    locked = pytester.path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anywhere
            assert "not a directory this process can write to" in usage_error(
                pytester.runpytest("--claims-report", str(locked / "r" / "CLAIMS.md")))
    finally:
        locked.chmod(0o700)
    (pytester.path / "notes.txt").write_text("mine")
    err = usage_error(pytester.runpytest("--claims-report", str(pytester.path / "CLAIMS.md")))
    assert "holds other files (" in err and "notes.txt" in err and "directory of its own" in err


def test_duplicate_claim_ids_are_refused_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=CLAIM_FILE, test_b=CLAIM_FILE.replace('"X2"', '"X3"'))
    err = usage_error(pytester.runpytest("--collect-only"))
    assert "claim id X1 is defined twice: in test_a and in test_b" in err


def test_claim_tests_carry_the_registered_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE, test_other="def test_plain():\n    pass\n")
    result = pytester.runpytest("--collect-only", "-q", "-m", "claim")
    result.stdout.fnmatch_lines(["*test_x1_b_learns*", "*test_x2_b_is_not_perfect*"])
    assert "test_plain" not in result.stdout.str()
    pytester.runpytest("--markers").stdout.fnmatch_lines(["*@pytest.mark.claim(id)*"])
    assert pytester.runpytest("--collect-only", "-q", "--strict-markers", "-m", "claim").ret == 0


def test_no_report_unless_asked_and_a_whole_one_when_asked(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE)
    cache = ["--claims-cache", str(shared_cache), "--claims-seeds", "3"]
    result = pytester.runpytest_subprocess(*cache)
    result.assert_outcomes(passed=2)
    # Three seeds decide nothing: their smallest p, 0.27, is far above any level.
    result.stdout.fnmatch_lines(["*claims: verdicts*", "*X1 INCONCLUSIVE*3 of 3 seeds*", "*report: not written*"])
    assert not [*pytester.path.rglob("CLAIMS.md"), *pytester.path.rglob("claims.json"), *pytester.path.rglob("*.png")]
    report = pytester.path / "out" / "CLAIMS.md"
    pytester.runpytest_subprocess(*cache, "--claims-report", str(report)).assert_outcomes(passed=2)
    data = json.loads((report.parent / "claims.json").read_text())
    assert [c["verdict"] for c in data["claims"]] == ["INCONCLUSIVE", "INCONCLUSIVE"] and not data["partial"]
    assert "Guarantee" in report.read_text()
    # The README's findings show each effect as the report does, unit included.
    effects = [row.rsplit(" | ", 1)[1].rstrip(" |") for row in block(report.parent / "claims.json", pytester.path)
               .splitlines() if row.startswith("| [X")]
    assert len(effects) == 2 and all("%" in e and f"| {e} |" in report.read_text() for e in effects)
    table = (report.parent / "evidence.csv").read_text().splitlines()
    assert table[0] == "condition,seed,epochs,run,key,value"
    assert sum(",accuracy," in row for row in table) == 3  # B's dense accuracy, one row per seed
    assert not [p for p in pytester.path.iterdir() if p.name.startswith(".out")]  # no staging left behind


def test_the_runs_train_first_with_progress_shown_past_the_capture(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE)
    result = pytester.runpytest_subprocess("--claims-cache", str(tmp_path), "--claims-seeds", "3",
                                           "--claims-executor", "inprocess")
    result.assert_outcomes(passed=2)
    assert "runs (inprocess)" in result.stderr.str() and "3/3" in result.stderr.str()  # tqdm, not captured
    assert len(list(tmp_path.glob("B-s*/record.json"))) == 3


def continued(pytester: pytest.Pytester, cache: Path) -> tuple[Path, list[str]]:
    """Where a continued session's report goes, and its options: two seeds, then B's sequence up to 12."""
    report = pytester.path / "out" / "CLAIMS.md"
    return report, ["--claims-cache", str(cache), "--claims-seeds", "2", "--claims-executor", "inprocess",
                    "--claims-budget", "12", "--claims-report", str(report)]


def continued_with(pytester: pytest.Pytester, cache: Path, claims: str, passed: int, lines: list[str]
                   ) -> tuple[Path, dict]:
    """A continued session (:func:`continued`) of the claim file ``claims``, checked to pass ``passed`` tests and
    to print ``lines``: its report's path and its claims.json."""
    pytester.makepyfile(test_claims=claims)
    report, args = continued(pytester, cache)
    result = pytester.runpytest_subprocess(*args, "--claims-continue")
    result.assert_outcomes(passed=passed)
    result.stdout.fnmatch_lines(lines)
    return report, json.loads((report.parent / "claims.json").read_text())


def test_the_sequence_is_continued_until_its_parts_are_decided_and_judged_whole_from_then_on(
        pytester: pytest.Pytester, shared_cache: Path) -> None:
    """Two seeds decide nothing; continuing B's sequence (two seeds a round on two workers) decides both claims
    at 9 seeds (smallest p 0.0098 against Holm's 0.0125), judged on the 10 stored. A later run without
    --claims-continue judges on every stored seed too, and a run with it trains nothing more."""
    pytester.makepyfile(test_claims=CLAIM_FILE)
    report, args = continued(pytester, shared_cache)
    result = pytester.runpytest_subprocess(*args, "--claims-continue")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*sequence round 1: 2 open part(s); B to 4 seeds;*",
        "*sequence round 4: 2 open part(s); B to 10 seeds;*",
        "*X1 SUPPORTED*10 of 10 seeds*", "*X2 SUPPORTED*10 of 10 seeds*",
        "*sequence: 8 runs trained over 4 round(s); ended: every part is decided*",
    ])
    data = json.loads((report.parent / "claims.json").read_text())
    assert [c["verdict"] for c in data["claims"]] == ["SUPPORTED", "SUPPORTED"]
    comparison = data["claims"][0]["parts"][0]["comparisons"][0]
    assert comparison["seeds"] == [0, 1, *range(100, 108)] and comparison["decided_at"] == 106  # the 9th seed
    assert data["sequence"]["stored"] == {"B": 10} and len(data["sequence"]["trained"]) == 8
    assert sum(",accuracy," in row for row in (report.parent / "evidence.csv").read_text().splitlines()) == 10
    text = report.read_text()
    assert "## The sequence of seeds" in text and "| B | 10 (0-1, 100-107) |" in text
    plain = pytester.runpytest_subprocess(*args[:-2])  # no --claims-continue: every stored seed still counts
    plain.stdout.fnmatch_lines(["*X1 SUPPORTED*10 of 10 seeds*"])
    again = pytester.runpytest_subprocess(*args, "--claims-continue")
    again.stdout.fnmatch_lines(["*X1 SUPPORTED*", "*sequence: 0 runs trained over 0 round(s); ended: every part is "
                                "decided*"])


CUT_FILE = CLAIM_FILE + '''

from tdlib.runs import CertificateMismatch


@claim("X3", quote="B learns, as far as this machine can measure", rule="B's dense accuracy > 30%",
       conditions=("B",))
def test_x3_cut_short(ev):
    if len(ev.seeds) > 5:  # as if B's 6th seed were archived from another CPU and its weights were needed
        raise CertificateMismatch(f"run B-s{ev.seeds[5]}, trained again here, does not reproduce its archived "
                                  "record: model.pt differ. Bits differ across CPU models", run=f"B-s{ev.seeds[5]}")
    return Finding([Part("learns", (Comparison("B dense", ev.accuracy("B"), 30.0, "greater", "%"),))])
'''


def test_a_claim_whose_later_seed_this_machine_cannot_measure_is_judged_on_the_seeds_before_it(
        pytester: pytest.Pytester, shared_cache: Path) -> None:
    # Its verdict comes from the longest prefix it can be measured on, and the sequence is not continued for it.
    report, data = continued_with(pytester, shared_cache, CUT_FILE, 3,
                                  ["*X1 SUPPORTED*10 of 10 seeds*", "*X3 INCONCLUSIVE*5 of 5 seeds*"])
    x3 = data["claims"][2]["parts"][0]["comparisons"][0]
    assert x3["seeds"] == [0, 1, 100, 101, 102] and not data["sequence"]["errors"]
    assert data["sequence"]["cut"] == {"X3": "judged on 5 seeds at most: run B-s103 is archived without a measurement "
                                             "this needs, and its weights are not at hand (trained again here, they "
                                             "do not reproduce its record; or this session may not train)"}
    assert "Judged short of their stored seeds" in report.read_text()


LATER_UNMEASURABLE_FILE = CLAIM_FILE + '''

from tdlib.runs import CertificateMismatch


def later_unmeasurable(ev, key):
    """B's number ``key``, which this machine cannot measure from seed 103 (the 6th) on, as if B-s103 were
    archived from another CPU without it, its weights needed."""
    def measured(run, model):
        if run.spec.seed >= 103:
            raise CertificateMismatch(f"run {run.spec.name}, trained again here, does not reproduce its archived "
                                      "record", run=run.spec.name)
        return 50.0
    return ev.measure("B", key, measured)


@claim("X4", quote="B learns", rule="B's dense accuracy > 30% (a number it cannot measure later, reported)",
       conditions=("B",))
def test_x4_reports_what_it_cannot_measure_later(ev):
    return Finding([Part("learns", (Comparison("B dense", ev.accuracy("B"), 30.0, "greater", "%"),))],
                   info={"B, measurable on the first seeds only": tuple(later_unmeasurable(ev, "x4-info"))})


@claim("X5", quote="B learns, as far as this machine can measure", rule="B's dense accuracy > 30% (the same)",
       conditions=("B",))
def test_x5_judges_what_it_cannot_measure_later(ev):
    judged = ev.accuracy("B") - later_unmeasurable(ev, "x5-part") + 50.0  # its accuracy, where measurable
    return Finding([Part("learns", (Comparison("B dense", judged, 30.0, "greater", "%"),))])
'''


def test_a_number_only_reported_does_not_cut_a_claim_short_where_a_judged_one_does(
        pytester: pytest.Pytester, shared_cache: Path) -> None:
    """A seed this machine cannot measure a number of cuts a claim short only if a judged comparison needs
    the number: X4 reports it beside its rule (from the profile's own seeds) and is judged on all 10 seeds;
    X5 judges with it and is judged on the 5 before the seed that lacks it."""
    report, data = continued_with(pytester, shared_cache, LATER_UNMEASURABLE_FILE, 4,
                                  ["*X4 SUPPORTED*10 of 10 seeds*", "*X5 INCONCLUSIVE*5 of 5 seeds*"])
    x4, x5 = data["claims"][2], data["claims"][3]
    assert x4["parts"][0]["comparisons"][0]["seeds"] == [0, 1, *range(100, 108)]
    assert x5["parts"][0]["comparisons"][0]["seeds"] == [0, 1, 100, 101, 102]
    assert list(data["sequence"]["cut"]) == ["X5"] and "run B-s103" in data["sequence"]["cut"]["X5"]
    assert "| B, measurable on the first seeds only | 50.00, 50.00 |" in report.read_text()


def test_a_report_is_drawn_again_from_stored_evidence_alone(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE)
    cache = ["--claims-cache", str(shared_cache), "--claims-seeds", "3"]
    first, again = pytester.path / "first" / "CLAIMS.md", pytester.path / "again" / "CLAIMS.md"
    pytester.runpytest_subprocess(*cache, "--claims-report", str(first)).assert_outcomes(passed=2)
    pytester.runpytest_subprocess(*cache, "--claims-stored-only", "--claims-report", str(again)).assert_outcomes(
        passed=2)
    drawn = json.loads((again.parent / "claims.json").read_text())
    assert drawn["claims"] == json.loads((first.parent / "claims.json").read_text())["claims"]
    for stored in (shared_cache / "evidence").glob("B-s1-*.json"):  # a measurement the cache no longer holds
        stored.unlink()
    result = pytester.runpytest_subprocess(*cache, "--claims-stored-only", "--claims-report", str(again))
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*NotStored: accuracy of run B-s1-* is not stored*",
                                 "*report: NOT written to *: no claim could be judged*"])
    assert not list((shared_cache / "evidence").glob("B-s1-*.json"))  # nothing was measured
    assert json.loads((again.parent / "claims.json").read_text()) == drawn  # the last whole report is kept
    missing = usage_error(pytester.runpytest("--claims-cache", str(pytester.path / "empty"), "--claims-seeds", "3",
                                             "--claims-stored-only"))
    assert "--claims-stored-only: 3 of the 3 runs this session needs are not in the cache" in missing
    # With a report asked for, the runs of the report's registered sections join the plan (how many depends on
    # which study this process has imported); the usage error alone says why: no test ran, none failed.
    empty = pytester.runpytest("--claims-cache", str(pytester.path / "empty"), "--claims-seeds", "3",
                               "--claims-stored-only", "--claims-report", str(again))
    assert "runs this session needs are not in the cache" in usage_error(empty)
    assert "report:" not in empty.stdout.str()


def test_a_subset_is_judged_in_the_whole_family(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makepyfile(test_claims=CLAIM_FILE)
    report = pytester.path / "out" / "CLAIMS.md"
    selected = pytester.runpytest("--claims-cache", str(shared_cache), "--claims-seeds", "3", "--claims-select", "X2")
    selected.assert_outcomes(passed=1, deselected=1)  # by exact id
    selected.stdout.fnmatch_lines(["*claims: 1 of 2 registered claims*", "*X2 INCONCLUSIVE*", "*PARTIAL: 1 of 2*"])
    stored = pytester.runpytest("--claims-cache", str(shared_cache), "--claims-seeds", "3", "--claims-select", "X2",
                                "--claims-stored-only", "--claims-report", str(pytester.path / "partial" / "CLAIMS.md"))
    stored.stdout.fnmatch_lines(["*--claims-stored-only: claims X1 were not judged*a partial report is drawn without "
                                 "--claims-stored-only*"])
    assert stored.ret == pytest.ExitCode.TESTS_FAILED and not (pytester.path / "partial").exists()
    result = pytester.runpytest("--claims-cache", str(shared_cache), "--claims-seeds", "3", "-k", "x1",
                                "--claims-report", str(report))
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*claims: 1 of 2 registered claims*", "*PARTIAL: 1 of 2 claims judged*"])
    data = json.loads((report.parent / "claims.json").read_text())
    assert data["partial"] and [f["id"] for f in data["family"]] == ["X1", "X2"]
    part = data["claims"][0]["parts"][0]
    assert part["p_support_holm"] == pytest.approx(2 * part["p_support"])
    assert "Partial report" in report.read_text()


def test_an_unregistered_condition_is_one_usage_error(pytester: pytest.Pytester) -> None:
    unregistered = CLAIM_FILE.replace('conditions=("B",))\ndef test_x2', 'conditions=("B", "NOPE"))\ndef test_x2')
    pytester.makepyfile(test_claims=unregistered)
    assert "claim X2 names an unregistered condition" in usage_error(pytester.runpytest())


def test_a_figure_no_one_registered_is_one_usage_error_of_a_report(pytester: pytest.Pytester) -> None:
    unknown = CLAIM_FILE.replace('conditions=("B",))\ndef test_x2',
                                 'conditions=("B",), figures=("nope",))\ndef test_x2')
    pytester.makepyfile(test_claims=unknown)
    message = usage_error(pytester.runpytest("--claims-report", str(pytester.path / "out" / "CLAIMS.md")))
    assert "claim X2 names figures no one registered: nope" in message and "sweeps" in message


def test_a_failing_report_keeps_the_verdicts_and_the_old_report(pytester: pytest.Pytester, shared_cache: Path) -> None:
    pytester.makeconftest(
        "import tdlib.claims.report\n\n\ndef broken(*args, **kwargs):\n    raise RuntimeError('drawing failed')\n\n\n"
        "tdlib.claims.report.render = broken\n"
    )
    pytester.makepyfile(test_claims=CLAIM_FILE)
    target = pytester.path / "out" / "CLAIMS.md"
    target.parent.mkdir()
    target.write_text("the old report")
    result = pytester.runpytest_subprocess("--claims-cache", str(shared_cache), "--claims-seeds", "3",
                                           "--claims-report", str(target))
    result.stdout.fnmatch_lines(["*X1 INCONCLUSIVE*", "*RuntimeError: drawing failed*", "*report: NOT written*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert target.read_text() == "the old report"


def test_xdist_is_refused_with_a_reason(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_claims=CLAIM_FILE)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    assert result.ret != 0
    assert "cannot run under pytest-xdist" in result.stdout.str() + result.stderr.str()


def test_missing_data_is_one_usage_error_before_any_run_trains(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TDLIB_DATA_DIR", str(pytester.path / "nowhere"))
    pytester.makepyfile(test_claims=CLAIM_FILE)
    err = usage_error(pytester.runpytest("--claims-cache", str(pytester.path / "cache")))
    assert "claims: 2 runs to train, but TDLIB_DATA_DIR=" in err and "no such directory" in err
    assert "Traceback" not in err and not (pytester.path / "cache").exists()
