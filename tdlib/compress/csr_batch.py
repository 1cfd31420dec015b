"""A CSR layer of a batch with the batch in the vector lanes: each stored weight applied to sixteen inputs at once.

A CSR weight's rows are irregular, so its products cannot be tiled the way a dense layer's are
(:mod:`.tiled`). Held by features instead, the activations (in, batch), each feature's row of the batch
contiguous, a stored weight ``W[r, c]`` adds ``W[r, c] * h[c, j:j + 16]`` to sixteen sums of output ``r`` in
one vector multiply-add: a layer costs one such operation per non-zero and sixteen of the batch, the arithmetic
of its non-zeros alone, with the sums held in registers while the row's non-zeros pass (a 90%-pruned layer of
the writeup's MLP at batch 256 in a quarter of the time of gathering each input's entries one by one).

The batch is padded to a multiple of sixteen (:func:`features_of` puts 0 there; a layer's outputs hold its
bias there, rectified or not, never read out). Each output's sum adds its row's products one after another,
in the order they are stored, from 0, then the bias: the same arithmetic whatever the batch, the row of the
batch or the threads, so an input's outputs are the same to the bit in any batch these kernels run (a tiled
chain runs a batch of one through the chain's own kernel instead) and on any number of threads. The kernels
are compiled without fast-math flags, so that this order is the compiled one by construction.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from tdlib.compress import simd

LANES = simd.LANES  # a block of the batch: one vector of sums
WIDE = 4 * LANES  # a row's sums for four blocks at once: four chains of multiply-adds in flight
BLOCK = 32  # rows a transpose reads at a time


@njit(cache=True)
def padded_batch(batch):  # pragma: no cover - compiled
    """The length of a feature's row of the batch: ``batch`` rounded up to a multiple of LANES."""
    return (batch + LANES - 1) // LANES * LANES


