"""The machinery behind the claims suite: seeds, soundness checks, judging across claims, the floor."""

from __future__ import annotations

import importlib.util
import inspect
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tdlib.claims.claim import Claim, Finding, Findings, check_sound, claim
from tdlib.claims.evidence import BrokenEvidence, Evidence, NotStored, Reading
from tdlib.claims.profiles import PROFILES, Profile, parse_seeds
from tdlib.claims.report import seeds_cell
from tdlib.claims.stats import Comparison, Part, Verdict
from tdlib.runs import RunCache
from tdlib.spec import DataSpec

TINY = Profile("tiny", epochs=1, seeds=(0, 1, 2), batch_size=100, data=DataSpec(300, 300, 0), accuracy_floor=0.0,
               hidden=PROFILES["smoke"].hidden)
C = Claim("C0", "quote", "rule", ("B",))


def test_parse_seeds() -> None:
    assert parse_seeds("5") == (0, 1, 2, 3, 4)
    assert parse_seeds("0,3,7") == (0, 3, 7)
    assert parse_seeds("0,") == (0,)
    for bad in ("", "x", "0,0", "-1,2", "0"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match=r"--seeds 0 is a count of seeds .* to name seed 0 alone, write '0,'"):
        parse_seeds("0")


def test_profiles_checkpoint_what_c7_and_c8_need() -> None:
    for profile in PROFILES.values():
        assert {0, profile.tenth, profile.half, profile.epochs} <= set(profile.checkpoints)
        assert 1 <= profile.tenth <= profile.half <= profile.epochs
    with pytest.raises(ValueError, match="condition must be one of"):
        TINY.spec("X", 0)


def test_unsound_findings_are_broken_evidence() -> None:
    with pytest.raises(BrokenEvidence, match="parts"):
        check_sound(C, Finding([]), seeds=3)
    short = Finding([Part("p", (Comparison("c", (1.0, 2.0), 0.0, "greater"),))])
    with pytest.raises(BrokenEvidence, match="2 values for 3 seeds, and does not name the seeds"):
        check_sound(C, short, seeds=3)
    with pytest.raises(BrokenEvidence, match="2 values for 3 seeds"):  # a note does not excuse it
        check_sound(C, Finding(short.parts, notes=("seed 2 has no dead units",)), seeds=3)
    named = Finding([Part("p", (Comparison("c", (1.0, 2.0), 0.0, "greater", seeds=(0, 1)),))])
    check_sound(C, named, seeds=3)


def test_findings_are_judged_together_and_combined() -> None:
    findings = Findings()
    strong = Comparison("strong", (5.0, 5.1, 4.9, 5.2) * 3, 0.0, "greater")  # 12 seeds, all on the claim's side
    against = Comparison("against", (-5.0, -5.1, -4.9, -5.2) * 3, 0.0, "greater")
    vague = Comparison("vague", (1.0, -1.0, 0.5, -0.4) * 3, 0.0, "greater")
    two = Claim("C0", "quote", "rule", ("B",), parts=("a", "b"))
    findings.add(two, Finding([Part("a", (strong,)), Part("b", (strong, vague))]))
    findings.add(Claim("C9", "q", "r", ("B",)), Finding([Part("any", (against, strong), how="any")]))
    judged = findings.judge()
    first, second = judged.results
    assert [p.verdict for p in first.parts] == [Verdict.SUPPORTED, Verdict.INCONCLUSIVE]
    assert first.verdict is Verdict.INCONCLUSIVE
    assert second.verdict is Verdict.SUPPORTED
    assert judged.family_parts == 3 and not judged.partial


