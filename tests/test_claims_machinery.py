"""The machinery behind the claims suite: seeds, soundness checks, judging across claims, the floor."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tdlib.claim import Claim, Finding, Findings, check_sound, claim
from tdlib.evidence import BrokenEvidence, Evidence
from tdlib.profiles import PROFILES, Profile, parse_seeds
from tdlib.runs import RunCache
from tdlib.spec import DataSpec
from tdlib.stats import Comparison, Part, Verdict

TINY = Profile("tiny", epochs=1, seeds=(0, 1, 2), batch_size=100, data=DataSpec(300, 300, 0), accuracy_floor=0.0)
C = Claim("C0", "quote", "rule", ("B",))


def test_parse_seeds() -> None:
    assert parse_seeds("5") == (0, 1, 2, 3, 4)
    assert parse_seeds("0,3,7") == (0, 3, 7)
    for bad in ("", "x", "0,0", "-1,2", "0"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


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
    with pytest.raises(BrokenEvidence, match="2 values for 3 seeds"):
        check_sound(C, short, seeds=3)
    check_sound(C, Finding(short.parts, notes=("seed 2 has no dead units",)), seeds=3)


def test_findings_are_judged_together_and_combined() -> None:
    findings = Findings()
    strong = Comparison("strong", (5.0, 5.1, 4.9, 5.2), 0.0, "greater")
    against = Comparison("against", (-5.0, -5.1, -4.9, -5.2), 0.0, "greater")
    vague = Comparison("vague", (1.0, -1.0, 0.5, -0.4), 0.0, "greater")
    findings.add(C, Finding([Part("a", (strong,)), Part("b", (strong, vague))]))
    findings.add(Claim("C9", "q", "r", ("B",)), Finding([Part("any", (against, strong), how="any")]))
    first, second = findings.judge()
    assert [p.verdict for p in first.parts] == [Verdict.SUPPORTED, Verdict.INCONCLUSIVE]
    assert first.verdict is Verdict.INCONCLUSIVE
    assert second.verdict is Verdict.SUPPORTED
    assert second.parts[0].judgements[0].verdict is Verdict.REFUTED


def test_a_claim_test_fails_when_the_baseline_did_not_learn(tmp_path: Path) -> None:
    strict = Profile("strict", 1, (0,), 100, DataSpec(300, 300, 0), accuracy_floor=0.99)
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
