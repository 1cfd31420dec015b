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
Sums are vectorised and reassociated, so their rounding differs from torch's, within float tolerance.
At larger batches each weight is applied to the whole batch at once, contiguous in the batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from tdlib.compress import simd
from tdlib.kernel_threads import kernel_threads

DENSE, CSR, COLUMNS = 0, 1, 2  # a layer's form: dense by rows, CSR, dense by columns (transposed)
# Rows of Chain.layout, each (layers + 1,) int64: where each layer's slices begin (and the last ends).
INPUTS, FORM, CROW, VALUES, BIAS = range(5)  # INPUTS and FORM: per layer (the last entry unused)


# Sums may be reassociated (vectorised) and multiply-adds fused; NaNs and infinities keep their meaning.
REASSOCIATE = {"reassoc", "contract", "nsz", "arcp"}


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
                acc = np.float32(0.0)
                for p in range(start + pointers[r], start + pointers[r + 1]):
                    acc += values[p] * h[col[p]]
                out[r] += acc
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


# The dense layers of a batch, by tiles of TILE inputs x PANEL outputs: 8 x 2 sixteen-lane sums held in
# registers (of AVX-512's 32) while DEPTH input features pass; DEPTH x PANEL weights (32 KiB) stay in a
# 48 KiB L1 cache while every tile of the batch reads them. A layer's last panel is half as wide if its
# outputs leave 16 or fewer to it. Chosen by measuring tiles of 6, 8, 12 and 14 inputs, panels of 32 and
# 64 outputs and depths of 128, 256 and all (8 x 32 at 256 was fastest at batches of 16 and 256).
PANEL, TILE, DEPTH = 32, 8, 256
HALF = PANEL // 2


@njit(fastmath=REASSOCIATE, cache=True, inline="always")
def _tile(h, rows_at, k0, k1, panels, panel, out, o0, width, rows, bias, b, ending):  # pragma: no cover
    """One tile of :func:`_dense_rows`: inputs ``h[rows_at[i] + c]`` for its 8 rows and features ``c`` in
    [k0, k1), the panel's 32 weights of feature ``c`` at ``panels[panel + 32 c]``; the sums are added to
    those in ``out`` at ``o0 + i * width`` (for the rows below ``rows``) unless ``k0`` is 0, and stored
    there; ``ending`` 1 adds the bias at ``bias[b:]``, 2 adds it and rectifies (the last pass), 0 neither."""
    r0, r1, r2, r3, r4, r5, r6, r7 = rows_at
    last = rows - 1
    if k0 == 0:
        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = simd.zeros()
        a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = simd.zeros()
    else:  # rows past the batch load its last row's sums, and are not stored
        o = o0
        a00, a01 = simd.load(out, o), simd.load(out, o + 16)
        o = o0 + min(1, last) * width
        a10, a11 = simd.load(out, o), simd.load(out, o + 16)
        o = o0 + min(2, last) * width
        a20, a21 = simd.load(out, o), simd.load(out, o + 16)
        o = o0 + min(3, last) * width
        a30, a31 = simd.load(out, o), simd.load(out, o + 16)
        o = o0 + min(4, last) * width
        a40, a41 = simd.load(out, o), simd.load(out, o + 16)
        o = o0 + min(5, last) * width
        a50, a51 = simd.load(out, o), simd.load(out, o + 16)
        o = o0 + min(6, last) * width
        a60, a61 = simd.load(out, o), simd.load(out, o + 16)
        o = o0 + min(7, last) * width
        a70, a71 = simd.load(out, o), simd.load(out, o + 16)
    for c in range(k0, k1):
        w0 = simd.load(panels, panel + c * PANEL)
        w1 = simd.load(panels, panel + c * PANEL + 16)
        x = simd.broadcast(h, r0 + c)
        a00, a01 = simd.fma(a00, w0, x), simd.fma(a01, w1, x)
        x = simd.broadcast(h, r1 + c)
        a10, a11 = simd.fma(a10, w0, x), simd.fma(a11, w1, x)
        x = simd.broadcast(h, r2 + c)
        a20, a21 = simd.fma(a20, w0, x), simd.fma(a21, w1, x)
        x = simd.broadcast(h, r3 + c)
        a30, a31 = simd.fma(a30, w0, x), simd.fma(a31, w1, x)
        x = simd.broadcast(h, r4 + c)
        a40, a41 = simd.fma(a40, w0, x), simd.fma(a41, w1, x)
        x = simd.broadcast(h, r5 + c)
        a50, a51 = simd.fma(a50, w0, x), simd.fma(a51, w1, x)
        x = simd.broadcast(h, r6 + c)
        a60, a61 = simd.fma(a60, w0, x), simd.fma(a61, w1, x)
        x = simd.broadcast(h, r7 + c)
        a70, a71 = simd.fma(a70, w0, x), simd.fma(a71, w1, x)
    if ending:
        b0, b1 = simd.load(bias, b), simd.load(bias, b + 16)
        rectify = ending == 2
        a00, a01 = simd.add_relu(a00, b0, rectify), simd.add_relu(a01, b1, rectify)
        a10, a11 = simd.add_relu(a10, b0, rectify), simd.add_relu(a11, b1, rectify)
        a20, a21 = simd.add_relu(a20, b0, rectify), simd.add_relu(a21, b1, rectify)
        a30, a31 = simd.add_relu(a30, b0, rectify), simd.add_relu(a31, b1, rectify)
        a40, a41 = simd.add_relu(a40, b0, rectify), simd.add_relu(a41, b1, rectify)
        a50, a51 = simd.add_relu(a50, b0, rectify), simd.add_relu(a51, b1, rectify)
        a60, a61 = simd.add_relu(a60, b0, rectify), simd.add_relu(a61, b1, rectify)
        a70, a71 = simd.add_relu(a70, b0, rectify), simd.add_relu(a71, b1, rectify)
    simd.store(out, o0, a00)
    simd.store(out, o0 + 16, a01)
    if rows > 1:
        simd.store(out, o0 + width, a10)
        simd.store(out, o0 + width + 16, a11)
    if rows > 2:
        simd.store(out, o0 + 2 * width, a20)
        simd.store(out, o0 + 2 * width + 16, a21)
    if rows > 3:
        simd.store(out, o0 + 3 * width, a30)
        simd.store(out, o0 + 3 * width + 16, a31)
    if rows > 4:
        simd.store(out, o0 + 4 * width, a40)
        simd.store(out, o0 + 4 * width + 16, a41)
    if rows > 5:
        simd.store(out, o0 + 5 * width, a50)
        simd.store(out, o0 + 5 * width + 16, a51)
    if rows > 6:
        simd.store(out, o0 + 6 * width, a60)
        simd.store(out, o0 + 6 * width + 16, a61)
    if rows > 7:
        simd.store(out, o0 + 7 * width, a70)
        simd.store(out, o0 + 7 * width + 16, a71)


