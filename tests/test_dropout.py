"""Targeted dropout (weight and unit level) and the gamma/alpha schedules.

Weight-level tests run on float32 (the fused, compiled CPU path of :mod:`tdlib.fused`) and on float64
(the plain-torch path), since both must drop exactly the same targeted set.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from torch import Tensor, nn
from torch.nn.utils import parametrize

import tdlib.dropout
from tdlib.dropout import (
    TargetedDropout,
    add_targeted_dropout,
    bernoulli_mask,
    remove_targeted_dropout,
    set_progress,
)
from tdlib.schedules import Schedule, constant, paper_alpha, paper_gamma, ramp
from tdlib.selection import smallest_mask

DTYPES = [torch.float32, torch.float64]  # the fused kernel (CPU float32) and the plain-torch path


def linear(out_features: int, in_features: int, seed: int, dtype: torch.dtype = torch.float32,
           tied: bool = False) -> nn.Linear:
    """An ``nn.Linear`` with N(0, 1) weights and biases, or with nonzero weights from {±1, ±2, ±3}/4
    (many |w| ties, no zeros, so a zero in the dropped weight always means a drop)."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(in_features, out_features).to(dtype)
    shape = (out_features, in_features)
    if tied:
        weight = torch.randint(1, 4, shape, generator=g) * (torch.randint(0, 2, shape, generator=g) * 2 - 1) / 4
    else:
        weight = torch.randn(shape, generator=g)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(torch.randn(out_features, generator=g))
    return layer


def original(layer: nn.Linear, name: str = "weight") -> Tensor:
    """The unparametrized parameter behind a parametrized ``layer.<name>``."""
    return getattr(layer.parametrizations, name).original.detach().clone()


def targeted_weights(weight: Tensor, count: int) -> Tensor:
    """Reference: per row, the ``count`` first entries in the order (|w|, column)."""
    mask = torch.zeros(weight.shape, dtype=torch.bool)
    for r, row in enumerate(weight.abs().tolist()):
        mask[r, sorted(range(len(row)), key=lambda j: (row[j], j))[:count]] = True
    return mask


def targeted_units(weight: Tensor, count: int) -> Tensor:
    """Reference: the ``count`` rows first in the order (L2 norm, row)."""
    norms = weight.norm(dim=1).tolist()
    mask = torch.zeros(len(norms), dtype=torch.bool)
    mask[sorted(range(len(norms)), key=lambda i: (norms[i], i))[:count]] = True
    return mask


@pytest.mark.parametrize("level", ["weight", "unit"])
def test_eval_mode_is_the_identity(level: str) -> None:
    """In eval mode the parametrized weight and bias are exactly the originals, pass after pass."""
    layer = linear(6, 10, seed=0)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    add_targeted_dropout(layer, TargetedDropout.constant(level, 1.0, 1.0))  # in training: drop everything
    layer.eval()
    x = torch.randn(3, 10)
    for _ in range(5):
        assert torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
        assert torch.equal(layer(x), F.linear(x, weight, bias))


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_level_drops_only_targeted_weights_at_rate_alpha(dtype: torch.dtype) -> None:
    """Only the round(gamma * in) smallest |w| per row (ties by column) are ever zeroed, kept weights
    are exactly the originals (no rescaling), every targeted weight does get dropped, and the drop
    rate passes a binomial test at alpha but not at a rate 0.03 off."""
    torch.manual_seed(0)
    gamma, alpha, passes = 0.5, 0.3, 400
    layer = linear(6, 15, seed=1, dtype=dtype, tied=True)
    add_targeted_dropout(layer, TargetedDropout.constant("weight", gamma, alpha))
    weight = original(layer)
    targeted = targeted_weights(weight, round(gamma * 15))
    ever_dropped = torch.zeros_like(targeted)
    drops = 0
    for _ in range(passes):
        seen = layer.weight.detach()
        dropped = seen == 0
        assert not (dropped & ~targeted).any()
        assert torch.equal(seen[~dropped], weight[~dropped])
        ever_dropped |= dropped
        drops += int(dropped.sum())
    assert torch.equal(ever_dropped, targeted)
    trials = passes * int(targeted.sum())
    assert binomtest(drops, trials, alpha).pvalue > 1e-3
    assert binomtest(drops, trials, alpha + 0.03).pvalue < 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.1, 0.35, 0.5, 0.9, 1.0])