def test_a_claim_in_a_larger_family_is_judged_partially_and_never_more_strongly() -> None:
    borderline = Comparison("c", (1.0, 1.3, 0.7, 1.2, 0.8, 0.9, 1.1, 0.65, 2.0), 0.6, "greater")  # 9 of 9: p 0.0098
    alone = Claim("C1", "q", "r", ("B",))
    others = [Claim(f"C{i}", "q", "r", ("B",)) for i in range(2, 22)]
    findings = Findings()
    findings.add(alone, Finding([Part("p", (borderline,))]))
    by_itself = findings.judge([alone])
    in_family = findings.judge([alone, *others])
    assert by_itself.results[0].verdict is Verdict.SUPPORTED
    assert in_family.partial and [c.id for c in in_family.missing] == [c.id for c in others]
    assert in_family.results[0].parts[0].p_support_holm == pytest.approx(21 * by_itself.results[0].parts[0].p_support)
    assert in_family.results[0].verdict is Verdict.INCONCLUSIVE
    with pytest.raises(ValueError, match="not in the registered family"):
        findings.judge(others)


def test_a_claim_that_cannot_be_judged_is_named_and_the_others_stand() -> None:
    findings = Findings()
    good = Claim("C1", "q", "r", ("B",))
    bad = Claim("C2", "q", "r", ("B",), parts=("a", "b"))
    strong = Comparison("strong", (5.0, 5.1, 4.9, 5.2) * 3, 0.0, "greater")
    findings.add(bad, Finding([Part("only one", (strong,))]))  # registered with two parts
    findings.add(good, Finding([Part("p", (strong,))]))
    judged = findings.judge([bad, good])
    broken, fine = judged.results
    assert "registered with parts ('a', 'b')" in broken.error and broken.parts == []
    assert fine.verdict is Verdict.SUPPORTED and judged.partial
    assert fine.parts[0].p_support_holm == pytest.approx(3 * fine.parts[0].p_support)  # a family of 3 parts


def test_the_registered_family_is_every_claim_of_the_modules() -> None:
    import types

    from tdlib.claims.claim import registered_family

    module = types.ModuleType("m")
    for cid in ("A1", "A2"):
        setattr(module, f"test_{cid}", claim(cid, "q", "r", ("B",))(lambda ev: None))
    assert [c.id for c in registered_family([module])] == ["A1", "A2"]
    other = types.ModuleType("other")
    other.test_x = claim("A1", "q", "r", ("B",))(lambda ev: None)
    with pytest.raises(ValueError, match="claim id A1 is defined twice: in m and in other"):
        registered_family([module, other])


def test_a_claim_test_fails_when_the_baseline_did_not_learn(tmp_path: Path) -> None:
    strict = replace(TINY, name="strict", seeds=(0,), accuracy_floor=0.99)
    evidence = Evidence(strict, RunCache(tmp_path, progress=False))

    @claim("C0", quote="q", rule="r", conditions=("B",))
    def test_anything(ev: Evidence) -> Finding:
        raise AssertionError("never reached: the floor is checked first")

    with pytest.raises(BrokenEvidence, match="the baseline did not learn"):
        test_anything(evidence, Findings())


def test_a_claim_test_records_its_finding_and_evidence_is_cached(tmp_path: Path) -> None:
    evidence = Evidence(TINY, RunCache(tmp_path, progress=False))
    findings = Findings()

    @claim("C0", quote="q", rule="r", conditions=("B",))
    def test_dense(ev: Evidence) -> Finding:
        return Finding([Part("p", (Comparison("acc", tuple(ev.accuracy("B")), 10.0, "greater", "%"),))])

    assert list(inspect.signature(test_dense).parameters) == ["evidence", "findings"]
    test_dense(evidence, findings)
    assert len(findings.items) == 1 and len(findings.items[0][1].parts[0].comparisons[0].values) == 3
    again = Evidence(TINY, RunCache(tmp_path, progress=False))
    assert list(again.accuracy("B")) == list(evidence.accuracy("B"))
    assert (tmp_path / "evidence").is_dir() and len(list((tmp_path / "evidence").glob("*.json"))) == 3