@njit(fastmath=REASSOCIATE, cache=True, inline="always")
def _half_tile(h, rows_at, k0, k1, panels, panel, out, o0, width, rows, bias, b, ending):  # pragma: no cover
    """:func:`_tile` for a panel of 16 outputs, its 16 weights of feature ``c`` at ``panels[panel + 16 c]``."""
    r0, r1, r2, r3, r4, r5, r6, r7 = rows_at
    last = rows - 1
    if k0 == 0:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = simd.zeros()
    else:
        a0 = simd.load(out, o0)
        a1 = simd.load(out, o0 + min(1, last) * width)
        a2 = simd.load(out, o0 + min(2, last) * width)
        a3 = simd.load(out, o0 + min(3, last) * width)
        a4 = simd.load(out, o0 + min(4, last) * width)
        a5 = simd.load(out, o0 + min(5, last) * width)
        a6 = simd.load(out, o0 + min(6, last) * width)
        a7 = simd.load(out, o0 + min(7, last) * width)
    for c in range(k0, k1):
        w = simd.load(panels, panel + c * HALF)
        a0 = simd.fma(a0, w, simd.broadcast(h, r0 + c))
        a1 = simd.fma(a1, w, simd.broadcast(h, r1 + c))
        a2 = simd.fma(a2, w, simd.broadcast(h, r2 + c))
        a3 = simd.fma(a3, w, simd.broadcast(h, r3 + c))
        a4 = simd.fma(a4, w, simd.broadcast(h, r4 + c))
        a5 = simd.fma(a5, w, simd.broadcast(h, r5 + c))
        a6 = simd.fma(a6, w, simd.broadcast(h, r6 + c))
        a7 = simd.fma(a7, w, simd.broadcast(h, r7 + c))
    if ending:
        b0 = simd.load(bias, b)
        rectify = ending == 2
        a0, a1, a2, a3 = (simd.add_relu(a0, b0, rectify), simd.add_relu(a1, b0, rectify),
                          simd.add_relu(a2, b0, rectify), simd.add_relu(a3, b0, rectify))
        a4, a5, a6, a7 = (simd.add_relu(a4, b0, rectify), simd.add_relu(a5, b0, rectify),
                          simd.add_relu(a6, b0, rectify), simd.add_relu(a7, b0, rectify))
    simd.store(out, o0, a0)
    if rows > 1:
        simd.store(out, o0 + width, a1)
    if rows > 2:
        simd.store(out, o0 + 2 * width, a2)
    if rows > 3:
        simd.store(out, o0 + 3 * width, a3)
    if rows > 4:
        simd.store(out, o0 + 4 * width, a4)
    if rows > 5:
        simd.store(out, o0 + 5 * width, a5)
    if rows > 6:
        simd.store(out, o0 + 6 * width, a6)
    if rows > 7:
        simd.store(out, o0 + 7 * width, a7)


