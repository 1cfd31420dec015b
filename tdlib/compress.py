"""Pruned MLPs made physically smaller and faster: units removed, each layer run dense or sparse (CSR).

``torch.nn.utils.prune`` keeps every weight (and a mask beside it), so a masked model is neither smaller
nor faster. :func:`compress` turns a model and its masks into a :class:`CompressedMLP` whose outputs
equal ``apply_masks(model, masks)``'s to float tolerance:

1. a hidden unit whose masked incoming row is all zero outputs a constant, ``act(b_i)`` (0 when its bias
   went too); it is removed with the matching column of the next layer, and ``act(b_i) * W_next[:, i]``
   is folded into the next layer's bias;
2. a hidden unit whose outgoing weights are all pruned is read by nothing; it is removed with its row;
3. each remaining weight matrix runs dense or as CSR, per layer: as asked, or whichever
   :func:`fastest_layouts` measures to be faster at the batch size the model will serve;
4. with ``"fastest"``, the whole chain also runs as CSR in one compiled call
   (:mod:`tdlib.sparse_chain`) when that measures faster still, as it does at small batches.

Activations flow transposed, (features, batch), so that every layer is one ``addmm`` whose sparse
operand comes first, the form torch's CSR kernels are fast in, with no transpose between layers.
"""

from __future__ import annotations

import hashlib
import statistics
import timeit
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tdlib.model import MLP
from tdlib.prune import Masks, apply_masks
from tdlib.sparse_chain import Chain

Layout = Literal["dense", "csr"]
LAYOUTS: tuple[Layout, ...] = ("dense", "csr")


@dataclass(frozen=True)
class _Layer:
    weight: Tensor  # (out, in), strided or sparse CSR
    bias: Tensor | None  # (out,)
    relu: bool  # apply ReLU after this layer

    @property
    def layout(self) -> Layout:
        return "csr" if self.weight.layout == torch.sparse_csr else "dense"

    @property
    def stored(self) -> int:
        """Numbers the weight holds: its non-zeros when CSR, every entry when dense."""
        return self.weight.values().numel() if self.layout == "csr" else self.weight.numel()

    def to(self, layout: Layout) -> _Layer:
        if layout == self.layout:
            return self
        with _csr_quietly():
            weight = self.weight.to_sparse_csr() if layout == "csr" else self.weight.to_dense()
        return replace(self, weight=weight)

    def __call__(self, h: Tensor) -> Tensor:
        """(in, batch) activations to (out, batch)."""
        out = self.weight @ h if self.bias is None else torch.addmm(self.bias.unsqueeze(1), self.weight, h)
        return out.relu_() if self.relu else out


class CompressedMLP(nn.Module):
    """A chain of dense or CSR linear layers; inputs (batch, in_features) or (in_features,), logits
    (batch, classes) or (classes,).

    Run layer by layer through torch, or, when ``fused``, all at once by :class:`~tdlib.sparse_chain.Chain`.
    It is for inference only: it holds plain tensors, not parameters, so it is neither trained nor cast
    or moved by ``.to()`` / ``.double()``; cast or move the model before compressing it.
    """

    def __init__(self, layers: list[_Layer], fused: bool = False) -> None:
        super().__init__()
        if fused:
            layers = [layer.to("csr") for layer in layers]
            self._chain: Chain | None = Chain.pack(
                [layer.weight for layer in layers], [layer.bias for layer in layers], [layer.relu for layer in layers]
            )
        else:
            self._chain = None
        self._layers = layers

    @property
    def fused(self) -> bool:
        return self._chain is not None

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(layer.weight.shape) for layer in self._layers]  # type: ignore[misc]

    @property
    def layouts(self) -> list[Layout]:
        return [layer.layout for layer in self._layers]

    def with_layouts(self, layouts: Sequence[Layout]) -> CompressedMLP:
        """The same network with layer ``i`` run in ``layouts[i]`` by torch, layer by layer."""
        if isinstance(layouts, str) or len(layouts) != len(self._layers) or not set(layouts) <= set(LAYOUTS):
            raise ValueError(f"layouts must give one of {LAYOUTS} for each of the {len(self._layers)} layers, "
                             f"got {layouts!r}")
        return CompressedMLP([layer.to(layout) for layer, layout in zip(self._layers, layouts)])

    def parameter_count(self) -> int:
        """Parameters left, whatever the layouts: the weights' non-zeros and every bias entry."""
        return sum(
            int(torch.count_nonzero(layer.weight.to_dense())) + (0 if layer.bias is None else layer.bias.numel())
            for layer in self._layers
        )

    def flops(self) -> int:
        """Multiply-adds per input as run: the non-zeros of CSR layers, every entry of dense ones."""
        return sum(layer.stored for layer in self._layers)

    def fuse(self) -> CompressedMLP:
        """The same network run as one CSR chain (CPU, float32 only)."""
        return CompressedMLP(self._layers, fused=True)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 1:
            return self(x.unsqueeze(0)).squeeze(0)
        if self._chain is not None:
            return self._chain(x).contiguous()
        h = x.T  # a view: dense kernels read it transposed in place
        for layer in self._layers:
            h = layer(h)
        return h.T.contiguous()