def test_weight_level_alpha_1_drops_exactly_the_targeted_set(dtype: torch.dtype, gamma: float) -> None:
    """With alpha = 1 the zeros of the weight are exactly the targeted set, ties by column."""
    layer = linear(8, 13, seed=2, dtype=dtype, tied=True)
    add_targeted_dropout(layer, TargetedDropout.constant("weight", gamma, 1.0))
    expected = targeted_weights(original(layer), round(gamma * 13))
    for _ in range(3):
        assert torch.equal(layer.weight.detach() == 0, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_level_targets_exactly_while_training(dtype: torch.dtype) -> None:
    """Over SGD steps (weights drifting, as the warm row band expects) the dropped set with alpha = 1
    is always exactly the current targeted set."""
    torch.manual_seed(0)
    layer = linear(16, 20, seed=3, dtype=dtype)
    add_targeted_dropout(layer, TargetedDropout.constant("weight", 0.4, 1.0))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    x, y = torch.randn(32, 20, dtype=dtype), torch.randn(32, 16, dtype=dtype)
    for _ in range(60):
        expected = targeted_weights(original(layer), 8)
        weight = layer.weight
        assert torch.equal(weight.detach() == 0, expected)
        optimizer.zero_grad()
        F.mse_loss(F.linear(x, weight, layer.bias), y).backward()
        optimizer.step()


def test_unit_level_drops_targeted_units_with_their_bias_at_rate_alpha() -> None:
    """Only the round(gamma * out) lowest-norm units are dropped; a dropped unit's row and bias are zero
    in that pass and its output is exactly 0, other units are untouched; the rate passes a binomial
    test at alpha but not at a rate 0.05 off."""
    torch.manual_seed(0)
    gamma, alpha, passes = 0.5, 0.4, 500
    layer = linear(12, 10, seed=4)
    drop = add_targeted_dropout(layer, TargetedDropout.constant("unit", gamma, alpha))
    weight, bias = original(layer), original(layer, "bias")
    targeted = targeted_units(weight, 6)
    x = torch.randn(5, 10)
    full = F.linear(x, weight, bias)
    drops = 0
    for _ in range(passes):
        out = layer(x)
        dropped = drop.unit_dropped
        assert dropped is not None and not (dropped & ~targeted).any()
        assert torch.equal(out[:, dropped], torch.zeros(5, int(dropped.sum())))
        assert torch.equal(out[:, ~dropped], full[:, ~dropped])
        seen_weight, seen_bias = layer.weight, layer.bias  # a fresh draw, read in F.linear's order
        redrawn = drop.unit_dropped
        assert (seen_weight[redrawn] == 0).all() and (seen_bias[redrawn] == 0).all()
        assert torch.equal(seen_weight[~redrawn], weight[~redrawn])
        assert torch.equal(seen_bias[~redrawn], bias[~redrawn])
        drops += int(dropped.sum()) + int(redrawn.sum())
    trials = 2 * passes * int(targeted.sum())
    assert binomtest(drops, trials, alpha).pvalue > 1e-3
    assert binomtest(drops, trials, alpha + 0.05).pvalue < 1e-3


def train_with_unit_dropout(through_forward: bool = True) -> list[Tensor]:
    """Every parameter and Adam state after each of 8 steps of a 200-256-128-10 network (float32) whose
    hidden layers have unit dropout (gamma 0.5, alpha 0.5), from seed 0: through ``layer(x)``, or if not
    ``through_forward`` through ``F.linear(x, layer.weight, layer.bias)`` (the masked weight and bias)."""
    torch.manual_seed(0)
    layers = [nn.Linear(200, 256), nn.Linear(256, 128), nn.Linear(128, 10)]
    for layer in layers[:2]:
        add_targeted_dropout(layer, TargetedDropout.constant("unit", 0.5, 0.5))
    optimizer = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=1e-2)
    x, y = torch.rand(64, 200), torch.randint(0, 10, (64,))
    seen = []
    for _ in range(8):
        h = x
        for i, layer in enumerate(layers):
            h = layer(h) if through_forward else F.linear(h, layer.weight, layer.bias)
            h = h.relu() if i < 2 else h
        optimizer.zero_grad()
        F.cross_entropy(h, y).backward()
        optimizer.step()
        seen += [p.detach().clone() for layer in layers for p in layer.parameters()]
        seen += [v.clone() for state in optimizer.state.values() for v in state.values()]
    return seen