@njit(fastmath=REASSOCIATE, cache=True)
def _dense_rows(h, stride, n, panels, start, bias, out, width, relu):  # pragma: no cover - compiled
    """One dense layer of a batch, inputs by rows: ``out`` (batch, width) = ``h`` (batch, n) @ W^T + bias,
    rectified if ``relu``.

    ``h``: the inputs, flat, row ``j`` at ``h[j * stride:]``; ``panels[start:]``: the weight W (width, n),
    its outputs padded with zeros to ``width`` (a multiple of 16), by panels of PANEL outputs (the last of
    HALF if ``width`` leaves it that), each (n, its outputs) row-major; ``bias`` (width,); ``out``: flat,
    (batch, width) row-major.
    """
    if width == 0:
        return
    batch = out.shape[0] // width
    if n == 0:  # no inputs left: the bias alone
        for i in range(out.shape[0]):
            value = bias[i % width]
            out[i] = max(value, np.float32(0.0)) if relu else value
        return
    passes = (n + DEPTH - 1) // DEPTH
    depth = (n + passes - 1) // passes  # equal passes: a last short one would pay a tile's overhead for little
    for p in range(0, width, PANEL):  # a panel at a time: its outputs stay in cache from pass to pass
        for k0 in range(0, n, depth):
            for j0 in range(0, batch, TILE):
                _tile_at(h, stride, n, panels, start, bias, out, width, relu, batch, k0, min(n, k0 + depth), p, j0)


