"""The exact, anytime-valid test of the typical run (:mod:`tdlib.claims.sequences`): its closed form against the
integral it stands for, what it can reach, ties, and the guarantee over the registered family, proved by
simulation on the shapes real seeds take (normal, heavy-tailed, skewed, collapsing at the pruning cliff,
exactly tied), beside the t-based engine, which breaks it on those shapes.

A wrong verdict is a part SUPPORTED or REFUTED that is not strictly so. "At its threshold" means, for the
typical-run test, that the median seed lies exactly at the threshold (half the seeds on each side), and for
the t-based engine, that the mean does: each engine is judged by what it claims.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from t_engine import comparison_p
from test_guarantee import STRUCTURE, family_codes, strictly

from tdlib.claims.sequences import anytime_p, log_e_values, rate_p, seeds_to_decide, smallest_p
from tdlib.claims.stats import ALPHA

SIMS = 4_000
COMPARISONS = sum(k for k, _ in STRUCTURE)


def test_the_closed_form_is_the_mixture_it_stands_for() -> None:
    for k, n in [(0, 1), (1, 1), (3, 5), (5, 5), (13, 14), (10, 20), (19, 20)]:
        integral = 2 ** (n + 1) * integrate.quad(lambda r, k=k, n=n: r**k * (1 - r) ** (n - k), 0.5, 1)[0]
        hits = np.array([1.0] * k + [0.0] * (n - k))
        assert np.exp(log_e_values(hits)[-1]) == pytest.approx(integral, rel=1e-9)


def test_what_n_seeds_can_reach() -> None:
    for n in (1, 5, 13, 14, 30):
        assert anytime_p(np.ones(n)) == pytest.approx(smallest_p(n), rel=1e-9)
    assert smallest_p(12) > ALPHA / 2 / 21 >= smallest_p(13)  # 13 agreeing seeds pass the first Holm step
    assert smallest_p(5) > 0.05  # five seeds never decide anything, at any level a report uses
    assert smallest_p(0) == anytime_p(np.ones((3, 0)))[0] == 1.0


def test_the_p_value_keeps_the_best_evidence_seen_so_far() -> None:
    """Anytime-valid: the running maximum of E, so a look after a later, contrary seed keeps what was shown."""
    early = np.array([1.0] * 14)
    later = np.concatenate([early, np.zeros(6)])
    assert anytime_p(later) == anytime_p(early) < 1e-3
    with pytest.raises(ValueError, match="0 or 1"):
        log_e_values(np.array([0.5, 1.0]))


def test_a_seed_at_the_threshold_counts_against_both_sides() -> None:
    tied = rate_p(np.full(30, 10.0), 10.0, "greater")
    assert tied["p_support"] == tied["p_refute"] == 1.0 and tied["k_support"] == tied["k_refute"] == 0
    below = rate_p(np.full(30, 9.99), 10.0, "less")
    assert below["p_support"] == pytest.approx(smallest_p(30), rel=1e-9) and below["p_refute"] == 1.0
    mixed = rate_p(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), np.array([2.0, 2.0]), np.array(["greater", "less"]))
    assert mixed["k_support"].tolist() == [1, 1] and mixed["k_refute"].tolist() == [1, 1]


def test_what_would_decide_it() -> None:
    level = ALPHA / 2 / 21
    assert seeds_to_decide(5, 5, level) == 13  # all agreeing: the seeds at which the floor reaches the level
    assert seeds_to_decide(13, 13, level) == 13  # decided already
    assert seeds_to_decide(3, 5, level) is None  # 60% on the claim's side: not decidable at a feasible count
    assert seeds_to_decide(0, 5, level) is None
    needed = seeds_to_decide(9, 10, level)
    assert needed is not None and 13 < needed <= 60
    k_at = round(0.9 * needed)
    assert anytime_p(np.array([1.0] * k_at + [0.0] * (needed - k_at))) <= level * 1.5  # the split, held


# ---------------------------------------------------------------- the guarantee, by simulation


def collapse(share: float, sd: float):
    """Normal seeds, of which ``share`` collapse ``sd`` standard deviations toward the other side."""
    def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape) - sd * (rng.random(shape) < share)

    def cdf(x: float) -> float:
        return (1 - share) * stats.norm.cdf(x) + share * stats.norm.cdf(x + sd)

    median = optimize.brentq(lambda x: cdf(x) - 0.5, -sd - 10, 10)
    mean = -sd * share
    return draw, median, mean


def shapes() -> dict[str, tuple]:
    """Per-seed distributions as (draw, median, mean): the engine is shifted so that the median (or, for the
    t-based engine, the mean) lies at the threshold."""
    out = {
        "normal": (lambda rng, s: rng.standard_normal(s), 0.0, 0.0),
        "t(3)": (lambda rng, s: rng.standard_t(3, s), 0.0, 0.0),
        "exponential": (lambda rng, s: rng.exponential(1.0, s), np.log(2), 1.0),
        "lognormal": (lambda rng, s: rng.lognormal(0.0, 1.0, s), 1.0, np.exp(0.5)),
        "tied": (lambda rng, s: np.zeros(s), 0.0, 0.0),
    }
    for share, sd in ((0.2, 3), (0.2, 5), (0.2, 10), (0.1, 10)):
        out[f"collapse 1 in {round(1 / share)} at {sd} sd"] = collapse(share, sd)
    return out


SHAPES = shapes()


def wrong_rate(engine: str, shape: str, n: int, decisive: bool, seed: int = 0) -> tuple[float, float]:
    """(share of simulated reports with any wrong verdict, its upper 99% Clopper-Pearson bound) when every
    comparison lies at its threshold, or one does (the first of C4's "all" pair) and the rest lie far on the
    claim's side (``decisive``). ``engine``: "typical" (the rate test) or "mean" (the t-based engine)."""
    rng = np.random.default_rng(seed)
    draw, median, mean = SHAPES[shape]
    centre = median if engine == "typical" else mean
    sides = np.array(["greater", "less"] * COMPARISONS)[:COMPARISONS]
    thresholds = rng.uniform(-5, 5, COMPARISONS)
    sign = np.where(sides == "greater", 1.0, -1.0)
    noise = draw(rng, (SIMS, COMPARISONS, n)) - centre
    shift = np.zeros(COMPARISONS)
    if decisive:
        shift[:] = 40.0
        shift[5] = 0.0
    x = thresholds[None, :, None] + sign[None, :, None] * (noise + shift[None, :, None])
    tests = rate_p(x, thresholds, sides) if engine == "typical" else comparison_p(x, thresholds, sides)
    codes = family_codes(tests)
    strictly_true, _ = strictly(np.sign(shift))
    wrong = ((codes == 1) & ~strictly_true) | (codes == -1)  # nothing here is strictly false
    k = int(wrong.any(-1).sum())
    upper = 1.0 if k == SIMS else float(stats.beta.ppf(0.99, k + 1, SIMS - k))
    return k / SIMS, upper


@pytest.mark.parametrize("decisive", [False, True], ids=["all at threshold", "one at threshold, rest decisive"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_typical_run_test_keeps_the_guarantee_on_every_shape(shape: str, decisive: bool) -> None:
    """40 seeds, looked at after every one (the p-value is anytime-valid): P(any wrong verdict) <= ALPHA."""
    rate, upper = wrong_rate("typical", shape, 40, decisive)
    assert upper <= ALPHA, f"{shape}: P(any wrong verdict) = {rate:.4f} (99% upper bound {upper:.4f})"


def test_the_typical_run_test_decides_what_is_decisive() -> None:
    """Power, so that the guarantee is not kept by deciding nothing: 20 seeds all on the claim's side
    decide every part; with one comparison at its threshold, the rest of the family is still decided."""
    rng = np.random.default_rng(3)
    x = 1.0 + rng.exponential(1.0, (200, COMPARISONS, 20))
    tests = rate_p(x, np.zeros(COMPARISONS), np.array(["greater"] * COMPARISONS))
    assert (family_codes(tests) == 1).all()


@pytest.mark.parametrize(("shape", "n"), [("exponential", 10), ("lognormal", 10), ("collapse 1 in 5 at 10 sd", 5)])
def test_the_t_based_engine_breaks_the_guarantee_where_seeds_are_not_normal(shape: str, n: int) -> None:
    """The engine the report used until the convention of 2026-12-04, judged by its own estimand (the mean)."""
    rate, _ = wrong_rate("mean", shape, n, decisive=False)
    assert rate > ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / SIMS), f"{shape}: {rate:.4f}"