def test_unit_level_masks_the_output_inside_the_layer_with_the_same_bits() -> None:
    """Inside the layer's forward the unit drop is applied to the output, not by a masked copy of the
    weight. Trained with Adam through ``layer(x)`` or through ``F.linear(x, layer.weight, layer.bias)``
    (the masked weight and bias) from the same seeds, every parameter and optimizer state is the same,
    bit for bit, at every step: a kept unit is computed exactly as before, and a dropped unit's zeros
    can differ at most in sign, which nothing after them can tell apart."""
    masked_output, masked_weight = train_with_unit_dropout(True), train_with_unit_dropout(False)
    assert len(masked_output) == len(masked_weight)
    assert all(torch.equal(a, b) for a, b in zip(masked_output, masked_weight))


def test_unit_level_trains_the_same_bits_as_the_plain_torch_drops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled unit drop (CPU, float32) changes nothing in training: with the plain-torch ranking and
    draws in its place, every parameter and optimizer state is the same, bit for bit, at every step, so
    runs trained before it was compiled stay valid."""
    compiled = train_with_unit_dropout()
    calls = []

    def plain(scores: Tensor, count: int, alpha: float) -> tuple[Tensor, Tensor]:
        calls.append(count)
        dropped = smallest_mask(scores, count) & bernoulli_mask(scores.shape, alpha)
        return dropped, (~dropped).float()

    monkeypatch.setattr(tdlib.dropout, "fused_unit_drop", plain)
    reference = train_with_unit_dropout()
    assert calls == [128, 64] * 8  # each hidden layer, each step
    assert len(compiled) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(compiled, reference))


@pytest.mark.parametrize(("level", "dtype"),
                         [("weight", torch.float32), ("weight", torch.float64), ("unit", torch.float32)])
def test_dropped_weights_get_zero_gradient(level: str, dtype: torch.dtype) -> None:
    """In each step a dropped weight (and, at unit level, a dropped unit's bias) gets gradient 0, while
    kept weights get the ordinary gradient."""
    torch.manual_seed(0)
    layer = linear(9, 11, seed=5, dtype=dtype)
    add_targeted_dropout(layer, TargetedDropout.constant(level, 0.6, 0.5))
    x = torch.randn(7, 11, dtype=dtype)
    any_dropped = False
    for _ in range(20):
        layer.zero_grad()
        weight, bias = layer.weight, layer.bias
        F.linear(x, weight, bias).sum().backward()
        dropped = weight.detach() == 0
        any_dropped |= bool(dropped.any())
        grad = layer.parametrizations.weight.original.grad
        assert (grad[dropped] == 0).all()
        assert torch.allclose(grad[~dropped], x.sum(0).expand_as(grad)[~dropped])
        if level == "unit":
            units = dropped.all(dim=1)
            bias_grad = layer.parametrizations.bias.original.grad
            assert torch.equal(bias_grad, (~units).to(dtype) * 7)
    assert any_dropped


@pytest.mark.parametrize("level", ["weight", "unit"])
@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, 1.0), (1.0, 0.0), (0.0, 0.0), (0.04, 1.0)])
def test_nothing_dropped_without_targets_or_rate(level: str, gamma: float, alpha: float) -> None:
    """gamma = 0 (or a gamma that rounds to 0 targets) or alpha = 0 never drops anything."""
    layer = linear(10, 12, seed=6)
    weight, bias, x = layer.weight.detach().clone(), layer.bias.detach().clone(), torch.randn(4, 12)
    add_targeted_dropout(layer, TargetedDropout.constant(level, gamma, alpha))
    for _ in range(20):
        assert torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
        assert torch.equal(layer(x), F.linear(x, weight, bias))


@pytest.mark.parametrize("level", ["weight", "unit"])
def test_gamma_1_alpha_1_drops_everything(level: str) -> None:
    """gamma = alpha = 1 zeroes every weight; at unit level every bias too, so the output is 0."""
    layer = linear(10, 12, seed=7)
    add_targeted_dropout(layer, TargetedDropout.constant(level, 1.0, 1.0))
    x = torch.randn(4, 12)
    for _ in range(5):
        assert torch.equal(layer.weight, torch.zeros(10, 12))
        expected = torch.zeros(4, 10) if level == "unit" else layer.bias.detach().expand(4, -1)
        assert torch.equal(layer(x), expected)


def test_set_progress_drives_the_gamma_ramp() -> None:
    """With gamma = ramp(0, 0.8, until=0.5) and alpha = 1, every layer targets nothing at progress 0,
    round(0.4 * in) per row at progress 0.25 and round(0.8 * in) from progress 0.5 on."""
    layers = [linear(8, 15, seed=8), linear(6, 8, seed=9)]
    model = nn.Sequential(layers[0], nn.ReLU(), layers[1])
    config = TargetedDropout("weight", ramp(0.0, 0.8, until=0.5), constant(1.0))
    for layer in layers:
        add_targeted_dropout(layer, config)
    for progress, gamma in [(0.0, 0.0), (0.25, 0.4), (0.5, 0.8), (1.0, 0.8), (0.0, 0.0)]:
        set_progress(model, progress)
        for layer in layers:
            n = layer.in_features
            assert torch.equal(layer.weight.detach() == 0, targeted_weights(original(layer), round(gamma * n)))


def test_schedules_at_known_points() -> None:
    """constant, ramp, paper_gamma and paper_alpha at their knots, between them and outside [0, 1]."""
    assert [constant(0.3)(p) for p in (-1.0, 0.0, 0.5, 1.0, 2.0)] == [0.3] * 5
    r = ramp(0.2, 0.6, until=0.5, begin=0.1)
    assert [r(p) for p in (-1.0, 0.0, 0.1, 0.5, 0.7, 1.0, 3.0)] == [0.2, 0.2, 0.2, 0.6, 0.6, 0.6, 0.6]
    assert r(0.3) == pytest.approx(0.4, abs=1e-15)
    g = paper_gamma(0.99)
    assert [g(0.0), g(0.2), g(0.4), g(0.7), g(1.0)] == [0.0, 0.95 * 0.99, 0.99, 0.99, 0.99]
    assert g(0.1) == pytest.approx(0.95 * 0.99 / 2, abs=1e-15)
    assert g(0.3) == pytest.approx((0.95 * 0.99 + 0.99) / 2, abs=1e-15)
    a = paper_alpha(0.99)
    assert [a(0.0), a(0.2), a(0.6), a(1.0)] == [0.0, 0.495, 0.99, 0.99]
    assert a(0.4) == 0.99  # a knot's own value, exactly
    assert [paper_alpha(f / 100)(0.4) for f in range(101)] == [f / 100 for f in range(101)]
    short = paper_gamma(0.5, ramp_end=0.2)
    assert [short(0.1), short(0.2)] == [0.95 * 0.5, 0.5]


@settings(max_examples=60, deadline=None, database=None)
@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(-1, 2), st.floats(-1, 2))
def test_ramp_is_monotone_between_its_ends(start: float, end: float, a: float, b: float, p: float, q: float) -> None:
    """A ramp moves monotonically from ``start`` to ``end`` (up to float rounding between knots) and
    takes exactly its end values at its knots."""
    begin, until = sorted((a, b))
    if until == begin:
        return
    r = ramp(start, end, until=until, begin=begin)
    low, high = sorted((p, q))
    assert (r(low) <= r(high) + 1e-15) if start <= end else (r(low) + 1e-15 >= r(high))
    assert min(start, end) - 1e-15 <= r(p) <= max(start, end) + 1e-15
    assert r(begin) == start and r(until) == end and r(1.0) == end


@pytest.mark.parametrize("name", ["gamma", "alpha"])
@pytest.mark.parametrize("value", [-0.1, 1.1, math.nan, math.inf])
def test_targeted_dropout_constant_rejects_bad_rates(name: str, value: float) -> None:
    """gamma or alpha outside [0, 1], NaN or infinite raises ValueError naming the parameter and value."""
    rates = {"gamma": 0.5, "alpha": 0.5, name: value}
    with pytest.raises(ValueError, match=rf"{name}.*{re.escape(repr(value))}"):
        TargetedDropout.constant("weight", rates["gamma"], rates["alpha"])


def test_bad_configs_and_schedules_raise() -> None:
    """A bad level, a non-schedule, a ramp ending before it begins, and knots that do not rise."""
    with pytest.raises(ValueError, match="level"):
        TargetedDropout.constant("neuron", 0.5, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha must be a Schedule"):
        TargetedDropout("weight", constant(0.5), 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"begin=0\.5, until=0\.2"):
        ramp(0.0, 1.0, until=0.2, begin=0.5)
    with pytest.raises(ValueError, match=r"begin=0\.3, until=0\.3"):
        ramp(0.0, 1.0, until=0.3, begin=0.3)
    with pytest.raises(ValueError, match="ramp until"):
        ramp(0.0, 1.0, until=1.5)
    with pytest.raises(ValueError, match="value"):
        ramp(0.0, 1.2, until=0.5)
    for knots in [((0.5, 0.1), (0.5, 0.2)), ((0.6, 0.1), (0.3, 0.2))]:
        with pytest.raises(ValueError, match=r"'s' must move forward.*0\.3|'s' must move forward.*0\.5"):
            Schedule("s", knots)
    with pytest.raises(ValueError, match="at least one knot"):
        Schedule("s", ())


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (4, 5), (2, 3, 7)])
def test_bernoulli_mask_shape(shape: tuple[int, ...]) -> None:
    mask = bernoulli_mask(shape, 0.5)
    assert mask.shape == shape and mask.dtype == torch.bool


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.99, 1.0])
def test_bernoulli_mask_rate(p: float) -> None:
    """The fraction of True is p (exactly for 0 and 1), in each of the four 16-bit lanes of a random
    word too; a rate 0.01 off is rejected; the same seed gives the same mask."""
    torch.manual_seed(0)
    n = 200_000
    mask = bernoulli_mask((n,), p)
    hits = int(mask.sum())
    if p in (0.0, 1.0):
        assert hits == p * n
        return
    assert binomtest(hits, n, p).pvalue > 1e-3
    assert binomtest(hits, n, p - 0.01).pvalue < 1e-3
    for lane in range(4):
        assert binomtest(int(mask[lane::4].sum()), n // 4, p).pvalue > 1e-3
    torch.manual_seed(0)
    assert torch.equal(bernoulli_mask((n,), p), mask)


@pytest.mark.parametrize("module", [nn.ConvTranspose2d(2, 2, 1), nn.ReLU(), nn.Bilinear(2, 2, 2)])
def test_add_targeted_dropout_needs_a_linear_or_a_convolution(module: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"nn\.Linear or nn\.Conv1d/2d/3d, got"):
        add_targeted_dropout(module, TargetedDropout.constant("weight", 0.5, 0.5))  # type: ignore[arg-type]


@pytest.mark.parametrize("second", ["weight", "unit"])
def test_add_targeted_dropout_twice_raises(second: str) -> None:
    layer = linear(4, 4, seed=0)
    add_targeted_dropout(layer, TargetedDropout.constant("unit", 0.5, 0.5))
    with pytest.raises(ValueError, match="already parametrized"):
        add_targeted_dropout(layer, TargetedDropout.constant(second, 0.5, 0.5))  # type: ignore[arg-type]


def test_remove_targeted_dropout_restores_plain_linears_with_trained_weights() -> None:
    """After training, removal leaves plain ``nn.Linear`` layers holding the trained (undropped)
    weights and biases, which then compute an ordinary forward even in train mode (the unit level's
    output hooks are gone too)."""
    torch.manual_seed(0)
    layers = [linear(8, 6, seed=10), linear(5, 8, seed=11), linear(3, 5, seed=12)]
    model = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.ReLU(), layers[2])
    add_targeted_dropout(layers[0], TargetedDropout.constant("weight", 0.5, 0.5))
    add_targeted_dropout(layers[1], TargetedDropout.constant("unit", 0.5, 1.0))  # units dropped at the last pass
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 6)
    for _ in range(5):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    trained = [(layer.weight.detach().clone() if i == 2 else original(layer),
                original(layer, "bias") if i == 1 else layer.bias.detach().clone()) for i, layer in enumerate(layers)]
    remove_targeted_dropout(model)
    for layer, (weight, bias) in zip(layers, trained):
        assert type(layer) is nn.Linear and not parametrize.is_parametrized(layer)
        assert dict(layer.named_parameters()).keys() == {"weight", "bias"}
        assert isinstance(layer.weight, nn.Parameter)
        assert torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
    h = F.relu(F.linear(F.relu(F.linear(x, *trained[0])), *trained[1]))
    assert torch.equal(model(x), F.linear(h, *trained[2]))
