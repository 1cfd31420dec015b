"""What pruning buys: sizes, parameters and accuracy of the three forms of a pruned model."""

from __future__ import annotations

import math

import pytest
import torch

import tdlib.compress.autotune
import tdlib.savings
from tdlib.claims.profiles import PROFILES
from tdlib.compress import OnnxRuntime, compress, dense_flops, paired_seconds
from tdlib.compress.module import compact_layouts
from tdlib.compress.tiled import DEPTH
from tdlib.metrics import masks_for
from tdlib.model import MLP
from tdlib.savings import CHOICE_RUN_TIME, MIN_RUN_TIME, Form, Saving, Timing, saving, speed, speedup_curve, timings

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


class FakeClock:
    """``time.perf_counter`` for :func:`paired_seconds`, advanced only by the runtimes' calls: each adds its
    cost, so every time it measures is exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def runtime(self, name: str, cost: float):
        def call(x: torch.Tensor) -> torch.Tensor:
            self.now += cost
            self.calls.append(name)
            return x

        return call


def test_paired_rounds_time_every_runtime_once_a_round_in_a_shuffled_order(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(tdlib.compress.autotune.time, "perf_counter", lambda: clock.now)
    runtimes = {"a": clock.runtime("a", 0.001), "b": clock.runtime("b", 0.004), "c": clock.runtime("c", 0.002)}
    before = torch.get_num_threads()
    times = paired_seconds(runtimes, torch.zeros(1), threads=1, seconds=0.16, rounds=8)
    assert torch.get_num_threads() == before
    assert {name: pytest.approx(t, rel=1e-9) for name, t in times.items()} == {
        "a": (0.001,) * 8, "b": (0.004,) * 8, "c": (0.002,) * 8}
    # after four calls each to size the blocks, a warm-up round and eight timed ones, blocks of about 20 ms
    calls, size = clock.calls[12:], {"a": 20, "b": 5, "c": 10}
    blocks, i = [], 0
    while i < len(calls):
        blocks.append(calls[i])
        assert calls[i:i + size[calls[i]]] == [calls[i]] * size[calls[i]]
        i += size[calls[i]]
    assert len(blocks) == 27 and all(sorted(blocks[i:i + 3]) == ["a", "b", "c"] for i in range(0, 27, 3))
    orders = {tuple(blocks[i:i + 3]) for i in range(0, 27, 3)}
    assert len({(o * 2)[(o * 2).index("a") + 1] for o in orders}) == 2  # "a" follows no single runtime each round
    again = FakeClock()
    monkeypatch.setattr(tdlib.compress.autotune.time, "perf_counter", lambda: again.now)
    paired_seconds({n: again.runtime(n, c) for n, c in (("a", 0.001), ("b", 0.004), ("c", 0.002))},
                   torch.zeros(1), threads=1, seconds=0.16, rounds=8)
    assert again.calls == clock.calls  # the order is drawn from a seed: a measurement can be repeated


def test_a_speed_up_is_the_ratio_of_the_fastest_rounds_and_its_spread_the_rounds_ratios_quartiles() -> None:
    form = Form(flop_ratio=2.0, layouts=("csr", "dense"), fused=True, tiled=False)
    timing = Timing(1, {"module": (4.0, 8.0, 6.0, 100.0, 5.0), "control": (2.0, 2.0, 2.0, 2.0, 3.0),
                        "compressed": (1.0, 2.0, 1.0, 50.0, 0.5)}, form)
    assert timing.fastest("module") == 4.0 and timing.fastest("compressed") == 0.5
    assert timing.speedup("module") == 8.0  # 4.0 / 0.5: each runtime's own fastest round, not a paired one
    assert timing.spread("module") == (4.0, 6.0)  # ratios 4, 4, 6, 2, 10: the slow 4th round only widens it
    assert timing.speedup("control") == 4.0 and timing.spread("control") == (1.0, 2.0)
    assert timing.fastest_dense == "control"
    assert Timing(1, {"module": (3.0,), "compressed": (1.5,)}, form).spread("module") == (2.0, 2.0)
    assert form.short == "fused" and Form(1.0, ("csr", "dense"), False, False).short == "CD"
    model = small_model()
    aligned = tdlib.savings.tiled(compress(model, {}, "dense"))  # a batch of one: the fused chain's kernel
    assert Form.of(model, aligned, 1).short == "fused" and Form.of(model, aligned, 2).short == "tiled"


def test_pruned_models_are_timed_against_every_dense_runtime_in_the_same_rounds() -> None:
    pytest.importorskip("onnxruntime")
    model = small_model()
    images = torch.rand(40, 60)
    pruned = {f"{k}": compress(model, masks_for(model, "unit", k), "dense") for k in (50, 90)}
    measured = timings(model, pruned, 8, images, seconds=QUICK * 10, rounds=3)
    assert set(measured) == {"50", "90"}
    for k, timing in measured.items():
        assert set(timing.seconds) == {"module", "onnxruntime", "control", "compressed"}
        assert {len(t) for t in timing.seconds.values()} == {3} and min(map(min, timing.seconds.values())) > 0
        assert timing.form.flop_ratio == dense_flops(model) / pruned[k].flops() and len(timing.form.layouts) == 3
    assert measured["50"].seconds["module"] == measured["90"].seconds["module"]  # one series for both
    assert measured["50"].seconds["compressed"] != measured["90"].seconds["compressed"]


def test_onnx_runtime_runs_the_compressed_network() -> None:
    pytest.importorskip("onnxruntime")
    model = small_model()
    small = compress(model, masks_for(model, "weight", 80), "dense")
    x = torch.rand(5, 60)
    with torch.no_grad():
        torch.testing.assert_close(OnnxRuntime(small, threads=1)(x), small(x))


def test_without_onnx_runtime_the_other_dense_runtimes_are_timed(monkeypatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(tdlib.savings.importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else find_spec(name, *args))
    model = small_model()
    measured = timings(model, {"": compress(model, masks_for(model, "unit", 50), "dense")}, 2, torch.rand(4, 60),
                       seconds=QUICK, rounds=2)[""]
    assert set(measured.seconds) == {"module", "control", "compressed"}
    assert measured.fastest_dense in ("module", "control")


@pytest.mark.parametrize("form", ["layers", "fused", "columns", "tiled", "tiled by columns"])
def test_a_pruned_model_can_run_in_the_controls_form(form: str) -> None:
    model = small_model()
    control = compress(model, {}, "dense")
    like = {"layers": control.with_layouts(["csr", "dense", "csr"]), "fused": control.fuse(["dense", "csr", "dense"]),
            "columns": control.fuse(["dense", "dense", "csr"], sparse_inputs=True),
            "tiled": tdlib.savings.tiled(control, ["dense", "csr", "dense"], depth=0),
            "tiled by columns": tdlib.savings.tiled(control, ["dense", "csr", "dense"], sparse_inputs=True)}[form]
    small = compress(model, masks_for(model, "unit", 50), "dense")
    same = tdlib.savings._in_form_of(small, like)
    assert (type(same), same.layouts, same.fused, same.sparse_inputs, getattr(same, "depth", None)) == (
        type(like), like.layouts, like.fused, like.sparse_inputs, getattr(like, "depth", None))
    assert same.linears[0] is small.linears[0]


def test_the_fastest_form_is_picked_by_paired_rounds_among_distinct_candidates(monkeypatch) -> None:
    model = small_model()
    small = compress(model, masks_for(model, "weight", 90), "dense")
    like = compress(model, {}, "dense").with_layouts(["dense", "csr", "dense"])  # a form no other candidate has
    offered: dict[str, object] = {}

    def paired(forms, x, threads, seconds, rounds):  # the control's form measures fastest
        offered.update(forms)
        return {name: (1.0,) if f.layouts == like.layouts and not f.fused else (2.0,) for name, f in forms.items()}

    monkeypatch.setattr(tdlib.savings, "paired_seconds", paired)
    chosen = tdlib.savings.fastest_form(small, 8, sample=torch.rand(20, 60), seconds=QUICK, also=[like])
    assert (chosen.layouts, chosen.fused) == (like.layouts, False) and chosen.linears[0] is small.linears[0]
    forms = [(type(f).__name__, tuple(f.layouts), f.fused, f.sparse_inputs, getattr(f, "depth", None))
             for f in offered.values()]
    assert len(set(forms)) == len(forms)  # each form timed once
    compact = compact_layouts(small.linears)
    assert compact[0] == "csr" and {("CompressedMLP", compact, True, False, None)} | {
        ("TiledMLP", layouts, True, False, depth) for layouts in (compact, ("dense",) * 3) for depth in (DEPTH, 0)
    } <= set(forms)
    # A batch of one: each chain in its compact layouts also as a tiled model (aligned), no depth but one
    offered.clear()
    unit = compress(model, masks_for(model, "unit", 50), "dense")
    tdlib.savings.fastest_form(unit, 1, sample=torch.rand(20, 60), seconds=QUICK, also=[like])
    compact = compact_layouts(unit.linears)
    forms = {(type(f).__name__, tuple(f.layouts), f.sparse_inputs, getattr(f, "depth", None)) for f in offered.values()}
    assert {(kind, compact, by_columns, depth) for kind, depth in (("CompressedMLP", None), ("TiledMLP", DEPTH))
            for by_columns in (False, True)} <= forms and not any(f[3] == 0 for f in forms)


def test_the_word_on_speed_ups_beyond_their_flop_ratio_leaves_the_control_out() -> None:
    """A pruned model whose speed-up over the fastest dense runtime beats its FLOP ratio in three rounds of
    four is named; the control, set against the same network, is not, though its ratio is over 1 too."""
    from tdlib.claims.savings_report import PrunedModel, Savings, _above_flop_ratio

    def timing(flop_ratio: float, ratio: float) -> Timing:
        seconds = {"compressed": (1.0,) * 4, "module": (9.0,) * 4, "control": (ratio,) * 4}
        return Timing(256, seconds, Form(flop_ratio, ("dense",), fused=True, tiled=True))

    seed = Saving({}, {}, {}, {"dense": 2_400_000, "compressed": 240_000}, ())

    def model(k: float, flop_ratio: float, ratio: float) -> PrunedModel:
        return PrunedModel("B", "weight", k, (seed,), (timing(flop_ratio, ratio),))

    def words(*models: PrunedModel) -> str:
        return " ".join(_above_flop_ratio(Savings(models, {}, 0.0)))

    control, beyond, within = model(0, 1.0, 1.02), model(90, 2.0, 2.5), model(80, 2.0, 1.9)
    assert words(control, within) == ""
    assert "B, weights (per layer) 90% at batch 256 (2.5x against 2.0x)" in words(control, beyond, within)
    assert "control" not in words(control, beyond, within)
