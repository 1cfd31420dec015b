"""Targeted dropout's drops compiled with numba for the CPU: weight level fused row by row, unit level in
one call.

The plain-torch version needs a dozen passes over every weight per step (ranking, counting, random
numbers, masking) and doubles the cost of a training step. Here each row is handled while it sits in
cache, in passes the compiler vectorises: one counts the weights below and inside a band around the
row's previous k-th smallest |w|, one collects the band (a handful of weights, selected without a sort),
one draws the row's random words and one writes the masked weights. The k-th value of a row moves by at most
the largest change of any weight in it (an order statistic is 1-Lipschitz in the max-norm), so the band
usually holds it; a row whose k-th value left the band is searched in full. Either way the targeted set
is exactly the reference one (:func:`tdlib.selection.smallest_mask_rows`): the ``count`` entries that
come first in the order (|w|, column).

Drops come from a counter-based generator (SplitMix64 of seed and position), so the result depends on
the seed and the weights only, not on the number of threads. The seed is drawn from torch's global
generator at each step, so ``torch.manual_seed`` still fixes everything.

At unit level the work per step is small (a layer's row norms, one random word per four units), and the
plain-torch ranking and drawing took a dozen operators of tens of microseconds each, most of the cost of
unit-level dropout. :func:`fused_unit_drop` does the same in one compiled call, with the same random words
and the same result bit for bit, so runs trained either way are identical.
"""

from __future__ import annotations

import os
import threading
import traceback
import warnings

import numba
import numpy as np
import torch
from numba import njit, prange
from numba.cpython.unsafe.numbers import trailing_zeros
from torch import Tensor

DROP_RESOLUTION = 1 << 15  # a drop rate is applied as round(alpha * 2**15) / 2**15
CHUNKS_PER_THREAD = 4  # blocks of rows per kernel thread: enough to even out rows searched in full


def compiled_for(tensor: Tensor) -> bool:
    """Whether the compiled kernels here run on ``tensor``: float32, on the CPU."""
    return tensor.dtype == torch.float32 and tensor.device.type == "cpu"


def uniform15(n: int, device: torch.device | str = "cpu") -> Tensor:
    """``n`` uniform integers in [0, 2**15), (n,) int16: four from each 63-bit word drawn from torch's global
    generator (so ``torch.manual_seed`` fixes them)."""
    return _words(n, device).view(torch.int16)[:n] & (DROP_RESOLUTION - 1)


def _words(n: int, device: torch.device | str = "cpu") -> Tensor:
    """The random words of :func:`uniform15`, ((n + 3) // 4,) int64: its uniforms are the 15 low bits of
    each 16-bit lane, in order (on a little-endian machine)."""
    return torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()


class _KernelThreads:
    """Run a kernel on no more threads than torch may use (``torch.set_num_threads``), and leave torch's
    count as it was; ``as`` gives numba's count.

    numba's own default is every core. A worker given one torch thread beside other workers would then
    start threads that wait on cores those workers use, and on 2 cores two such workers trained weight-level
    runs at about half speed (180 against 95 ms a step). The drops do not depend on the thread count.

    numba starts its OpenMP thread pool at its first parallel call in a process, and that call sets the
    OpenMP thread count, the one torch reads, to every core. A worker given one torch thread then trained
    its first weight-level run on two from the first step on: 4x slower beside a second worker, and not on
    the thread count its run records. (Six such runs, retrained on one thread, came out byte-identical,
    but torch does not promise the same bits on another thread count.) torch's count is put back after
    every call.

    numba's count (per calling thread) is set when the wanted count differs from the one set here last,
    not read back: reading it takes two locks, about 20 us a call inside a training step, twice a layer.
    A count that other code sets on numba in between stays until torch's count changes (speed only).
    """

    __slots__ = ("torch_threads",)

    def __enter__(self) -> int:
        self.torch_threads = torch.get_num_threads()
        wanted = min(self.torch_threads, NUMBA_THREADS)
        if getattr(_numba_threads_set, "count", None) != wanted:
            numba.set_num_threads(wanted)
            _numba_threads_set.count = wanted
        return wanted

    def __exit__(self, *exc: object) -> None:
        if torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)


NUMBA_THREADS = numba.config.NUMBA_NUM_THREADS  # the threads numba may start, fixed when it is imported
_numba_threads_set = threading.local()  # numba's count as set by _kernel_threads, in each calling thread


