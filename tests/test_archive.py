"""The run archive: finished runs kept as their certificates and measurements, restored into a cache that
lacks them, and trained again (bit for bit, or refused) only when something needs their weights."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from tdlib.claims.archive import EVIDENCE_FILE, export, restore
from tdlib.claims.evidence import Evidence, NotStored, Reading, evidence_bytes, verified, verified_values
from tdlib.runs import ARCHIVED, CertificateMismatch, Run, RunCache, weight_digests
from tdlib.spec import DataSpec, RunSpec

pytest_plugins = ["pytester"]
SMALL = DataSpec(n_train=600, n_test=300, seed=0)


def small_spec(condition: str = "B", seed: int = 0, epochs: int = 2, **changes: object) -> RunSpec:
    fields: dict[str, object] = {"batch_size": 64, "hidden": (32, 16), "data": SMALL, **changes}
    return RunSpec(condition, seed, epochs, **fields)  # type: ignore[arg-type]


def measured(cache: RunCache, run: Run, values: dict[str, float]) -> Path:
    """Store ``values`` as ``run``'s evidence in ``cache``, as tdlib.claims.evidence does."""
    path = cache.root / "evidence" / f"{run.spec.name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(evidence_bytes(run, values))
    return path


@pytest.fixture()
def trained(tmp_path: Path) -> tuple[RunCache, Run]:
    cache = RunCache(tmp_path / "trained", progress=False)
    run = cache.get(small_spec(checkpoints=(1, 2)))
    measured(cache, run, {"accuracy": 81.5, "pruned:weight:50": 80.0})
    return cache, run


def test_an_archived_run_is_finished_without_weights_and_keeps_its_measurements(
        tmp_path: Path, trained: tuple[RunCache, Run]) -> None:
    cache, run = trained
    archive = tmp_path / "archive"
    moved = export(cache, archive)
    assert moved.written == (run.spec.name,)
    assert sorted(p.name for p in (archive / run.spec.name).iterdir()) == [EVIDENCE_FILE, "history.json", "record.json"]
    assert export(cache, archive).unchanged == (run.spec.name,)  # nothing new the second time

    fresh = RunCache(tmp_path / "fresh", progress=False)
    assert restore(archive, fresh).written == (run.spec.name,)
    found = fresh.cached(run.spec)
    assert found is not None and found.archived and not found.trained_now
    assert found.history == run.history and found.record["files"] == run.record["files"]
    assert not (found.directory / "model.pt").exists() and (found.directory / ARCHIVED).exists()
    stored = (fresh.root / "evidence" / f"{run.spec.name}.json").read_bytes()
    assert verified_values(stored, found) == {"accuracy": 81.5, "pruned:weight:50": 80.0}
    assert fresh.get(run.spec).archived  # get() hands it back as it is: nothing is trained for it


def test_an_archived_run_trains_again_to_the_same_bits_when_its_weights_are_needed(
        tmp_path: Path, trained: tuple[RunCache, Run]) -> None:
    cache, run = trained
    export(cache, tmp_path / "archive")
    fresh = RunCache(tmp_path / "fresh", progress=False)
    restore(tmp_path / "archive", fresh)
    archived = fresh.cached(run.spec)
    assert archived is not None
    with pytest.warns(UserWarning, match="archived without its weights; training it again"):
        model = archived.checkpoint(1)  # any load trains it again, once
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                run.checkpoint(1).state_dict().values(), strict=True))
    again = fresh.cached(run.spec)
    assert again is not None and not again.archived and weight_digests(again.record) == weight_digests(run.record)
    assert again.record["resumed_from_epoch"] == 0 and again.record["extended_from"] is None  # from scratch
    # The measurements are tied to the files, which are the same, so they still hold.
    stored = (fresh.root / "evidence" / f"{run.spec.name}.json").read_bytes()
    assert verified_values(stored, again)["accuracy"] == 81.5
    assert list((fresh.root / "archived").iterdir())  # the archived entry is kept aside


