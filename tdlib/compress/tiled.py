"""A batch run by rows, each dense layer through a register-tiled matrix-product kernel.

The compiled chain (:mod:`.chain`) runs a batch of more than one input by features, each weight applied to
the whole batch, which suits CSR layers and wastes most of a dense layer's arithmetic. Here a dense layer is
a matrix product in the way BLAS libraries and ONNX Runtime do it: the weights laid out once in panels of
PANEL outputs (each feature's PANEL weights together, 64-byte aligned), and a tile of TILE inputs x PANEL
outputs held in registers as 8 x 2 sixteen-lane sums (:mod:`.simd`) while DEPTH features pass; on more than
one torch thread the batch's tiles (or, for a batch of fewer tiles than threads, the panels) are shared among
numba's threads. A tile leaves out the features that are 0 in all of its rows where they are enough to pay
for listing the others (units a ReLU left at 0, pixels 0 in every image), with the same bits. A CSR layer
runs with the batch in the vector lanes instead (:mod:`.csr_batch`), the activations turned from rows to
features, and back, where the layers' forms change.

:class:`TiledMLP` is a :class:`~tdlib.compress.CompressedMLP` run this way at batches above one (a batch of
one runs through the chain's own matrix-vector kernel, which measured faster), on its own copy of the
chain's arrays, each layer's weights from a 64-byte boundary: where numpy happens to place them, vector
loads can straddle two cache lines, and the same network at batch 1 measured up to 8% slower, as the
copy fell. :func:`fastest_tiled` picks it where it measures faster than what
:func:`~tdlib.compress.fastest` picks. ``fastest`` itself, and so ``compress(..., "fastest")``, keeps to
the forms it had: the archived sizes and accuracies were measured by code that reaches it, and a
change to the code a measurement reaches makes the stored value stale (:mod:`tdlib.claims.fingerprint`),
while the archived runs keep no weights to measure them again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from tdlib.compress import chain as chain_module
from tdlib.compress import csr_batch, simd
from tdlib.compress.autotune import Seconds, _quick_seconds, fastest, timing_inputs
from tdlib.compress.chain import BIAS, CROW, CSR, DENSE, INPUTS, REASSOCIATE, VALUES, Chain, _run_one, _starts
from tdlib.compress.module import CompressedMLP, Layout, compact_layouts
from tdlib.fused import kernel_threads

# The dense layers of a batch, by tiles of TILE inputs x PANEL outputs: 8 x 2 sixteen-lane sums held in
# registers (of AVX-512's 32) while up to DEPTH input features pass; DEPTH x PANEL weights (32 KiB) stay in
# a 48 KiB L1 cache while every tile of the batch reads them. Chosen by measuring tiles of 6, 8, 12 and 14
# inputs, panels of 32 and 64 outputs and depths of 128, 256 and all: 8 x 32 at 256 was fastest at batches
# of 16 and 256 on an Intel Xeon (48 KiB of L1); on an AMD EPYC (32 KiB), every feature in one pass was 3-9%
# faster than 256, so a tiled chain's depth is a choice (:func:`fastest_tiled` times both).
# A layer's outputs are padded to a multiple of QUARTER, not of HALF: what its whole panels leave (8, 16 or
# 24 outputs) runs as a tile of sixteen-lane sums, one of eight-lane sums, or both. Where 512-bit arithmetic
# runs at half the rate of 256-bit (AMD's Zen 4; AVX2), 100 outputs then cost the arithmetic of 104, not 112.
PANEL, TILE, DEPTH = 32, 8, 256
HALF, QUARTER = PANEL // 2, PANEL // 4
# A layer of fewer multiply-adds than this (a dense one's padded outputs x inputs x batch, a CSR one's non-zeros
# x padded batch) runs on one thread whatever the thread count: waking a second thread for it cost more than
# it saved. On two AMD EPYC cores, the writeup's MLP pruned 99% by weight at batch 16 took 50 us on two threads
# against 34 with this rule (34 on one thread); 90% by units 27 against 22 (32 on one); 2^17 to 2^19 measured
# the same, 2^20 slower (90% by weight at batch 16, 122 -> 138 us), though faster for 99% by weight at batch 64
# (106 -> 86 us): what a wake costs depends on how long the thread slept, which no count of work sees. Every
# thread count gives the same bits.
THREAD_WORK = 1 << 18


@njit(fastmath=REASSOCIATE, cache=True, inline="always")
def _tile(h, rows_at, kept, listed, indexed, m0, m1, first, panels, panel, out, o0, width, rows,  # pragma: no cover
          bias, b, ending):
    """One tile of :func:`_dense_rows`: inputs ``h[rows_at[i] + c]`` for its 8 rows and features ``c`` in
    ``kept[listed + m0:listed + m1]`` if ``indexed``, else in [m0, m1), the panel's 32 weights of feature ``c``
    at ``panels[panel + 32 c]``; the sums are added to those in ``out`` at ``o0 + i * width`` (for the rows
    below ``rows``) unless ``first``, and stored there; ``ending`` 1 adds the bias at ``bias[b:]``, 2 adds it
    and rectifies (the last pass), 0 neither."""
    r0, r1, r2, r3, r4, r5, r6, r7 = rows_at
    last = rows - 1
    if first:
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
    for m in range(m0, m1):
        c = np.int64(kept[np.uint64(listed + m)]) if indexed else m
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
def _narrow_tile(zero, lanes, h, rows_at, kept, listed, indexed, m0, m1, first, panels, panel, out,  # pragma: no cover
                 o0, width, rows, bias, b, ending):
    """:func:`_tile` for a panel of ``lanes`` (HALF or QUARTER) outputs, its weights of feature ``c`` at
    ``panels[panel + lanes c]``, its sums vectors like ``zero`` (zeros of that width)."""
    r0, r1, r2, r3, r4, r5, r6, r7 = rows_at
    last = rows - 1
    if first:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
    else:
        a0 = simd.load_as(zero, out, o0)
        a1 = simd.load_as(zero, out, o0 + min(1, last) * width)
        a2 = simd.load_as(zero, out, o0 + min(2, last) * width)
        a3 = simd.load_as(zero, out, o0 + min(3, last) * width)
        a4 = simd.load_as(zero, out, o0 + min(4, last) * width)
        a5 = simd.load_as(zero, out, o0 + min(5, last) * width)
        a6 = simd.load_as(zero, out, o0 + min(6, last) * width)
        a7 = simd.load_as(zero, out, o0 + min(7, last) * width)
    for m in range(m0, m1):
        c = np.int64(kept[np.uint64(listed + m)]) if indexed else m
        w = simd.load_as(zero, panels, panel + c * lanes)
        a0 = simd.fma(a0, w, simd.broadcast_as(zero, h, r0 + c))
        a1 = simd.fma(a1, w, simd.broadcast_as(zero, h, r1 + c))
        a2 = simd.fma(a2, w, simd.broadcast_as(zero, h, r2 + c))
        a3 = simd.fma(a3, w, simd.broadcast_as(zero, h, r3 + c))
        a4 = simd.fma(a4, w, simd.broadcast_as(zero, h, r4 + c))
        a5 = simd.fma(a5, w, simd.broadcast_as(zero, h, r5 + c))
        a6 = simd.fma(a6, w, simd.broadcast_as(zero, h, r6 + c))
        a7 = simd.fma(a7, w, simd.broadcast_as(zero, h, r7 + c))
    if ending:
        b0 = simd.load_as(zero, bias, b)
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
def _dense_rows(h, stride, n, panels, start, bias, out, width, relu, depth, skip, kept, starts,  # pragma: no cover
                size):
    """One dense layer of a batch, inputs by rows: ``out`` (batch, width) = ``h`` (batch, n) @ W^T + bias,
    rectified if ``relu``.

    ``h``: the inputs, flat, row ``j`` at ``h[j * stride:]``; ``panels[start:]``: the weight W (width, n),
    its outputs padded with zeros to ``width`` (a multiple of QUARTER), by panels of PANEL outputs (then one
    of HALF, one of QUARTER or both, if ``width`` leaves them), each (n, its outputs) row-major; ``bias``
    (width,); ``out``: flat, (batch, width) row-major. The features pass in passes of at most ``depth`` (0:
    all in one); each sum adds its products in the order of the features whatever the passes, so the result
    is the same to the bit. If ``skip``, a tile leaves out the features that are 0 in all of its rows
    (:func:`_kept_features`, in ``kept``, ``starts`` and ``size``, at least ``tiles n``, ``tiles (passes +
    1)`` and ``n`` long), with the same bits.
    """
    if width == 0:
        return
    batch = out.shape[0] // width
    if n == 0:  # no inputs left: the bias alone
        for i in range(out.shape[0]):
            value = bias[i % width]
            out[i] = max(value, np.float32(0.0)) if relu else value
        return
    step = _pass_depth(n, depth)
    passes, tiles = _passes(n, step), (batch + TILE - 1) // TILE
    _kept_features(h, stride, n, batch, step, width, skip, kept, starts, size, 0, tiles)
    for p in range(0, width, PANEL):  # a panel at a time: its outputs stay in cache from pass to pass
        for q in range(passes):
            for t in range(tiles):
                _tile_at(h, stride, n, panels, start, bias, out, width, relu, batch, kept, starts, step, q, p, t)


@njit(fastmath=REASSOCIATE, cache=True, parallel=True)
def _dense_rows_threads(h, stride, n, panels, start, bias, out, width, relu, depth, skip, kept,  # pragma: no cover
                        starts, size, threads):
    """:func:`_dense_rows` on ``threads`` of numba's threads: each takes a run of the batch's tiles through
    every panel where the batch has a tile for each thread (whole panels would share out unevenly where a
    layer's outputs leave a narrow one: 104 outputs are 64 + 40), else whole panels (every pass and tile of
    one); ``size`` holds ``threads`` parts of ``n`` or more. Its caller has zero-size layers run by
    :func:`_dense_rows`."""
    batch = out.shape[0] // width
    step = _pass_depth(n, depth)
    passes, tiles = _passes(n, step), (batch + TILE - 1) // TILE
    by_rows = tiles >= threads
    per = (tiles + threads - 1) // threads  # tiles a part, by rows
    parts = threads if by_rows else (width + PANEL - 1) // PANEL
    share = size.shape[0] // threads
    if not by_rows:
        _kept_features(h, stride, n, batch, step, width, skip, kept, starts, size, 0, tiles)
    for part in prange(parts):
        if by_rows:
            p0, p1, t0, t1 = 0, width, part * per, min(tiles, (part + 1) * per)
            _kept_features(h, stride, n, batch, step, width, skip, kept, starts, size[part * share:], t0, t1)
        else:
            p0, p1, t0, t1 = part * PANEL, part * PANEL + 1, 0, tiles
        for p in range(p0, p1, PANEL):
            for q in range(passes):
                for t in range(t0, t1):
                    _tile_at(h, stride, n, panels, start, bias, out, width, relu, batch, kept, starts, step, q, p,
                             t)


@njit(cache=True, inline="always")
def _pass_depth(n, depth):  # pragma: no cover - compiled
    """The features of each pass over ``n`` features in passes of at most ``depth`` (0: one pass), the
    passes equal: a last short one would pay a tile's overhead for little."""
    if depth == 0 or depth >= n:
        return n
    passes = (n + depth - 1) // depth
    return (n + passes - 1) // passes


