"""A whole chain of linear layers, each dense or CSR, run in one compiled call (numba; CPU, float32).

A torch operator costs several microseconds per call whatever its size (a CSR product 10-20 us), more
than the arithmetic of a small or very sparse layer at batch 1. One call for the whole network pays the
call once, as ONNX Runtime's graph does. :func:`tdlib.compress.compress` uses a :class:`Chain` where it
measures faster.

Each layer's weight (out, in) is held as CSR rows or dense: by rows, or, where its inputs are often 0
(after a ReLU, or in a first layer told that its inputs are), by columns. At batch 1 a unit of a CSR layer
is one dot product, a row-held layer takes four units at once (measured 8-19% faster than one at a time on
784-input layers of 100 and 200 units, the same at 500), and a layer held by columns adds
``h[c] * W[:, c]`` for each input ``c`` that is not 0 (after a ReLU about half are 0, and about half the
pixels of a Fashion-MNIST image, so it reads about half its weights).
Sums are vectorised and reassociated (a CSR row at batch 1: four sums, side by side), so their rounding
differs from torch's, within float tolerance.
At larger batches each weight is applied to the whole batch at once, contiguous in the batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit
from torch import Tensor

DENSE, CSR, COLUMNS = 0, 1, 2  # a layer's form: dense by rows, CSR, dense by columns (transposed)
# Rows of Chain.layout, each (layers + 1,) int64: where each layer's slices begin (and the last ends).
INPUTS, FORM, CROW, VALUES, BIAS = range(5)  # INPUTS and FORM: per layer (the last entry unused)


# Sums may be reassociated (vectorised) and multiply-adds fused; NaNs and infinities keep their meaning.
REASSOCIATE = {"reassoc", "contract", "nsz", "arcp"}


@njit(fastmath={"contract"}, cache=True)
def _csr_dot(values, col, h, first, last):  # pragma: no cover - compiled
    """``sum(values[p] * h[col[p]])`` over entries ``first`` to ``last``, as four sums side by side (one alone
    waits on each of its additions). Compiled without reassociation, which would let LLVM vectorise the loop
    with gathers, three times slower on AMD's Zen 4 than loads one by one; indexed unsigned, which spares
    each load numba's check for a negative index (half the time again)."""
    a0 = a1 = a2 = a3 = np.float32(0.0)
    p, end = np.uint64(first), np.uint64(last)
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    while p + four <= end:
        a0 += values[p] * h[np.uint64(col[p])]
        a1 += values[p + one] * h[np.uint64(col[p + one])]
        a2 += values[p + two] * h[np.uint64(col[p + two])]
        a3 += values[p + three] * h[np.uint64(col[p + three])]
        p += four
    while p < end:
        a0 += values[p] * h[np.uint64(col[p])]
        p += one
    return (a0 + a1) + (a2 + a3)


@njit(fastmath=REASSOCIATE, cache=True)
def _run_one(x, layout, crow, col, values, bias, relu):  # pragma: no cover - compiled
    """One input ``x`` (1, in) float32 through each layer: (1, out) float32. See :class:`Chain` for the arrays."""
    h = np.ascontiguousarray(x[0])  # a view when the row is contiguous, as it usually is
    for layer in range(relu.shape[0]):
        rows = layout[BIAS, layer + 1] - layout[BIAS, layer]
        out = bias[layout[BIAS, layer]:layout[BIAS, layer + 1]].copy()
        start = layout[VALUES, layer]
        n = layout[INPUTS, layer]
        form = layout[FORM, layer]
        if form == DENSE:  # four rows at a time: each input is read once for four dot products, which
            blocked = rows - rows % 4  # run side by side instead of each waiting on its own chain of additions
            for r in range(0, blocked, 4):
                w0 = values[start + r * n:start + (r + 1) * n]
                w1 = values[start + (r + 1) * n:start + (r + 2) * n]
                w2 = values[start + (r + 2) * n:start + (r + 3) * n]
                w3 = values[start + (r + 3) * n:start + (r + 4) * n]
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for c in range(n):  # vectorised: the sums are reassociated
                    hc = h[c]
                    a0 += w0[c] * hc
                    a1 += w1[c] * hc
                    a2 += w2[c] * hc
                    a3 += w3[c] * hc
                out[r] += a0
                out[r + 1] += a1
                out[r + 2] += a2
                out[r + 3] += a3
            for r in range(blocked, rows):
                weights = values[start + r * n:start + (r + 1) * n]
                acc = np.float32(0.0)
                for c in range(n):
                    acc += weights[c] * h[c]
                out[r] += acc
        elif form == COLUMNS:  # out += h[c] * W[:, c] over the inputs c that are not 0, four at a time
            live = np.empty(n, np.int64)
            m = 0
            for c in range(n):
                live[m] = c
                m += h[c] != 0
            k = 0
            while k + 4 <= m:
                c0, c1, c2, c3 = live[k], live[k + 1], live[k + 2], live[k + 3]
                h0, h1, h2, h3 = h[c0], h[c1], h[c2], h[c3]
                w0 = values[start + c0 * rows:start + (c0 + 1) * rows]
                w1 = values[start + c1 * rows:start + (c1 + 1) * rows]
                w2 = values[start + c2 * rows:start + (c2 + 1) * rows]
                w3 = values[start + c3 * rows:start + (c3 + 1) * rows]
                for r in range(rows):  # vectorised; out is read and written once per four inputs
                    out[r] += (w0[r] * h0 + w1[r] * h1) + (w2[r] * h2 + w3[r] * h3)
                k += 4
            for i in range(k, m):
                c = live[i]
                hc = h[c]
                w0 = values[start + c * rows:start + (c + 1) * rows]
                for r in range(rows):
                    out[r] += w0[r] * hc
        else:
            pointers = crow[layout[CROW, layer]:layout[CROW, layer + 1]]
            for r in range(rows):
                out[r] += _csr_dot(values, col, h, start + pointers[r], start + pointers[r + 1])
        if relu[layer]:
            for r in range(rows):
                out[r] = max(out[r], np.float32(0.0))
        h = out
    return h.reshape((1, h.shape[0]))


