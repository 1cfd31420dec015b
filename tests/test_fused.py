"""The fused CPU kernels of targeted dropout: at weight level exact selection, drops, gradient, threads; at
unit level the same drops as the plain-torch reference, bit for bit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import tdlib
from tdlib import fused
from tdlib.dropout import bernoulli_mask
from tdlib.fused import RowBand, fused_unit_drop, fused_weight_drop
from tdlib.selection import smallest_mask, smallest_mask_rows

STEP_KINDS = ("still", "drift", "tiny", "jump", "zero_row", "rescale", "resize")


@st.composite
def drifting_calls(draw: st.DrawFn) -> tuple[int, int, int, bool, list[tuple[str, float | None]]]:
    """(seed, rows, n, tied, steps): each step is a change of the weights and a new count fraction.

    A fraction of None keeps the previous call's count, so that the warm path is actually taken.
    """
    steps = st.tuples(st.sampled_from(STEP_KINDS), st.one_of(st.none(), st.floats(0.0, 1.0)))
    return (
        draw(st.integers(0, 2**31 - 1)),
        draw(st.integers(1, 16)),
        draw(st.integers(1, 12)),
        draw(st.booleans()),
        draw(st.lists(steps, min_size=1, max_size=15)),
    )


def fresh_weights(rows: int, n: int, tied: bool, g: torch.Generator) -> Tensor:
    """Float32 weights: small integers (many |w| ties, zeros, zero rows) or continuous values."""
    if tied:
        return torch.randint(-3, 4, (rows, n), generator=g).float()
    return torch.randn(rows, n, generator=g)


def step(w: Tensor, kind: str, tied: bool, g: torch.Generator) -> Tensor:
    """Move ``w`` the way training does (a little), or abruptly (jump, zeroed row, sign flip, resize)."""
    rows, n = w.shape
    if kind == "drift":
        if tied:
            change = torch.rand(rows, n, generator=g) < 0.1
            return torch.where(change, torch.randint(-3, 4, (rows, n), generator=g).float(), w)
        return w + 1e-3 * torch.randn(rows, n, generator=g)
    if kind == "tiny":
        return w + 1e-7 * torch.randn(rows, n, generator=g)
    if kind == "jump":
        return fresh_weights(rows, n, tied, g)
    if kind == "zero_row":
        w = w.clone()
        w[int(torch.randint(0, rows, (1,), generator=g))] = 0.0
        return w
    if kind == "rescale":
        return w * -7.0  # zeros become -0.0, which must tie with +0.0
    if kind == "resize":
        rows, n = int(torch.randint(1, 17, (1,), generator=g)), int(torch.randint(1, 13, (1,), generator=g))
        return fresh_weights(rows, n, tied, g)
    return w


def assert_band_exact(band: RowBand, w: Tensor, count: int) -> None:
    """With alpha = 1 every targeted weight is dropped, so the keep mask must be exactly the complement
    of ``smallest_mask_rows(|w|, count)``, and the output ``w`` with exactly those entries zeroed."""
    out, keep = band.drop(w, count, 1.0)
    targeted = smallest_mask_rows(w.abs(), count)[0]
    assert torch.equal(keep, ~targeted), (count, w)
    assert torch.equal(out, torch.where(keep, w, torch.zeros(()))), (count, w)


@settings(max_examples=100, deadline=None, database=None)
@given(drifting_calls())
def test_warm_row_band_is_always_exact(case: tuple[int, int, int, bool, list[tuple[str, float | None]]]) -> None:
    """Over drifting (and sometimes jumping, resized, sign-flipped or zeroed) weights and changing
    counts, every call of one warm ``RowBand`` targets exactly ``smallest_mask_rows``' set."""
    seed, rows, n, tied, steps = case
    g = torch.Generator().manual_seed(seed)
    w = fresh_weights(rows, n, tied, g)
    band = RowBand()
    fraction = 0.5
    for kind, new_fraction in [("still", None), *steps]:
        w = step(w, kind, tied, g)
        fraction = fraction if new_fraction is None else new_fraction
        assert_band_exact(band, w, max(1, round(fraction * w.shape[1])))