def test_a_retraining_that_does_not_reproduce_the_certificate_is_refused_by_name(
        tmp_path: Path, trained: tuple[RunCache, Run]) -> None:
    cache, run = trained
    archive = tmp_path / "archive"
    export(cache, archive)
    record_path = archive / run.spec.name / "record.json"
    record = json.loads(record_path.read_text())
    record["files"]["model.pt"] = "0" * 64  # as if the archived run had been trained elsewhere, differently
    record_path.write_text(json.dumps(record))
    fresh = RunCache(tmp_path / "fresh", progress=False)
    restore(archive, fresh)
    archived = fresh.cached(run.spec)
    assert archived is not None
    with pytest.warns(UserWarning), pytest.raises(CertificateMismatch, match=r"model\.pt differ") as raised:
        archived.model()
    assert "CPU " in str(raised.value) and raised.value.kept is not None
    kept = raised.value.kept
    assert weight_digests(json.loads((kept / "record.json").read_text())) == weight_digests(run.record)
    still = fresh.cached(run.spec)  # the archived entry stays as it was: nothing is measured on other weights
    assert still is not None and still.archived and still.record["files"]["model.pt"] == "0" * 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not trained a second time: the same code on the same CPU
        with pytest.raises(CertificateMismatch, match=r"trained again here before, by the same code on the same "
                                                      r"CPU, and did not reproduce"):
            archived.model()
    before = (archive / run.spec.name / EVIDENCE_FILE).read_bytes()
    moved = export(fresh, archive)  # the archive keeps what it certified, and its measurements
    assert not moved.refused and (archive / run.spec.name / EVIDENCE_FILE).read_bytes() == before


def test_a_measurement_that_cache_and_archive_hold_with_two_values_is_refused_naming_both(
        tmp_path: Path, trained: tuple[RunCache, Run]) -> None:
    cache, run = trained
    archive = tmp_path / "archive"
    export(cache, archive)
    archived = (archive / run.spec.name / EVIDENCE_FILE).read_bytes()
    measured(cache, run, {"accuracy": 40.6, "pruned:weight:50": 80.0, "saving:unit:80:seconds": 9.0})
    moved = export(cache, archive)  # the cache now says 40.6 of the same weights
    assert moved.refused == (f"{run.spec.name}: 1 measurement(s) of the same weights differ between the archive and "
                             "the cache (in that order): accuracy: 81.5 and 40.6; the archived entry is left as it is",)
    assert (archive / run.spec.name / EVIDENCE_FILE).read_bytes() == archived

    moved = restore(archive, cache)  # and the other way: the cache's value is kept, and the conflict named
    assert moved.refused == (f"{run.spec.name}: 1 measurement(s) of the same weights differ between the cache and "
                             "the archive (in that order): accuracy: 40.6 and 81.5; the cache's measurements are left "
                             "as they are",)
    assert verified_values((cache.root / "evidence" / f"{run.spec.name}.json").read_bytes(), run)["accuracy"] == 40.6

    measured(cache, run, {"accuracy": 81.5, "pruned:weight:50": 80.0, "saving:unit:80:seconds": 9.0})
    assert export(cache, archive).written == (run.spec.name,)  # a timing is another machine's: no conflict
    grown = verified_values((archive / run.spec.name / EVIDENCE_FILE).read_bytes(), run)
    assert grown == {"accuracy": 81.5, "pruned:weight:50": 80.0, "saving:unit:80:seconds": 9.0}
    measured(cache, run, {"accuracy": 81.5, "saving:unit:80:seconds": 2.0})
    assert export(cache, archive).unchanged == (run.spec.name,)  # the first timing stored stays
    assert verified_values((archive / run.spec.name / EVIDENCE_FILE).read_bytes(), run) == grown