@njit(fastmath=REASSOCIATE, cache=True, parallel=True)
def _dense_rows_threads(h, stride, n, panels, start, bias, out, width, relu):  # pragma: no cover - compiled
    """:func:`_dense_rows` on numba's threads, each taking whole panels (every pass and tile of it); its
    caller has zero-size layers run by :func:`_dense_rows`."""
    batch = out.shape[0] // width
    passes = (n + DEPTH - 1) // DEPTH
    depth = (n + passes - 1) // passes
    for q in prange((width + PANEL - 1) // PANEL):
        for k0 in range(0, n, depth):
            for j0 in range(0, batch, TILE):
                _tile_at(h, stride, n, panels, start, bias, out, width, relu, batch, k0, min(n, k0 + depth),
                         q * PANEL, j0)


@njit(fastmath=REASSOCIATE, cache=True, inline="always")
def _tile_at(h, stride, n, panels, start, bias, out, width, relu, batch, k0, k1, p, j0):  # pragma: no cover
    """The tile of rows ``j0`` on of the panel of outputs ``p`` on, features ``k0`` to ``k1``: a whole
    panel's or a half one's."""
    ending = (2 if relu else 1) if k1 == n else 0  # the last pass adds the bias, and rectifies
    # Rows past the batch read its last row again, and are not stored
    rows_at = (j0 * stride, min(j0 + 1, batch - 1) * stride, min(j0 + 2, batch - 1) * stride,
               min(j0 + 3, batch - 1) * stride, min(j0 + 4, batch - 1) * stride,
               min(j0 + 5, batch - 1) * stride, min(j0 + 6, batch - 1) * stride,
               min(j0 + 7, batch - 1) * stride)
    rows = min(TILE, batch - j0)
    if p + PANEL <= width:
        _tile(h, rows_at, k0, k1, panels, start + p * n, out, j0 * width + p, width, rows, bias, p, ending)
    else:
        _half_tile(h, rows_at, k0, k1, panels, start + p * n, out, j0 * width + p, width, rows, bias, p, ending)


@njit(fastmath=REASSOCIATE, cache=True)
def _run_rows(x, layout, crow, col, values, bias, relu, panels, panel_at, panel_bias, threads):  # pragma: no cover
    """Inputs ``x`` (batch, in) float32, C-contiguous, through each layer: (batch, out) float32.

    A dense layer runs by :func:`_dense_rows` (on ``threads`` > 1, :func:`_dense_rows_threads`) on its
    weight panels at ``panels[panel_at[0, layer]:]`` and
    its bias, padded alike, at ``panel_bias[panel_at[1, layer]:]`` (:meth:`Chain.panels`); a CSR layer
    (``panel_at[0, layer] == -1``) gathers each input's entries row by row. Between layers, activations
    are (batch, width), width padded with zeros to whole vectors of 16."""
    batch = x.shape[0]
    h = x.reshape(-1)
    stride = x.shape[1]
    for layer in range(relu.shape[0]):
        rows = layout[BIAS, layer + 1] - layout[BIAS, layer]
        n = layout[INPUTS, layer]
        width = (rows + simd.LANES - 1) // simd.LANES * simd.LANES
        out = simd.aligned_empty(batch * width)
        if panel_at[0, layer] >= 0 and threads > 1 and n and width:
            _dense_rows_threads(h, stride, n, panels, panel_at[0, layer], panel_bias[panel_at[1, layer]:], out,
                                width, relu[layer])
        elif panel_at[0, layer] >= 0:
            _dense_rows(h, stride, n, panels, panel_at[0, layer], panel_bias[panel_at[1, layer]:], out, width,
                        relu[layer])
        else:
            start = layout[VALUES, layer]
            pointers = crow[layout[CROW, layer]:layout[CROW, layer + 1]]
            b = bias[layout[BIAS, layer]:layout[BIAS, layer + 1]]
            for j in range(batch):
                for r in range(rows):
                    acc = b[r]
                    for p in range(start + pointers[r], start + pointers[r + 1]):
                        acc += values[p] * h[j * stride + col[p]]
                    out[j * width + r] = max(acc, np.float32(0.0)) if relu[layer] else acc
        h = out
        stride = width
    rows = layout[BIAS, relu.shape[0]] - layout[BIAS, relu.shape[0] - 1]
    result = np.empty((batch, rows), np.float32)
    for j in range(batch):
        result[j] = h[j * stride:j * stride + rows]
    return result


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
    tiled: bool = False  # batches of more than one by rows, dense layers by the tiled kernel (_dense_rows)

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
             sparse_inputs: bool = False, tiled: bool = False) -> Chain:
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
            tiled=tiled,
        )

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.layout, self.crow, self.col, self.values, self.bias, self.relu

    @functools.cached_property
    def panels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dense layers as :func:`_dense_rows` reads them: ``(panels, at, bias)``. Layer ``l``'s weight
        (out, in), its outputs padded with zeros to a multiple of 16, panel by panel (PANEL outputs each,
        the last HALF if the padded outputs leave it that), each (in, its outputs) row-major, starts at
        ``panels[at[0, l]]``, its bias padded alike at ``bias[at[1, l]]``; a CSR layer has ``at[:, l] ==
        -1``. Both arrays start on 64-byte boundaries."""
        blocks, biases = [], []
        at = np.full((2, len(self.relu)), -1, np.int64)
        offsets = [0, 0]
        for layer, form in enumerate(self.forms):
            if form == CSR:
                continue
            rows, n = int(self.layout[BIAS, layer + 1] - self.layout[BIAS, layer]), int(self.layout[INPUTS, layer])
            flat = self.values[self.layout[VALUES, layer]:self.layout[VALUES, layer + 1]]
            weight = flat.reshape(rows, n) if form == DENSE else flat.reshape(n, rows).T
            width = -(-rows // HALF) * HALF
            padded = np.zeros((width, n), np.float32)
            padded[:rows] = weight
            full = width // PANEL * PANEL  # whole panels, then a half one if width leaves it
            blocks.append(np.concatenate([padded[:full].reshape(full // PANEL, PANEL, n).transpose(0, 2, 1).ravel(),
                                          padded[full:].T.ravel()]))
            bias = np.zeros(width, np.float32)
            bias[:rows] = self.bias[self.layout[BIAS, layer]:self.layout[BIAS, layer + 1]]
            biases.append(bias)
            at[:, layer] = offsets
            offsets = [offsets[0] + blocks[-1].size, offsets[1] + width]
        panels, bias = simd.aligned_empty(offsets[0]), simd.aligned_empty(offsets[1])
        if blocks:
            panels[:], bias[:] = np.concatenate(blocks), np.concatenate(biases)
        return panels, at, bias

    def __getstate__(self) -> dict:  # the panels are rebuilt where needed, on 64-byte boundaries again
        return {k: v for k, v in self.__dict__.items() if k != "panels"}

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
        if self.tiled:
            if torch.get_num_threads() == 1:
                return torch.from_numpy(_run_rows(np.ascontiguousarray(h), *self._arrays, *self.panels, 1))
            with kernel_threads() as threads:
                return torch.from_numpy(_run_rows(np.ascontiguousarray(h), *self._arrays, *self.panels, threads))
        return torch.from_numpy(_run_batch(np.ascontiguousarray(h.T), *self._arrays)).T.contiguous()
