"""The verdict logic: large effects decide, no effect never supports, few seeds never decide, monotone."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tdlib.stats import (
    MIN_SEEDS,
    ORDER,
    Comparison,
    Verdict,
    combine,
    holm,
    judge,
    mean_interval,
    one_sided_p,
)

FAST = settings(max_examples=150, deadline=None, database=None)
noise = st.lists(st.floats(-1, 1), min_size=MIN_SEEDS, max_size=10)


def verdict_of(values: list[float], threshold: float = 0.0, side: str = "greater") -> Verdict:
    return judge([Comparison("c", tuple(values), threshold, side)])[0].verdict  # type: ignore[arg-type]


@FAST
@given(noise, st.sampled_from(["greater", "less"]))
def test_a_large_effect_with_enough_seeds_is_supported(jitter: list[float], side: str) -> None:
    shift = 100.0 if side == "greater" else -100.0
    assert verdict_of([shift + j for j in jitter], side=side) is Verdict.SUPPORTED
    assert verdict_of([-shift + j for j in jitter], side=side) is Verdict.REFUTED


@FAST
@given(noise)
def test_no_effect_is_never_supported(values: list[float]) -> None:
    mirrored = values + [-v for v in values]  # mean 0, the threshold
    assert verdict_of(mirrored, side="greater") is not Verdict.SUPPORTED
    assert verdict_of(mirrored, side="less") is not Verdict.SUPPORTED
    assert verdict_of(values, threshold=max(values), side="greater") is not Verdict.SUPPORTED
    assert verdict_of(values, threshold=min(values), side="less") is not Verdict.SUPPORTED


@FAST
@given(st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=MIN_SEEDS - 1))
def test_too_few_seeds_are_inconclusive(values: list[float]) -> None:
    assert verdict_of(values) is Verdict.INCONCLUSIVE
    assert verdict_of([1e6 + v for v in values]) is Verdict.INCONCLUSIVE


@FAST
@given(noise, st.floats(-3, 3), st.floats(0, 3), st.lists(noise, max_size=4))
def test_verdicts_are_monotone_in_the_effect(values: list[float], shift: float, more: float,
                                             others: list[list[float]]) -> None:
    """Moving every value further to the claim's side never makes the verdict worse, whatever else
    is in the run."""
    rest = [Comparison(f"o{i}", tuple(o), 0.0, "greater") for i, o in enumerate(others)]
    low = judge([Comparison("c", tuple(v + shift for v in values), 0.0, "greater"), *rest])[0].verdict
    high = judge([Comparison("c", tuple(v + shift + more for v in values), 0.0, "greater"), *rest])[0].verdict
    assert ORDER[high] >= ORDER[low]


def test_holm_matches_hand_computed_values() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []


def test_holm_makes_a_borderline_comparison_inconclusive_in_a_larger_run() -> None:
    borderline = Comparison("c", (1.0, 1.3, 0.7, 1.2, 0.8), 0.6, "greater")
    p_alone = judge([borderline])[0].p_holm
    assert p_alone < 0.05
    crowd = [Comparison(f"n{i}", (0.1, -0.1, 0.2, -0.2, 0.0), 0.0, "greater") for i in range(20)]
    together = judge([borderline, *crowd])[0]
    assert together.p_holm == pytest.approx(min(1.0, 21 * p_alone))
    assert together.verdict is Verdict.INCONCLUSIVE


def test_p_values_and_interval_match_scipy() -> None:
    from scipy import stats

    values = [1.0, 2.5, 0.5, 1.5]
    p_greater, p_less = one_sided_p(values, 0.2)
    assert p_greater == pytest.approx(stats.ttest_1samp(values, 0.2, alternative="greater").pvalue)
    assert p_less == pytest.approx(stats.ttest_1samp(values, 0.2, alternative="less").pvalue)
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert mean_interval(values) == pytest.approx((ci.low, ci.high))
    assert all(math.isnan(x) for x in mean_interval([1.0]))


def test_combine_all_and_any() -> None:
    s, r, i = Verdict.SUPPORTED, Verdict.REFUTED, Verdict.INCONCLUSIVE
    assert combine([s, s]) is s and combine([s, i]) is i and combine([s, r]) is r
    assert combine([s, r], "any") is s and combine([r, r], "any") is r and combine([r, i], "any") is i
    assert combine([]) is i


def test_non_finite_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="not finite"):
        Comparison("c", (1.0, math.nan, 2.0), 0.0, "greater")
    with pytest.raises(ValueError, match="side"):
        Comparison("c", (1.0,), 0.0, "above")  # type: ignore[arg-type]


@FAST
@given(noise)
def test_sides_are_mirror_images(values: list[float]) -> None:
    assume(len(set(values)) > 1)
    up = judge([Comparison("c", tuple(values), 0.1, "greater")])[0]
    down = judge([Comparison("c", tuple(-v for v in values), -0.1, "less")])[0]
    assert up.verdict is down.verdict
    assert up.p_support == pytest.approx(down.p_support)
