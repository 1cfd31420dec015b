"""The plan's estimate: the epochs each run has left, the seconds per epoch the cache's records show, and
the wall time on parallel workers. Built from hand-written records: nothing is trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tdlib.claims.profiles import PROFILES
from tdlib.plan import epochs_left, makespan, parallel_runs, plan
from tdlib.runs import RECORD, RESUME, STATE_MAGIC


def record(cache: Path, spec, wall_seconds: float, resumed_from: int = 0) -> None:
    (cache / spec.name).mkdir(parents=True)
    (cache / spec.name / RECORD).write_text(json.dumps(
        {"name": spec.name, "spec": spec.to_json(), "wall_seconds": wall_seconds, "resumed_from_epoch": resumed_from}))


def test_makespan_gives_each_run_longest_first_to_the_worker_free_first() -> None:
    assert makespan([], 2) == 0.0
    assert makespan([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0  # {3, 2, 2} and {3, 2}
    assert makespan([5.0, 1.0], 8) == 5.0 and makespan([5.0, 1.0], 1) == 6.0
    assert (parallel_runs("local", 2), parallel_runs("inprocess", 2), parallel_runs("submitit", 4)) == (2, 1, 1)


def test_a_run_that_extends_or_resumes_has_only_its_remaining_epochs_left(tmp_path: Path) -> None:
    default, paper = PROFILES["default"], PROFILES["paper"]
    d100, twr100 = paper.spec("D", 0), paper.spec("TWR", 0)
    assert epochs_left(d100, tmp_path) == 100
    for name in ("D", "TWR", "B"):
        record(tmp_path, default.spec(name, 0), 15 * 20.0)
    assert epochs_left(d100, tmp_path) == 85  # continues the cached 15-epoch run
    assert epochs_left(twr100, tmp_path) == 100  # a ramp over the whole run: from scratch
    assert epochs_left(paper.spec("B", 0), tmp_path) == 100  # B at 100 wants epoch 5 (a tenth of 50), not kept at 15
    (tmp_path / twr100.name).mkdir()
    header = {"epoch": 40, "key": twr100.key(), "sha256": "", "checkpoints": {}}
    (tmp_path / twr100.name / RESUME).write_bytes(STATE_MAGIC + json.dumps(header).encode() + b"\n" + b"payload")
    assert epochs_left(twr100, tmp_path) == 60


def test_the_estimate_uses_the_unslowed_rate_of_the_condition_on_the_same_data(tmp_path: Path) -> None:
    """D's 15-epoch runs took 20 s an epoch, but two of four were slowed to 60 by a neighbour: the lower
    quartile ignores them, the median would not. One of them resumed at epoch 10 and trained 5 epochs in
    100 s. The paper's D runs each have 85 epochs left; B0, with no record on the full data, takes D's rate."""
    default, paper = PROFILES["default"], PROFILES["paper"]
    record(tmp_path, default.spec("D", 0), 15 * 20.0)
    record(tmp_path, default.spec("D", 1), 15 * 60.0)
    record(tmp_path, default.spec("D", 3), 15 * 60.0)
    record(tmp_path, default.spec("D", 2), 5 * 20.0, resumed_from=10)
    record(tmp_path, PROFILES["smoke"].spec("B0", 0), 2 * 1.0)  # other data: not a rate for the full set
    specs = [paper.spec("D", s) for s in (0, 1)] + [paper.spec("B0", 0)]
    estimate = plan(specs, tmp_path, workers=2)
    assert (len(estimate.cached), len(estimate.to_train)) == (0, 3)
    assert estimate.seconds == pytest.approx(max(100 * 20.0, 2 * 85 * 20.0))
    assert plan(specs, tmp_path, workers=2, engine="submitit").seconds == pytest.approx(2 * 85 * 20.0 + 100 * 20.0)
    assert plan(specs, tmp_path, workers=1).seconds == pytest.approx(2 * 85 * 20.0 + 100 * 20.0)


def test_training_along_the_sequence_says_what_each_condition_has_done_and_has_left(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tdlib.claims.cli import train as train_profile

    paper = PROFILES["paper"]
    for condition, seeds in (("B", (0, 1, 2, 3, 4, 100, 101)), ("TWR", (0, 1, 2, 3, 4))):
        for seed in seeds:
            record(tmp_path, paper.spec(condition, seed), 1800.0)
    train_profile(["paper", "--sequence", "--conditions", "B,TWR", "--cache", str(tmp_path), "--plan"])
    out = capsys.readouterr().out
    assert "paper: 40 runs, 12 cached, 28 to train" in out
    assert "sequence: B 7 of 20 done (102-114 left); TWR 5 of 20 done (100-114 left)" in out
    train_profile(["paper", "--sequence", "6", "--conditions", "TWR,B", "--cache", str(tmp_path), "--plan"])
    assert "sequence: TWR 5 of 6 done (100 left); B 6 of 6 done" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_profile(["paper", "--sequence", "6", "--seeds", "3", "--plan"])
    assert "--seeds and --sequence name the seeds two ways" in capsys.readouterr().err
