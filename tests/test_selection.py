"""Exact smallest-entry selection: counts, order, ties by position, nesting."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from tdlib.selection import check_fraction, count_for, smallest_mask, smallest_mask_rows

FAST = settings(max_examples=80, deadline=None, database=None)

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
# Mixing small integers into the floats makes ties common.
values = st.one_of(st.integers(-2, 2).map(float), st.floats(-1e3, 1e3, allow_nan=False, width=32))
tied_values = st.sampled_from([0.0, 1.0, 2.0])


@st.composite
def scores_and_count(draw: st.DrawFn, elements: st.SearchStrategy[float] = values) -> tuple[Tensor, int]:
    """A float32 tensor of any small shape and a count in [0, numel]."""
    shape = draw(shapes)
    n = math.prod(shape)
    data = draw(st.lists(elements, min_size=n, max_size=n))
    return torch.tensor(data, dtype=torch.float32).reshape(shape), draw(st.integers(0, n))


@st.composite
def matrix_and_count(draw: st.DrawFn) -> tuple[Tensor, int]:
    """A float32 (rows, n) matrix and a count in [0, n]."""
    rows, n = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    data = draw(st.lists(st.one_of(values, tied_values), min_size=rows * n, max_size=rows * n))
    return torch.tensor(data, dtype=torch.float32).reshape(rows, n), draw(st.integers(0, n))


def stable_order(scores: Tensor) -> list[int]:
    """Flat indices sorted by (value, index): the reference order of the selection."""
    flat = scores.reshape(-1).tolist()
    return sorted(range(len(flat)), key=lambda i: (flat[i], i))


@FAST
@given(scores_and_count())
def test_smallest_mask_selects_exactly_count_and_never_a_larger_entry(case: tuple[Tensor, int]) -> None:
    """Exactly ``count`` entries are selected, and every selected one is <= every unselected one."""
    scores, count = case
    mask = smallest_mask(scores, count)
    assert mask.shape == scores.shape and mask.dtype == torch.bool
    assert int(mask.sum()) == count
    if 0 < count < scores.numel():
        assert scores[mask].max() <= scores[~mask].min()


@FAST
@given(scores_and_count(tied_values))
def test_smallest_mask_breaks_ties_by_lower_flat_index(case: tuple[Tensor, int]) -> None:
    """With many ties, the selection is the first ``count`` of the (value, flat index) order."""
    scores, count = case
    expected = torch.zeros(scores.numel(), dtype=torch.bool)
    expected[stable_order(scores)[:count]] = True
    assert torch.equal(smallest_mask(scores, count).reshape(-1), expected)


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2)])
def test_all_equal_scores_select_the_first_flat_indices(shape: tuple[int, ...]) -> None:
    """An all-equal tensor selects exactly flat indices 0 .. count-1."""
    scores = torch.full(shape, 0.5)
    for count in range(scores.numel() + 1):
        flat = smallest_mask(scores, count).reshape(-1)
        assert flat[:count].all() and not flat[count:].any()


@FAST
@given(scores_and_count())
def test_smallest_mask_is_nested_in_count(case: tuple[Tensor, int]) -> None:
    """The mask at ``count`` is a subset of the mask at ``count + 1``."""
    scores, count = case
    if count == scores.numel():
        count -= 1
    smaller, larger = smallest_mask(scores, count), smallest_mask(scores, count + 1)
    assert not (smaller & ~larger).any()
    assert int((larger & ~smaller).sum()) == 1


@pytest.mark.parametrize("count", [-1, 7, 100])
def test_smallest_mask_rejects_count_out_of_range(count: int) -> None:
    """A count outside [0, numel] raises ValueError, for both the flat and the row-wise version."""
    with pytest.raises(ValueError, match="count"):
        smallest_mask(torch.zeros(2, 3), count)
    with pytest.raises(ValueError, match="count"):
        smallest_mask_rows(torch.zeros(4, 6), count)


@FAST
@given(st.floats(0.0, 1.0), st.integers(0, 100_000))
def test_count_for_is_python_round(fraction: float, n: int) -> None:
    """``count_for`` is Python's round(fraction * n), so it agrees with torch.nn.utils.prune."""
    assert count_for(fraction, n) == round(fraction * n)


@pytest.mark.parametrize(("fraction", "n", "expected"), [(0.5, 5, 2), (0.5, 7, 4), (0.25, 10, 2), (0.35, 10, 4)])
def test_count_for_rounds_half_to_even(fraction: float, n: int, expected: int) -> None:
    """Exact halves go to the even neighbour (2.5 -> 2, 3.5 -> 4); 0.35 * 10 is just above 3.5."""
    assert count_for(fraction, n) == expected


@FAST
@given(matrix_and_count())
def test_smallest_mask_rows_agrees_with_smallest_mask_per_row(case: tuple[Tensor, int]) -> None:
    """Each row's mask is ``smallest_mask`` of that row; the value returned is the count-th smallest."""
    scores, count = case
    mask, kth = smallest_mask_rows(scores, count)
    for row in range(scores.shape[0]):
        assert torch.equal(mask[row], smallest_mask(scores[row], count))
        expected = sorted(scores[row].tolist())[count - 1] if count else -math.inf
        assert kth[row].item() == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.1, 1.1, "0.5", True, False, None])
def test_check_fraction_rejects_non_fractions(value: object) -> None:
    """NaN, infinities, values outside [0, 1], strings, bools and None raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match="my_param"):
        check_fraction("my_param", value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 1, 0.0, 0.25, 1.0])
def test_check_fraction_returns_valid_fractions_as_float(value: float) -> None:
    """Valid fractions come back unchanged, as floats."""
    result = check_fraction("p", value)
    assert result == value and type(result) is float
