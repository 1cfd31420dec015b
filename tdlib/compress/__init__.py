"""Pruned MLPs made physically smaller and faster, as ordinary torch modules.

``torch.nn.utils.prune`` keeps every weight (and a mask beside it), so a masked model is neither smaller
nor faster. :func:`compress` turns a model and its masks into a :class:`CompressedMLP`, an
``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` whose outputs equal ``apply_masks(model, masks)``'s to
float tolerance, without the units the masks left constant or unread (:mod:`.surgery`), and runs it for
inference layer by layer, each layer dense or CSR, or as one compiled chain of such layers, whichever is
measured faster, on a sample of real inputs if given (:mod:`.module`, :mod:`.autotune`, :mod:`.chain`);
:func:`fastest_tiled` also tries batches by rows through a register-tiled matrix-product kernel (CSR layers
with the batch in the vector lanes, :mod:`.csr_batch`), and a batch of one through the chain on arrays
aligned to 64 bytes (:mod:`.tiled`).
:func:`save` and :func:`load` keep it in a checked safetensors file (:mod:`.fileformat`); :func:`export_onnx`
writes it as an ONNX file that takes any batch size, which :class:`OnnxRuntime` runs (:mod:`.export`);
:func:`paired_seconds` times several runtimes against each other in paired rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from tdlib.compress.autotune import fastest, fastest_layouts, median_seconds, paired_seconds, timing_inputs
from tdlib.compress.export import OnnxRuntime, export_onnx
from tdlib.compress.fileformat import FILE_FORMAT, FILE_VERSION, CompressedFileError, load, save
from tdlib.compress.module import LAYOUTS, CompressedMLP, Layout
from tdlib.compress.surgery import shrink
from tdlib.compress.tiled import TiledMLP, fastest_tiled, tiled
from tdlib.model import MLP
from tdlib.prune import Masks


def compress(model: MLP, masks: Masks,
             layout: Layout | Literal["fastest", "fused"] | Sequence[Layout] = "fastest",
             batch: int = 256, threads: int | None = None, sample: Tensor | None = None) -> CompressedMLP:
    """An equivalent of ``apply_masks(model, masks)`` without its constant or unread units, run as asked.

    ``layout`` is one layout for every layer, one per layer (after the removal of units, there are as
    many layers as in ``model``), ``"fused"`` (one compiled chain, each layer in the form that takes
    fewer bytes), or ``"fastest"``: the form :func:`fastest` measures fastest at ``batch`` inputs on
    ``threads`` threads, timed on ``sample`` (rows of inputs like those the model will run on, such as
    training images) if given, else on uniform random numbers.
    """
    if not isinstance(model, MLP):
        raise ValueError(f"compress takes tdlib's MLP (a chain of nn.Linear and ReLU), got {type(model).__name__}: "
                         "other networks, convolutional ones included, are pruned by their masks (apply_masks, or "
                         "install_with_torch_prune) but not compressed")
    if isinstance(layout, str) and layout not in (*LAYOUTS, "fastest", "fused"):
        raise ValueError(f"layout must be 'fastest', 'fused' or one of {LAYOUTS}, got {layout!r}")
    if sample is not None and layout != "fastest":
        raise ValueError(f"a sample is what layout='fastest' is timed on; layout {layout!r} takes none")
    linears, relus = shrink(model, masks)
    plain = CompressedMLP(linears, relus)
    if layout == "fastest":
        return fastest(plain, batch, threads, sample=sample)
    if layout == "fused":
        return plain.fuse()
    return plain.with_layouts([layout] * len(linears) if isinstance(layout, str) else layout)


def dense_flops(model: MLP) -> int:
    """Multiply-adds per input of the dense model, and of the masked one: torch.prune saves nothing."""
    return sum(layer.weight.numel() for layer in model.layers)


__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "LAYOUTS",
    "CompressedFileError",
    "CompressedMLP",
    "Layout",
    "OnnxRuntime",
    "TiledMLP",
    "compress",
    "dense_flops",
    "export_onnx",
    "fastest",
    "fastest_layouts",
    "fastest_tiled",
    "load",
    "median_seconds",
    "paired_seconds",
    "save",
    "shrink",
    "tiled",
    "timing_inputs",
]