_kernel_threads = _KernelThreads
kernel_threads = _KernelThreads  # for the compressed models' threaded kernels too (tdlib.compress.tiled)


def _cache_safe(kernel):
    """``kernel`` (a numba dispatcher with ``cache=True``), called so that a damaged on-disk cache of it or of a
    kernel it calls (a truncated ``.nbc``/``.nbi`` under ``__pycache__``, from a process killed while writing
    it, or a disk that filled up) is cleared with a warning and compiled again, instead of failing every run.
    Only an error raised while numba reads its cache counts as damage; any other is raised as it is."""

    def call(*args):
        try:
            return kernel(*args)
        except Exception as error:
            if not any(frame.f_code.co_filename.endswith(CACHE_READER)
                       for frame, _ in traceback.walk_tb(error.__traceback__)):
                raise
            for cached in (*CACHED, kernel):  # the kernel too, for one compiled outside this module
                cached._cache.flush()  # an empty index: each compiles anew, and writes its cache again
            warnings.warn(f"numba's cache of tdlib's kernels ({CACHED[0]._cache.cache_path}) could not be read "
                          f"({type(error).__name__}: {error}); it was cleared and the kernels compiled again",
                          stacklevel=2)
            return kernel(*args)

    call.__wrapped__, call.__doc__ = kernel, kernel.__doc__  # type: ignore[attr-defined]
    return call


CACHE_READER = os.path.join("numba", "core", "caching.py")


@njit(inline="always")
def _splitmix64(x: np.uint64) -> np.uint64:
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _band_kth(vals, idx, m, need, scratch):  # pragma: no cover - compiled
    """The ``need``-th (1-based) of the ``m`` band entries ``vals[:m]`` at columns ``idx[:m]`` (increasing),
    in the order (|w|, column): its value and column. A quickselect on a copy in ``scratch``, then a scan
    for the tie: the same entry a stable sort would put there, without sorting or allocating."""
    for i in range(m):
        scratch[i] = vals[i]
    lo, hi, k = 0, m - 1, need - 1
    while lo < hi:  # Hoare's selection: afterwards scratch[k] is the k-th smallest value
        pivot = scratch[(lo + hi) >> 1]
        i, j = lo, hi
        while i <= j:
            while scratch[i] < pivot:
                i += 1
            while scratch[j] > pivot:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    v = scratch[k]
    rank = need  # among the entries equal to v, in column order, the one at this rank
    for i in range(m):
        rank -= vals[i] < v
    for i in range(m):
        if vals[i] == v:
            rank -= 1
            if rank == 0:
                return v, idx[i]
    return v, idx[0]  # unreachable: the k-th smallest value is in the band


RANK_BAND = 48  # bands up to this size are ranked by counting (m * m compares, vectorised), not selected


@njit(cache=True)
def _rank_kth(vals, idx, m, need):  # pragma: no cover - compiled
    """As :func:`_band_kth` for a small band of non-NaN values: entry i's place in the order (|w|, column)
    is the number of entries below it plus the equal ones before it, since ``idx`` increases."""
    for i in range(m):
        v = vals[i]
        place = 0
        for j in range(m):
            place += np.int32(vals[j] < v)
        for j in range(i):
            place += np.int32(vals[j] == v)
        if place == need - 1:
            return v, idx[i]
    return vals[0], idx[0]  # unreachable: some entry is the need-th


