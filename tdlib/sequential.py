"""The follow-up design: more seeds only where they can decide, fixed before any follow-up run.

Committed before the pilot it follows was trained at the current training format, and before any
follow-up run; git's history is the record.

**Stages.** Seeds 0-4 are the *pilot*. The combined report judges the pilot's seeds at
``ALPHA_PILOT`` (the registered family, Holm, as :mod:`tdlib.stats` does), and every part the pilot
leaves undecided is *followed* on fresh seeds (``FRESH_SEEDS_FROM`` on), which never meet the pilot's
seeds in a test. The follow-up controls its own error at ``ALPHA_FOLLOW_UP`` whatever the pilot chose,
because its seeds are independent of the pilot's; so P(any wrong verdict in the combined report) is at
most ``ALPHA_PILOT + ALPHA_FOLLOW_UP`` = 0.05.

**Looks.** At ``LOOKS`` fresh seeds (5, 7, 9, 12, 15, 20, 25, 30) every followed comparison still open
is tested on all its fresh seeds so far, by the one-sided t tests of :mod:`tdlib.stats`.

**Boundaries.** Bonferroni over the m followed parts, each direction at ``ALPHA_FOLLOW_UP / 2 / m``,
split inside a part as the family's judging splits it (intersection-union for the side that needs every
comparison, Bonferroni over its k comparisons for the side that needs one). Each comparison, each
direction, spends its level ``a`` over the looks with a Pocock-shaped boundary: one nominal p-level
``nu(a)`` at every look, such that a comparison at its threshold crosses at some look with chance ``a``.
The t statistic's unknown variance makes the looks' statistics depend on each other in a way no normal
table covers, so ``nu`` is calibrated by simulating the t statistics themselves (they do not depend on
the spread: a fixed generator, two million sequences), and ``tests/test_sequential.py`` checks the error
across looks by fresh simulation.

*Why this and not an anytime-valid test.* The looks are at fixed seed counts, so a group-sequential
design spends its error only where it looks, and a Pocock shape spends it evenly, which suits effects
that may be decided early; a confidence sequence pays for looking after every seed, and loses power
here for no gain.

**Stopping.** A comparison that crosses a boundary is decided and stops; a part is decided when its
comparisons decide it, and stops. After the first look, a comparison whose chance of crossing by the last
look, at the observed effect and spread, is under ``FUTILITY_POWER`` is dropped (non-binding: dropping
only removes chances to be wrong, so the boundaries need no change). At each look only the conditions
that open comparisons need are trained, and the follow-up ends at ``LOOKS[-1]`` seeds or ``MAX_RUNS``
runs, whichever comes first; what is open then is reported "not decided within N seeds", with its
interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from tdlib.profiles import FRESH_SEEDS_FROM
from tdlib.stats import ALPHA, How

ALPHA_PILOT = ALPHA / 2
ALPHA_FOLLOW_UP = ALPHA - ALPHA_PILOT
PILOT_SEEDS = (0, 1, 2, 3, 4)
LOOKS = (5, 7, 9, 12, 15, 20, 25, 30)
FUTILITY_POWER = 0.1
MAX_RUNS = 240  # about 10 CPU-hours at the default profile on a 2-core CPU
CALIBRATION_SEQUENCES = 2_000_000
CALIBRATION_SEED = 20261125


def fresh_seeds(n: int) -> tuple[int, ...]:
    """The first ``n`` fresh seeds of the follow-up."""
    return tuple(range(FRESH_SEEDS_FROM, FRESH_SEEDS_FROM + n))


def look_p_values(x: np.ndarray, looks: Sequence[int] = LOOKS) -> tuple[np.ndarray, np.ndarray]:
    """(p that the mean > 0, p that it is < 0) at each look, for sequences ``x`` of shape (..., n >= last look):
    one-sided t tests on the first ``look`` values; shape (..., len(looks))."""
    x = np.asarray(x, dtype=float)
    n = np.asarray(looks)
    sums = np.cumsum(x, -1)[..., n - 1]
    squares = np.cumsum(x * x, -1)[..., n - 1]
    mean = sums / n
    var = np.maximum(squares - n * mean * mean, 0.0) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(var > 0, mean / np.sqrt(var / n), np.sign(mean) * np.inf)
    return stats.t.sf(t, n - 1), stats.t.cdf(t, n - 1)


@lru_cache(maxsize=4)
def _null_smallest_p(looks: tuple[int, ...]) -> np.ndarray:
    """Sorted smallest p over the looks, for sequences at their threshold (both tails of each sequence)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    smallest = []
    for _ in range(CALIBRATION_SEQUENCES // 250_000):
        p_greater, p_less = look_p_values(rng.standard_normal((250_000, looks[-1])), looks)
        smallest += [p_greater.min(-1), p_less.min(-1)]
    return np.sort(np.concatenate(smallest))


def nominal_level(level: float | np.ndarray, looks: tuple[int, ...] = LOOKS) -> float | np.ndarray:
    """The Pocock-shaped boundary: the p-level ``nu`` at every look such that a comparison at its threshold
    crosses it at some look with chance ``level``, for one-sided t tests on the first n seeds at each look.
    Calibrated on ``CALIBRATION_SEQUENCES`` simulated sequences from a fixed generator (both tails used)."""
    sample = _null_smallest_p(tuple(looks))
    index = np.clip(np.ceil(np.asarray(level, dtype=float) * len(sample)).astype(int) - 1, 0, len(sample) - 1)
    nu = np.where(np.asarray(level) > 0, sample[index], 0.0)  # the smallest p whose share reaches ``level``
    return float(nu) if np.ndim(nu) == 0 else nu


def comparison_levels(family: int, k: int, how: How) -> tuple[float, float]:
    """(support, refute) levels across all looks of one comparison in a followed part of ``k`` comparisons,
    with ``family`` followed parts (Bonferroni over them, each direction at ``ALPHA_FOLLOW_UP / 2``)."""
    a = ALPHA_FOLLOW_UP / 2 / family
    return (a, a / k) if how == "all" else (a / k, a)


@dataclass(frozen=True)
class LookDecision:
    """What one look decides for one comparison: +1 support, -1 refute, 0 open; whether it is dropped; and
    the p-values the boundaries were applied to."""

    code: int
    dropped: bool
    p_support: float
    p_refute: float


def decide_at_look(values: Sequence[float], threshold: float, side: str, levels: tuple[float, float],
                   look_index: int, looks: tuple[int, ...] = LOOKS) -> LookDecision:
    """One open comparison at look ``look_index`` (its fresh values so far, ``looks[look_index]`` of them).

    Its p-values are the engine's own (:func:`tdlib.stats.comparison_p`): a t test, the sign test's floor
    where every seed agrees, the sign-flip test as well where a seed is an outlier; each only ever larger
    than the plain t test the boundary was calibrated for, so the error stays within it.
    """
    n = looks[look_index]
    if len(values) != n:
        raise ValueError(f"look {look_index} is at {n} fresh seeds, got {len(values)} values")
    from tdlib.stats import comparison_p

    x = np.asarray(values, dtype=float)[None, None, :]
    tests = comparison_p(x, np.array([threshold]), np.array([side]))
    codes, dropped = decide_looks(x, np.array([threshold]), np.array([side]), np.array([levels[0]]),
                                  np.array([levels[1]]), look_index, looks, tests)
    return LookDecision(int(codes[0, 0]), bool(dropped[0, 0]), float(tests["p_support"][0, 0]),
                        float(tests["p_refute"][0, 0]))


def decide_looks(x: np.ndarray, thresholds: np.ndarray, sides: np.ndarray, support_levels: np.ndarray,
                 refute_levels: np.ndarray, look_index: int, looks: tuple[int, ...] = LOOKS,
                 tests: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`decide_at_look`: ``x`` (..., comparisons, n) the fresh values so far, the rest per
    comparison (broadcast against ``x``'s leading shape); ``tests``, :func:`tdlib.stats.comparison_p` of them
    if the caller has it. Returns (codes, dropped), shape (..., comparisons)."""
    from tdlib.stats import comparison_p

    tests = comparison_p(x, thresholds, sides) if tests is None else tests
    nu_support, nu_refute = nominal_level(support_levels, looks), nominal_level(refute_levels, looks)
    support = tests["p_support"] <= nu_support
    refute = ~support & (tests["p_refute"] <= nu_refute)
    codes = support.astype(int) - refute.astype(int)
    dropped = np.zeros(codes.shape, dtype=bool)
    if 1 <= look_index < len(looks) - 1:
        centred = (x - thresholds[..., None]) * np.where(sides == "greater", 1.0, -1.0)[..., None]
        mean, sd = centred.mean(-1), centred.std(-1, ddof=1)
        toward = np.broadcast_to(np.where(mean > 0, nu_support, nu_refute), mean.shape)
        critical = stats.t.ppf(1 - toward, looks[-1] - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(sd > 0, np.abs(mean) / sd * math.sqrt(looks[-1]), np.where(mean != 0, np.inf, 0.0))
        power = np.where(np.isinf(shift), 1.0, stats.nct.sf(critical, looks[-1] - 1, np.minimum(shift, 1e6)))
        dropped = (codes == 0) & (power < FUTILITY_POWER)
    return codes, dropped