def test_warm_row_band_stays_exact_over_a_long_slow_drift() -> None:
    """Many small steps of a wide matrix, with ties from a coarse grid and a count that changes.

    Also checks that the warm path is really the one taken, so the exactness above is not vacuous.
    """
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 40, generator=g)
    band = RowBand()
    full_sorts = 0
    for i in range(300):
        w = w + 2e-3 * torch.randn(w.shape, generator=g)
        if i % 3 == 0:
            w = torch.round(w * 64) / 64  # snap to a grid: many exact ties
        assert_band_exact(band, w, 20 if i < 150 else 17 + i % 5)
        full_sorts += band.full_sorts
    assert full_sorts < 0.2 * 64 * 300


def test_warm_row_band_stays_exact_over_an_integer_random_walk() -> None:
    """Integer weights that move one entry by ±1 per call: the band's edges then land exactly on
    weight values, the case where an off-by-one at a band edge (< vs <=) would show."""
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-4, 5, (4, 8), generator=g).float()
    band = RowBand()
    for i in range(2000):
        r, c = int(torch.randint(0, 4, (1,), generator=g)), int(torch.randint(0, 8, (1,), generator=g))
        w[r, c] = (w[r, c] + float(torch.randint(0, 2, (1,), generator=g)) * 2 - 1).clamp(-4, 4)
        assert_band_exact(band, w, 3 if i < 1000 else 5)


