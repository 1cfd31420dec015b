"""Post-hoc pruning as pure functions that return masks.

A :data:`Masks` maps a parameter name (``"layers.0.weight"``, ``"layers.0.bias"``) to a boolean
*keep* mask of that parameter's shape, as in ``torch.nn.utils.prune`` (True keeps the entry). Any
``nn.Module`` can be pruned: its prunable layers (:func:`prunable`) are every ``nn.Linear`` and
``nn.Conv1d``/``2d``/``3d`` but the last ``nn.Linear``, the classifier, which is never pruned (for the MLP,
its hidden layers). A unit is a linear layer's output unit, or a convolution's whole filter. ``k`` is a
percentage in [0, 100], and every function removes exactly ``round(k / 100 * n)`` entries (weights, or
units) of each ``n``, ties going to the lower index (see :mod:`tdlib.selection`).

Nothing here changes a model: :func:`apply_masks` returns a pruned copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from tdlib.registry import Registry
from tdlib.selection import count_for, ranks

Masks = dict[str, Tensor]
Scope = Literal["layer", "global"]


def check_k(k: float) -> float:
    """Return ``k / 100`` if ``k`` is a percentage in [0, 100], else raise ``ValueError``."""
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not math.isfinite(k) or not 0 <= k <= 100:
        raise ValueError(f"k must be a percentage in [0, 100], got {k!r}")
    return k / 100


LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) for each layer of ``model`` that pruning may touch, in module order: every ``nn.Linear``
    and ``nn.Conv1d``/``2d``/``3d`` but the last ``nn.Linear`` (the classifier). For the MLP these are its
    hidden layers, ``("layers.0", Linear)`` on. Raises ``ValueError`` for a model with none."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS)]
    linear = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Linear)]
    if linear:
        del layers[linear[-1]]
    if not layers:
        raise ValueError("the model has no nn.Linear or convolution to prune (its last nn.Linear, the classifier, "
                         "is never pruned)")
    return layers


def _units(layer: nn.Module) -> Tensor:
    """A layer's weight as rows, one per unit (output unit or filter): (out, fan_in)."""
    return layer.weight.detach().flatten(1)


@dataclass(frozen=True)
class Ranking:
    """The order in which one criterion prunes a model: masks at every k from a single sort.

    ``ranks[name]`` ranks the scores of prunable layer ``name`` (``layers.i``), smallest first: one rank per
    weight (out, in, *kernel) for weight criteria, per unit (out,) for unit criteria. With ``total`` set (global
    scope) the ranks run over all layers together; otherwise each layer is ranked on its own.
    """

    ranks: dict[str, Tensor]
    units: bool
    total: int | None = None

    def pruned(self, k: float) -> dict[str, Tensor]:
        """Per layer, True where the entry (weight or unit) is pruned at ``k``%."""
        fraction = check_k(k)
        if self.total is not None:
            count = count_for(fraction, self.total)
            return {name: r < count for name, r in self.ranks.items()}
        return {name: r < count_for(fraction, r.numel()) for name, r in self.ranks.items()}

    def masks(self, model: nn.Module, k: float, keep_bias: bool = False) -> Masks:
        """The keep masks at ``k``% (``keep_bias`` only matters for units: see :func:`unit_masks`)."""
        pruned = self.pruned(k)
        if not self.units:
            return {f"{name}.weight": ~p for name, p in pruned.items()}
        masks: Masks = {}
        for name, layer in prunable(model):
            keep = ~pruned[name]
            masks[f"{name}.weight"] = keep.view(-1, *[1] * (layer.weight.dim() - 1)).expand_as(layer.weight).clone()
            if layer.bias is not None and not keep_bias:
                masks[f"{name}.bias"] = keep
        return masks


def weight_ranking(model: nn.Module, scope: Scope = "layer") -> Ranking:
    """Prunable weights ranked by |w|, within each layer or over all of them."""
    scores = {name: layer.weight.detach().abs() for name, layer in prunable(model)}
    if scope == "layer":
        return Ranking({name: ranks(s) for name, s in scores.items()}, units=False)
    if scope != "global":
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    together = ranks(torch.cat([s.reshape(-1) for s in scores.values()]))
    split = torch.split(together, [s.numel() for s in scores.values()])
    return Ranking({name: r.view(s.shape) for (name, s), r in zip(scores.items(), split)}, False, together.numel())