@_cache_safe
@njit(parallel=True, cache=True)
def _drop_rows(w, count, kth, width, warm, threshold, seed, out, keep, chunks):  # pragma: no cover - compiled
    """Per row of ``w`` (R, n) float32: target the ``count`` smallest |w|, drop each w.p. threshold/2**15.

    Writes the dropped weights to ``out`` (R, n), the keep mask to ``keep`` (R, n) bool and each row's
    k-th smallest |w| to ``kth`` (R,). With ``warm``, searches the band ``kth ± width`` first, then sets
    ``width`` (R,) for the next call from how far each k-th value moved.
    Rows are split into ``chunks`` blocks, one per parallel task, each with its own scratch; every row's
    result depends on the row alone. Returns the number of rows that had to be searched in full.

    Each row takes vectorised passes (counting the weights below and inside the band, drawing the row's
    random words, writing), and one that collects the band's few weights by their flags.
    """
    rows, n = w.shape
    limit = np.int32(threshold)
    groups = (n + 3) // 4  # four 15-bit uniforms from each 64-bit draw
    words8 = n // 8
    per = (rows + chunks - 1) // chunks
    sorts = np.zeros(chunks, np.int64)
    for chunk in prange(chunks):
        vals = np.empty(n, np.float32)
        idx = np.empty(n, np.int32)
        scratch = np.empty(n, np.float32)
        flags = np.empty(n, np.bool_)
        flag_words = flags[: 8 * words8].view(np.uint64)  # the flags eight at a time
        words = np.empty(groups, np.uint64)
        uniform = words.view(np.uint16)  # little-endian: draw g holds the uniforms of columns 4g .. 4g + 3
        for r in range(chunk * per, min(rows, (chunk + 1) * per)):
            row = w[r]
            v = np.float32(0.0)
            jstar = 0
            found = False
            if warm:
                lo = kth[r] - width[r]
                hi = kth[r] + width[r]
                below = 0
                inside = 0
                for j in range(n):  # vectorised: counts, and a flag per weight
                    a = abs(row[j])
                    flag = (a >= lo) & (a <= hi)
                    below += np.int32(a < lo)
                    inside += np.int32(flag)
                    flags[j] = flag
                need = count - below
                if 1 <= need <= inside:
                    # The band is a few dozen of the row's weights: visit only its flags, eight flag bytes
                    # at a time, each set flag found by its lowest set bit (a branch per weight on the
                    # comparisons mispredicted about half the time; one per flag, once per 8-byte word).
                    m = 0
                    for q in range(words8):
                        word = flag_words[q]
                        while word != 0:
                            j = 8 * q + (trailing_zeros(word) >> 3)  # little-endian: byte b is bits 8b ..
                            vals[m] = abs(row[j])
                            idx[m] = j
                            m += 1
                            word &= word - np.uint64(1)
                    for j in range(8 * words8, n):
                        if flags[j]:
                            vals[m] = abs(row[j])
                            idx[m] = j
                            m += 1
                    if m <= RANK_BAND:
                        v, jstar = _rank_kth(vals, idx, m, need)
                    else:
                        v, jstar = _band_kth(vals, idx, m, need, scratch)
                    found = True
            if not found:  # the whole row is the band
                sorts[chunk] += 1
                for j in range(n):
                    vals[j] = abs(row[j])
                    idx[j] = j
                v, jstar = _band_kth(vals, idx, n, count, scratch)
            if warm:
                width[r] = abs(v - kth[r])  # the row's move, until the widths are set below
            kth[r] = v
            counter = np.uint64(seed) + np.uint64(r) * np.uint64(groups)
            for g in range(groups):
                words[g] = _splitmix64(counter + np.uint64(g))
            row_out = out[r]
            row_keep = keep[r]
            for j in range(n):  # vectorised
                a = abs(row[j])
                targeted = (a < v) | ((a == v) & (j <= jstar))
                dropped = targeted & (np.int32(uniform[j] & np.uint16(0x7FFF)) < limit)
                row_keep[j] = not dropped
                row_out[j] = row[j] * np.float32(1 - dropped)
    if warm:
        # The next band: twice each row's last move, plus four times the layer's mean move, so that a row
        # that stood still for a step keeps a band wide enough for the next one. Only speed depends on it.
        mean = np.float32(width.mean())
        for r in range(rows):
            width[r] = np.float32(2.0) * width[r] + np.float32(4.0) * mean + np.float32(1e-30)
    return sorts.sum()


@_cache_safe
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
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        with _kernel_threads():
            _mask_grad(grad.numpy(), keep.numpy(), out.numpy())
        return out, None, None, None


@_cache_safe
@njit(cache=True)
def _drop_units(scores, count, lanes, limit, dropped, keep):  # pragma: no cover - compiled
    """Target the ``count`` first of ``scores`` (n,) float32 in the order (score, index), as a stable
    ascending sort puts them (every NaN after +inf, and -0.0 tied with 0.0); drop each targeted unit whose
    uniform, the 15 low bits of ``lanes`` (>= n,) int16, is below ``limit``. Writes ``dropped`` (n,) bool
    and ``keep`` (n,) float32.

    Each score becomes one integer key, its float's bits in an order-preserving form above its index, so
    every key is distinct and the ``count`` targeted units are those with keys up to the ``count``-th
    smallest key, which a partition finds without a sort.
    """
    n = scores.shape[0]
    keys = np.empty(n, np.uint64)
    bits = scores.view(np.uint32)
    for i in range(n):
        b = bits[i]
        if scores[i] != scores[i]:
            b = np.uint32(0x7FC00000)  # every NaN alike, after +inf
        elif scores[i] == 0:
            b = np.uint32(0)  # -0.0 as 0.0
        # A float's bits as an unsigned integer in the float's order: negatives flipped, positives above them
        b = np.uint32(~b) if b >> np.uint32(31) else np.uint32(b | np.uint32(0x80000000))
        keys[i] = (np.uint64(b) << np.uint64(32)) | np.uint64(i)
    kth = np.partition(keys, count - 1)[count - 1]
    for i in range(n):
        d = (keys[i] <= kth) & (np.int32(lanes[i] & np.int16(0x7FFF)) < limit)
        dropped[i] = d
        keep[i] = np.float32(1 - d)