@njit(cache=True, inline="always")
def _passes(n, step):  # pragma: no cover - compiled
    """The passes of ``step`` features (:func:`_pass_depth`) over ``n`` features."""
    return (n + step - 1) // step


@njit(cache=True)
def _kept_features(h, stride, n, batch, step, width, skip, kept, starts, size, t0, t1):  # pragma: no cover
    """For each tile ``t`` in [t0, t1) of the batch's rows ``h`` (flat, row ``j`` at ``h[j * stride:]``; a
    tile's rows past the batch its last row again) of a layer of ``width`` outputs, the features its sums
    add, in ``kept`` (flat, tile ``t``'s list at ``kept[t n:]``) and ``starts`` (flat, tile ``t``'s
    ``passes + 1`` entries at ``starts[t (passes + 1):]``, ``passes`` those of ``step`` features): where a
    tile's last entry is -1, all of its features, each pass of ``step`` in turn; else pass ``q`` adds
    ``kept[t n + starts[q]:t n + starts[q + 1]]`` of its list (the last entry: how many). ``size``: room
    for ``n`` uint32.

    If ``skip``, a tile leaves out the features whose inputs are 0 or -0 in all of its rows: a product by 0
    adds nothing to a sum, and no sum is -0 (each starts at +0, and +0 + -0 is +0), so its results keep their
    bits (not so for an infinite or NaN weight, whose product by 0 is NaN: its caller says). Zeros are found
    by their bits, not by arithmetic: a subnormal input is kept whatever the thread's flush-to-zero mode, and
    the kernel treats it as that mode says. After a ReLU a hidden unit is often 0 on all of a tile's inputs
    (about a fifth of them in a freshly initialised network, more where training has left units dead), and
    images have pixels that are 0 on most. Reading features through a list costs about a sixteenth of a
    tile's work, and listing them about 3 cycles a feature against the tile's ``width / 2``, so a tile lists
    them only where more than 1/16 + 6/width of them are 0; and where the first tile does not, the others
    are not looked at (inputs with no zeros, a first layer's, would pay for the looking alone)."""
    passes = _passes(n, step)
    for t in range(t0, t1):
        starts[t * (passes + 1) + passes] = -1
    if not skip:
        return
    bits = h.view(np.uint32)
    enough = n * (width + 96) // (16 * width) + 1  # zeros a tile lists its features for
    for t in range(t0, t1):
        if not _zeros_in_tile(bits, stride, n, batch, t, size, enough):
            if t == t0:
                return
            continue
        m, at = 0, t * (passes + 1)
        for q in range(passes):
            starts[at + q] = m
            for c in range(q * step, min(n, (q + 1) * step)):  # without a branch: zeros come unpredictably
                kept[np.uint64(t * n + m)] = c
                m += size[c] != 0
        starts[at + passes] = m


