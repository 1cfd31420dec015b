"""Weight-level targeted dropout fused into one pass per row, compiled with numba for the CPU.

The plain-torch version needs a dozen passes over every weight per step (ranking, counting, random
numbers, masking) and doubles the cost of a training step. Here each row is read twice while it sits
in cache: once to count the weights below a band around the row's previous k-th smallest |w| and to
collect those inside it, once to write the masked weights. The k-th value of a row moves by at most
the largest change of any weight in it (an order statistic is 1-Lipschitz in the max-norm), so the band
usually holds it; a row whose k-th value left the band is sorted in full. Either way the targeted set
is exactly the reference one (:func:`tdlib.selection.smallest_mask_rows`): the ``count`` entries that
come first in the order (|w|, column).

Drops come from a counter-based generator (SplitMix64 of seed and position), so the result depends on
the seed and the weights only, not on the number of threads. The seed is drawn from torch's global
generator at each step, so ``torch.manual_seed`` still fixes everything.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

DROP_RESOLUTION = 1 << 15  # a drop rate is applied as round(alpha * 2**15) / 2**15


def _bound_threads() -> None:
    """Run the kernels on no more threads than torch may use (``torch.set_num_threads``).

    numba's own default is every core. A worker given one torch thread beside other workers would then
    start threads that wait on cores those workers use, and on 2 cores two such workers trained weight-level
    runs at about half speed (180 against 95 ms a step). The drops do not depend on the thread count.
    """
    wanted = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != wanted:  # numba's setting is per calling thread
        numba.set_num_threads(wanted)


@njit(inline="always")
def _splitmix64(x: np.uint64) -> np.uint64:
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(parallel=True, cache=True)
def _drop_rows(w, count, kth, width, warm, threshold, seed, out, keep):  # pragma: no cover - compiled
    """Per row of ``w`` (R, n) float32: target the ``count`` smallest |w|, drop each w.p. threshold/2**15.

    Writes the dropped weights to ``out`` (R, n), the keep mask to ``keep`` (R, n) bool and each row's
    k-th smallest |w| to ``kth`` (R,). With ``warm``, searches the band ``kth ± width`` first.
    Returns the number of rows that needed a full sort.
    """
    rows, n = w.shape
    full_sorts = 0
    for r in prange(rows):
        row = w[r]
        v = np.float32(0.0)
        jstar = 0
        found = False
        if warm:
            lo = kth[r] - width[r]
            hi = kth[r] + width[r]
            vals = np.empty(n, np.float32)
            idx = np.empty(n, np.int32)
            below = 0
            m = 0
            for j in range(n):  # branch-free: a mispredicted branch per weight costs more than the stores
                a = abs(row[j])
                below += a < lo
                vals[m] = a
                idx[m] = j
                m += (a >= lo) & (a <= hi)
            need = count - below
            if 1 <= need <= m:
                p = np.argsort(vals[:m], kind="mergesort")[need - 1]  # stable: ties keep column order
                v = vals[p]
                jstar = idx[p]
                found = True
        if not found:
            full_sorts += 1
            magnitudes = np.abs(row)
            jstar = np.argsort(magnitudes, kind="mergesort")[count - 1]
            v = magnitudes[jstar]
        kth[r] = v
        counter = np.uint64(seed) + np.uint64(r) * np.uint64((n + 3) // 4)
        bits = np.uint64(0)
        for j in range(n):
            if (j & 3) == 0:  # four 15-bit uniforms from each 64-bit draw
                bits = _splitmix64(counter)
                counter += np.uint64(1)
            a = abs(row[j])
            targeted = (a < v) | ((a == v) & (j <= jstar))
            dropped = targeted & ((bits & np.uint64(0x7FFF)) < threshold)
            bits = bits >> np.uint64(16)
            keep[r, j] = not dropped
            out[r, j] = row[j] * np.float32(1 - dropped)
    return full_sorts


@njit(parallel=True, cache=True)
def _mask_grad(grad, keep, out):  # pragma: no cover - compiled
    rows, n = grad.shape
    for r in prange(rows):
        for j in range(n):
            out[r, j] = grad[r, j] * np.float32(keep[r, j])


class _FusedDrop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, state: RowBand, count: int, alpha: float) -> Tensor:  # type: ignore[override]
        out, keep = state.drop(weight.detach(), count, alpha)
        ctx.save_for_backward(keep)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        _bound_threads()
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        _mask_grad(grad.numpy(), keep.numpy(), out.numpy())
        return out, None, None, None


class RowBand:
    """The warm state of one layer: each row's last k-th smallest |w| and the band searched around it."""

    def __init__(self) -> None:
        self.kth: np.ndarray | None = None  # (R,) float32
        self.width: np.ndarray | None = None  # (R,) float32
        self.full_sorts = 0  # rows sorted in full at the last call, for benchmarks and tests

    def drop(self, weight: Tensor, count: int, alpha: float) -> tuple[Tensor, Tensor]:
        """(dropped weights, keep mask) for ``weight`` (R, n) float32 on the CPU; 0 < count <= n."""
        w = weight.contiguous().numpy()
        rows = w.shape[0]
        # After a change of count (a ramp) the band misses and rows fall back to a full sort: still exact.
        warm = self.kth is not None and self.kth.shape[0] == rows
        previous = self.kth.copy() if warm else None
        if not warm:
            self.kth = np.zeros(rows, np.float32)
            self.width = np.zeros(rows, np.float32)
        out = np.empty_like(w)
        keep = np.empty(w.shape, np.bool_)
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
        _bound_threads()
        self.full_sorts = _drop_rows(w, count, self.kth, self.width, warm, round(alpha * DROP_RESOLUTION), seed,
                                     out, keep)
        if previous is not None:
            # Twice each row's last move, plus four times the layer's mean move, so that a row that stood
            # still for a step keeps a band wide enough for the next one.
            moved = np.abs(self.kth - previous)
            self.width = (2.0 * moved + 4.0 * moved.mean() + np.float32(1e-30)).astype(np.float32)
        return torch.from_numpy(out), torch.from_numpy(keep)


def fused_weight_drop(weight: Tensor, state: RowBand, count: int, alpha: float) -> Tensor:
    """``weight`` (R, n) with each row's ``count`` smallest-|w| entries dropped w.p. ``alpha``; differentiable."""
    return _FusedDrop.apply(weight, state, count, alpha)