def test_an_undefined_statistic_is_broken_evidence_unless_allowed(tmp_path: Path) -> None:
    evidence = Evidence(TINY, RunCache(tmp_path, progress=False))

    def nan_for_seed_1(run, model) -> float:
        return float("nan") if run.spec.seed == 1 else 1.0

    with pytest.raises(BrokenEvidence, match=r"strict of B-s1-\w+ is nan"):
        evidence.measure("B", "strict", nan_for_seed_1)
    allowed = evidence.measure("B", "allowed", nan_for_seed_1, undefined_ok=True)
    assert list(np.isnan(allowed)) == [False, True, False]


def test_a_seed_without_dead_units_is_left_out_of_c8_with_a_note(study: object) -> None:
    spec = importlib.util.spec_from_file_location("writeup", Path(__file__).parents[1] / "claims" / "test_writeup.py")
    writeup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writeup)

    class NoDeadUnitsInSeed2:  # the evidence C8 reads, with seed 2's statistics undefined
        seeds = (0, 1, 2, 3)
        profile = TINY

        def check_baseline(self) -> None: ...
        def runs(self, condition: str) -> list: return []

        def measure(self, condition: str, key: str, compute, undefined_ok: bool = False) -> np.ndarray:
            assert undefined_ok
            return np.array([0.2, 0.3, np.nan, 0.25]) if key.startswith("dead-movement") else np.full(4, 90.0)

        def measure_many(self, condition: str, key: str, compute, undefined_ok: bool = False) -> np.ndarray:
            return np.array([0.5, 0.6, np.nan, 0.55]) if key == "dead-mean-norm" else np.full(4, 0.7)

    findings = Findings()
    writeup.test_c8_dead_units_stop_moving_and_shrink(NoDeadUnitsInSeed2(), findings)
    (_, finding), = findings.items
    movement, below = (part.comparisons[0] for part in finding.parts)
    assert (movement.values, movement.seeds) == ((0.2, 0.3, 0.25), (0, 1, 3))
    assert below.seeds == (0, 1, 2, 3)
    assert finding.notes[0] == "Seed 2 is left out of (a): it has no dead units on the test set."
    assert finding.info["mean incoming norm of dead units (weights)"] == (0.5, 0.6, 0.55)
    assert seeds_cell(movement.values, movement.seeds, (0, 1, 2, 3)) == "0.20, 0.30, –, 0.25"


