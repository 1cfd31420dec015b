"""The follow-up runner: it follows only what the pilot left open, trains only what open comparisons need,
resumes from the cache to the same decisions, keeps one claim's failure to itself, and gets the same bits
through submitit's local executor as in this process. Smoke-sized runs, two claims, short looks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tdlib.claim import Claim, Comparison, Finding, Findings, Judged, Part, values
from tdlib.evidence import Evidence
from tdlib.followup import follow_up, merged, needed_conditions
from tdlib.profiles import PROFILES
from tdlib.runs import RunCache
from tdlib.sequential import ALPHA_PILOT, FRESH_SEEDS_FROM
from tdlib.stats import Verdict

PILOT = PROFILES["smoke"].with_seeds((0, 1, 2))
LOOKS = (3, 5)

LEARNS = Claim("X1", "q", "B learns: dense accuracy > 50%", ("B",), title="B learns")
PRUNING = Claim("X2", "q", "B0 loses accuracy at weight 50% and at unit 50%", ("B0",),
                parts=("(a) B0 loses at weight 50%", "(b) B0 loses at unit 50%"))


def learns(ev: Evidence) -> Finding:
    return Finding([Part("B learns", (Comparison("B dense", values(ev.accuracy("B")), 50.0, "greater", "%"),))])


def loses(ev: Evidence, kind: str) -> Comparison:
    return Comparison(f"B0: dense - {kind} 50%", values(ev.accuracy("B0") - ev.pruned("B0", kind, 50)), 0.0, "greater")


def pruning(ev: Evidence) -> Finding:
    return Finding([Part("(a) B0 loses at weight 50%", (loses(ev, "weight"),)),
                    Part("(b) B0 loses at unit 50%", (loses(ev, "unit"),))])


def mixed(ev: Evidence) -> Finding:
    unit = ev.pruned("B", "unit", 50) - ev.pruned("B0", "unit", 50)
    return Finding([Part("(a) B0 loses at weight 50%", (loses(ev, "weight"),)),
                    Part("(b) B - B0 at unit 50%", (Comparison("B - B0, unit 50%", values(unit), 0.0, "greater"),))])


FUNCTIONS = {"X1": learns, "X2": pruning}


def judge_pilot(cache: Path) -> tuple[Judged, Evidence]:
    ev = Evidence(PILOT, RunCache(cache, progress=False))
    findings = Findings()
    for claim_, fn in ((LEARNS, learns), (PRUNING, pruning)):
        findings.add(claim_, fn(ev))
    return findings.judge([LEARNS, PRUNING], alpha=ALPHA_PILOT), ev


@pytest.fixture(scope="module")
def pilot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("pilot")
    judge_pilot(cache)
    return cache


def fresh_runs(cache: Path) -> dict[str, str]:
    """The fresh-seed runs in ``cache``, with the digest of each one's model file."""
    return {d.name: json.loads((d / "record.json").read_text())["files"]["model.pt"]
            for d in cache.iterdir() if (d / "record.json").exists() and int(d.name.split("-s")[1].split("-")[0])
            >= FRESH_SEEDS_FROM}


def test_each_comparison_needs_exactly_the_conditions_it_reads(pilot_cache: Path) -> None:
    _, ev = judge_pilot(pilot_cache)
    assert needed_conditions(mixed, ev) == {
        ("(a) B0 loses at weight 50%", "B0: dense - weight 50%"): frozenset({"B0"}),
        ("(b) B - B0 at unit 50%", "B - B0, unit 50%"): frozenset({"B", "B0"}),
    }
    assert needed_conditions(learns, ev) == {("B learns", "B dense"): frozenset({"B"})}


@pytest.fixture(scope="module")
def followed(pilot_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Judged, object]:
    cache = tmp_path_factory.mktemp("inprocess")
    shutil.copytree(pilot_cache, cache, dirs_exist_ok=True)
    pilot, ev = judge_pilot(cache)
    result = follow_up(pilot, FUNCTIONS, ev, engine="inprocess", threads=1, looks=LOOKS, log=lambda _: None,
                       progress=False)
    return cache, pilot, result