def test_a_measurement_by_other_code_is_no_conflict_and_the_caches_stands(
        tmp_path: Path, trained: tuple[RunCache, Run]) -> None:
    # The cache measured accuracy again with changed code: what that session's code took replaces the
    # archive's, and is tied to that code; restoring the older archive into that cache changes nothing.
    cache, run = trained
    archive = tmp_path / "archive"
    export(cache, archive)
    store = cache.root / "evidence" / f"{run.spec.name}.json"
    store.write_bytes(evidence_bytes(run, {"accuracy": 40.6, "pruned:weight:50": 80.0}, {"accuracy": "new code"}))
    assert export(cache, archive).written == (run.spec.name,)
    archived = (archive / run.spec.name / EVIDENCE_FILE).read_bytes()
    assert verified(archived, run) == ({"accuracy": 40.6, "pruned:weight:50": 80.0}, {"accuracy": "new code"})
    older = tmp_path / "older"
    shutil.copytree(archive, older)
    (older / run.spec.name / EVIDENCE_FILE).write_bytes(evidence_bytes(run, {"accuracy": 81.5}))
    assert restore(older, cache).unchanged == (run.spec.name,)
    assert verified(store.read_bytes(), run)[0]["accuracy"] == 40.6


def test_restore_grows_the_measurements_of_the_same_run_and_refuses_what_does_not_match(
        tmp_path: Path, trained: tuple[RunCache, Run]) -> None:
    cache, run = trained
    archive = tmp_path / "archive"
    export(cache, archive)
    other = RunCache(tmp_path / "other", progress=False)
    same = other.get(run.spec)  # the same run, trained here too: same files
    measured(other, same, {"accuracy": 81.5})
    assert restore(archive, other).written == (run.spec.name,)
    stored = (other.root / "evidence" / f"{run.spec.name}.json").read_bytes()
    assert set(verified_values(stored, same)) == {"accuracy", "pruned:weight:50"}

    (archive / run.spec.name / EVIDENCE_FILE).write_text("{}")  # a damaged evidence file
    shutil.copytree(archive / run.spec.name, archive / "B-s9-0000")  # a record under another run's name
    moved = restore(archive, RunCache(tmp_path / "third", progress=False))
    assert any(r.startswith(f"{run.spec.name}: its evidence.json fails") for r in moved.refused)
    assert any(r.startswith("B-s9-0000: ") for r in moved.refused)
    assert not (tmp_path / "third" / "B-s9-0000").exists()

    held = RunCache(tmp_path / "held", progress=False)
    with FileLock(str(held.root / f"{run.spec.name}.lock")):  # another process is training it here
        moved = restore(archive, held)
    assert any("another process holds its lock" in r for r in moved.refused)
    assert not (held.root / run.spec.name).exists()


def test_an_archived_run_is_not_continued_from(tmp_path: Path, trained: tuple[RunCache, Run]) -> None:
    """A longer run cannot continue from a shorter one that has no state here: it trains from scratch, to
    the same bits."""
    cache, _ = trained
    export(cache, tmp_path / "archive")
    fresh = RunCache(tmp_path / "fresh", progress=False)
    restore(tmp_path / "archive", fresh)
    longer = fresh.get(small_spec(epochs=3, checkpoints=(1, 2)))
    assert longer.record["extended_from"] is None and longer.record["resumed_from_epoch"] == 0
    straight = RunCache(tmp_path / "straight", progress=False).get(small_spec(epochs=3, checkpoints=(1, 2)))
    assert weight_digests(longer.record) == weight_digests(straight.record)


