"""Pruned MLPs made physically smaller: units removed, and what is left stored dense or sparse (CSR).

``torch.nn.utils.prune`` keeps every weight (and a mask beside it), so a masked model is neither smaller
nor faster. :func:`compress` turns a model and its masks into a :class:`CompressedMLP` whose outputs
equal ``apply_masks(model, masks)``'s to float tolerance:

1. a hidden unit whose masked incoming row is all zero outputs a constant, ``act(b_i)`` (0 when its bias
   went too); it is removed with the matching column of the next layer, and ``act(b_i) * W_next[:, i]``
   is folded into the next layer's bias;
2. each remaining weight matrix is stored dense, or as CSR when asked (``sparse=True``).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdlib.model import MLP
from tdlib.prune import Masks, apply_masks


@dataclass
class _Layer:
    weight: Tensor  # (out, in), dense or sparse CSR
    bias: Tensor | None  # (out,)
    relu: bool  # apply ReLU after this layer


class CompressedMLP(nn.Module):
    """A chain of (possibly sparse) linear layers; inputs (batch, in_features), logits (batch, classes)."""

    def __init__(self, layers: list[_Layer]) -> None:
        super().__init__()
        self._layers = layers

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(layer.weight.shape) for layer in self._layers]  # type: ignore[misc]

    def parameter_count(self) -> int:
        """Stored numbers: non-zeros of sparse weights (values only), all entries of dense ones, biases."""
        total = 0
        for layer in self._layers:
            w = layer.weight
            total += w.values().numel() if w.layout == torch.sparse_csr else w.numel()
            total += 0 if layer.bias is None else layer.bias.numel()
        return total

    def flops(self) -> int:
        """Multiply-adds for one input: non-zeros of sparse layers, all entries of dense ones."""
        return sum(
            (layer.weight.values().numel() if layer.weight.layout == torch.sparse_csr else layer.weight.numel())
            for layer in self._layers
        )

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        for layer in self._layers:
            if layer.weight.layout == torch.sparse_csr:
                x = (layer.weight @ x.T).T
                if layer.bias is not None:
                    x = x + layer.bias
            else:
                x = F.linear(x, layer.weight, layer.bias)
            if layer.relu:
                x = F.relu(x)
        return x


def dense_flops(model: MLP) -> int:
    """Multiply-adds per input of the dense (or masked: torch.prune saves nothing) model."""
    return sum(layer.weight.numel() for layer in model.layers)


@torch.no_grad()
def compress(model: MLP, masks: Masks, sparse: bool = False) -> CompressedMLP:
    """The smallest equivalent of ``apply_masks(model, masks)`` (see the module docstring)."""
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
        keep = ~constant
        weights[i] = weights[i][keep]
        biases[i] = None if biases[i] is None else biases[i][keep]
        weights[i + 1] = weights[i + 1][:, keep]
    with _csr_quietly():
        stored = [w.to_sparse_csr() if sparse else w.contiguous() for w in weights]
    return CompressedMLP([_Layer(w, b, r) for w, b, r in zip(stored, biases, relus)])


FILE_FORMAT = "tdlib-compressed-mlp"
FILE_VERSION = 1


class CompressedFileError(ValueError):
    """A compressed-model file is not one, or does not match its own header."""


def save(model: CompressedMLP, path: str | Path) -> None:
    """Write ``model`` compactly: sparse layers as CSR with int32 indices, a header of shapes, a checksum."""
    layers = []
    for layer in model._layers:
        w = layer.weight
        if w.layout == torch.sparse_csr:
            body = {
                "layout": "csr",
                "crow": w.crow_indices().to(torch.int32),
                "col": w.col_indices().to(torch.int32),
                "values": w.values(),
            }
        else:
            body = {"layout": "dense", "values": w}
        layers.append({**body, "shape": list(w.shape), "bias": layer.bias, "relu": layer.relu})
    header = {"format": FILE_FORMAT, "version": FILE_VERSION, "shapes": [entry["shape"] for entry in layers]}
    torch.save({"header": header, "layers": layers, "digest": _digest(layers)}, Path(path))


def load(path: str | Path) -> CompressedMLP:
    """Read a file written by :func:`save`; raise :class:`CompressedFileError` naming what does not match."""
    try:
        saved = torch.load(Path(path), weights_only=True)
        header, entries = saved["header"], saved["layers"]
    except Exception as error:  # any unreadable file is reported the same way
        raise CompressedFileError(f"{path}: not a compressed tdlib model ({error})") from error
    if header.get("format") != FILE_FORMAT or header.get("version") != FILE_VERSION:
        raise CompressedFileError(
            f"{path}: format {header.get('format')!r} v{header.get('version')}, "
            f"expected {FILE_FORMAT!r} v{FILE_VERSION}"
        )
    if saved.get("digest") != _digest(entries):
        raise CompressedFileError(f"{path}: the layers do not match the file's checksum; the file is damaged")
    if len(header["shapes"]) != len(entries):
        raise CompressedFileError(f"{path}: {len(entries)} layers, the header says {len(header['shapes'])}")
    layers = []
    for i, (shape, entry) in enumerate(zip(header["shapes"], entries)):
        if entry["layout"] == "csr":
            try:
                with _csr_quietly():
                    weight = torch.sparse_csr_tensor(  # checked: a file's indices are never trusted
                        entry["crow"].long(), entry["col"].long(), entry["values"], size=shape, check_invariants=True
                    )
            except RuntimeError as error:
                raise CompressedFileError(
                    f"{path}: layer {i} does not fit its shape (the header says {shape}): {error}"
                ) from error
        else:
            weight = entry["values"]
        if list(weight.shape) != list(shape) or (i and shape[1] != header["shapes"][i - 1][0]):
            raise CompressedFileError(f"{path}: layer {i} has shape {list(weight.shape)}, the header says {shape}")
        layers.append(_Layer(weight, entry["bias"], entry["relu"]))
    return CompressedMLP(layers)


@contextmanager
def _csr_quietly() -> Iterator[None]:
    """Torch warns that CSR support is beta on every CSR tensor it makes; CSR is what we want here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def _digest(entries: list[dict]) -> str:
    sha = hashlib.sha256()
    for entry in entries:
        for key in ("crow", "col", "values", "bias"):
            if entry.get(key) is not None:
                sha.update(entry[key].contiguous().numpy().tobytes())
    return sha.hexdigest()
