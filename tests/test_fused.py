"""The fused CPU kernel of weight-level targeted dropout: exact selection, drops, gradient, threads."""

from __future__ import annotations

import numba
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tdlib.fused import RowBand, fused_weight_drop
from tdlib.selection import smallest_mask_rows


def targeted_by_kernel(band: RowBand, weight: torch.Tensor, count: int) -> torch.Tensor:
    """With alpha = 1 every targeted weight is dropped, so the keep mask shows the targeted set."""
    _, keep = band.drop(weight, count, 1.0)
    return ~keep


@st.composite
def drifting_matrices(draw: st.DrawFn) -> tuple[list[torch.Tensor], list[int]]:
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 40))
    tied = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    if tied:  # few distinct values: many ties, and rows of zeros
        weight = torch.randint(-3, 4, (rows, cols), generator=generator).float() / 8
    else:
        weight = torch.randn(rows, cols, generator=generator)
    steps, counts = [], []
    for _ in range(draw(st.integers(1, 6))):
        jump = draw(st.sampled_from([0.0, 1e-4, 1e-2, 1.0]))
        weight = weight + jump * torch.randn(rows, cols, generator=generator)
        if tied:
            weight = torch.round(weight * 8) / 8
        steps.append(weight.clone())
        counts.append(draw(st.integers(1, cols)))
    return steps, counts


@settings(max_examples=150, deadline=None)
@given(drifting_matrices())
def test_warm_kernel_targets_exactly_the_reference_set(case: tuple[list[torch.Tensor], list[int]]) -> None:
    band = RowBand()
    for weight, count in zip(*case):
        expected, kth = smallest_mask_rows(weight.abs(), count)
        assert torch.equal(targeted_by_kernel(band, weight, count), expected)
        assert torch.equal(torch.from_numpy(band.kth), kth)


def test_slow_drift_stays_on_the_fast_path() -> None:
    torch.manual_seed(0)
    weight = torch.randn(200, 300)
    band = RowBand()
    targeted_by_kernel(band, weight, 150)
    assert band.full_sorts == 200  # the first call has nothing to start from
    sorted_rows = []
    for _ in range(10):
        weight = weight + 1e-4 * torch.randn_like(weight)
        assert torch.equal(targeted_by_kernel(band, weight, 150), smallest_mask_rows(weight.abs(), 150)[0])
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
    weight = torch.randn(64, 97)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        torch.manual_seed(7)
        results.append(RowBand().drop(weight, 40, 0.5)[1])
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
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