CLAIMS = '''
from tdlib.claims.claim import Comparison, Finding, Part, claim


@claim("X1", quote="B learns", rule="B's dense accuracy > 30%", conditions=("B",))
def test_x1_b_learns(ev):
    return Finding([Part("learns", (Comparison("B dense", ev.accuracy("B"), 30.0, "greater", "%"),))])


@claim("X2", quote="TU keeps B's accuracy", rule="TU's dense accuracy > 30%", conditions=("B", "TU"))
def test_x2_tu_learns(ev):
    first = ev.measure_group("TU", "first-seed-only", lambda run, model: {"a": 1.0, "b": 2.0}, seeds=ev.seeds[:1])
    assert list(first) == [ev.seeds[0]]  # keyed by the seed asked for, whichever run fills its slot
    return Finding([Part("learns", (Comparison("TU dense", ev.accuracy("TU"), 30.0, "greater", "%"),))])
'''


def keys(cache: Path) -> dict[str, set[str]]:
    """Run name -> the measurement keys the cache stores for it."""
    return {p.stem: set(json.loads(p.read_text())["values"]) for p in (cache / "evidence").glob("*.json")}


def test_measuring_the_finished_runs_stores_what_a_whole_run_stores_of_them_and_trains_nothing(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile(test_claims=CLAIMS)
    whole, part = tmp_path / "whole", tmp_path / "part"
    args = ["--claims-seeds", "2", "--claims-executor", "inprocess"]
    pytester.runpytest_subprocess("--claims-cache", str(whole), *args, "--claims-report",
                                  str(tmp_path / "report" / "CLAIMS.md")).assert_outcomes(passed=2)
    # Seed 1 of B and of TU are finished; seed 0's are still "training".
    finished = sorted(p.name for p in whole.glob("*-s1-*") if p.is_dir())
    for name in finished:
        shutil.copytree(whole / name, part / name)
    result = pytester.runpytest_subprocess("--claims-cache", str(part), "--claims-measure-finished", *args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*measuring the 2 finished of 4 runs (the other 2 are stood in for*",
                                 "*report: not written (--claims-measure-finished); the verdicts above stand in "
                                 "for runs still training and mean nothing*"])
    assert sorted(p.parent.name for p in part.glob("*/record.json")) == finished  # nothing was trained
    assert keys(part) == {name: keys(whole)[name] for name in finished}
    # Seed 0's TU slot asked the first-seed-only measurement; seed 1's run filled it, but never stored it.
    assert not any(k.startswith("first-seed-only") for ks in keys(part).values() for k in ks)
    done = pytester.runpytest_subprocess("--claims-cache", str(whole), "--claims-measure-finished", *args)
    done.stdout.fnmatch_lines(["*measuring the 4 finished of 4 runs (the other 0 are stood in for*",
                               "*report: not written (--claims-measure-finished); every run is finished, so run "
                               "again without the option*"])
    refused = pytester.runpytest("--claims-cache", str(part), "--claims-measure-finished", "--claims-report",
                                 str(tmp_path / "r" / "CLAIMS.md"))
    assert refused.ret == pytest.ExitCode.USAGE_ERROR and "cannot go with --claims-report" in refused.stderr.str()


def test_training_a_profile_takes_the_archived_runs_and_trains_only_the_rest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tdlib.claims.cli import train as train_profile
    from tdlib.claims.profiles import PROFILES

    here = RunCache(tmp_path / "here", progress=False)
    here.get(PROFILES["smoke"].spec("B", 0))
    export(here, tmp_path / "archive")
    fresh = tmp_path / "fresh"
    train_profile(["smoke", "--cache", str(fresh), "--conditions", "B", "--seeds", "0,1", "--no-sections",
                   "--archive", str(tmp_path / "archive"), "--plan"])
    out = capsys.readouterr().out
    assert f"archive {tmp_path / 'archive'}: 1 runs or their measurements taken into the cache, 0 already" in out
    assert "smoke: 2 runs, 1 cached, 1 to train" in out
    # A session that must not train never loads an archived run's weights: it says what is missing.
    ev = Evidence(PROFILES["smoke"].with_seeds((0,)), RunCache(fresh, progress=False), reading=Reading.STORED_ONLY)
    with pytest.raises(NotStored, match="archived without them"):
        ev.model("B", 0)
    assert not list(fresh.glob("*/model.pt"))