def dense_flops(model: MLP) -> int:
    """Multiply-adds per input of the dense model, and of the masked one: torch.prune saves nothing."""
    return sum(layer.weight.numel() for layer in model.layers)


def median_seconds(fn: Callable[[Tensor], Tensor], x: Tensor, threads: int | None = None,
                   min_run_time: float = 0.05) -> float:
    """Median wall time of one ``fn(x)`` on ``threads`` threads (default: torch's current count).

    Calls are timed in blocks of about a millisecond (``timeit``, garbage collection off) for
    ``min_run_time`` seconds in all; the median block gives the time per call.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        with torch.no_grad():
            sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)  # time the work, not the launch
            timer = timeit.Timer(lambda: (fn(x), sync()))
            once = max(min(timer.repeat(repeat=3, number=1)), 1e-7)  # the first call also warms up
            number = max(1, round(1e-3 / once))
            repeats = max(5, round(min_run_time / (number * once)))
            return statistics.median(timer.repeat(repeat=repeats, number=number)) / number
    finally:
        torch.set_num_threads(previous)


def _quick_seconds(fn: Callable[[Tensor], Tensor], x: Tensor, threads: int | None) -> float:
    return median_seconds(fn, x, threads, min_run_time=0.02)  # enough to tell layouts apart where it matters


def fastest_layouts(model: CompressedMLP, batch: int, threads: int | None = None,
                    seconds: Callable[[Callable[[Tensor], Tensor], Tensor, int | None], float] = _quick_seconds,
                    ) -> list[Layout]:
    """Per layer, the layout whose forward ``seconds`` measures fastest on a (in, ``batch``) input
    of the layer's dtype (for the first layer, the transposed view :meth:`CompressedMLP.forward` gives it).

    Which wins depends on the layer's shape and density, the batch size and the thread count (a
    10x200 layer at 1% density runs faster dense at batch 1 and as CSR at batch 256), so it is
    measured rather than guessed from the density.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    chosen: list[Layout] = []
    for i, layer in enumerate(model._layers):
        weight = layer.weight
        shape = (batch, weight.shape[1]) if i == 0 else (weight.shape[1], batch)
        h = torch.rand(shape, dtype=weight.dtype, device=weight.device)
        h = h.T if i == 0 else h
        chosen.append(min(LAYOUTS, key=lambda layout: seconds(layer.to(layout), h, threads)))
    return chosen


def fastest(model: CompressedMLP, batch: int, threads: int | None = None,
            seconds: Callable[[Callable[[Tensor], Tensor], Tensor, int | None], float] = _quick_seconds,
            ) -> CompressedMLP:
    """``model`` in the form ``seconds`` measures fastest at ``batch`` inputs on ``threads`` threads: the
    :func:`fastest_layouts` layer by layer, or the fused CSR chain where it can run (CPU, float32)."""
    layered = model.with_layouts(fastest_layouts(model, batch, threads, seconds))
    weight = model._layers[0].weight
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        return layered
    fused = model.fuse()
    x = torch.rand(batch, model.shapes[0][1])
    return min((layered, fused), key=lambda candidate: seconds(candidate, x, threads))


@torch.no_grad()
def compress(model: MLP, masks: Masks,
             layout: Layout | Literal["fastest", "fused"] | Sequence[Layout] = "fastest",
             batch: int = 256, threads: int | None = None) -> CompressedMLP:
    """An equivalent of ``apply_masks(model, masks)`` without its constant or unread units, in the layout
    asked for (see the module docstring).

    ``layout`` is one layout for every layer, one per layer (after the removal of units, there are as
    many layers as in ``model``), ``"fused"`` (one compiled CSR chain), or ``"fastest"``: the form
    :func:`fastest` measures fastest at ``batch`` inputs on ``threads`` threads.
    """
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
    dense = CompressedMLP([_Layer(w.contiguous(), b, r) for w, b, r in zip(weights, biases, relus)])
    if layout == "fastest":
        return fastest(dense, batch, threads)
    if layout == "fused":
        return dense.fuse()
    if isinstance(layout, str) and layout not in LAYOUTS:
        raise ValueError(f"layout must be 'fastest', 'fused' or one of {LAYOUTS}, got {layout!r}")
    return dense.with_layouts([layout] * len(weights) if isinstance(layout, str) else layout)


def _remove_units(weights: list[Tensor], biases: list[Tensor | None], i: int, remove: Tensor) -> None:
    """Remove the units of hidden layer ``i`` where ``remove`` (units,) is True: rows of layer ``i``,
    columns of layer ``i + 1``."""
    keep = ~remove
    weights[i] = weights[i][keep]
    biases[i] = None if biases[i] is None else biases[i][keep]
    weights[i + 1] = weights[i + 1][:, keep]


FILE_FORMAT = "tdlib-compressed-mlp"
FILE_VERSION = 2  # 2: the header says whether the model runs fused