def unit_ranking(model: nn.Module, norm: float = 2.0) -> Ranking:
    """Units (or filters) ranked, within each layer, by the Lp norm of their incoming (kernel) weights."""
    return Ranking({name: ranks(_units(layer).norm(p=norm, dim=1)) for name, layer in prunable(model)}, True)


def random_weight_ranking(model: nn.Module, generator: torch.Generator) -> Ranking:
    """Prunable weights in a random order within each layer: the control for :func:`weight_ranking`."""
    layers = prunable(model)
    return Ranking({name: ranks(torch.rand(layer.weight.shape, generator=generator)) for name, layer in layers}, False)


def random_unit_ranking(model: nn.Module, generator: torch.Generator) -> Ranking:
    """Units in a random order within each layer: the control for :func:`unit_ranking`."""
    layers = prunable(model)
    return Ranking({name: ranks(torch.rand(layer.weight.shape[0], generator=generator)) for name, layer in layers},
                   True)


def weight_masks(model: nn.Module, k: float, scope: Scope = "layer") -> Masks:
    """Remove the ``k``% of prunable weights with the smallest |w|, in each layer or over all of them."""
    return weight_ranking(model, scope).masks(model, k)


def unit_masks(model: nn.Module, k: float, keep_bias: bool = False, norm: float = 2.0) -> Masks:
    """Remove the ``k``% of units (or filters) of each prunable layer whose incoming weights have the smallest norm.

    With ``keep_bias=False`` (whole unit) the unit's bias goes too, so it outputs exactly 0; with
    ``keep_bias=True`` (weights only, like ``ln_structured``) it still outputs ``relu(bias)``.
    ``norm`` is the p of the Lp norm that ranks the rows (2 by default; the notebook used 1).
    """
    return unit_ranking(model, norm).masks(model, k, keep_bias)


def random_weight_masks(model: nn.Module, k: float, generator: torch.Generator) -> Masks:
    """The control for :func:`weight_masks`: the same count per layer, chosen uniformly at random."""
    return random_weight_ranking(model, generator).masks(model, k)


def random_unit_masks(model: nn.Module, k: float, generator: torch.Generator, keep_bias: bool = False) -> Masks:
    """The control for :func:`unit_masks`: the same count of units per layer, chosen at random."""
    return random_unit_ranking(model, generator).masks(model, k, keep_bias)


def notebook_masks(model: nn.Module, k: float) -> Masks:
    """The writeup notebook's weight pruning: in each row, remove every ``w <= `` its k-th percentile.

    The threshold is the (linearly interpolated) quantile of the *signed* weights, so this removes the
    most negative weights, not the smallest magnitudes, and ties at the threshold all go. Kept for C12.
    """
    fraction = check_k(k)
    masks = {}
    for name, layer in prunable(model):
        weight = _units(layer)
        threshold = torch.quantile(weight, fraction, dim=1, keepdim=True)
        keep = ~(weight <= threshold) if fraction > 0 else torch.ones_like(weight, dtype=torch.bool)
        masks[f"{name}.weight"] = keep.view_as(layer.weight)
    return masks


PruneKind = str  # the name of a registered :class:`Pruning`


@dataclass(frozen=True)
class Pruning:
    """A named way to prune: a ranking of the hidden weights or units (the lowest go first), drawn with a
    generator seeded per run for the random controls; or a rule that gives the masks at each ``k``."""

    name: str
    description: str
    rank: Callable[[nn.Module, torch.Generator], Ranking] | None = None
    keep_bias: bool = False  # with a unit ranking: a removed unit keeps its bias (it outputs act(b))
    rule: Callable[[nn.Module, float], Masks] | None = None

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.rule is None):
            raise ValueError(f"pruning {self.name!r} needs a ranking or a rule, and not both")

    def masks_at(self, model: nn.Module, ks: Iterable[float], seed: int = 0) -> Iterator[tuple[float, Masks]]:
        """``(k, masks)`` at each ``k``, ranking ``model`` once (random rankings draw from ``seed``)."""
        if self.rule is not None:
            for k in ks:
                yield k, self.rule(model, k)
            return
        assert self.rank is not None
        ranking = self.rank(model, torch.Generator().manual_seed(seed))
        for k in ks:
            yield k, ranking.masks(model, k, self.keep_bias)