@njit(cache=True)
def transposed(h, stride, rows, columns, width):  # pragma: no cover - compiled
    """``h`` (rows, ``columns``), flat, row ``i`` at ``h[i * stride:]``, transposed: flat (columns, ``width``)
    on a 64-byte boundary, each row ``rows`` values then 0 to ``width``.

    BLOCK rows at a time, each column's BLOCK values in one go: a loop of a known length over the rows is
    compiled to vector lanes, and the block's rows stay in cache from column to column (a batch of 256 by
    784 features in 58 us, against 150 us a column at a time over every row; blocks of 16 and 64 rows
    measured slower)."""
    out = simd.aligned_empty(columns * width)
    whole = rows // BLOCK * BLOCK
    for i0 in range(0, whole, BLOCK):
        _rows_transposed(h, stride, columns, out, width, i0, BLOCK)
    if rows - whole >= BLOCK // 2:  # a batch of 16 to 31 rows: half a block
        _rows_transposed(h, stride, columns, out, width, whole, BLOCK // 2)
        whole += BLOCK // 2
    for c in range(columns):
        for i in range(whole, rows):
            out[c * width + i] = h[i * stride + c]
        for i in range(rows, width):
            out[c * width + i] = np.float32(0.0)
    return out


@njit(cache=True, inline="always")
def _rows_transposed(h, stride, columns, out, width, i0, block):  # pragma: no cover - compiled
    """:func:`transposed`'s rows ``i0`` to ``i0 + block`` (``block`` a constant where it is inlined)."""
    for c in range(columns):
        at, read = np.uint64(c * width + i0), np.uint64(i0 * stride + c)
        for i in range(block):  # indexed unsigned, kept in vector lanes
            out[at + np.uint64(i)] = h[read + np.uint64(i * stride)]


@njit(cache=True)
def features_of(h, stride, n, batch):  # pragma: no cover - compiled
    """Activations by rows, row ``j`` of ``batch`` at ``h[j * stride:]`` (``n`` features), as features: flat
    (n, :func:`padded_batch`), the padding 0."""
    return transposed(h, stride, batch, n, padded_batch(batch))


@njit(cache=True)
def rows_of(h, n, batch, width):  # pragma: no cover - compiled
    """Activations by features, flat (n, :func:`padded_batch`), as rows: flat (batch, ``width``), features
    past ``n`` 0."""
    return transposed(h, padded_batch(batch), n, batch, width)


@njit(cache=True, inline="always")
def _column(col, p):  # pragma: no cover - compiled
    """``col[p]``, indexed unsigned: numba's check of each load for a negative index took a third of the time."""
    return col[np.uint64(p)]


@njit(cache=True, inline="always")
def _step(a, h, width, values, col, p, j0):  # pragma: no cover - compiled
    """``a`` plus non-zero ``p``'s product with the block of the batch at ``j0``: one multiply-add."""
    return simd.fma(a, simd.broadcast(values, p), simd.load(h, _column(col, p) * width + j0))


@njit(cache=True)
def csr_rows(h, width, values, col, pointers, start, bias, relu, out, r0, r1):  # pragma: no cover - compiled
    """Outputs ``r0`` to ``r1`` of a CSR layer: ``out[r, :] = sum_p values[p] * h[col[p], :] + bias[r]`` over
    row ``r``'s non-zeros ``p`` (``start + pointers[r]`` to ``start + pointers[r + 1]``), rectified if ``relu``.

    ``h``: the inputs by features, flat (in, ``width``), ``width`` a multiple of LANES; ``out``: flat
    (outputs, ``width``). Four blocks of a row at a time, where the batch has them; what it leaves (one to
    three blocks) four rows at a time, each row's chain of multiply-adds beside the others' (a row's alone
    would wait on each of its additions)."""
    wide = width // WIDE * WIDE
    for r in range(r0, r1):
        first, last = start + pointers[r], start + pointers[r + 1]
        b = simd.broadcast(bias, r)
        for j0 in range(0, wide, WIDE):
            a0 = a1 = a2 = a3 = simd.zeros()
            for p in range(first, last):
                v = simd.broadcast(values, p)
                at = _column(col, p) * width + j0
                a0 = simd.fma(a0, v, simd.load(h, at))
                a1 = simd.fma(a1, v, simd.load(h, at + LANES))
                a2 = simd.fma(a2, v, simd.load(h, at + 2 * LANES))
                a3 = simd.fma(a3, v, simd.load(h, at + 3 * LANES))
            o = r * width + j0
            simd.store(out, o, simd.add_relu(a0, b, relu))
            simd.store(out, o + LANES, simd.add_relu(a1, b, relu))
            simd.store(out, o + 2 * LANES, simd.add_relu(a2, b, relu))
            simd.store(out, o + 3 * LANES, simd.add_relu(a3, b, relu))
    if wide == width:
        return
    for g in range(r0, r1, 4):
        rows = min(4, r1 - g)
        f0, l0 = start + pointers[g], start + pointers[g + 1]
        # rows past r1 repeat the group's first, and are not stored
        g1, g2, g3 = g + min(1, rows - 1), g + min(2, rows - 1), g + min(3, rows - 1)
        f1, l1 = start + pointers[g1], start + pointers[g1 + 1]
        f2, l2 = start + pointers[g2], start + pointers[g2 + 1]
        f3, l3 = start + pointers[g3], start + pointers[g3 + 1]
        n0, n1, n2, n3 = l0 - f0, l1 - f1, l2 - f2, l3 - f3
        shared = min(min(n0, n1), min(n2, n3))
        longest = max(max(n0, n1), max(n2, n3))
        for j0 in range(wide, width, LANES):
            a0 = a1 = a2 = a3 = simd.zeros()
            for i in range(shared):
                a0 = _step(a0, h, width, values, col, f0 + i, j0)
                a1 = _step(a1, h, width, values, col, f1 + i, j0)
                a2 = _step(a2, h, width, values, col, f2 + i, j0)
                a3 = _step(a3, h, width, values, col, f3 + i, j0)
            for i in range(shared, longest):  # the rows still going, side by side
                if i < n0:
                    a0 = _step(a0, h, width, values, col, f0 + i, j0)
                if i < n1:
                    a1 = _step(a1, h, width, values, col, f1 + i, j0)
                if i < n2:
                    a2 = _step(a2, h, width, values, col, f2 + i, j0)
                if i < n3:
                    a3 = _step(a3, h, width, values, col, f3 + i, j0)
            simd.store(out, g * width + j0, simd.add_relu(a0, simd.broadcast(bias, g), relu))
            if rows > 1:
                simd.store(out, g1 * width + j0, simd.add_relu(a1, simd.broadcast(bias, g1), relu))
            if rows > 2:
                simd.store(out, g2 * width + j0, simd.add_relu(a2, simd.broadcast(bias, g2), relu))
            if rows > 3:
                simd.store(out, g3 * width + j0, simd.add_relu(a3, simd.broadcast(bias, g3), relu))


@njit(cache=True, parallel=True)
def csr_rows_threads(h, width, values, col, pointers, start, bias, relu, out, threads):  # pragma: no cover
    """:func:`csr_rows` for every output, on ``threads`` of numba's threads, each a run of the outputs holding
    about an equal share of the non-zeros (the same sums, so the same bits as one thread)."""
    rows = pointers.shape[0] - 1
    total = pointers[rows]
    cuts = np.empty(threads + 1, np.int64)
    for t in range(threads + 1):
        cuts[t] = min(rows, np.searchsorted(pointers, total * t // threads))
    cuts[threads] = rows
    for t in prange(threads):
        csr_rows(h, width, values, col, pointers, start, bias, relu, out, cuts[t], cuts[t + 1])


# These kernels are compiled with simd.py's intrinsics in them
simd.cache_depends_on((padded_batch, transposed, _rows_transposed, features_of, rows_of, _column, _step, csr_rows,
                       csr_rows_threads), simd)
