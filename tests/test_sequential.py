"""The follow-up design's guarantee, by simulation across its looks: the pilot at 0.025 and the follow-up
on fresh seeds at 0.025 keep P(any wrong verdict in the combined report) within 0.05."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from test_guarantee import STRUCTURE, comparisons, within_level

from tdlib import sequential
from tdlib.sequential import ALPHA_FOLLOW_UP, ALPHA_PILOT, LOOKS, comparison_levels, decide_looks, nominal_level
from tdlib.stats import comparison_p, decide, part_p

SIMS = 10_000
BOUNDS = list(pairwise(np.cumsum([0] + [k for k, _ in STRUCTURE])))


def truths(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sign = np.sign(means)
    true = np.array([(sign[a:b] > 0).all() if how == "all" else (sign[a:b] > 0).any()
                     for (a, b), (_, how) in zip(BOUNDS, STRUCTURE)])
    false = np.array([(sign[a:b] < 0).any() if how == "all" else (sign[a:b] < 0).all()
                      for (a, b), (_, how) in zip(BOUNDS, STRUCTURE)])
    return true, false


def parts_of(codes: np.ndarray) -> np.ndarray:
    """Part verdict codes from comparison codes (sims, comparisons): all/any as the family combines them."""
    out = []
    for (a, b), (_, how) in zip(BOUNDS, STRUCTURE):
        c = codes[:, a:b]
        if how == "all":
            out.append(np.where((c == -1).any(-1), -1, np.where((c == 1).all(-1), 1, 0)))
        else:
            out.append(np.where((c == 1).any(-1), 1, np.where((c == -1).all(-1), -1, 0)))
    return np.stack(out, -1)


def simulate(means: np.ndarray, seed: int = 0, sims: int = SIMS, nominal=nominal_level) -> tuple[float, float]:
    """(P(any wrong verdict) in the combined report, P(any wrong verdict) among the follow-up's)."""
    rng = np.random.default_rng(seed)
    n_comparisons = len(means)
    sides = np.array(["greater", "less"] * n_comparisons)[:n_comparisons]
    thresholds = rng.uniform(-5, 5, n_comparisons)
    shift = np.where(sides == "greater", means, -means)
    draw = lambda n: thresholds[None, :, None] + shift[None, :, None] + rng.standard_normal((sims, n_comparisons, n))  # noqa: E731
    pilot = comparison_p(draw(5), thresholds, sides)
    ps, pr = zip(*(part_p(pilot["p_support"][:, a:b], pilot["p_refute"][:, a:b], how)
                   for (a, b), (_, how) in zip(BOUNDS, STRUCTURE)))
    pilot_codes = decide(np.stack(ps, -1), np.stack(pr, -1), alpha=ALPHA_PILOT)
    followed = pilot_codes == 0
    family = np.maximum(followed.sum(-1), 1)
    support = np.empty((sims, n_comparisons))
    refute = np.empty((sims, n_comparisons))
    for (a, b), (k, how) in zip(BOUNDS, STRUCTURE):
        levels = np.array([comparison_levels(int(m), k, how) for m in range(1, len(STRUCTURE) + 1)])
        support[:, a:b] = levels[family - 1, 0][:, None]
        refute[:, a:b] = levels[family - 1, 1][:, None]
    fresh = draw(LOOKS[-1])
    open_ = np.repeat(followed, [k for k, _ in STRUCTURE], axis=1)
    codes = np.zeros((sims, n_comparisons), dtype=int)
    part_codes = np.zeros_like(pilot_codes)
    original = sequential.nominal_level
    sequential.nominal_level = nominal
    try:
        for i, n in enumerate(LOOKS):
            new, dropped = decide_looks(fresh[..., :n], thresholds, sides, support, refute, i)
            newly = open_ & (new != 0)
            codes = np.where(newly, new, codes)
            open_ &= ~(newly | dropped)
            decided_now = followed & (part_codes == 0) & (parts_of(codes) != 0)
            part_codes = np.where(decided_now, parts_of(codes), part_codes)
            open_ &= ~np.repeat(part_codes != 0, [k for k, _ in STRUCTURE], axis=1)
    finally:
        sequential.nominal_level = original
    final = np.where(followed, part_codes, pilot_codes)
    true, false = truths(means)
    wrong = ((final == 1) & ~true) | ((final == -1) & ~false)
    wrong_follow_up = wrong & followed
    return float(wrong.any(-1).mean()), float(wrong_follow_up.any(-1).mean())


def test_the_boundary_spends_exactly_its_level_across_the_looks() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200_000, LOOKS[-1]))
    from tdlib.sequential import look_p_values

    p_greater, _ = look_p_values(x)
    for level in (0.01, 0.001):
        nu = nominal_level(level)
        assert level / 8 < nu < level  # cheaper than one test, dearer than Bonferroni over 8 looks
        crossed = (p_greater.min(-1) <= nu).mean()
        assert abs(crossed - level) < 4 * np.sqrt(level / 200_000) + 1e-4, (level, crossed)


@pytest.mark.parametrize("scenario", ["all at threshold", "one at threshold, rest decisive", "mixed near"])
def test_the_combined_report_keeps_its_guarantee(scenario: str) -> None:
    n = comparisons()
    if scenario == "all at threshold":
        means = np.zeros(n)
    elif scenario == "one at threshold, rest decisive":
        means = np.full(n, 6.0)
        means[5] = 0.0
    else:
        means = np.random.default_rng(3).choice([-0.4, 0.0, 0.4], n)
    total, follow_up = simulate(means)
    assert within_level(total, SIMS), (scenario, total)
    assert follow_up <= ALPHA_FOLLOW_UP + 3 * np.sqrt(ALPHA_FOLLOW_UP / SIMS), (scenario, follow_up)


def test_looking_without_the_boundary_breaks_it() -> None:
    """Testing every look at the one-look level (no correction for looking) inflates the follow-up's error:
    the simulation sees it."""
    _, follow_up = simulate(np.zeros(comparisons()), nominal=lambda level, looks=LOOKS: level)
    assert follow_up > ALPHA_FOLLOW_UP + 3 * np.sqrt(ALPHA_FOLLOW_UP / SIMS), follow_up


def test_a_moderate_effect_is_decided_by_the_follow_up() -> None:
    """Power, as a sanity check: one comparison a spread away from its threshold, the rest far off."""
    means = np.full(comparisons(), 6.0)
    means[0] = 1.0
    rng = np.random.default_rng(5)
    decided = []
    for look_index, n in enumerate(LOOKS):
        x = 1.0 + rng.standard_normal((2000, 1, n))
        codes, _ = decide_looks(x, np.zeros(1), np.array(["greater"]), np.array([ALPHA_FOLLOW_UP / 2 / 10]),
                                np.array([ALPHA_FOLLOW_UP / 2 / 10]), look_index)
        decided.append((codes == 1).mean())
    assert decided[-1] > 0.9
