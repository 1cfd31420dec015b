"""Targeted dropout as a ``torch.nn.utils.parametrize`` parametrization of an ``nn.Linear`` or a convolution.

The layer stays an ordinary ``nn.Linear`` (or ``nn.Conv1d``/``2d``/``3d``); in training mode the forward pass
sees a weight whose targeted entries were dropped at random. In eval mode the parametrization is the identity.
:func:`add_targeted_dropout` puts it on one layer, :func:`add_targeted_dropout_to` on every such layer of any
``nn.Module``.

- Weight level: in each row of ``weight`` (out, in), the incoming weights of one output unit, the
  ``round(gamma * in)`` entries with the smallest |w| are targeted, and each is zeroed with probability
  ``alpha``, afresh at every forward pass. Kept weights are not rescaled (as in the official code). A
  convolution's row is one output filter's kernel weights, (in / groups) x kernel entries.
- Unit level: the ``round(gamma * out)`` rows with the smallest L2 norm are targeted, and each targeted
  unit is dropped with probability ``alpha``. A dropped unit loses its whole row *and its bias*, so it
  outputs exactly 0 for that step, just as a unit deleted by whole-unit pruning does. A convolution's unit
  is a whole filter: its output channel is 0 at every position.

Ties are broken as in :mod:`tdlib.selection`. At unit level the targeted set is exactly the set of
units that unit pruning at ``k = 100 * gamma`` would remove. At weight level the set is chosen per row,
as in the official code's per-output-unit threshold, whereas post-hoc weight pruning ranks a whole layer.
Drops use 15-bit uniform draws (four per 64-bit random word), so ``alpha`` is applied as
``round(alpha * 2**15) / 2**15``, within 2**-16 of the requested rate.
On the CPU (float32), weight-level dropout runs as one fused, compiled pass per row, and unit-level
dropout ranks and draws in one compiled call (:mod:`tdlib.fused`); elsewhere both run as plain torch. The
targeted sets are exactly the same; at unit level the drops are too, bit for bit, from the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from tdlib.fused import DROP_RESOLUTION, RowBand, compiled_for, fused_unit_drop, fused_weight_drop, uniform15
from tdlib.schedules import Schedule, constant
from tdlib.selection import count_for, smallest_mask, smallest_mask_rows

Level = Literal["weight", "unit"]
# The layers targeted dropout goes on: their weight is (out, in, *kernel), one row per output unit or filter.
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
Layer = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d


@dataclass(frozen=True)
class TargetedDropout:
    """A targeted-dropout configuration: the level and the schedules of ``gamma`` and ``alpha``."""

    level: Level
    gamma: Schedule
    alpha: Schedule

    def __post_init__(self) -> None:
        if self.level not in ("weight", "unit"):
            raise ValueError(f"level must be 'weight' or 'unit', got {self.level!r}")
        for name in ("gamma", "alpha"):
            if not isinstance(getattr(self, name), Schedule):
                raise ValueError(f"{name} must be a Schedule, got {getattr(self, name)!r}")

    @classmethod
    def constant(cls, level: Level, gamma: float, alpha: float) -> TargetedDropout:
        """Fixed ``gamma`` and ``alpha`` throughout training."""
        return cls(level, constant(gamma, "gamma"), constant(alpha, "alpha"))

    @property
    def length_independent(self) -> bool:
        """True if every step's dropout is the same whatever the run's length (no ramp in progress)."""
        return self.gamma.is_constant and self.alpha.is_constant

    def describe(self) -> str:
        return f"{self.level}-level, gamma {self.gamma.describe()}, alpha {self.alpha.describe()}"


def bernoulli_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> Tensor:
    """Boolean tensor of ``shape`` whose entries are True independently with probability ~``p``.

    Uses the global torch generator, so ``torch.manual_seed`` fixes it.
    """
    n = 1
    for size in shape:
        n *= size
    threshold = round(p * DROP_RESOLUTION)
    if threshold >= DROP_RESOLUTION:  # also keeps the int16 comparison below from overflowing
        return torch.ones(shape, dtype=torch.bool, device=device)
    return (uniform15(n, device) < threshold).view(shape)


def _kept(dropped: Tensor, dtype: torch.dtype) -> Tensor:
    """The float keep mask of a bool drop mask.

    Multiplying by a float mask, forward and backward, is several times faster on CPU than
    ``masked_fill`` or a multiplication by a bool tensor.
    """
    return (~dropped).to(dtype)


class _DropMask(nn.Module):
    """One layer's targeted dropout: the schedules and training progress; subclasses say what is dropped."""

    def __init__(self, config: TargetedDropout) -> None:
        super().__init__()
        self.config = config
        self.progress = 0.0

    @property
    def gamma(self) -> float:
        return self.config.gamma(self.progress)

    @property
    def alpha(self) -> float:
        return self.config.alpha(self.progress)

    def forward(self, weight: Tensor) -> Tensor:
        self.reset()
        if not self.training:
            return weight
        count = count_for(self.gamma, self.candidates(weight))
        alpha = self.alpha
        if count == 0 or alpha == 0.0:
            return weight
        return self.drop(weight, count, alpha)

    def reset(self) -> None:
        """Forget the last pass's drops (before a pass that may drop nothing)."""

    def candidates(self, weight: Tensor) -> int:
        """How many entries ``round(gamma * n)`` is taken of: the weights of a row, or the units."""
        raise NotImplementedError

    def drop(self, weight: Tensor, count: int, alpha: float) -> Tensor:
        raise NotImplementedError