@njit(fastmath=REASSOCIATE, cache=True)
def _run_batch(h, layout, crow, col, values, bias, relu):  # pragma: no cover - compiled
    """Activations ``h`` (in, batch) float32 through each layer: (out, batch) float32."""
    batch = h.shape[1]
    for layer in range(relu.shape[0]):
        rows = layout[BIAS, layer + 1] - layout[BIAS, layer]
        out = np.empty((rows, batch), np.float32)
        start = layout[VALUES, layer]
        n = layout[INPUTS, layer]
        form = layout[FORM, layer]
        pointers = crow[layout[CROW, layer]:layout[CROW, layer + 1]]
        for r in range(rows):
            b = bias[layout[BIAS, layer] + r]
            for j in range(batch):
                out[r, j] = b
            if form == CSR:
                first, last = start + pointers[r], start + pointers[r + 1]
            else:
                first, last = 0, n
            for p in range(first, last):  # p: a CSR entry, or the input c itself
                if form == CSR:
                    v, c = values[p], col[p]
                elif form == DENSE:
                    v, c = values[start + r * n + p], p
                else:
                    v, c = values[start + p * rows + r], p
                for j in range(batch):  # contiguous in j: vectorised
                    out[r, j] += v * h[c, j]
            if relu[layer]:
                for j in range(batch):
                    out[r, j] = max(out[r, j], np.float32(0.0))
        h = out
    return h


def inputs_often_zero(relus: list[bool] | tuple[bool, ...], sparse_inputs: bool) -> list[bool]:
    """For each layer, whether its inputs are often 0: after a ReLU, or, for the first, if the chain's
    inputs are said to be (``sparse_inputs``). The chain holds such a layer by columns where dense."""
    return [sparse_inputs, *relus[:-1]]


def _starts(sizes: list[int]) -> np.ndarray:
    """Where each of consecutive blocks of ``sizes`` begins in their concatenation, and where the last
    ends: (len(sizes) + 1,) int64."""
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


