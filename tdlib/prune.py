"""Post-hoc pruning as pure functions that return masks.

A :data:`Masks` maps a parameter name (``"layers.0.weight"``, ``"layers.0.bias"``) to a boolean
*keep* mask of that parameter's shape, as in ``torch.nn.utils.prune`` (True keeps the entry). Only
the hidden layers get masks: the output layer is never pruned. ``k`` is a percentage in [0, 100], and
every function removes exactly ``round(k / 100 * n)`` entries (weights, or units) of each ``n``, ties
going to the lower index (see :mod:`tdlib.selection`).

Nothing here changes a model: :func:`apply_masks` returns a pruned copy.
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from tdlib.model import MLP
from tdlib.selection import count_for, smallest_mask

Masks = dict[str, Tensor]
Scope = Literal["layer", "global"]


def check_k(k: float) -> float:
    """Return ``k / 100`` if ``k`` is a percentage in [0, 100], else raise ``ValueError``."""
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not math.isfinite(k) or not 0 <= k <= 100:
        raise ValueError(f"k must be a percentage in [0, 100], got {k!r}")
    return k / 100


def prunable(model: MLP) -> list[tuple[str, nn.Linear]]:
    """(name prefix, layer) for each hidden layer of ``model``, e.g. ``("layers.0", Linear)``."""
    return [(f"layers.{i}", layer) for i, layer in enumerate(model.hidden_layers)]


def weight_masks(model: MLP, k: float, scope: Scope = "layer") -> Masks:
    """Remove the ``k``% of hidden weights with the smallest |w|, in each layer or over all of them."""
    fraction = check_k(k)
    layers = prunable(model)
    if scope == "layer":
        return {
            f"{name}.weight": ~smallest_mask(layer.weight.detach().abs(), count_for(fraction, layer.weight.numel()))
            for name, layer in layers
        }
    if scope != "global":
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    flat = torch.cat([layer.weight.detach().abs().reshape(-1) for _, layer in layers])
    pruned = smallest_mask(flat, count_for(fraction, flat.numel()))
    masks, start = {}, 0
    for name, layer in layers:
        n = layer.weight.numel()
        masks[f"{name}.weight"] = ~pruned[start : start + n].view(layer.weight.shape)
        start += n
    return masks


def unit_masks(model: MLP, k: float, keep_bias: bool = False, norm: float = 2.0) -> Masks:
    """Remove the ``k``% of units of each hidden layer whose incoming weights have the smallest norm.

    With ``keep_bias=False`` (whole unit) the unit's bias goes too, so it outputs exactly 0; with
    ``keep_bias=True`` (weights only, like ``ln_structured``) it still outputs ``relu(bias)``.
    ``norm`` is the p of the Lp norm that ranks the rows (2 by default; the notebook used 1).
    """
    fraction = check_k(k)
    return _unit_keep(
        model,
        {name: smallest_mask(layer.weight.detach().norm(p=norm, dim=1), count_for(fraction, layer.out_features))
         for name, layer in prunable(model)},
        keep_bias,
    )


def random_weight_masks(model: MLP, k: float, generator: torch.Generator) -> Masks:
    """The control for :func:`weight_masks`: the same count per layer, chosen uniformly at random."""
    fraction = check_k(k)
    masks = {}
    for name, layer in prunable(model):
        scores = torch.rand(layer.weight.shape, generator=generator)
        masks[f"{name}.weight"] = ~smallest_mask(scores, count_for(fraction, layer.weight.numel()))
    return masks


def random_unit_masks(model: MLP, k: float, generator: torch.Generator, keep_bias: bool = False) -> Masks:
    """The control for :func:`unit_masks`: the same count of units per layer, chosen at random."""
    fraction = check_k(k)
    return _unit_keep(
        model,
        {name: smallest_mask(torch.rand(layer.out_features, generator=generator),
                             count_for(fraction, layer.out_features))
         for name, layer in prunable(model)},
        keep_bias,
    )


def _unit_keep(model: MLP, pruned_units: dict[str, Tensor], keep_bias: bool) -> Masks:
    """Keep masks from each layer's pruned units (out,)."""
    masks: Masks = {}
    for name, layer in prunable(model):
        keep = ~pruned_units[name]
        masks[f"{name}.weight"] = keep.unsqueeze(1).expand_as(layer.weight).clone()
        if layer.bias is not None and not keep_bias:
            masks[f"{name}.bias"] = keep.clone()
    return masks


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """A copy of ``model`` with every masked entry set to 0; ``model`` itself is left untouched."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for {name!r}, but the model has no such parameter")
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