@njit(cache=True, inline="always")
def _zeros_in_tile(bits, stride, n, batch, t, size, enough):  # pragma: no cover - compiled
    """Whether ``enough`` or more of the ``n`` features are 0 or -0 in all of tile ``t``'s rows (the inputs'
    bits ``bits``, row ``j`` at ``bits[j * stride:]``; a tile's rows past the batch its last row again); if
    so, ``size[c]`` is 0 for those features, and not for the others."""
    # Indexed unsigned: numba's check of a signed index for a negative one kept these loops out of vector lanes
    magnitude = np.uint32(0x7FFFFFFF)  # every bit but the sign: 0 for 0 and -0 alone
    zeros = 0
    first = np.uint64(t * TILE * stride)
    for c in range(n):  # a feature 0 in all of the tile's rows is 0 in its first: a cheaper first look
        zeros += (bits[first + np.uint64(c)] & magnitude) == 0
    if zeros < enough:
        return False
    size[:n] = 0
    for i in range(TILE):  # a row at a time, each loop in vector lanes: 0 only where every row is 0
        row = np.uint64(min(t * TILE + i, batch - 1) * stride)
        for c in range(n):
            size[c] |= bits[row + np.uint64(c)] & magnitude
    zeros = 0
    for c in range(n):
        zeros += size[c] == 0
    return zeros >= enough


