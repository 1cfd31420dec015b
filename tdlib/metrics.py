"""What a trained network does: accuracy, accuracy under pruning, activation and weight statistics."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tdlib.model import MLP, eval_mode
from tdlib.prune import PRUNE_KINDS, Masks, PruneKind, pruning  # noqa: F401 (PRUNE_KINDS: re-exported)

SWEEP = (0, 25, 50, 60, 70, 80, 90, 95, 97, 99, 99.1)


@torch.no_grad()
def evaluate(model: MLP, x: Tensor, y: Tensor, batch_size: int = 10_000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``x`` (N, 784), ``y`` (N,)."""
    loss, correct = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    return loss / len(y), correct / len(y)


def accuracy(model: MLP, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on images ``x`` (N, 784) with labels ``y`` (N,)."""
    return evaluate(model, x, y)[1]


def masks_for(model: MLP, kind: PruneKind, k: float, seed: int = 0) -> Masks:
    """The masks of one pruning ``kind`` at ``k``%; the random controls draw from ``seed``."""
    return next(masks_at(model, kind, (k,), seed))[1]


@torch.no_grad()
def masked_accuracy(model: MLP, masks: Masks, x: Tensor, y: Tensor) -> float:
    """Accuracy of ``model`` with ``masks`` applied, computed without copying the model."""
    params = {name: torch.where(masks[name], p, 0.0) if name in masks else p for name, p in model.named_parameters()}
    with eval_mode(model):
        logits = torch.func.functional_call(model, params, (x,))
    return int((logits.argmax(1) == y).sum()) / len(y)


def pruned_accuracy(model: MLP, kind: PruneKind, k: float, x: Tensor, y: Tensor, seed: int = 0) -> float:
    """Accuracy of ``model`` after pruning ``k``% by ``kind``; ``model`` is left as it was."""
    return masked_accuracy(model, masks_for(model, kind, k, seed), x, y)


def masks_at(model: MLP, kind: PruneKind, ks: Iterable[float], seed: int = 0) -> Iterator[tuple[float, Masks]]:
    """``(k, masks)`` of one registered pruning ``kind`` at each ``k``, ranking the model once."""
    return pruning(kind).masks_at(model, ks, seed)


def pruning_sweep(
    model: MLP, kind: PruneKind, x: Tensor, y: Tensor, ks: Iterable[float] = SWEEP, seed: int = 0
) -> dict[float, float]:
    """``{k: accuracy}`` after pruning ``model`` by ``kind`` at each ``k``, ranking the model once."""
    return {k: masked_accuracy(model, masks, x, y) for k, masks in masks_at(model, kind, ks, seed)}


@dataclass(frozen=True)
class ActivationStats:
    """One hidden layer's activations on a data set."""

    units: int
    zero_fraction: float  # of all (input, unit) activations, the fraction exactly 0
    dead: Tensor  # (units,) bool: True where the unit is 0 on every input
    always_active_units: int  # units that are non-zero on every input

    @property
    def dead_units(self) -> int:
        return int(self.dead.sum())

    @property
    def dead_fraction(self) -> float:
        return self.dead_units / self.units


@torch.no_grad()
def activation_stats(model: MLP, x: Tensor, batch_size: int = 10_000) -> list[ActivationStats]:
    """Per hidden layer of ``model`` (in eval mode), statistics of its activations on ``x`` (N, 784)."""
    zeros: list[Tensor] | None = None  # per layer, (units,) count of inputs on which the unit is 0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            batch_zeros = [(h == 0).sum(0) for h in model.hidden_activations(x[start : start + batch_size])]
            zeros = batch_zeros if zeros is None else [a + b for a, b in zip(zeros, batch_zeros)]
    assert zeros is not None, "activation_stats needs at least one input"
    return [
        ActivationStats(
            units=len(z),
            zero_fraction=float(z.sum()) / (len(z) * len(x)),
            dead=z == len(x),
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


def incoming(model: MLP) -> list[Tensor]:
    """Per hidden layer, each unit's incoming weights and bias as one row: (units, in + 1)."""
    rows = []
    for layer in model.hidden_layers:
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
        rows.append(torch.cat([layer.weight.detach(), bias.detach().unsqueeze(1)], 1))
    return rows


def small_weight_fraction(model: MLP, eps: float = 1e-3) -> float:
    """Over all hidden weights together, the fraction with |w| < ``eps``."""
    weights = torch.cat([layer.weight.detach().abs().reshape(-1) for layer in model.hidden_layers])
    return float((weights < eps).float().mean())