def test_only_open_parts_are_followed_and_only_what_they_need_is_trained(followed) -> None:
    cache, pilot, result = followed
    verdicts = {(r.claim.id, p.part.name): p.verdict for r in pilot.results for p in r.parts}
    assert verdicts[("X1", "B learns")] is Verdict.SUPPORTED  # the pilot decides it: 3 seeds, ~75% against 50%
    open_parts = {k for k, v in verdicts.items() if v is Verdict.INCONCLUSIVE}
    assert {(p.claim, p.part) for p in result.parts} == open_parts and open_parts
    assert {name.split("-s")[0] for name in fresh_runs(cache)} == {"B0"}  # B's claim was decided: no fresh B
    assert set(result.runs) == set(fresh_runs(cache))
    for t in result.tracks:
        assert [look.n for look in t.looks] == list(LOOKS[: len(t.looks)])
        assert (t.stopped == "decided") == (t.code != 0)


def test_the_merged_judging_takes_each_followed_parts_verdict(followed) -> None:
    _, pilot, result = followed
    combined = merged(pilot, result)
    assert combined.follow_up is result and combined.alpha == ALPHA_PILOT
    for r in combined.results:
        for p in r.parts:
            outcome = result.part(r.claim.id, p.part.name)
            assert p.verdict is (outcome.verdict if outcome else
                                 next(q.verdict for s in pilot.results for q in s.parts if q.part is p.part))


def test_a_second_call_resumes_to_the_same_decisions_training_nothing(followed) -> None:
    cache, _, result = followed
    before = fresh_runs(cache)
    pilot, ev = judge_pilot(cache)
    again = follow_up(pilot, FUNCTIONS, ev, engine="inprocess", threads=1, looks=LOOKS, log=lambda _: None,
                      progress=False)
    assert fresh_runs(cache) == before
    assert [(t.key, t.looks, t.stopped) for t in again.tracks] == [(t.key, t.looks, t.stopped) for t in result.tracks]
    assert [(p.verdict, p.look, p.status) for p in again.parts] == [(p.verdict, p.look, p.status) for p in result.parts]


def test_a_budget_ends_it_and_says_so(followed) -> None:
    cache, _, result = followed
    pilot, ev = judge_pilot(cache)
    first = len({c for t in result.tracks for c in t.conditions}) * LOOKS[0]
    short = follow_up(pilot, FUNCTIONS, ev, engine="inprocess", threads=1, looks=LOOKS, max_runs=first,
                      log=lambda _: None, progress=False)
    assert short.looks_taken == 1 and short.ended == f"the budget of {first} runs"
    assert all(p.status.startswith("not decided within 3 fresh seeds") or p.status == "decided"
               or p.status == "dropped for futility" for p in short.parts)


def test_a_claim_that_fails_on_fresh_seeds_stops_only_its_own_parts(followed) -> None:
    cache = followed[0]

    def fails_on_fresh_seeds(ev: Evidence) -> Finding:
        if min(ev.seeds) >= FRESH_SEEDS_FROM:
            raise RuntimeError("a bug that only fresh seeds reach")
        return pruning(ev)

    pilot, ev = judge_pilot(cache)
    broken = follow_up(pilot, {**FUNCTIONS, "X2": fails_on_fresh_seeds}, ev, engine="inprocess", threads=1,
                       looks=LOOKS, log=lambda _: None, progress=False)
    assert list(broken.errors) == ["X2"] and "RuntimeError: a bug that only fresh seeds reach" in broken.errors["X2"]
    assert all(p.verdict is Verdict.INCONCLUSIVE and "RuntimeError" in p.status for p in broken.parts
               if p.claim == "X2")


def test_submitit_follows_up_into_a_shared_cache_with_the_same_bits(followed, pilot_cache: Path,
                                                                    tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    cache, _, result = followed
    shutil.copytree(pilot_cache, tmp_path / "cache")
    pilot, ev = judge_pilot(tmp_path / "cache")
    other = follow_up(pilot, FUNCTIONS, ev, engine="submitit", threads=1, looks=LOOKS, log=lambda _: None,
                      progress=False)
    assert fresh_runs(tmp_path / "cache") == fresh_runs(cache)
    assert [(t.key, t.looks) for t in other.tracks] == [(t.key, t.looks) for t in result.tracks]
    assert np.isfinite([look.mean for t in other.tracks for look in t.looks]).all()