@njit(fastmath=REASSOCIATE, cache=True, inline="always")
def _tile_at(h, stride, n, panels, start, bias, out, width, relu, batch, kept, starts, step, q, p,  # pragma: no cover
             t):
    """Tile ``t`` (rows ``TILE t`` on) of the panel of outputs ``p`` on, pass ``q`` of its features
    (:func:`_kept_features`' ``kept`` and ``starts``): a whole panel's, or what the layer's whole panels
    leave (HALF, QUARTER or both)."""
    passes = _passes(n, step)
    at, j0 = t * (passes + 1), t * TILE
    first, final, indexed = q == 0, q == passes - 1, starts[at + passes] >= 0
    m0, m1 = (starts[at + q], starts[at + q + 1]) if indexed else (q * step, min(n, (q + 1) * step))
    ending = (2 if relu else 1) if final else 0  # the last pass adds the bias, and rectifies
    # Rows past the batch read its last row again, and are not stored
    rows_at = (j0 * stride, min(j0 + 1, batch - 1) * stride, min(j0 + 2, batch - 1) * stride,
               min(j0 + 3, batch - 1) * stride, min(j0 + 4, batch - 1) * stride,
               min(j0 + 5, batch - 1) * stride, min(j0 + 6, batch - 1) * stride,
               min(j0 + 7, batch - 1) * stride)
    rows = min(TILE, batch - j0)
    # A panel of outputs [o, o + w) is held at panels[start + o n:], whatever its width
    if p + PANEL <= width:
        _tile(h, rows_at, kept, t * n, indexed, m0, m1, first, panels, start + p * n, out, j0 * width + p, width, rows,
              bias, p, ending)
        return
    if width - p >= HALF:
        _narrow_tile(simd.zeros(), HALF, h, rows_at, kept, t * n, indexed, m0, m1, first, panels, start + p * n, out,
                     j0 * width + p, width, rows, bias, p, ending)
    if (width - p) % HALF:
        o = width - QUARTER
        _narrow_tile(simd.zeros8(), QUARTER, h, rows_at, kept, t * n, indexed, m0, m1, first, panels, start + o * n,
                     out, j0 * width + o, width, rows, bias, o, ending)