class CompressedFileError(ValueError):
    """A compressed-model file is not one, or does not match its own header."""


def save(model: CompressedMLP, path: str | Path) -> None:
    """Write ``model`` compactly, with a header of shapes and layouts and a checksum.

    Each weight is written in whichever form is smaller, dense or CSR with int32 indices, whatever
    layout it runs in; :func:`load` restores the layout.
    """
    entries = []
    for layer in model._layers:
        rows, cols = layer.weight.shape
        csr = layer.to("csr").weight
        if csr.values().numel() * 8 + (rows + 1) * 4 < rows * cols * 4:
            body = {
                "stored": "csr",
                "crow": csr.crow_indices().to(torch.int32),
                "col": csr.col_indices().to(torch.int32),
                "values": csr.values(),
            }
        else:
            body = {"stored": "dense", "values": layer.to("dense").weight}
        entries.append({**body, "bias": layer.bias, "relu": layer.relu})
    header = {
        "format": FILE_FORMAT,
        "version": FILE_VERSION,
        "shapes": [list(shape) for shape in model.shapes],
        "layouts": model.layouts,
        "fused": model.fused,
    }
    torch.save({"header": header, "layers": entries, "digest": _digest(entries)}, Path(path))


def load(path: str | Path) -> CompressedMLP:
    """Read a file written by :func:`save`; raise :class:`CompressedFileError` naming what does not match."""
    try:
        saved = torch.load(Path(path), weights_only=True)
        header, entries = saved["header"], saved["layers"]
        version, digest = (header["format"], header["version"]), _digest(entries)
    except Exception as error:  # any unreadable file is reported the same way
        raise CompressedFileError(f"{path}: not a compressed tdlib model ({error!r})") from error
    if version != (FILE_FORMAT, FILE_VERSION):
        raise CompressedFileError(
            f"{path}: format {version[0]!r} v{version[1]}, expected {FILE_FORMAT!r} v{FILE_VERSION}"
        )
    if saved.get("digest") != digest:
        raise CompressedFileError(f"{path}: the layers do not match the file's checksum; the file is damaged")
    try:
        return CompressedMLP(_layers(header, entries), fused=bool(header["fused"]))
    except KeyError as error:
        raise CompressedFileError(f"{path}: the field {error} is missing") from error
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:  # e.g. a list where a tensor belongs
        raise CompressedFileError(f"{path}: {error}") from error


def _layers(header: dict, entries: list[dict]) -> list[_Layer]:
    """The layers of a file, each checked against the header (ValueError naming the first mismatch)."""
    shapes, layouts = header["shapes"], header["layouts"]
    if not entries or not len(shapes) == len(layouts) == len(entries) or not set(layouts) <= set(LAYOUTS):
        raise ValueError(f"{len(entries)} layers, the header gives {len(shapes)} shapes and layouts {layouts}")
    layers = []
    for i, (shape, entry) in enumerate(zip(shapes, entries)):
        if entry["stored"] not in LAYOUTS:
            raise ValueError(f"layer {i} is stored as {entry['stored']!r}, not one of {LAYOUTS}")
        if not entry["values"].is_floating_point() or entry["values"].dtype != entries[0]["values"].dtype:
            raise ValueError(f"layer {i} holds {entry['values'].dtype} weights, layer 0 "
                             f"{entries[0]['values'].dtype}: one floating-point dtype is expected")
        if entry["stored"] == "csr":
            try:
                with _csr_quietly():
                    weight = torch.sparse_csr_tensor(  # checked: a file's indices are never trusted
                        entry["crow"].long(), entry["col"].long(), entry["values"], size=shape, check_invariants=True
                    )
            except RuntimeError as error:
                raise ValueError(f"layer {i} does not fit its shape (the header says {shape}): {error}") from error
        else:
            weight = entry["values"]
        if list(weight.shape) != list(shape) or (i and shape[1] != shapes[i - 1][0]):
            raise ValueError(f"layer {i} has shape {list(weight.shape)}, the header says {shape}")
        bias = entry["bias"]
        if bias is not None and tuple(bias.shape) != (shape[0],):
            raise ValueError(f"layer {i} has a bias of shape {tuple(bias.shape)} for {shape[0]} units")
        layers.append(_Layer(weight, bias, bool(entry["relu"])).to(layouts[i]))
    return layers


@contextmanager
def _csr_quietly() -> Iterator[None]:
    """Torch warns that CSR support is beta on every CSR tensor it makes; CSR is what we want here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def _digest(entries: list[dict]) -> str:
    """SHA-256 of every field of every layer: names, flags, and each tensor's dtype, shape and bytes."""
    sha = hashlib.sha256()
    for entry in entries:
        for key in sorted(entry):
            value = entry[key]
            sha.update(key.encode())
            if isinstance(value, Tensor):
                sha.update(f"{value.dtype}{tuple(value.shape)}".encode())
                sha.update(value.contiguous().numpy().tobytes())
            else:
                sha.update(repr(value).encode())
    return sha.hexdigest()