class TargetedWeightDropout(_DropMask):
    """Parametrization of ``weight`` (out, in, *kernel): drops targeted small-|w| entries of each row, a row
    being one output unit's incoming weights (a filter's kernel weights, for a convolution)."""

    def __init__(self, config: TargetedDropout) -> None:
        super().__init__(config)
        self.band = RowBand()

    def candidates(self, weight: Tensor) -> int:
        return math.prod(weight.shape[1:])  # a row's entries, without indexing a tensor each step

    def drop(self, weight: Tensor, count: int, alpha: float) -> Tensor:
        rows = weight if weight.dim() == 2 else weight.flatten(1)  # (out, fan_in)
        if compiled_for(rows):
            dropped = fused_weight_drop(rows, self.band, count, alpha)
        else:
            targeted, _ = smallest_mask_rows(rows.detach().abs(), count)
            dropped = rows * _kept(targeted.logical_and_(bernoulli_mask(rows.shape, alpha, rows.device)), rows.dtype)
        return dropped if weight.dim() == 2 else dropped.view_as(weight)


class TargetedUnitDropout(_DropMask):
    """Parametrization of ``weight`` (out, in, *kernel): drops whole targeted low-norm rows (units, or a
    convolution's filters).

    Read directly, ``layer.weight`` is the weight with the dropped rows zeroed. Inside the layer's own
    forward (between the hooks :func:`add_targeted_dropout` registers) the weight and bias pass through
    unchanged and the drop is applied to the layer's output instead, (batch, out) * keep: the same
    numbers without a masked copy of the weight, or a masking pass over its gradient. A kept unit's output
    and gradients are computed exactly as before; a dropped unit's are zeros either way, at most of the
    other sign, which no later sum, ReLU or Adam state can tell apart.
    """

    def __init__(self, config: TargetedDropout) -> None:
        super().__init__(config)
        # (out,) broadcast over a layer's output (..., out), or (out, 1, ..., 1) over a convolution's
        # (..., out, *positions): set by add_targeted_dropout from the layer's weight
        self.unit_shape: tuple[int, ...] = (-1,)
        self.unit_dropped: Tensor | None = None  # (out,) bool, the units dropped at the last pass
        self.unit_kept: Tensor | None = None  # (out,) float, 0.0 where dropped, 1.0 elsewhere
        self.in_layer_forward = False  # set by the layer's hooks
        self.hooks: tuple[RemovableHandle, ...] = ()  # the layer's hooks, removed with the parametrization

    def reset(self) -> None:
        self.unit_dropped = self.unit_kept = None

    def candidates(self, weight: Tensor) -> int:
        return weight.shape[0]

    def drop(self, weight: Tensor, count: int, alpha: float) -> Tensor:
        norms = weight.detach().flatten(1).norm(dim=1)
        if compiled_for(norms):
            self.unit_dropped, self.unit_kept = fused_unit_drop(norms, count, alpha)
        else:
            self.unit_dropped = smallest_mask(norms, count) & bernoulli_mask(norms.shape, alpha, weight.device)
        if self.in_layer_forward:
            return weight
        return weight * self.kept(weight.dtype).view(-1, *[1] * (weight.dim() - 1))

    def kept(self, dtype: torch.dtype) -> Tensor:
        """The keep mask (out,) of the last pass's drops, in ``dtype``."""
        if self.unit_dropped is None:
            raise RuntimeError("no unit drops were drawn in this pass")
        if self.unit_kept is None or self.unit_kept.dtype != dtype:
            self.unit_kept = _kept(self.unit_dropped, dtype)
        return self.unit_kept

    def enter_forward(self, layer: nn.Module, args: tuple) -> None:
        self.in_layer_forward = True

    def leave_forward(self, layer: nn.Module, args: tuple, output: Tensor) -> Tensor:
        """The layer's output, (..., out) or a convolution's (..., out, *positions), the dropped units' zeroed."""
        self.in_layer_forward = False
        if self.unit_dropped is None:
            return output
        return output * self.kept(output.dtype).view(self.unit_shape)