@dataclass(frozen=True)
class Chain:
    """The layers of a network packed into flat arrays, one slice per layer ``l``:

    - ``values[layout[VALUES, l]:layout[VALUES, l + 1]]``: a CSR layer's non-zeros, or a dense layer's
      weight (out, in) flattened row by row (DENSE), or its transpose (in, out) flattened (COLUMNS);
    - ``crow[layout[CROW, l]:layout[CROW, l + 1]]``: a CSR layer's row pointers (relative to its values),
      zeros for a dense layer; ``col``: the CSR layers' column indices, at the same offsets as their values;
    - ``bias[layout[BIAS, l]:layout[BIAS, l + 1]]``: the layer's bias, zeros if it has none (its length
      is the layer's output units);
    - ``layout[INPUTS, l]``, ``layout[FORM, l]``: its input features, and DENSE, COLUMNS or CSR.

    The kernels take few arguments, as each costs time at every call.
    """

    layout: np.ndarray  # (5, layers + 1) int64
    crow: np.ndarray  # (sum(out) + layers,) int64
    col: np.ndarray  # (values,) int64, unused under dense layers
    values: np.ndarray  # (values,) float32
    bias: np.ndarray  # (sum(out),) float32
    relu: np.ndarray  # (layers,) bool

    @property
    def forms(self) -> list[int]:
        """DENSE, COLUMNS or CSR, for each layer."""
        return [int(f) for f in self.layout[FORM, :-1]]

    @staticmethod
    def runs(weight: Tensor) -> bool:
        """Whether the chain kernel runs a weight like ``weight``: float32, on the CPU (dense or CSR)."""
        return weight.dtype == torch.float32 and weight.device.type == "cpu"

    @classmethod
    def pack(cls, weights: list[Tensor], biases: list[Tensor | None], relus: list[bool],
             sparse_inputs: bool = False) -> Chain:
        """From weights (out, in) float32 on the CPU, each dense (strided) or CSR, biases (out,) or None,
        and ReLU flags. ``sparse_inputs`` if the chain's own inputs are often 0 (they come from a ReLU, in a
        layer timed alone, or are images on a blank background): a dense first layer is then held by
        columns, as a dense layer after a ReLU is."""
        for i, w in enumerate(weights):
            if w.layout not in (torch.strided, torch.sparse_csr) or not cls.runs(w):
                raise ValueError(f"layer {i}: the chain kernel runs dense or CSR float32 weights on the CPU, got "
                                 f"{w.layout} {w.dtype} on {w.device}")
            if i and w.shape[1] != weights[i - 1].shape[0]:  # the kernel does not check its indices
                raise ValueError(f"layer {i} takes {w.shape[1]} inputs, layer {i - 1} gives {weights[i - 1].shape[0]}")
        # A dense layer whose inputs are often 0 runs by columns: the matrix-vector kernel then skips them
        forms = [CSR if w.layout == torch.sparse_csr else COLUMNS if often_zero else DENSE
                 for w, often_zero in zip(weights, inputs_often_zero(relus, sparse_inputs))]
        values, cols, crows = [], [], []
        for w, form in zip(weights, forms):
            if form == CSR:
                values.append(w.values().numpy().astype(np.float32))
                cols.append(w.col_indices().numpy().astype(np.int64))
                crows.append(w.crow_indices().numpy().astype(np.int64))
            else:
                dense = w.detach().numpy()
                values.append(np.ascontiguousarray(dense.T if form == COLUMNS else dense, np.float32).ravel())
                cols.append(np.zeros(values[-1].size, np.int64))
                crows.append(np.zeros(w.shape[0] + 1, np.int64))
        layout = np.zeros((5, len(weights) + 1), np.int64)
        layout[INPUTS, :-1] = [w.shape[1] for w in weights]
        layout[FORM, :-1] = forms
        layout[CROW] = _starts([c.size for c in crows])
        layout[VALUES] = _starts([v.size for v in values])
        layout[BIAS] = _starts([w.shape[0] for w in weights])
        return cls(
            layout=layout,
            crow=np.concatenate(crows),
            col=np.concatenate(cols),
            values=np.concatenate(values),
            bias=np.concatenate([
                np.zeros(w.shape[0], np.float32) if b is None else b.detach().numpy().astype(np.float32)
                for w, b in zip(weights, biases)
            ]),
            relu=np.array(relus, np.bool_),
        )

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.layout, self.crow, self.col, self.values, self.bias, self.relu

    @functools.cached_property
    def _in_features(self) -> int:
        return int(self.layout[INPUTS, 0])

    def __call__(self, x: Tensor) -> Tensor:
        """Inputs (batch, in) float32 to contiguous outputs (batch, out); a batch of one by the
        matrix-vector kernel.
        Kept lean: at batch 1 its own overhead is a good part of the time."""
        if x.dtype is not torch.float32 or not x.is_cpu:  # dtypes are singletons
            raise ValueError(f"the chain kernel takes float32 inputs on the CPU, got {x.dtype} on {x.device}")
        h = (x.detach() if x.requires_grad else x).numpy()  # numpy's attributes cost less than torch's
        if h.ndim != 2 or h.shape[1] != self._in_features:  # the kernel does not check its indices
            raise ValueError(f"inputs must be (batch, {self._in_features}), got {tuple(x.shape)}")
        if h.shape[0] == 1:
            return torch.from_numpy(_run_one(h, *self._arrays))
        return torch.from_numpy(_run_batch(np.ascontiguousarray(h.T), *self._arrays)).T.contiguous()
