"""The verdict logic on the typical run: what decides is the seeds on each side, in sequence order; agreeing
seeds decide once the test can reach the level, no effect never supports, ties never give certainty,
verdicts are monotone, partial runs are never stronger than full ones, the seed at which a part was decided
and what would decide an open one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from tdlib.claims.sequences import anytime_p, seeds_to_decide, smallest_p
from tdlib.claims.stats import (
    ALPHA,
    ORDER,
    Comparison,
    Part,
    Verdict,
    combine,
    holm_adjusted,
    holm_rejects,
    judge_parts,
    mean_interval,
)

FAST = settings(max_examples=150, deadline=None, database=None)
LEVEL = ALPHA / 2 / 21  # the first Holm step over the registered family, at the study's whole 0.05
noise = st.lists(st.floats(-1, 1), min_size=1, max_size=30)


def judged(values, threshold: float = 0.0, side: str = "greater", family: int = 1, alpha: float = ALPHA):
    return judge_parts([Part("p", (Comparison("c", tuple(values), threshold, side),))], family=family, alpha=alpha)[0]


def verdict_of(values, threshold: float = 0.0, side: str = "greater", family: int = 1) -> Verdict:
    return judged(values, threshold, side, family).verdict


@FAST
@given(st.lists(st.floats(0.001, 1), min_size=13, max_size=30), st.sampled_from(["greater", "less"]))
def test_agreeing_seeds_decide_once_the_test_can_reach_the_level(jitter: list[float], side: str) -> None:
    """Every seed on one side decides at 13 seeds against the first Holm step over 21 parts at 0.05, however
    far or near the values lie: only their side counts."""
    sign = 1.0 if side == "greater" else -1.0
    assert verdict_of([sign * j for j in jitter], side=side, family=21) is Verdict.SUPPORTED
    assert verdict_of([-sign * j for j in jitter], side=side, family=21) is Verdict.REFUTED
    assert verdict_of([sign * 1e6] * 12, side=side, family=21) is Verdict.INCONCLUSIVE  # 12: p above the level


@FAST
@given(noise)
def test_no_effect_is_never_supported(values: list[float]) -> None:
    # Each seed followed by its mirror image: along the whole sequence, never more than one seed ahead on a side.
    mirrored = [x for v in values for x in (v, -v)]
    assert verdict_of(mirrored, side="greater") is not Verdict.SUPPORTED
    assert verdict_of(mirrored, side="less") is not Verdict.SUPPORTED
    assert verdict_of(values, threshold=max(values), side="greater") is not Verdict.SUPPORTED
    assert verdict_of(values, threshold=min(values), side="less") is not Verdict.SUPPORTED


def test_seeds_at_the_threshold_never_decide_and_ties_never_give_certainty() -> None:
    """C12(a)'s shape: every seed exactly at the threshold is on neither side; every seed exactly below it is
    one side's evidence with the test's floor, never p = 0."""
    at = judged([10.0] * 40, 10.0, "less", family=21)
    assert at.verdict is Verdict.INCONCLUSIVE and at.p_support == at.p_refute == 1.0
    j = judged([9.99] * 13, 10.0, "less", family=21)
    assert j.p_support == pytest.approx(smallest_p(13)) and j.p_support > 0 and j.verdict is Verdict.SUPPORTED
    assert judged([9.99] * 5, 10.0, "less").p_support == pytest.approx(smallest_p(5))  # 0.095: five decide nothing


def test_the_order_of_the_sequence_is_what_is_read() -> None:
    """The p is the best evidence along the sequence: agreeing seeds first, then contrary ones, keep what the
    first ones showed; the same seeds the other way round show less."""
    early = [1.0] * 15 + [-1.0] * 5
    late = early[::-1]
    assert judged(early).p_support == pytest.approx(anytime_p(np.array([1.0] * 15)))
    assert judged(late).p_support > judged(early).p_support


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




def test_the_description_beside_the_verdict() -> None:
    values = [1.0, 2.5, 0.5, 1.5, -0.2]
    j = judged(values, 0.2).judgements[0]
    assert (j.n, j.k_support, j.k_refute) == (5, 4, 1) and j.median == 1.0 and j.mean == pytest.approx(1.06)
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert j.ci95 == pytest.approx((ci.low, ci.high)) and mean_interval(values) == j.ci95
    assert all(math.isnan(x) for x in mean_interval([1.0]))
    assert j.toward == "support" and judged([1.0, -1.0]).judgements[0].toward == ""


def test_all_parts_are_intersection_union_and_any_parts_union_intersection() -> None:
    strong = Comparison("strong", tuple(5.0 + 0.01 * i for i in range(16)), 0.0, "greater")
    against = Comparison("against", tuple(-v for v in strong.values), 0.0, "greater")
    vague = Comparison("vague", (1.0, -1.0) * 8, 0.0, "greater")
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
    up = judged(values, 0.1, "greater")
    down = judged([-v for v in values], -0.1, "less")
    assert up.verdict is down.verdict
    assert up.judgements[0].p_support == pytest.approx(down.judgements[0].p_support)


def test_a_decided_part_names_the_seed_at_which_it_was_decided() -> None:
    """The seed of the sequence after which the comparison's p first reached the Holm step its part passed."""
    seeds = tuple(range(20))
    values = (1.0,) * 20
    part = judge_parts([Part("p", (Comparison("c", values, 0.0, "greater", seeds=seeds),))], family=21)[0]
    assert part.verdict is Verdict.SUPPORTED and part.level == pytest.approx(LEVEL)
    assert part.judgements[0].decided_at == 12  # the 13th seed: smallest_p(13) <= 0.025/21 < smallest_p(12)
    named = Comparison("c", values[:16], 0.0, "greater", seeds=(0, 1, 2, 3, 4, *range(100, 111)))
    assert judge_parts([Part("p", (named,))], family=21)[0].judgements[0].decided_at == 107
    # A part refuted by one of its two comparisons: the other was not needed, and says so.
    two = judge_parts([Part("q", (Comparison("a", values, 0.0, "less"), Comparison("b", values, 0.0, "greater")))],
                      family=21)[0]
    assert two.verdict is Verdict.REFUTED and [j.decided_at for j in two.judgements] == [13, None]  # at LEVEL / 2


def test_an_inconclusive_part_says_what_would_decide_it() -> None:
    """At Holm's next step, if the seeds went on splitting as they have; a split near even is not decidable."""
    leaning = judged([1.0] * 9 + [-1.0], family=21)
    assert leaning.verdict is Verdict.INCONCLUSIVE and leaning.toward == "support"
    assert leaning.to_decide == seeds_to_decide(9, 10, LEVEL) and 13 < leaning.to_decide <= 60
    even = judged([1.0, -1.0] * 5, family=21)
    assert even.to_decide is None and even.toward == ""
    against = judged([-1.0] * 10, family=21)
    assert against.toward == "refute" and against.to_decide == 13
    # An "all" part is supported only when every comparison is: the slower of the two decides.
    slow = Comparison("slow", (1.0,) * 9 + (-1.0,), 0.0, "greater")
    fast = Comparison("fast", (1.0,) * 10, 0.0, "greater")
    part = judge_parts([Part("p", (slow, fast))], family=21)[0]
    assert part.to_decide == seeds_to_decide(9, 10, LEVEL) and part.toward == "support"
