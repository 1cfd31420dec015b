"""What pruning buys: sizes, parameters and accuracy of the three forms of a pruned model."""

from __future__ import annotations

import math

import torch

import tdlib.savings
from tdlib.claims.profiles import PROFILES
from tdlib.compress import compress
from tdlib.metrics import masks_for
from tdlib.model import MLP
from tdlib.savings import CHOICE_RUN_TIME, MIN_RUN_TIME, saving, speed, speedup_curve

QUICK = 0.002  # seconds behind a timing: these tests check what is measured, not how fast it runs


def small_model() -> MLP:
    torch.manual_seed(0)
    return MLP((120, 80), in_features=60, n_classes=5).eval()


def test_a_pruned_model_is_as_accurate_and_smaller_compressed_than_masked_or_dense() -> None:
    model = small_model().train()
    x, y = torch.randn(300, 60), torch.randint(0, 5, (300,))
    result = saving(model, masks_for(model, "weight", 95), x, y, batches=(1, 8), min_run_time=QUICK)
    assert model.training  # measured in eval mode, handed back as it came
    assert result.accuracy["masked"] == result.accuracy["compressed"]
    assert result.differing_predictions == {"dense": 0, "csr": 0, "fused": 0}
    assert result.kib["masked"] > 1.5 * result.kib["dense"]  # torch.prune keeps weight_orig and a mask
    assert result.kib["compressed"] < result.kib["dense"] / 4
    dense = 60 * 120 + 120 + 120 * 80 + 80 + 80 * 5 + 5
    assert result.parameters["dense"] == dense
    kept = sum(int(m.sum()) for m in masks_for(model, "weight", 95).values())
    assert result.parameters["compressed"] <= kept + 80 * 5 + 120 + 80 + 5
    assert [s.batch for s in result.speeds] == [1, 8]
    assert all(len(s.layouts) == 3 for s in result.speeds)


def test_unit_pruning_flop_ratio_is_what_the_shapes_say() -> None:
    model = small_model()
    curve = speedup_curve(model, "unit", [50, 75], batch=4, min_run_time=QUICK)
    dense = 60 * 120 + 120 * 80 + 80 * 5
    assert curve[50].flop_ratio == dense / (60 * 60 + 60 * 40 + 40 * 5)
    assert curve[75].flop_ratio == dense / (60 * 30 + 30 * 20 + 20 * 5)
    assert all(len(s.layouts) == 3 for s in curve.values())


def test_nothing_left_to_run_has_an_infinite_flop_ratio() -> None:
    model = small_model()
    everything = speed(model, compress(model, masks_for(model, "unit", 100), "dense"), batch=2, min_run_time=QUICK)
    assert everything.flop_ratio == math.inf and everything.speedup > 0


def test_a_shorter_timing_shortens_every_timing_behind_a_speed_up(monkeypatch) -> None:
    """The smoke profile times for a hundredth of a report's time, the layouts' choice included."""
    asked: list[float] = []
    timed = tdlib.savings.median_seconds

    def spy(fn, x, threads=None, min_run_time=0.05):
        asked.append(min_run_time)
        return timed(fn, x, threads, min_run_time)

    monkeypatch.setattr(tdlib.savings, "median_seconds", spy)
    model = small_model()
    speed(model, compress(model, masks_for(model, "unit", 50), "dense"), batch=1, min_run_time=QUICK, rounds=2)
    choices, rounds = asked[:-4], asked[-4:]
    assert choices and set(choices) == {CHOICE_RUN_TIME * QUICK / MIN_RUN_TIME}
    assert rounds == [QUICK / 2] * 4  # dense and compressed, alternating, in two rounds
    assert PROFILES["smoke"].timing == 0.01 and PROFILES["default"].timing == PROFILES["paper"].timing == 1
    assert "speed-up timing" in PROFILES["smoke"].describe() and "speed-up timing" not in PROFILES["paper"].describe()