@njit(fastmath=REASSOCIATE, cache=True)
def _run_rows(x, layout, crow, col, values, bias, relu, panels, panel_at, panel_bias, threads,  # pragma: no cover
              depth, thread_work):
    """Inputs ``x`` (batch, in) float32, C-contiguous, through each layer: (batch, out) float32.

    A dense layer runs by :func:`_dense_rows` (on ``threads`` > 1, :func:`_dense_rows_threads`), its features
    in passes of at most ``depth`` (0: all in one), on its weight panels at ``panels[panel_at[0, layer]:]`` and
    its bias, padded alike, at ``panel_bias[panel_at[1, layer]:]``, skipping a tile's inputs that are all 0
    where ``panel_at[2, layer]`` is 1 (:func:`panels_of`), on activations by rows
    (batch, width), width padded with zeros to a multiple of QUARTER; a CSR layer (``panel_at[0, layer] ==
    -1``) by :func:`~tdlib.compress.csr_batch.csr_rows` (on ``threads`` > 1, ``csr_rows_threads``), on
    activations by features (in, batch padded to a multiple of 16). Activations are laid out again where
    the layers' forms change. A layer of fewer than ``thread_work`` multiply-adds (THREAD_WORK) runs on one
    thread."""
    batch = x.shape[0]
    h = x.reshape(-1)
    stride = x.shape[1]
    by_features = False  # h is (features, padded), else (batch, stride)
    padded = csr_batch.padded_batch(batch)
    kept, starts, size = _lists_for(layout, panel_at, batch, depth, threads)
    for layer in range(relu.shape[0]):
        rows = layout[BIAS, layer + 1] - layout[BIAS, layer]
        n = layout[INPUTS, layer]
        if panel_at[0, layer] >= 0:
            if by_features:
                stride = _quarters(n)
                h = csr_batch.rows_of(h, n, batch, stride)
                by_features = False
            width = _quarters(rows)
            out = simd.aligned_empty(batch * width)
            skip = panel_at[2, layer] == 1
            if threads > 1 and n and width and width * n * batch >= thread_work:
                _dense_rows_threads(h, stride, n, panels, panel_at[0, layer], panel_bias[panel_at[1, layer]:], out,
                                    width, relu[layer], depth, skip, kept, starts, size, threads)
            else:
                _dense_rows(h, stride, n, panels, panel_at[0, layer], panel_bias[panel_at[1, layer]:], out, width,
                            relu[layer], depth, skip, kept, starts, size)
            stride = width
        else:
            if not by_features:
                h = csr_batch.features_of(h, stride, n, batch)
                by_features = True
            out = simd.aligned_empty(rows * padded)
            pointers = crow[layout[CROW, layer]:layout[CROW, layer + 1]]
            b = bias[layout[BIAS, layer]:layout[BIAS, layer + 1]]
            if threads > 1 and pointers[rows] * padded >= thread_work:
                csr_batch.csr_rows_threads(h, padded, values, col, pointers, layout[VALUES, layer], b, relu[layer],
                                           out, threads)
            else:
                csr_batch.csr_rows(h, padded, values, col, pointers, layout[VALUES, layer], b, relu[layer], out, 0,
                                   rows)
        h = out
    rows = layout[BIAS, relu.shape[0]] - layout[BIAS, relu.shape[0] - 1]
    if by_features:
        return csr_batch.rows_of(h, rows, batch, rows).reshape((batch, rows))
    result = np.empty((batch, rows), np.float32)
    for j in range(batch):
        result[j] = h[j * stride:j * stride + rows]
    return result


