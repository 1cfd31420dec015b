"""Units a masked model no longer uses, removed: the surgery behind :func:`tdlib.compress.compress`.

1. A hidden unit whose masked incoming row is all zero outputs a constant, ``act(b_i)`` (0 when its bias
   went too); it is removed with the matching column of the next layer, and ``act(b_i) * W_next[:, i]``
   is folded into the next layer's bias.
2. A hidden unit whose outgoing weights are all pruned is read by nothing; it is removed with its row.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdlib.model import MLP
from tdlib.prune import Masks, apply_masks


@torch.no_grad()
def shrink(model: MLP, masks: Masks) -> tuple[list[nn.Linear], list[bool]]:
    """The linear layers of ``apply_masks(model, masks)`` without its constant or unread units (new
    ``nn.Linear`` modules of the model's dtype and device, with ``bias=False`` where no bias is left), and
    whether a ReLU follows each."""
    if model.dropout and model.training:
        raise ValueError("compress a model in eval mode: dropout is not part of the compressed network")
    masked = apply_masks(model, masks)
    weights = [layer.weight.detach().clone() for layer in masked.layers]
    biases = [None if layer.bias is None else layer.bias.detach().clone() for layer in masked.layers]
    relus = [i not in model.linear_hidden for i in range(len(weights) - 1)] + [False]
    for i in range(len(weights) - 1):
        constant = ~weights[i].any(dim=1)  # units whose output does not depend on the input
        if not constant.any():
            continue
        bias = biases[i]
        pre = bias[constant] if bias is not None else weights[i].new_zeros(int(constant.sum()))
        value = F.relu(pre) if relus[i] else pre  # what each constant unit outputs, whatever the input
        folded = weights[i + 1][:, constant] @ value
        if bool(folded.any()):
            biases[i + 1] = folded if biases[i + 1] is None else biases[i + 1] + folded
        _remove_units(weights, biases, i, constant)
    for i in reversed(range(len(weights) - 1)):  # backwards: a removal can leave the layer before unread
        unread = ~weights[i + 1].any(dim=0)
        if unread.any():
            _remove_units(weights, biases, i, unread)
    return [linear(w, b) for w, b in zip(weights, biases)], relus


def linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding ``weight`` (out, in) and ``bias`` (out,) or none, on their device and dtype."""
    with warnings.catch_warnings():  # a layer whose every unit went has no elements to initialise
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.contiguous())
    if bias is not None:
        layer.bias = nn.Parameter(bias.contiguous())
    return layer


def _remove_units(weights: list[Tensor], biases: list[Tensor | None], i: int, remove: Tensor) -> None:
    """Remove the units of hidden layer ``i`` where ``remove`` (units,) is True: rows of layer ``i``,
    columns of layer ``i + 1``."""
    keep = ~remove
    weights[i] = weights[i][keep]
    biases[i] = None if biases[i] is None else biases[i][keep]
    weights[i + 1] = weights[i + 1][:, keep]