def test_warm_row_band_stays_exact_on_wide_rows_of_ties() -> None:
    """Wide rows of small integers: a band that holds only the k-th value has dozens of entries, some
    over ``RANK_BAND`` (selected) and some under (ranked), and the flags are read eight at a time with a
    tail (203 columns)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randint(-3, 4, (8, 203), generator=g).float()
    band = RowBand()
    for i in range(120):
        change = torch.rand(w.shape, generator=g) < 0.02
        w = torch.where(change, torch.randint(-3, 4, w.shape, generator=g).float(), w)
        assert_band_exact(band, w, (20, 60, 101, 150)[i // 30])


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=fused.RANK_BAND), st.data())
def test_a_small_band_is_ranked_as_a_stable_sort_orders_it(values: list[int], data: st.DataObject) -> None:
    """``_rank_kth`` and ``_band_kth`` return the same entry of a band with many ties: the need-th in the
    order (value, column), which a stable sort gives."""
    m = len(values)
    vals = np.array(values, np.float32) / np.float32(4)
    idx = np.array(sorted(data.draw(st.sets(st.integers(0, 10_000), min_size=m, max_size=m))), np.int32)
    need = data.draw(st.integers(1, m))
    order = sorted(range(m), key=lambda i: (vals[i], idx[i]))
    expected = (vals[order[need - 1]], idx[order[need - 1]])
    assert fused._rank_kth(vals, idx, m, need) == expected
    assert fused._band_kth(vals, idx, m, need, np.empty(m, np.float32)) == expected


def test_slow_drift_stays_on_the_fast_path() -> None:
    torch.manual_seed(0)
    weight = torch.randn(200, 300)
    band = RowBand()
    band.drop(weight, 150, 1.0)
    assert band.full_sorts == 200  # the first call has nothing to start from
    sorted_rows = []
    for _ in range(10):
        weight = weight + 1e-4 * torch.randn_like(weight)
        assert_band_exact(band, weight, 150)
        sorted_rows.append(band.full_sorts)
    assert sum(sorted_rows[2:]) < 0.05 * 200 * 8, sorted_rows


def test_drops_only_targeted_weights_at_rate_alpha_and_never_rescales() -> None:
    torch.manual_seed(1)
    weight = torch.randn(400, 500)
    band = RowBand()
    targeted, _ = smallest_mask_rows(weight.abs(), 200)
    out, keep = band.drop(weight, 200, 0.3)
    dropped = ~keep
    assert not bool((dropped & ~targeted).any())
    assert torch.equal(out[keep], weight[keep])
    assert bool((out[dropped] == 0).all())
    rate = float(dropped.sum()) / float(targeted.sum())
    assert abs(rate - 0.3) < 0.01  # 80,000 targeted: the standard error is 0.0016


def test_same_seed_same_drops_whatever_the_thread_count() -> None:
    """The kernel runs on as many threads as torch may use (never more: a one-thread worker beside others
    must not oversubscribe the cores), and the drops are the same on any number."""
    weight = torch.randn(64, 97)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            torch.set_num_threads(threads)
            torch.manual_seed(7)
            results.append(RowBand().drop(weight, 40, 0.5)[1])
            assert numba.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])
    torch.manual_seed(8)
    assert not torch.equal(RowBand().drop(weight, 40, 0.5)[1], results[0])


def test_gradient_flows_to_kept_weights_only() -> None:
    torch.manual_seed(2)
    weight = torch.randn(30, 50, requires_grad=True)
    band = RowBand()
    upstream = torch.randn(30, 50)
    torch.manual_seed(3)
    out = fused_weight_drop(weight, band, 25, 0.5)
    out.backward(upstream)
    torch.manual_seed(3)
    _, keep = RowBand().drop(weight.detach(), 25, 0.5)
    assert torch.equal(weight.grad, upstream * keep)
    assert bool((weight.grad[~keep] == 0).all()) and int((~keep).sum()) > 0


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 of each uint64 in ``x``, in numpy (wrapping arithmetic), as the kernel computes it."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@pytest.mark.parametrize(("rows", "n", "count", "alpha"), [(37, 97, 40, 0.5), (5, 8, 8, 0.99), (64, 1000, 500, 0.5)])
def test_drops_follow_the_documented_random_stream(rows: int, n: int, count: int, alpha: float) -> None:
    """Weight (r, j) is dropped iff it is targeted and the 15 low bits of 16-bit lane j % 4 of
    SplitMix64(seed + r * ceil(n / 4) + j // 4) are below round(alpha * 2**15), with the seed drawn from
    torch's generator. This pins the stream of every cached run, whatever the kernel's passes."""
    weight = torch.randn(rows, n, generator=torch.Generator().manual_seed(rows))
    torch.manual_seed(11)
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    torch.manual_seed(11)
    _, keep = RowBand().drop(weight, count, alpha)
    groups = (n + 3) // 4
    words = splitmix64(np.uint64(seed) + np.arange(rows * groups, dtype=np.uint64)).reshape(rows, groups)
    lanes = words[:, :, None] >> (np.uint64(16) * np.arange(4, dtype=np.uint64))
    uniform = (lanes & np.uint64(0x7FFF)).reshape(rows, 4 * groups)[:, :n]
    draws = torch.from_numpy(uniform.astype(np.int64) < round(alpha * 2**15))
    targeted = smallest_mask_rows(weight.abs(), count)[0]
    assert torch.equal(~keep, targeted & draws)


def test_the_first_kernel_call_in_a_process_leaves_torchs_thread_count_alone() -> None:
    """numba starts its OpenMP pool at its first parallel call in a process, and that sets the OpenMP
    thread count torch reads. A one-thread worker must still train on the one thread its run records
    (and its speed beside other workers depends on it); so in a fresh process, with torch on one thread,
    a forward and backward leave it on one."""
    code = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from tdlib.fused import RowBand, fused_weight_drop\n"
        "w = torch.randn(64, 97, requires_grad=True)\n"
        "fused_weight_drop(w, RowBand(), 40, 0.5).sum().backward()\n"
        "print(torch.get_num_threads())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split()[-1] == "1", result.stdout + result.stderr


# Scores with every case a stable ascending sort orders specially: ties, both zeros, infinities, NaNs of
# either sign, subnormals.
SPECIAL_SCORES = [0.0, -0.0, 1.0, -1.0, 2.5, float("inf"), float("-inf"), float("nan"), -float("nan"), 1e-40]


@st.composite
def unit_drop_cases(draw: st.DrawFn) -> tuple[Tensor, int, float]:
    n = draw(st.integers(1, 60))
    if draw(st.booleans()):
        scores = torch.tensor(draw(st.lists(st.sampled_from(SPECIAL_SCORES), min_size=n, max_size=n)))
    else:
        scores = torch.randn(n, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**31))))
    count = draw(st.integers(1, n))
    alpha = draw(st.sampled_from([1e-6, 0.3, 0.5, 0.99, 1 - 2**-17, 1.0]))  # 1 - 2**-17 rounds to 1
    return scores, count, alpha


@settings(max_examples=300, deadline=None, database=None)
@given(unit_drop_cases(), st.integers(0, 2**31))
def test_unit_drops_are_the_torch_references_bit_for_bit(case: tuple[Tensor, int, float], seed: int) -> None:
    """From the same generator state: the same drops as smallest_mask & bernoulli_mask, the keep mask
    their float complement, and the generator left in the same state (the same words drawn, or none)."""
    scores, count, alpha = case
    torch.manual_seed(seed)
    expected = smallest_mask(scores, count) & bernoulli_mask(scores.shape, alpha)
    expected_next = torch.randint(0, 2**62, (2,), dtype=torch.int64)
    torch.manual_seed(seed)
    dropped, keep = fused_unit_drop(scores, count, alpha)
    assert torch.equal(dropped, expected), (scores.tolist(), count, alpha)
    assert keep.dtype == torch.float32 and torch.equal(keep, (~expected).float())
    assert torch.equal(torch.randint(0, 2**62, (2,), dtype=torch.int64), expected_next)


def test_unit_drop_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ValueError, match=r"count must lie in \[1, 4\], got 0"):
        fused_unit_drop(torch.ones(4), 0, 0.5)
    with pytest.raises(ValueError, match=r"count must lie in \[1, 4\], got 5"):
        fused_unit_drop(torch.ones(4), 5, 0.5)
    with pytest.raises(ValueError, match=r"scores must be \(n,\) float32 on the CPU, got \(4,\) torch\.float64"):
        fused_unit_drop(torch.ones(4, dtype=torch.float64), 2, 0.5)
    with pytest.raises(ValueError, match=r"got \(2, 2\) torch\.float32"):
        fused_unit_drop(torch.ones(2, 2), 2, 0.5)


STEP = """
import torch
from torch import nn
from tdlib.dropout import TargetedDropout, add_targeted_dropout
from tdlib.schedules import constant
torch.manual_seed(0)
layer = nn.Linear(784, 256)
add_targeted_dropout(layer, TargetedDropout("weight", constant(0.5), constant(0.5)))
layer(torch.rand(8, 784)).sum().backward()
print(layer.parametrizations.weight.original.grad.abs().sum().item())
"""


def test_a_damaged_numba_cache_is_cleared_and_compiled_again(tmp_path: Path) -> None:
    # A process killed while numba wrote its cache leaves a truncated file under tdlib/__pycache__, which
    # numba's loader meets with a bare UnpicklingError on every later run.
    shutil.copytree(Path(tdlib.__file__).parent, tmp_path / "tdlib", ignore=shutil.ignore_patterns("*.nb?"))

    def step() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", STEP], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)}, cwd=tmp_path)

    first = step()  # compiles, and writes the cache
    damaged = sorted((tmp_path / "tdlib" / "__pycache__").glob("fused.*.nbc"))
    assert first.returncode == 0 and len(damaged) >= 4, first.stderr[-2000:]
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    again = step()
    assert again.returncode == 0, again.stderr[-2000:]
    assert "numba's cache of tdlib's kernels" in again.stderr and "compiled again" in again.stderr
    assert again.stdout == first.stdout  # the same gradient
    assert step().stderr == ""  # the cache written anew


def test_an_error_that_is_not_the_caches_is_raised_as_it_is() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of a cleared cache either
        with pytest.raises(numba.core.errors.TypingError):
            fused._mask_grad(np.zeros((2, 2)), "keep", None)