@njit(cache=True)
def _lists_for(layout, panel_at, batch, depth, threads):  # pragma: no cover - compiled
    """The arrays :func:`_kept_features` fills for a batch of ``batch`` on ``threads``, once for all of the
    chain's dense layers: ``starts`` for the most passes of any, ``kept`` (and ``size``, for each thread)
    for the most features of those that may skip some."""
    most, passes = 0, 0
    for layer in range(panel_at.shape[1]):
        n = layout[INPUTS, layer]
        if panel_at[0, layer] >= 0 and n:
            passes = max(passes, _passes(n, _pass_depth(n, depth)))
            if panel_at[2, layer] == 1:
                most = max(most, n)
    tiles = (batch + TILE - 1) // TILE
    return (np.empty(tiles * most, np.int32), np.empty(tiles * (passes + 1), np.int64),
            np.empty(max(threads, 1) * most, np.uint32))


@njit(cache=True, inline="always")
def _quarters(n):  # pragma: no cover - compiled
    """``n`` rounded up to a multiple of QUARTER: the width of a dense layer's activations by rows."""
    return (n + QUARTER - 1) // QUARTER * QUARTER


# These kernels are compiled with chain.py's layout constants and simd.py's intrinsics in them
simd.cache_depends_on((_tile, _narrow_tile, _dense_rows, _dense_rows_threads, _pass_depth, _passes,
                       _kept_features, _zeros_in_tile, _tile_at, _run_rows, _lists_for, _quarters),
                      simd, chain_module, csr_batch)