PRUNINGS: Registry[Pruning] = Registry("pruning kind", "kind")


def register_pruning(kind: Pruning, replace: bool = False) -> Pruning:
    """Add a pruning kind (to :data:`PRUNINGS`); another of the same name is refused unless ``replace``."""
    return PRUNINGS.register(kind, replace)


def pruning(name: str) -> Pruning:
    """The registered pruning kind ``name``; ``ValueError`` naming the registered ones otherwise."""
    return PRUNINGS.named(name)


for _standard in (
    Pruning("weight", "the smallest |w| of each hidden layer", lambda m, g: weight_ranking(m, "layer")),
    Pruning("global", "the smallest |w| over all hidden layers together", lambda m, g: weight_ranking(m, "global")),
    Pruning("unit", "whole units (weights and bias) of each hidden layer, by the L2 norm of their incoming weights",
            lambda m, g: unit_ranking(m)),
    Pruning("unit_weights_only", "units' incoming weights by their L2 norm, the bias kept (like ln_structured)",
            lambda m, g: unit_ranking(m), keep_bias=True),
    Pruning("unit_l1", "units' incoming weights by their L1 norm, the bias kept (the notebook's ranking)",
            lambda m, g: unit_ranking(m, norm=1.0), keep_bias=True),
    Pruning("random_weight", "as many weights per layer as 'weight', chosen at random (its control)",
            random_weight_ranking),
    Pruning("random_unit", "as many whole units per layer as 'unit', chosen at random (its control)",
            random_unit_ranking),
    Pruning("notebook", "the notebook's rule: in each row, every w <= the row's k-th percentile", rule=lambda m, k:
            notebook_masks(m, k)),
):
    register_pruning(_standard)
PRUNE_KINDS: tuple[PruneKind, ...] = tuple(PRUNINGS)  # the standard kinds


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """A copy of ``model`` with every masked entry set to 0; ``model`` itself is left untouched."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for {name!r}, but the model has no such parameter")
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask for {name!r} must be a bool tensor, got {type(mask).__name__}")
        if mask.device != params[name].device:
            raise ValueError(f"mask for {name!r} is on {mask.device}, the parameter on {params[name].device}")
        if mask.shape != params[name].shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask for {name!r} must be a bool tensor of shape {tuple(params[name].shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for name, param in pruned.named_parameters():
            if name in masks:
                param.mul_(masks[name])
    return pruned


def sparsity(masks: Masks, suffix: str = ".weight") -> float:
    """Fraction of the masked entries (of parameters ending in ``suffix``) that are pruned."""
    chosen = [m for name, m in masks.items() if name.endswith(suffix)]
    total = sum(m.numel() for m in chosen)
    return sum(int((~m).sum()) for m in chosen) / total if total else 0.0


def install_with_torch_prune(model: nn.Module, masks: Masks) -> nn.Module:
    """A copy of ``model`` whose masks are installed through ``torch.nn.utils.prune.custom_from_mask``."""
    pruned = copy.deepcopy(model)
    modules = dict(pruned.named_modules())
    for name, mask in masks.items():
        module_name, _, param = name.rpartition(".")
        torch_prune.custom_from_mask(modules[module_name], param, mask.to(torch.float32))
    return pruned


def from_torch_prune(model: nn.Module) -> Masks:
    """The keep masks of every parameter that ``torch.nn.utils.prune`` has pruned in ``model``."""
    masks: Masks = {}
    for module_name, module in model.named_modules():
        for buffer_name, mask in module.named_buffers(recurse=False):
            if buffer_name.endswith("_mask"):
                param = buffer_name.removesuffix("_mask")
                masks[f"{module_name}.{param}" if module_name else param] = mask.bool()
    return masks
