"""Verdicts by training length: evidence seen at a checkpoint is that checkpoint's, under its own keys,
and the claims on B are measured at every mark a run reaches (30 tiny epochs: marks 15 and 30)."""

from __future__ import annotations

from pathlib import Path

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
