"""Verdicts by training length: evidence seen at a checkpoint is that checkpoint's, under its own keys,
and the claims on B are measured at every mark a run reaches (30 tiny epochs: marks 15 and 30)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from tdlib.claims import by_length
from tdlib.claims.claim import Claim, Comparison, Finding, Findings, Part, values
from tdlib.claims.evidence import Evidence, NotStored
from tdlib.claims.profiles import PROFILES, Profile
from tdlib.metrics import accuracy
from tdlib.runs import RunCache
from tdlib.spec import DataSpec

TINY = Profile("tiny", epochs=30, seeds=(0, 1, 2), batch_size=100, data=DataSpec(300, 300, 0), accuracy_floor=0.1,
               hidden=PROFILES["smoke"].hidden)
LEARNS = Claim("Y1", "q", "B learns", ("B",))
SMALL = Claim("Y2", "q", "more small weights at the end than at a tenth", ("B",))


def learns(ev: Evidence) -> Finding:
    return Finding([Part("learns", (Comparison("B dense", values(ev.accuracy("B")), 20.0, "greater", "%"),))])


def small_weights(ev: Evidence) -> Finding:
    """As C7 names it: by the epochs it compares, which differ at each mark."""
    end, tenth = ev.profile.epochs, ev.profile.tenth
    late, early = ev.small_weights("B", end), ev.small_weights("B", tenth)
    return Finding([Part("more", (Comparison(f"B: epoch {end} - epoch {tenth}", values(late - early), 0.0,
                                             "greater"),))])


@pytest.fixture(scope="module")
def ev(tmp_path_factory: pytest.TempPathFactory) -> Evidence:
    return Evidence(TINY, RunCache(tmp_path_factory.mktemp("tiny"), progress=False))


def test_evidence_at_an_epoch_is_that_checkpoints_under_its_own_keys(ev: Evidence) -> None:
    at15 = ev.at_epoch(15)
    assert (at15.profile.epochs, at15.profile.tenth, at15.profile.half) == (15, 2, 8)
    x, y = ev.data.test_x, ev.data.test_y
    direct = [100 * accuracy(run.checkpoint(15), x, y) for run in ev.runs("B")]
    assert at15.accuracy("B") == pytest.approx(direct)
    assert not np.allclose(at15.accuracy("B"), ev.accuracy("B"))  # the end's numbers are kept apart
    assert ev.at_epoch(30).accuracy("B") == pytest.approx(ev.accuracy("B"))  # the last mark is the run's end


def test_the_claims_on_b_are_measured_at_every_mark(ev: Evidence, tmp_path: Path) -> None:
    """A comparison whose name changes with the mark is one row, under its judged name; a claim that fails
    at a mark leaves that cell empty and says why; evidence not stored is raised, never an empty cell."""
    fails = Claim("Y3", "q", "fails at 15", ("B",))

    def fails_at_15(ev: Evidence) -> Finding:
        if ev.profile.epochs == 15:
            raise ValueError("no such checkpoint")
        return learns(ev)

    findings = Findings()
    for claim_, fn in ((LEARNS, learns), (SMALL, small_weights), (fails, fails_at_15)):
        findings.add(claim_, fn(ev))
    results = findings.judge([LEARNS, SMALL, fails]).results
    with pytest.warns(UserWarning, match="Y3 at epoch 15: ValueError: no such checkpoint"):
        points = by_length.measure(results, {"Y1": learns, "Y2": small_weights, "Y3": fails_at_15}, ev)
    assert {k: [p.epoch for p in v] for k, v in points.items()} == {
        ("Y1", "learns", "B dense"): [15, 30], ("Y2", "more", "B: epoch 30 - epoch 3"): [15, 30],
        ("Y3", "learns", "B dense"): [30]}
    assert points.failed == ["Y3 at epoch 15: ValueError: no such checkpoint"]
    last = points[("Y1", "learns", "B dense")][-1]
    assert last.mean == pytest.approx(float(np.mean(ev.accuracy("B")))) and last.n == 3
    lines = by_length.markdown(points, results, ev)
    assert lines[0] == "## Verdicts by training length"
    assert any("| Y2 more | B: epoch 30 - epoch 3 | " in ln and "n/a" not in ln for ln in lines)
    assert "Not measured (their cells are n/a): Y3 at epoch 15: ValueError: no such checkpoint." in lines
    by_length.figure(points, results, tmp_path / "by-length.png")
    assert (tmp_path / "by-length.png").stat().st_size > 1000

    def not_stored(ev: Evidence) -> Finding:
        raise NotStored("a checkpoint's measurement is not stored")

    with pytest.raises(NotStored):
        by_length.measure(results, {"Y1": not_stored}, ev)


def _judged(claim_id: str, names: tuple[str, ...], side: str = "greater") -> list:
    claim_ = Claim(claim_id, "q", "comparisons on B", ("B",))
    findings = Findings()
    findings.add(claim_, Finding([Part("p", tuple(Comparison(n, (1.0, 2.0, 3.0), 0.0, side) for n in names))]))
    return findings.judge([claim_]).results


def test_the_changes_name_each_comparison_that_moved_against_its_threshold() -> None:
    """Threshold 0, rule mean > 0: a mean that comes to meet the rule, an interval that leaves the
    threshold (the mean on the same side), a mean that falls to the threshold itself (which does not
    meet a strict rule), two that keep their place, one measured once and one no claim judged."""
    results = _judged("Y3", ("crosses", "narrows", "ties", "stays", "stays below", "once"))
    P = by_length.Point
    points = {
        ("Y3", "p", "crosses"): [P(15, 5, -1.0, -2.0, 0.5), P(100, 5, 1.5, 0.5, 2.5)],
        ("Y3", "p", "narrows"): [P(15, 5, 1.0, -0.5, 2.5), P(30, 5, 1.0, 0.2, 1.8), P(100, 5, 1.2, 0.4, 2.0)],
        ("Y3", "p", "ties"): [P(15, 5, 0.5, -0.5, 1.5), P(100, 5, 0.0, -1.0, 1.0)],
        ("Y3", "p", "stays"): [P(15, 5, 2.0, 1.0, 3.0), P(100, 5, 3.0, 2.0, 4.0)],
        ("Y3", "p", "stays below"): [P(15, 5, -2.0, -3.0, -1.0), P(100, 5, -3.0, -4.0, -2.0)],
        ("Y3", "p", "once"): [P(100, 5, 1.0, 0.5, 1.5)],
        ("Y9", "p", "not judged"): [P(15, 5, 1.0, 0.5, 1.5), P(100, 5, -1.0, -1.5, -0.5)],
    }
    lines = by_length.changes(points, results)
    assert lines[0] == ("Y3 p, crosses (mean > 0): -1.00 [-2.00, 0.50] at epoch 15, 1.50 [0.50, 2.50] at epoch 100; "
                        "its mean now meets the rule, and its interval went from across the threshold to above it.")
    assert lines[1].startswith("Y3 p, narrows (mean > 0): 1.00 [-0.50, 2.50] at epoch 15, 1.20 [0.40, 2.00] at epoch "
                               "100; its mean meets the rule at both, and its interval went from across")
    assert lines[2].endswith("; its mean no longer meets the rule, and its interval stayed across the threshold.")
    assert lines[3:] == [
        "2 comparisons measured at fewer than two marks are left out.",
        "The 2 other comparisons kept the side of the mean and the place of the interval against the threshold."]


def test_a_less_rule_is_met_below_the_threshold_and_the_summary_counts_what_kept_its_place() -> None:
    results = _judged("Y5", ("falls", "stays", "stays too"), side="less")
    P = by_length.Point
    falls = [P(15, 5, 1.0, 0.5, 1.5), P(100, 5, -1.0, -1.5, -0.5)]
    stays = [P(15, 5, -1.0, -1.5, -0.5), P(100, 5, -2.0, -2.5, -1.5)]
    (moved, kept) = by_length.changes({("Y5", "p", "falls"): falls, ("Y5", "p", "stays"): stays}, results)
    assert "(mean < 0)" in moved and "its mean now meets the rule, and its interval went from above" in moved
    assert kept.startswith("The 1 other comparison kept")
    assert by_length.changes({("Y5", "p", "stays"): stays}, results) == [
        "The 1 comparison kept the side of the mean and the place of the interval against the threshold."]
    both = {("Y5", "p", "stays"): stays, ("Y5", "p", "stays too"): stays}
    assert by_length.changes(both, results)[0].startswith("All 2 comparisons kept")
    assert by_length.changes({}, results) == []


def test_the_limits_of_a_100_epoch_run_say_what_changed_from_the_first_mark(
        study: ModuleType) -> None:
    P = by_length.Point
    claim_ = Claim("Y4", "q", "one comparison on B", ("B",))
    findings = Findings()
    findings.add(claim_, Finding([Part("p", (Comparison("c", (1.0, 2.0, 3.0), 0.0, "greater"),))]))
    results = findings.judge([claim_]).results
    points = {("Y4", "p", "c"): [P(15, 5, -1.0, -2.0, 0.5), P(100, 5, 1.5, 0.5, 2.5)]}

    def bullet(epochs: int, partial: bool = False, lengths: dict = points) -> list[str]:
        context = SimpleNamespace(ev=SimpleNamespace(profile=SimpleNamespace(epochs=epochs)), results=results,
                                  lengths=lengths, judged=SimpleNamespace(partial=partial))
        return study._training_length(context)

    long = bullet(100)
    assert long[0].startswith("- **Training length.** 100 epochs, the writeup's. From epoch 15 to 100, the claims "
                              "judged on B alone (the same runs, \"Verdicts by training length\"; means")
    assert long[1:] == [f"  - {line}" for line in by_length.changes(points, results)]
    assert "its mean now meets the rule" in long[1]
    assert "Verdicts by training length" not in bullet(100, partial=True)[0]  # a partial report lacks that section
    assert bullet(150)[0].startswith("- **Training length.** 150 epochs, more than the writeup's 100.")
    (short,) = bullet(15)
    assert short.startswith("- **Training length.** 15 epochs against the writeup's 100")
    assert bullet(100, lengths={}) == ["- **Training length.** 100 epochs, the writeup's."]  # none at two marks