# Every kernel compiled with cache=True: a damaged cache of any is cleared with all of them (see _cache_safe).
CACHED = (_band_kth, _rank_kth, _drop_rows.__wrapped__, _mask_grad.__wrapped__, _drop_units.__wrapped__)


def fused_unit_drop(scores: Tensor, count: int, alpha: float) -> tuple[Tensor, Tensor]:
    """Of units scored ``scores`` (n,) float32 on the CPU, the ``count`` first in the order (score, unit)
    are targeted, and each is dropped with probability ``alpha`` (to 2**-15); returns the drops (n,) bool
    and the keep mask (n,) float32, 0.0 where dropped and 1.0 elsewhere.

    Exactly ``tdlib.selection.smallest_mask(scores, count) & tdlib.dropout.bernoulli_mask(...)``, from the
    same random words of torch's generator (none when alpha rounds to 1); 0 < count <= n.
    """
    n = scores.numel()
    if scores.dim() != 1 or not compiled_for(scores):
        raise ValueError(f"scores must be (n,) float32 on the CPU, got {tuple(scores.shape)} {scores.dtype} on "
                         f"{scores.device}")
    if not 0 < count <= n:
        raise ValueError(f"count must lie in [1, {n}], got {count}")
    threshold = round(alpha * DROP_RESOLUTION)
    # alpha rounding to 1 drops every targeted unit, and then draws nothing, as bernoulli_mask does
    # The words as 16-bit lanes, masked to uniform15's values in the kernel (a torch operator fewer here)
    lanes = _words(n).numpy().view(np.int16) if threshold < DROP_RESOLUTION else np.zeros(n, np.int16)
    dropped = torch.empty(n, dtype=torch.bool)
    keep = torch.empty(n, dtype=torch.float32)
    _drop_units(scores.contiguous().numpy(), count, lanes, threshold, dropped.numpy(), keep.numpy())
    return dropped, keep


class RowBand:
    """The warm state of one layer: each row's last k-th smallest |w| and the band searched around it."""

    def __init__(self) -> None:
        self.kth: np.ndarray | None = None  # (R,) float32
        self.width: np.ndarray | None = None  # (R,) float32
        self.full_sorts = 0  # rows searched in full (the band missed) at the last call, for benchmarks and tests
        self.seed = torch.empty((), dtype=torch.int64)  # each call's seed: torch.randint(0, 2**62, ()) in place

    def drop(self, weight: Tensor, count: int, alpha: float) -> tuple[Tensor, Tensor]:
        """(dropped weights, keep mask) for ``weight`` (R, n) float32 on the CPU; 0 < count <= n."""
        w = weight.contiguous().numpy()
        rows = w.shape[0]
        # After a change of count (a ramp) the band misses and rows are searched whole: still exact.
        warm = self.kth is not None and self.kth.shape[0] == rows
        if not warm:
            self.kth = np.zeros(rows, np.float32)
            self.width = np.zeros(rows, np.float32)
        out = np.empty_like(w)
        keep = np.empty(w.shape, np.bool_)
        seed = self.seed.random_(0, 2**62).item()
        with _kernel_threads() as threads:
            self.full_sorts = _drop_rows(w, count, self.kth, self.width, warm, round(alpha * DROP_RESOLUTION),
                                         seed, out, keep, CHUNKS_PER_THREAD * threads)
        return torch.from_numpy(out), torch.from_numpy(keep)


def fused_weight_drop(weight: Tensor, state: RowBand, count: int, alpha: float) -> Tensor:
    """``weight`` (R, n) with each row's ``count`` smallest-|w| entries dropped w.p. ``alpha``; differentiable."""
    return _FusedDrop.apply(weight, state, count, alpha)
