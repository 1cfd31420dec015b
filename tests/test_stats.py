"""The verdict logic: large effects decide, no effect never supports, few seeds never decide, monotone,
partial runs never stronger than full ones, no degenerate certainty, and the power behind INCONCLUSIVE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from tdlib.stats import (
    ALPHA,
    MIN_SEEDS,
    ORDER,
    Comparison,
    Part,
    Verdict,
    combine,
    comparison_p,
    holm_adjusted,
    holm_rejects,
    judge_parts,
    mean_interval,
    one_sided_p,
    outliers,
    seeds_needed,
    sign_flip_p,
)

FAST = settings(max_examples=150, deadline=None, database=None)
noise = st.lists(st.floats(-1, 1), min_size=MIN_SEEDS, max_size=10)


def judged(values, threshold: float = 0.0, side: str = "greater", family: int = 1):
    return judge_parts([Part("p", (Comparison("c", tuple(values), threshold, side),))], family=family)[0]


def verdict_of(values, threshold: float = 0.0, side: str = "greater", family: int = 1) -> Verdict:
    return judged(values, threshold, side, family).verdict


@FAST
@given(noise, st.sampled_from(["greater", "less"]))
def test_a_large_effect_with_enough_seeds_is_decided(jitter: list[float], side: str) -> None:
    assume(np.ptp(jitter) > 1e-3 and not outliers(jitter).any())  # ties and outliers wait for seeds (below)
    shift = 100.0 if side == "greater" else -100.0
    assert verdict_of([shift + j for j in jitter], side=side, family=21) is Verdict.SUPPORTED
    assert verdict_of([-shift + j for j in jitter], side=side, family=21) is Verdict.REFUTED


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
@given(noise, st.floats(-3, 3), st.floats(0, 3), st.lists(noise, max_size=4), st.integers(0, 20))
def test_verdicts_are_monotone_in_the_effect(values: list[float], shift: float, more: float,
                                             others: list[list[float]], spare: int) -> None:
    """Moving every value further to the claim's side never makes the verdict worse, whatever else
    is in the family."""
    rest = [Part(f"o{i}", (Comparison(f"o{i}", tuple(o), 0.0, "greater"),)) for i, o in enumerate(others)]
    family = 1 + len(rest) + spare

    def verdict(delta: float) -> Verdict:
        part = Part("c", (Comparison("c", tuple(v + delta for v in values), 0.0, "greater"),))
        return judge_parts([part, *rest], family=family)[0].verdict

    assert ORDER[verdict(shift + more)] >= ORDER[verdict(shift)]


def test_holm_matches_hand_computed_values() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    assert holm_adjusted(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert list(holm_rejects(p, 0.05)) == [True, False, False, True]
    assert list(holm_rejects(p, 0.05, family=10)) == [False, False, False, True]  # 0.005 <= 0.05/10 only
    assert holm_adjusted(p, family=6) == pytest.approx([0.05, 0.12, 0.12, 0.03])
    with pytest.raises(ValueError, match="family"):
        holm_rejects(p, 0.05, family=3)


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=25), st.data())
def test_a_partial_family_is_never_stronger_than_the_full_one(p: list[float], data: st.DataObject) -> None:
    """Judging only some parts of the family, the rest counted as never rejected, rejects a subset of
    what judging them all rejects (the module doc's argument, checked)."""
    known = data.draw(st.lists(st.booleans(), min_size=len(p), max_size=len(p)))
    full = holm_rejects(np.array(p), ALPHA / 2)
    partial = holm_rejects(np.array([q for q, k in zip(p, known) if k]), ALPHA / 2, family=len(p))
    assert all(not r or f for r, f in zip(partial, full[np.array(known, dtype=bool)]))


def test_p_values_and_intervals_match_scipy() -> None:
    values = [1.0, 2.5, 0.5, 1.5]
    p_greater, p_less = one_sided_p(values, 0.2)
    assert p_greater == pytest.approx(stats.ttest_1samp(values, 0.2, alternative="greater").pvalue)
    assert p_less == pytest.approx(stats.ttest_1samp(values, 0.2, alternative="less").pvalue)
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert mean_interval(values) == pytest.approx((ci.low, ci.high))
    assert all(math.isnan(x) for x in mean_interval([1.0]))
    batch = np.array([values, [3.0, 2.0, 2.5, 2.2]])
    p_g, _ = one_sided_p(batch, np.array([0.2, 2.0]))
    assert p_g[1] == pytest.approx(stats.ttest_1samp(batch[1], 2.0, alternative="greater").pvalue)


def test_identical_seeds_never_give_certainty() -> None:
    """Every seed exactly at 10.00% against "< 20%": the sign test's 2**-n, never p = 0."""
    j = judged([10.0] * 5, 20.0, "less")
    assert j.p_support == pytest.approx(2**-5) and j.p_refute == 1.0
    assert verdict_of([10.0] * 5, 20.0, "less", family=21) is Verdict.INCONCLUSIVE  # 1/32 > 0.025/21
    assert verdict_of([10.0] * 9, 20.0, "less", family=21) is Verdict.INCONCLUSIVE  # 2**-9 > 0.025/21
    assert verdict_of([10.0] * 10, 20.0, "less", family=21) is Verdict.SUPPORTED  # 2**-10 < 0.025/21
    assert one_sided_p([3.0] * 4, 3.0) == (1.0, 1.0)
    assert one_sided_p([1e-300, 1e-300, 1e-300 * (1 + 1e-15)], 0.0)[0] > 0  # tiny spreads do not underflow


def test_comparisons_take_arrays_and_refuse_what_is_not_numbers() -> None:
    assert Comparison("c", np.array([1.0, 2.0, 3.0]), 0.0, "greater").values == (1.0, 2.0, 3.0)
    assert Comparison("c", [np.float32(1.5), 2], np.float64(0.5), "greater").threshold == 0.5
    for bad, error in ((np.ones((2, 3)), ValueError), ("123", TypeError), (5.0, TypeError), ([1.0, "x"], TypeError),
                       ([1.0, True], TypeError), ({1.0: 2}, TypeError)):
        with pytest.raises(error, match="comparison 'c'"):
            Comparison("c", bad, 0.0, "greater")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not finite"):
        Comparison("c", (1.0, math.nan, 2.0), 0.0, "greater")
    with pytest.raises(ValueError, match="not finite"):
        Comparison("c", (1.0, 2.0), math.inf, "greater")
    with pytest.raises(ValueError, match="side"):
        Comparison("c", (1.0,), 0.0, "above")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Comparison"):
        Part("p", ((1.0, 2.0),))  # type: ignore[arg-type]


def test_combine_all_and_any() -> None:
    s, r, i = Verdict.SUPPORTED, Verdict.REFUTED, Verdict.INCONCLUSIVE
    assert combine([s, s]) is s and combine([s, i]) is i and combine([s, r]) is r
    assert combine([s, r], "any") is s and combine([r, r], "any") is r and combine([r, i], "any") is i
    assert combine([]) is i


def test_all_parts_are_intersection_union_and_any_parts_union_intersection() -> None:
    strong = Comparison("strong", (5.0, 5.1, 4.9, 5.2, 5.05), 0.0, "greater")
    against = Comparison("against", (-5.0, -5.1, -4.9, -5.2, -5.05), 0.0, "greater")
    vague = Comparison("vague", (1.0, -1.0, 0.5, -0.4, 0.1), 0.0, "greater")
    both, mixed, any_ = judge_parts([Part("a", (strong, strong)), Part("b", (strong, vague)),
                                     Part("c", (against, strong), how="any")])
    assert both.p_support == pytest.approx(judged(strong.values).p_support)  # no charge for needing both
    assert (both.verdict, mixed.verdict, any_.verdict) == (Verdict.SUPPORTED, Verdict.INCONCLUSIVE, Verdict.SUPPORTED)
    assert any_.p_support == pytest.approx(2 * judged(strong.values).p_support)  # Bonferroni over the two
    refuted = judge_parts([Part("d", (strong, against))])[0]
    assert refuted.verdict is Verdict.REFUTED
    assert refuted.p_refute == pytest.approx(2 * judged(strong.values).p_support)


@FAST
@given(noise)
def test_sides_are_mirror_images(values: list[float]) -> None:
    assume(len(set(values)) > 1)
    up = judged(values, 0.1, "greater")
    down = judged([-v for v in values], -0.1, "less")
    assert up.verdict is down.verdict
    assert up.judgements[0].p_support == pytest.approx(down.judgements[0].p_support)


def test_seeds_needed_is_the_noncentral_t_power() -> None:
    assert seeds_needed(1.0, 1.0, 0.05) == 8  # the textbook one-sided one-sample case: d = 1, 80% power
    assert seeds_needed(0.5, 1.0, 0.05) == 27
    assert seeds_needed(0.05, 1.0, 0.001) == 51  # past the cap: not feasible
    assert seeds_needed(1.0, 0.0, 0.025 / 21) == 10  # no spread: the sign test, once 2**-n reaches the level
    assert seeds_needed(0.0, 1.0, 0.05) == 51
    rng = np.random.default_rng(0)
    n = seeds_needed(1.5, 1.0, 0.001)
    for seeds, expect_power in ((n, True), (n - 1, False)):
        x = 1.5 + rng.standard_normal((20_000, seeds))
        power = (one_sided_p(x, np.zeros(20_000))[0] <= 0.001).mean()
        assert bool(power >= 0.79) == expect_power, (seeds, power)


def test_an_inconclusive_comparison_says_what_would_decide_it() -> None:
    close = judged([0.51, 1.88, 1.1, 0.9, 1.4], 2.0, "less", family=21)  # like C1: below 2 pp, not by enough
    j = close.judgements[0]
    assert close.verdict is Verdict.INCONCLUSIVE and j.toward == "support"
    assert 5 < j.seeds_needed <= 50 and j.feasible
    lower, upper = j.decision_interval
    assert lower < j.ci95[0] and upper > 2.0 > j.ci95[1]  # the 95% interval excludes 2; the decision one does not
    hopeless = judged([0.1, -0.2, 0.15, -0.05, 0.02], 0.0, "greater", family=21).judgements[0]
    assert hopeless.seeds_needed == 51 and not hopeless.feasible
    decided = judged([3.0, 3.1, 2.9, 3.05, 3.02], 0.0, "greater", family=21).judgements[0]
    assert decided.seeds_needed is None


@FAST
@given(st.lists(st.floats(-5, 5), min_size=MIN_SEEDS, max_size=8), st.floats(-2, 2))
def test_a_lone_comparisons_verdict_agrees_with_its_decision_interval(values: list[float], threshold: float) -> None:
    """In a family of one, SUPPORTED exactly when the decision-level interval clears the threshold (the
    interval is the t test's; an outlier adds the sign-flip test's demand, so it is left out here)."""
    assume(np.ptp(values) > 1e-6 and not outliers(values).any())
    part = judged(values, threshold, "greater")
    lower, upper = part.judgements[0].decision_interval
    assume(abs(lower - threshold) > 1e-9 and abs(upper - threshold) > 1e-9)
    assert (part.verdict is Verdict.SUPPORTED) == (lower > threshold)
    assert (part.verdict is Verdict.REFUTED) == (upper < threshold)


def test_outliers_are_flagged_at_the_stated_rate() -> None:
    rng = np.random.default_rng(0)
    for n in (3, 5, 10):
        assert 0.005 < outliers(rng.standard_normal((40_000, n))).any(-1).mean() < 0.015
    assert outliers([10, 10, 10, 10, 10.01]).tolist() == [False] * 4 + [True]
    assert outliers([1, 1.1, 0.9, 1.05, 8.0]).tolist() == [False] * 4 + [True]
    assert not outliers([1.46, 4.10, -11.70, -15.07, 14.16]).any()  # wide, but no single seed stands out
    j = judged([1, 1.1, 0.9, 1.05, 8.0]).judgements[0]
    assert j.flagged == (4,) and "sign-flip" in j.note
    assert j.p_support == pytest.approx(max(one_sided_p([1, 1.1, 0.9, 1.05, 8.0])[0], 2**-5))


def test_sign_flip_p_enumerates_every_pattern() -> None:
    x = [0.5, 1.0, 2.0, -0.3]
    means = [sum(s * v for s, v in zip(signs, x)) for signs in np.array(np.meshgrid(*[[-1, 1]] * 4)).T.reshape(-1, 4)]
    assert sign_flip_p(x)[0] == pytest.approx(np.mean(np.array(means) >= sum(x) - 1e-12))
    assert sign_flip_p([1.0] * 5) == (pytest.approx(2**-5), 1.0)


def test_a_flagged_comparison_needs_the_sign_flip_test_too() -> None:
    values = np.array([1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.15, 1.02, 0.98, 30.0])
    tests = comparison_p(values, 0.0, "greater")
    assert bool(tests["flagged"][0])
    assert float(tests["p_support"][0]) == pytest.approx(max(one_sided_p(values, 0.0)[0], sign_flip_p(values)[0]))