class _UnitBias(nn.Module):
    """Parametrization of ``bias`` (out,): zeroes the biases of the units the weight just dropped.

    ``nn.Linear.forward`` reads ``self.weight`` before ``self.bias`` (``F.linear``'s argument order), so
    the mask it reads was drawn in the same forward pass. Inside the layer's own forward the output is
    masked instead, and the bias passes through.
    """

    def __init__(self, unit: TargetedUnitDropout) -> None:
        super().__init__()
        self.unit = [unit]  # a list, so the weight's parametrization is not registered twice

    def forward(self, bias: Tensor) -> Tensor:
        unit = self.unit[0]
        dropped = unit.unit_dropped
        if not self.training or dropped is None or unit.in_layer_forward:
            return bias
        return bias * unit.kept(bias.dtype)


def add_targeted_dropout(layer: Layer, config: TargetedDropout) -> _DropMask:
    """Register targeted dropout on ``layer`` (in place), an ``nn.Linear`` or ``nn.Conv1d``/``2d``/``3d``, and
    return its parametrization.

    Raises ``ValueError`` for any other layer (a transposed convolution's weight is (in, out, ...), so its
    rows are not its units) or one whose weight is already parametrized.
    """
    if not isinstance(layer, LAYERS):
        raise ValueError(f"targeted dropout needs an nn.Linear or nn.Conv1d/2d/3d, got {type(layer).__name__}")
    if parametrize.is_parametrized(layer, "weight"):
        raise ValueError("this layer's weight is already parametrized")
    if config.level == "weight":
        drop: _DropMask = TargetedWeightDropout(config)
        parametrize.register_parametrization(layer, "weight", drop, unsafe=True)
        return drop
    unit = TargetedUnitDropout(config)
    unit.unit_shape = (-1, *[1] * (layer.weight.dim() - 2))  # a convolution's channels precede its positions
    parametrize.register_parametrization(layer, "weight", unit, unsafe=True)
    if layer.bias is not None:
        parametrize.register_parametrization(layer, "bias", _UnitBias(unit), unsafe=True)
    unit.hooks = (layer.register_forward_pre_hook(unit.enter_forward),
                  layer.register_forward_hook(unit.leave_forward, always_call=True))
    return unit


def add_targeted_dropout_to(model: nn.Module, config: TargetedDropout, exclude: Iterable[str] = ()
                            ) -> dict[str, _DropMask]:
    """Targeted dropout on every ``nn.Linear`` and ``nn.Conv1d``/``2d``/``3d`` of ``model`` (in place), but the
    layers named in ``exclude`` (as ``model.named_modules()`` names them, e.g. ``"fc"`` for a classifier that
    will not be pruned). Returns each layer's parametrization by name.

    Raises ``ValueError``, before changing anything, for a name in ``exclude`` that is no such layer, a model
    without any, or a layer already parametrized.
    """
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LAYERS)}
    unknown = sorted(set(exclude) - layers.keys())
    if unknown:
        raise ValueError(f"exclude names no nn.Linear or convolution of the model: {', '.join(unknown)} "
                         f"(its layers: {', '.join(layers) or 'none'})")
    chosen = {name: layer for name, layer in layers.items() if name not in set(exclude)}
    if not chosen:
        raise ValueError("the model has no nn.Linear or convolution left to put targeted dropout on")
    taken = [name for name, layer in chosen.items() if parametrize.is_parametrized(layer, "weight")]
    if taken:
        raise ValueError(f"these layers' weights are already parametrized: {', '.join(taken)}")
    return {name: add_targeted_dropout(layer, config) for name, layer in chosen.items()}


def set_progress(model: nn.Module, progress: float) -> None:
    """Tell every targeted-dropout parametrization in ``model`` how far training has come, in [0, 1]."""
    for module in model.modules():
        if isinstance(module, _DropMask):
            module.progress = progress


def remove_targeted_dropout(model: nn.Module) -> None:
    """Strip every parametrization from ``model`` in place, keeping the trained weights as they are."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                for parametrization in module.parametrizations[name]:
                    for hook in getattr(parametrization, "hooks", ()):
                        hook.remove()
                parametrize.remove_parametrizations(module, name, leave_parametrized=False)
