"""Verdicts by training length: evidence seen at a checkpoint is that checkpoint's, under its own keys,
and the claims on B are measured at every mark a run reaches (30 tiny epochs: marks 15 and 30)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

from tdlib import by_length
from tdlib.claim import Claim, Comparison, Finding, Findings, Part, values
from tdlib.evidence import Evidence
from tdlib.metrics import accuracy
from tdlib.profiles import Profile
from tdlib.runs import RunCache
from tdlib.spec import DataSpec

TINY = Profile("tiny", epochs=30, seeds=(0, 1, 2), batch_size=100, data=DataSpec(300, 300, 0), accuracy_floor=0.1)
LEARNS = Claim("Y1", "q", "B learns", ("B",))
SMALL = Claim("Y2", "q", "more small weights at the end than at a tenth", ("B",))


def learns(ev: Evidence) -> Finding:
    return Finding([Part("learns", (Comparison("B dense", values(ev.accuracy("B")), 20.0, "greater", "%"),))])


def small_weights(ev: Evidence) -> Finding:
    late, early = ev.small_weights("B", ev.profile.epochs), ev.small_weights("B", ev.profile.tenth)
    return Finding([Part("more", (Comparison("B: end - tenth", values(late - early), 0.0, "greater"),))])


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
    findings = Findings()
    for claim_, fn in ((LEARNS, learns), (SMALL, small_weights)):
        findings.add(claim_, fn(ev))
    results = findings.judge([LEARNS, SMALL]).results
    points = by_length.measure(results, {"Y1": learns, "Y2": small_weights}, ev)
    assert {k: [p.epoch for p in v] for k, v in points.items()} == {
        ("Y1", "learns", "B dense"): [15, 30], ("Y2", "more", "B: end - tenth"): [15, 30]}
    last = points[("Y1", "learns", "B dense")][-1]
    assert last.mean == pytest.approx(float(np.mean(ev.accuracy("B")))) and last.n == 3
    lines = by_length.markdown(points, results, ev)
    assert lines[0] == "## Verdicts by training length" and any("| Y2 more | B: end - tenth |" in ln for ln in lines)
    by_length.figure(points, results, tmp_path / "by-length.png")
    assert (tmp_path / "by-length.png").stat().st_size > 1000


def test_the_changes_name_each_comparison_that_moved_against_its_threshold() -> None:
    """Three comparisons with the threshold 0: one whose mean crosses it, one whose interval leaves it
    (the mean on the same side), one that keeps its place; the summary names the first two only."""
    names = ("crosses", "narrows", "stays")
    claim_ = Claim("Y3", "q", "three comparisons on B", ("B",))
    findings = Findings()
    findings.add(claim_, Finding([Part("p", tuple(Comparison(n, (1.0, 2.0, 3.0), 0.0, "greater") for n in names))]))
    results = findings.judge([claim_]).results
    P = by_length.Point
    points = {
        ("Y3", "p", "crosses"): [P(15, 5, -1.0, -2.0, 0.5), P(100, 5, 1.5, 0.5, 2.5)],
        ("Y3", "p", "narrows"): [P(15, 5, 1.0, -0.5, 2.5), P(30, 5, 1.0, 0.2, 1.8), P(100, 5, 1.2, 0.4, 2.0)],
        ("Y3", "p", "stays"): [P(15, 5, 2.0, 1.0, 3.0), P(100, 5, 3.0, 2.0, 4.0)],
    }
    lines = by_length.changes(points, results)
    assert len(lines) == 3
    assert lines[0].startswith("Y3 p, crosses (mean > 0): -1.00 [-2.00, 0.50] at epoch 15, 1.50 [0.50, 2.50] at "
                               "epoch 100; its mean crossed the threshold")
    assert lines[0].endswith("from across the threshold to above it.")
    assert "narrows" in lines[1] and "mean stayed on the same side" in lines[1] and "from across" in lines[1]
    assert lines[2] == ("The 1 other comparison kept the side of the mean and the place of the interval against "
                        "the threshold.")
    only_stays = {k: v for k, v in points.items() if k[2] == "stays"}
    assert by_length.changes(only_stays, results) == [
        "The one comparison kept the side of the mean and the place of the interval against the threshold."]
    assert by_length.changes({}, results) == []


def test_the_limits_of_a_100_epoch_run_say_what_changed_from_the_first_mark(
        study: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    P = by_length.Point
    claim_ = Claim("Y4", "q", "one comparison on B", ("B",))
    findings = Findings()
    findings.add(claim_, Finding([Part("p", (Comparison("c", (1.0, 2.0, 3.0), 0.0, "greater"),))]))
    results = findings.judge([claim_]).results
    points = {("Y4", "p", "c"): [P(15, 5, -1.0, -2.0, 0.5), P(100, 5, 1.5, 0.5, 2.5)]}
    monkeypatch.setattr(study.by_length, "measure", lambda *args: points)

    def bullet(epochs: int) -> list[str]:
        context = SimpleNamespace(ev=SimpleNamespace(profile=SimpleNamespace(epochs=epochs)), results=results,
                                  functions={})
        return study._training_length(context)

    long = bullet(100)
    assert long[0].startswith("- **Training length.** 100 epochs, the writeup's. From epoch 15 to 100,")
    assert long[1:] == [f"  - {line}" for line in by_length.changes(points, results)] and "crossed" in long[1]
    (short,) = bullet(15)
    assert short.startswith("- **Training length.** 15 epochs against the writeup's 100")