def test_a_comparison_names_values_that_do_not_match_their_seeds() -> None:
    with pytest.raises(ValueError, match=r"'c' has 2 values for seeds \(0, 1, 2\)"):
        Comparison("c", (1.0, 2.0), 0.0, "greater", seeds=(0, 1, 2))


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache whose B runs of TINY have their dense accuracy stored as evidence."""
    root = tmp_path_factory.mktemp("evidence")
    Evidence(TINY, RunCache(root, progress=False)).accuracy("B")
    return root


def damaged_copy(measured: Path, tmp_path: Path, how: str) -> tuple[Evidence, Path]:
    import shutil

    shutil.copytree(measured, tmp_path / "c")
    evidence = Evidence(TINY, RunCache(tmp_path / "c", progress=False))
    files = sorted((tmp_path / "c" / "evidence").glob("B-s*.json"))
    target = files[0]
    text = target.read_text()
    if how == "digit":
        import re

        target.write_text(re.sub(r'"accuracy": (\d)', lambda m: f'"accuracy": {(int(m[1]) + 4) % 10}', text, count=1))
    elif how == "swapped seeds":
        target.write_text(files[1].read_text())
    elif how == "truncated":
        target.write_text(text[: len(text) // 2])
    elif how == "empty":
        target.write_text("")
    elif how == "a list":
        target.write_text("[1, 2]")
    elif how == "retrained":
        # As if the run's weight files had changed since it was measured (a checkpoint more, here; the model
        # loaded is the same, so measuring again gives the same numbers).
        evidence.runs("B")  # loads the runs first, then the record changes under the evidence
        for run in evidence.runs("B"):
            if run.spec.name == target.stem:
                run.record["files"]["checkpoint-epoch099.pt"] = "0" * 64
    return evidence, target


@pytest.mark.parametrize("how", ["digit", "swapped seeds", "truncated", "empty", "a list", "retrained"])
def test_damaged_or_foreign_evidence_is_named_set_aside_and_measured_again(
    measured: Path, tmp_path: Path, how: str
) -> None:
    good = Evidence(TINY, RunCache(measured, progress=False)).accuracy("B")
    evidence, target = damaged_copy(measured, tmp_path, how)
    with pytest.warns(UserWarning, match=rf"evidence file .*{target.name}: .*measuring again"):
        again = evidence.accuracy("B")
    assert list(again) == list(good)
    assert len(list((target.parent / "corrupt").iterdir())) == 1
    assert json.loads(target.read_text())["run"] == target.stem  # rewritten, whole


def test_a_killed_writers_temporary_evidence_file_is_cleaned(measured: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(measured, tmp_path / "c")
    store = tmp_path / "c" / "evidence"
    target = sorted(store.glob("B-s*.json"))[0]
    stale = store / f".{target.name}.x1y2.tmp"
    stale.write_text("half a file")
    Evidence(TINY, RunCache(tmp_path / "c", progress=False)).measure("B", "new-key", lambda run, model: 1.0)
    assert not stale.exists()


def test_a_stored_number_is_measured_again_when_the_code_that_measured_it_changes(
        measured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The accuracy function patched to return 0: a stored 68.50 must not stand for what the code measures now.
    import shutil

    from tdlib.claims import evidence as evidence_module

    shutil.copytree(measured, tmp_path / "c")
    cache = RunCache(tmp_path / "c", progress=False)
    stored = Evidence(TINY, cache).accuracy("B")
    assert all(stored > 0)
    monkeypatch.setattr(evidence_module, "accuracy", lambda model, x, y: 0.0)
    reading = Evidence(TINY, cache, reading=Reading.STORED_ONLY)
    with pytest.raises(NotStored, match="measured by other code than measures it now"):
        reading.accuracy("B")
    assert list(Evidence(TINY, cache).accuracy("B")) == [0.0, 0.0, 0.0]  # measured again, by the patched code
    monkeypatch.undo()
    assert list(Evidence(TINY, cache).accuracy("B")) == list(stored)  # and again by the code of today


def test_a_group_measured_again_returns_none_of_what_other_code_measured(measured: Path, tmp_path: Path) -> None:
    # A measurement whose code changed, measured again with fewer numbers (fewer rounds, a runtime left out):
    # what the old code stored stays in the file but is read neither now nor when the file is read again.
    import shutil

    shutil.copytree(measured, tmp_path / "c")
    cache = RunCache(tmp_path / "c", progress=False)
    first = Evidence(TINY, cache).measure_group("B", "group", lambda run, model: {"a": 1.0, "b": 2.0})
    assert all(values == {"a": 1.0, "b": 2.0} for values in first.values())

    def fewer(run: object, model: object) -> dict[str, float]:
        return {"a": 3.0}

    again = Evidence(TINY, cache).measure_group("B", "group", fewer)
    assert all(values == {"a": 3.0} for values in again.values())
    assert Evidence(TINY, cache, reading=Reading.STORED_ONLY).measure_group("B", "group", fewer) == again


def test_a_group_is_at_hand_stored_or_measurable_here_and_never_by_training_a_run_again(
        measured: Path, tmp_path: Path) -> None:
    import shutil

    from tdlib.claims.archive import export, restore

    shutil.copytree(measured, tmp_path / "c")
    cache = RunCache(tmp_path / "c", progress=False)

    def group(run: object, model: object) -> dict[str, float]:
        return {"a": 1.0}

    def other(run: object, model: object) -> dict[str, float]:
        return {"b": 2.0}

    stored_only = Evidence(TINY, cache, reading=Reading.STORED_ONLY)
    assert Evidence(TINY, cache).group_at_hand("B", "g", group, [0])  # the weights are here to measure it
    assert not stored_only.group_at_hand("B", "g", group, [0])  # which stored-only evidence may not
    Evidence(TINY, cache).measure_group("B", "g", group, seeds=[0])
    assert stored_only.group_at_hand("B", "g", group, [0]) and not stored_only.group_at_hand("B", "g", group)
    export(cache, tmp_path / "archive")
    restore(tmp_path / "archive", fresh := RunCache(tmp_path / "fresh", progress=False))
    archived = Evidence(TINY, fresh)  # may train, but its runs are archived without weights
    assert archived.group_at_hand("B", "g", group, [0])  # stored in the archive
    assert not archived.group_at_hand("B", "o", other, [0])  # measurable only by training the run again


def test_a_value_from_before_identities_is_current_only_for_the_code_of_that_day(
        measured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Format 3 kept no identities: its values count as measured by the code legacy_identities.txt lists.
    import hashlib
    import shutil

    from tdlib.claims import evidence as evidence_module

    shutil.copytree(measured, tmp_path / "c")
    cache = RunCache(tmp_path / "c", progress=False)
    for path in (tmp_path / "c" / "evidence").glob("B-s*.json"):
        data = json.loads(path.read_text())
        del data["sha256"], data["measured_by"]
        data["values"]["accuracy"], data["format"] = 12.5, 3
        data["sha256"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        path.write_text(json.dumps(data))
    assert Evidence._identity(lambda run, model: 0.0) not in evidence_module.LEGACY_IDENTITIES
    monkeypatch.setattr(evidence_module, "LEGACY_IDENTITIES", frozenset())  # as if the code had changed since
    reading = Evidence(TINY, cache, reading=Reading.STORED_ONLY)
    with pytest.raises(NotStored, match="measured by other code"):
        reading.accuracy("B")
    monkeypatch.undo()
    reading = Evidence(TINY, cache, reading=Reading.STORED_ONLY)
    assert list(reading.accuracy("B")) == [12.5, 12.5, 12.5]  # the code of that day reads them as they are


def test_a_forged_archived_number_is_named_once_its_run_is_trained_again(measured: Path, tmp_path: Path) -> None:
    # An archive whose accuracy was edited with its checksum made to match: read as it is while nothing needs the
    # run's weights; once something does, the run is trained again (to the same bits), everything read of it is
    # measured from its weights, and writing the archive names the forged number beside the real one.
    import hashlib
    import shutil

    from tdlib.claims.archive import export, restore

    shutil.copytree(measured, tmp_path / "c")
    export(RunCache(tmp_path / "c", progress=False), tmp_path / "archive")
    real = Evidence(TINY, RunCache(tmp_path / "c", progress=False)).accuracy("B")
    forged_run = sorted((tmp_path / "archive").glob("B-s0-*"))[0]
    data = json.loads((forged_run / "evidence.json").read_text())
    del data["sha256"]
    data["values"]["accuracy"] = 40.6
    data["sha256"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    (forged_run / "evidence.json").write_text(json.dumps(data))

    fresh = RunCache(tmp_path / "fresh", progress=False)
    restore(tmp_path / "archive", fresh)
    assert Evidence(TINY, fresh).accuracy("B")[0] == 40.6  # trusted while nothing trains it again
    with pytest.warns(UserWarning, match=r"trained again to the bits its archive certifies: its stored numbers"):
        Evidence(TINY, fresh).measure("B", "new-key", lambda run, model: 1.0)  # needs the weights
    assert list(Evidence(TINY, fresh).accuracy("B")) == list(real)  # measured from the weights
    moved = export(fresh, tmp_path / "archive")
    assert any(r.startswith(f"{forged_run.name}: 1 measurement(s) of the same weights differ between the archive and "
                            f"the cache (in that order): accuracy: 40.6 and {float(real[0])!r}") for r in moved.refused)