def panels_of(chain: Chain) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``chain``'s dense layers as :func:`_dense_rows` reads them: ``(panels, at, bias)``. Layer ``l``'s weight
    (out, in), its outputs padded with zeros to a multiple of QUARTER, panel by panel (PANEL outputs each,
    then HALF, QUARTER or both, as the padded outputs leave), each (in, its outputs) row-major, starts at
    ``panels[at[0, l]]``, its bias padded alike at ``bias[at[1, l]]``; ``at[2, l]`` is 1 where every weight
    is finite (its tiles may skip inputs that are 0), else 0; a CSR layer has ``at[:, l] == -1``. Both
    arrays start on 64-byte boundaries, and so does each layer's part of them."""
    blocks, biases = [], []
    at = np.full((3, len(chain.relu)), -1, np.int64)
    offsets = [0, 0]
    for layer, form in enumerate(chain.forms):
        if form == CSR:
            continue
        rows, n = int(chain.layout[BIAS, layer + 1] - chain.layout[BIAS, layer]), int(chain.layout[INPUTS, layer])
        flat = chain.values[chain.layout[VALUES, layer]:chain.layout[VALUES, layer + 1]]
        weight = flat.reshape(rows, n) if form == DENSE else flat.reshape(n, rows).T
        width = -(-rows // QUARTER) * QUARTER
        padded = np.zeros((width, n), np.float32)
        padded[:rows] = weight
        full = width // PANEL * PANEL
        narrow = [(full, full + HALF)] if width - full >= HALF else []
        narrow += [(width - QUARTER, width)] if (width - full) % HALF else []
        parts = [padded[:full].reshape(full // PANEL, PANEL, n).transpose(0, 2, 1).ravel()]
        parts += [padded[o0:o1].T.ravel() for o0, o1 in narrow]
        bias = np.zeros(width, np.float32)
        bias[:rows] = chain.bias[chain.layout[BIAS, layer]:chain.layout[BIAS, layer + 1]]
        blocks.append(_padded_to_lanes(np.concatenate(parts)))
        biases.append(_padded_to_lanes(bias))
        at[:, layer] = [*offsets, int(np.isfinite(weight).all())]
        offsets = [offsets[0] + blocks[-1].size, offsets[1] + biases[-1].size]
    panels, bias = simd.aligned_empty(offsets[0]), simd.aligned_empty(offsets[1])
    if blocks:
        panels[:], bias[:] = np.concatenate(blocks), np.concatenate(biases)
    return panels, at, bias


def _padded_to_lanes(values: np.ndarray) -> np.ndarray:
    """``values`` and zeros after them to a multiple of 16 (so that what follows starts 64 bytes on)."""
    return np.concatenate([values, np.zeros(-values.size % simd.LANES, values.dtype)])


def aligned_arrays(chain: Chain) -> tuple[np.ndarray, ...]:
    """``chain``'s arrays as its kernels take them (:attr:`Chain._arrays`), with ``values`` laid out again so
    that each layer's slice starts on a 64-byte boundary (zeros between the slices), ``col`` at the same
    offsets and ``layout``'s VALUES row to match; the other arrays are shared."""
    starts = chain.layout[VALUES]
    sizes = np.diff(starts)
    at = _starts([-(-int(size) // simd.LANES) * simd.LANES for size in sizes])
    values, col = simd.aligned_empty(int(at[-1])), np.zeros(int(at[-1]), np.int64)
    values[:] = 0
    for layer, size in enumerate(sizes):
        values[at[layer]:at[layer] + size] = chain.values[starts[layer]:starts[layer + 1]]
        col[at[layer]:at[layer] + size] = chain.col[starts[layer]:starts[layer + 1]]
    layout = chain.layout.copy()
    layout[VALUES] = at
    return layout, chain.crow, col, values, chain.bias, chain.relu


@dataclass(frozen=True)
class TiledChain(Chain):
    """A :class:`Chain` whose batches other than one run by rows through :func:`_run_rows`, features in
    passes of at most ``depth`` (0: all in one pass), each layer of fewer than ``thread_work`` multiply-adds
    on one thread (THREAD_WORK), on the chain's arrays and weight panels; a batch of one through the chain's
    own kernel on :func:`aligned_arrays`. Panels and aligned arrays are laid out when first needed (and again
    after unpickling)."""

    depth: int = DEPTH
    thread_work: int = THREAD_WORK

    @classmethod
    def of(cls, chain: Chain, depth: int = DEPTH, thread_work: int = THREAD_WORK) -> TiledChain:
        """``chain``'s arrays (shared, not copied), run by rows in passes of at most ``depth`` features, a
        layer of fewer than ``thread_work`` multiply-adds on one thread."""
        return cls(**{field: getattr(chain, field) for field in Chain.__dataclass_fields__}, depth=depth,
                   thread_work=thread_work)

    @functools.cached_property
    def panels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return panels_of(self)

    @functools.cached_property
    def _aligned(self) -> tuple[np.ndarray, ...]:
        return aligned_arrays(self)

    def __getstate__(self) -> dict:  # what is laid out on 64-byte boundaries is laid out again where needed
        return {k: v for k, v in self.__dict__.items() if k not in ("panels", "_aligned")}

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype is not torch.float32 or not x.is_cpu or x.dim() != 2:
            return super().__call__(x)  # which says what is wrong
        h = (x.detach() if x.requires_grad else x).numpy()
        if h.shape[1] != self._in_features:  # the kernel does not check its indices
            raise ValueError(f"inputs must be (batch, {self._in_features}), got {tuple(x.shape)}")
        if h.shape[0] == 1:  # here rather than through the chain's own call, whose checks would run again
            return torch.from_numpy(_run_one(h, *self._aligned))
        # Always through kernel_threads, one thread too: the first call in a process starts numba's OpenMP
        # pool (the kernel holds a parallel loop), which sets the thread count torch reads to every core;
        # kernel_threads puts torch's count back, or every later call, and torch, would run on all cores.
        with kernel_threads() as threads:
            return torch.from_numpy(_run_rows(np.ascontiguousarray(h), *self._arrays, *self.panels, threads,
                                              self.depth, self.thread_work))


class TiledMLP(CompressedMLP):
    """A compressed model run as one compiled chain (float32, on the CPU), its batches by rows, dense
    layers by the tiled kernel and CSR layers with the batch in the lanes (:class:`TiledChain`), features in
    passes of at most ``depth`` (0: all in one pass; the results are the same to the bit, the speed is the
    cache's), and a batch of one by the chain's matrix-vector kernel (a dense first layer by columns if
    ``sparse_inputs``), both on arrays laid out on 64-byte boundaries. Everything else is
    :class:`CompressedMLP`'s; saved, it loads as the fused chain it is (the file holds no run-time choice of
    kernel)."""

    def __init__(self, linears, relus, layouts: list[Layout] | tuple[Layout, ...] | None = None,
                 depth: int = DEPTH, sparse_inputs: bool = False) -> None:
        if depth < 0:
            raise ValueError(f"depth must be 0 (every feature in one pass) or positive, got {depth}")
        super().__init__(linears, relus, layouts, fused=True, sparse_inputs=sparse_inputs)
        self.depth = depth

    @property
    def form(self) -> str:
        passes = "" if self.depth == DEPTH else ", in one pass" if self.depth == 0 else f", in passes of {self.depth}"
        by_features = ", CSR layers by features" if "csr" in self.layouts else ""
        return f"{super().form}, aligned, batches by rows, tiled{passes}{by_features}"

    def _ensure_backend(self) -> object | None:
        backend = super()._ensure_backend()
        if type(backend) is Chain:  # built again: the same arrays, run by rows
            backend = self._backend = TiledChain.of(backend, self.depth)
        return backend


def tiled(model: CompressedMLP, layouts: list[Layout] | tuple[Layout, ...] | None = None,
          depth: int = DEPTH, sparse_inputs: bool = False) -> TiledMLP:
    """``model``'s layers (shared, not copied) run as a :class:`TiledMLP`, layer ``i`` in ``layouts[i]``
    (by default the form that stores fewer numbers), features in passes of at most ``depth`` (0: one), a
    dense first layer held by columns if ``sparse_inputs``."""
    return TiledMLP(model.linears, model.relus, layouts, depth, sparse_inputs)


def fastest_tiled(model: CompressedMLP, batch: int, threads: int | None = None,
                  seconds: Seconds = _quick_seconds, sample: Tensor | None = None) -> CompressedMLP:
    """What :func:`~tdlib.compress.fastest` picks, or ``model`` tiled, whichever ``seconds`` measures fastest
    at ``batch`` inputs on ``threads`` threads (on ``sample``'s rows, if given). Tiled: at a batch of one,
    in the form ``fastest`` picks where that is the fused chain (the same kernel, on aligned arrays); at
    larger batches, each of :func:`tiled_forms`. Weights the chain cannot run (not float32 on the CPU) get
    what ``fastest`` picks."""
    chosen = fastest(model, batch, threads, seconds, sample=sample)
    weight = model.linears[0].weight
    if not Chain.runs(weight):
        return chosen
    if batch > 1:
        candidates = [chosen, *tiled_forms(model)]
    elif chosen.fused:
        candidates = [chosen, tiled(chosen, chosen.layouts, sparse_inputs=chosen.sparse_inputs)]
    else:
        return chosen
    x = timing_inputs(sample, batch, model.shapes[0][1], weight)
    return min(candidates, key=lambda candidate: seconds(candidate, x, threads))


def tiled_forms(model: CompressedMLP) -> list[TiledMLP]:
    """``model`` tiled in each form worth timing: every layer dense, and each in the form that stores fewer
    numbers (once, where the two are the same), with features in passes of DEPTH and all in one pass."""
    layouts = dict.fromkeys([("dense",) * len(model.linears), compact_layouts(model.linears)])
    return [tiled(model, each, depth) for each in layouts for depth in (DEPTH, 0)]
