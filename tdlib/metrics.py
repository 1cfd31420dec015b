"""What a trained network does: accuracy, accuracy under pruning, activation and weight statistics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tdlib.model import MLP
from tdlib.prune import (
    Masks,
    apply_masks,
    random_unit_masks,
    random_weight_masks,
    unit_masks,
    weight_masks,
)
from tdlib.train import evaluate

PruneKind = Literal["weight", "global", "unit", "unit_weights_only", "random_weight", "random_unit"]
PRUNE_KINDS: tuple[PruneKind, ...] = ("weight", "global", "unit", "unit_weights_only", "random_weight", "random_unit")
SWEEP = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99, 99.1)


def accuracy(model: MLP, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on images ``x`` (N, 784) with labels ``y`` (N,)."""
    return evaluate(model, x, y)[1]


def masks_for(model: MLP, kind: PruneKind, k: float, seed: int = 0) -> Masks:
    """The masks of one pruning ``kind`` at ``k``%; the random controls draw from ``seed``."""
    if kind == "weight":
        return weight_masks(model, k, "layer")
    if kind == "global":
        return weight_masks(model, k, "global")
    if kind == "unit":
        return unit_masks(model, k)
    if kind == "unit_weights_only":
        return unit_masks(model, k, keep_bias=True)
    generator = torch.Generator().manual_seed(seed)
    if kind == "random_weight":
        return random_weight_masks(model, k, generator)
    if kind == "random_unit":
        return random_unit_masks(model, k, generator)
    raise ValueError(f"kind must be one of {PRUNE_KINDS}, got {kind!r}")


def pruned_accuracy(model: MLP, kind: PruneKind, k: float, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """Accuracy of ``model`` after pruning ``k``% by ``kind``; ``model`` is left as it was."""
    return accuracy(apply_masks(model, masks_for(model, kind, k, seed)), x, y)


def pruning_sweep(
    model: MLP, kind: PruneKind, x: Tensor, y: Tensor, ks: Iterable[float] = SWEEP, seed: int = 0
) -> dict[float, float]:
    """``{k: accuracy}`` after pruning ``model`` by ``kind`` at each ``k`` of the sweep."""
    return {k: pruned_accuracy(model, kind, k, x, y, seed) for k in ks}


@dataclass(frozen=True)
class ActivationStats:
    """One hidden layer's activations on a data set."""

    units: int
    zero_fraction: float  # of all (input, unit) activations, the fraction exactly 0
    dead_units: int  # units that are 0 on every input
    always_active_units: int  # units that are non-zero on every input

    @property
    def dead_fraction(self) -> float:
        return self.dead_units / self.units


@torch.no_grad()
def activation_stats(model: MLP, x: Tensor, batch_size: int = 10_000) -> list[ActivationStats]:
    """Per hidden layer of ``model`` (in eval mode), statistics of its activations on ``x`` (N, 784)."""
    was_training = model.training
    model.eval()
    zeros: list[Tensor] | None = None  # per layer, (units,) count of inputs on which the unit is 0
    for start in range(0, len(x), batch_size):
        batch_zeros = [(h == 0).sum(0) for h in model.hidden_activations(x[start : start + batch_size])]
        zeros = batch_zeros if zeros is None else [a + b for a, b in zip(zeros, batch_zeros)]
    model.train(was_training)
    assert zeros is not None, "activation_stats needs at least one input"
    return [
        ActivationStats(
            units=len(z),
            zero_fraction=float(z.sum()) / (len(z) * len(x)),
            dead_units=int((z == len(x)).sum()),
            always_active_units=int((z == 0).sum()),
        )
        for z in zeros
    ]


@dataclass(frozen=True)
class WeightStats:
    """One hidden layer's incoming weights."""

    small_fraction: float  # fraction of weights with |w| < eps
    row_norms: Tensor  # (units,) L2 norm of each unit's incoming weights


def weight_stats(model: MLP, eps: float = 1e-3) -> list[WeightStats]:
    """Per hidden layer, the fraction of weights with |w| < ``eps`` and the row norms."""
    return [
        WeightStats(
            small_fraction=float((layer.weight.detach().abs() < eps).float().mean()),
            row_norms=layer.weight.detach().norm(dim=1),
        )
        for layer in model.hidden_layers
    ]


def small_weight_fraction(model: MLP, eps: float = 1e-3) -> float:
    """Over all hidden weights together, the fraction with |w| < ``eps``."""
    weights = torch.cat([layer.weight.detach().abs().reshape(-1) for layer in model.hidden_layers])
    return float((weights < eps).float().mean())
