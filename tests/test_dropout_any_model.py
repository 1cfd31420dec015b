"""Targeted dropout on convolutions and on every layer of any ``nn.Module``.

A convolution's row is one output filter's kernel weights and its unit a whole filter; each is checked
against a reference written from that definition alone, on float32 (the fused CPU path) and float64 (plain
torch), and the unit level's in-layer masking against the convolution of the masked weight and bias.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import parametrize

from tdlib.dropout import TargetedDropout, add_targeted_dropout, add_targeted_dropout_to, remove_targeted_dropout

DTYPES = [torch.float32, torch.float64]


def conv(out_channels: int, in_channels: int, kernel: int, seed: int, dtype: torch.dtype = torch.float32,
         dims: int = 2, groups: int = 1) -> nn.Module:
    """A convolution with nonzero weights from {±1, ±2, ±3}/4 (many |w| ties, no zeros, so a zero in the
    dropped weight always means a drop) and N(0, 1) biases."""
    g = torch.Generator().manual_seed(seed)
    layer = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](in_channels, out_channels, kernel, groups=groups).to(dtype)
    shape = layer.weight.shape
    with torch.no_grad():
        layer.weight.copy_(torch.randint(1, 4, shape, generator=g) * (torch.randint(0, 2, shape, generator=g) * 2 - 1)
                           / 4)
        layer.bias.copy_(torch.randn(out_channels, generator=g))
    return layer


def original(layer: nn.Module, name: str = "weight") -> Tensor:
    return getattr(layer.parametrizations, name).original.detach().clone()


def targeted_per_filter(weight: Tensor, count: int) -> Tensor:
    """Reference: in each filter, the ``count`` first kernel weights in the order (|w|, flat index)."""
    rows = weight.abs().reshape(weight.shape[0], -1).tolist()
    mask = torch.zeros(len(rows), len(rows[0]), dtype=torch.bool)
    for r, row in enumerate(rows):
        mask[r, sorted(range(len(row)), key=lambda j: (row[j], j))[:count]] = True
    return mask.view(weight.shape)


def targeted_filters(weight: Tensor, count: int) -> Tensor:
    """Reference: the ``count`` filters first in the order (L2 norm of the kernel weights, filter)."""
    norms = [float(w.norm()) for w in weight]
    mask = torch.zeros(len(norms), dtype=torch.bool)
    mask[sorted(range(len(norms)), key=lambda i: (norms[i], i))[:count]] = True
    return mask


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=25, deadline=None)
@given(gamma=st.sampled_from([0.1, 0.3, 0.5, 0.9, 1.0]), dims=st.sampled_from([1, 2, 3]),
       groups=st.sampled_from([1, 2]), seed=st.integers(0, 1000))
def test_weight_level_on_a_convolution_drops_exactly_each_filters_smallest(dtype: torch.dtype, gamma: float,
                                                                           dims: int, groups: int, seed: int) -> None:
    """With alpha = 1, the zeros of the weight are exactly each filter's round(gamma * fan_in) smallest |w|."""
    layer = conv(6, 4, 3, seed, dtype, dims, groups)
    add_targeted_dropout(layer, TargetedDropout.constant("weight", gamma, 1.0))
    weight = original(layer)
    expected = targeted_per_filter(weight, round(gamma * weight[0].numel()))
    for _ in range(2):
        seen = layer.weight.detach()
        assert seen.shape == weight.shape and torch.equal(seen == 0, expected)
        assert torch.equal(seen[~expected], weight[~expected])


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_level_on_a_convolution_drops_only_targeted_weights_at_rate_alpha(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = conv(8, 3, 3, seed=1, dtype=dtype)
    add_targeted_dropout(layer, TargetedDropout.constant("weight", 0.5, 0.3))
    targeted = targeted_per_filter(original(layer), round(0.5 * 27))
    drops = 0
    for _ in range(300):
        dropped = layer.weight.detach() == 0
        assert not (dropped & ~targeted).any()
        drops += int(dropped.sum())
    rate = drops / (300 * int(targeted.sum()))
    assert abs(rate - 0.3) < 0.02


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_unit_level_on_a_convolution_silences_whole_targeted_filters(dtype: torch.dtype, dims: int) -> None:
    """A dropped filter's output channel is exactly 0 at every position (its bias goes with it); the others are
    the convolution's own outputs; only the round(gamma * out) lowest-norm filters are ever dropped; the
    output is the convolution of the masked weight and bias, and reading ``layer.weight`` shows the same drops."""
    torch.manual_seed(0)
    layer = conv(10, 3, 3, seed=2, dtype=dtype, dims=dims)
    unit = add_targeted_dropout(layer, TargetedDropout.constant("unit", 0.4, 0.5))
    weight, bias = original(layer), original(layer, "bias")
    targeted = targeted_filters(weight, 4)
    x = torch.randn(2, 3, *[7] * dims, dtype=dtype)
    plain = getattr(F, f"conv{dims}d")
    ever = torch.zeros(10, dtype=torch.bool)
    for _ in range(40):
        out = layer(x)
        dropped = unit.unit_dropped
        assert dropped is not None and not (dropped & ~targeted).any()
        ever |= dropped
        keep = (~dropped).to(dtype)
        shape = (-1, *[1] * (dims + 1))
        assert torch.equal(out[:, dropped], torch.zeros_like(out[:, dropped]))
        torch.testing.assert_close(out, plain(x, weight * keep.view(shape), bias * keep), rtol=0, atol=1e-5)
        assert torch.equal(out[:, ~dropped], plain(x, weight, bias)[:, ~dropped])
    assert torch.equal(ever, targeted)
    seen = layer.weight.detach()  # read outside the layer's forward: the drops of that read
    assert torch.equal(seen.flatten(1).eq(0).all(1), unit.unit_dropped)


class SmallCNN(nn.Module):
    """A CNN for 28 x 28 images: two convolutions, a hidden linear layer and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.hidden = nn.Linear(16 * 5 * 5, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.hidden(self.features(x).flatten(1))))


@pytest.mark.parametrize("level", ["weight", "unit"])
def test_one_call_puts_targeted_dropout_on_every_layer_but_the_excluded(level: str) -> None:
    """Every convolution and linear layer but ``fc`` gets it; the CNN trains (loss falls, gradients reach every
    layer), is the plain CNN in eval mode, and is a plain CNN with its trained weights once it is removed."""
    torch.manual_seed(0)
    model = SmallCNN()
    added = add_targeted_dropout_to(model, TargetedDropout.constant(level, 0.5, 0.5), exclude=["fc"])
    assert list(added) == ["features.0", "features.3", "hidden"]
    assert not parametrize.is_parametrized(model.fc)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    with torch.no_grad():
        dropped_eval = model(x)
    remove_targeted_dropout(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), dropped_eval)


@pytest.mark.parametrize(("exclude", "message"), [
    (["classifier"], r"exclude names no nn\.Linear or convolution of the model: classifier"),
    (["features.0", "features.3", "hidden", "fc"], r"no nn\.Linear or convolution left"),
])
def test_one_call_refuses_before_changing_anything(exclude: list[str], message: str) -> None:
    model = SmallCNN()
    with pytest.raises(ValueError, match=message):
        add_targeted_dropout_to(model, TargetedDropout.constant("weight", 0.5, 0.5), exclude=exclude)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    add_targeted_dropout(model.hidden, TargetedDropout.constant("unit", 0.5, 0.5))
    with pytest.raises(ValueError, match="already parametrized: hidden"):
        add_targeted_dropout_to(model, TargetedDropout.constant("weight", 0.5, 0.5))
    assert [n for n, m in model.named_modules() if parametrize.is_parametrized(m)] == ["hidden"]
    with pytest.raises(ValueError, match=r"no nn\.Linear or convolution left"):
        add_targeted_dropout_to(nn.Sequential(nn.ReLU()), TargetedDropout.constant("weight", 0.5, 0.5))
