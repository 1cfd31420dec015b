"""From per-seed numbers to verdicts whose error is controlled over a fixed, registered family.

**What is controlled.** The chance that the report holds *any* wrong verdict, a part or a claim
SUPPORTED when it is false or REFUTED when it is true, is at most ``ALPHA`` = 0.05, over every part of
every *registered* claim, whichever claims a run selected. A verdict at the exact threshold counts as
wrong either way. The assumption: each comparison's per-seed values are independent draws of a roughly
normal variable (they are means over thousands of test images). A comparison whose seeds hold an
outlier is flagged and judged more strictly (below); a comparison whose seeds all agree exactly is
judged by the sign test, never by a t test that would return p = 0.

**How.**

1. *Comparisons.* A :class:`Comparison` holds one number per seed (a paired difference, or one
   condition's value) and the claim's side of a threshold. Two one-sided one-sample t tests give
   ``p_support`` (the mean lies on the claim's side) and ``p_refute`` (on the other side).
2. *Parts.* A part is the unit that carries a verdict. An ``all`` part holds when every comparison
   does: it is tested by intersection-union, ``p_support = max(p_support_i)``, with no charge for
   multiplicity, and refuted by Bonferroni over its k comparisons, ``p_refute = min(1, k min p_refute_i)``.
   An ``any`` part (C6, "some layer") is the mirror image.
3. *The family.* Holm's step-down procedure runs over the parts of all registered claims, separately
   for each direction, each at ``ALPHA / 2``. Each controls its own direction's familywise error at
   ``ALPHA / 2`` whatever the dependence between parts, so both together keep any wrong verdict at
   ``ALPHA``. (Taking the smaller of the two p-values and testing it at ``ALPHA`` would be a two-sided
   test at ``2 ALPHA``.) A claim is SUPPORTED when all its parts are, REFUTED when any is: it is right
   whenever its parts are.
4. *Partial runs.* A run that judges only some registered claims counts the missing parts as p = 1
   (never rejected) but keeps the registered family size. Its verdicts are never stronger than the
   full run's: Holm's step for a part in a partial run uses a rank no later than in the full run, and
   every part before it in the full ordering passes whenever the partial run rejects (the j-th
   smallest known p passes level a/(m - j + 1), and an unknown p below it is no larger).
5. *What the tests can reach.* With n seeds the sign test's smallest p is 2**-n (0.031 at 5), and the
   first Holm step over m parts asks for ``ALPHA / 2 / m`` (0.0012 for 21 parts): an all-agreeing
   comparison needs 10 seeds to decide that way. A t test has no floor, but needs 3 seeds
   (``MIN_SEEDS``): with 2, its one degree of freedom barely estimates the spread.
6. *Outliers.* A Grubbs-type test flags a seed that lies too far from the others (normal seeds are
   flagged at most 1% of the time, so roughly normal seeds keep the t test). Such seeds are not
   roughly normal, and a t test's level is then not assured (collapse-type seeds put its error at the
   first Holm step at 2.7-28 times nominal). A flagged comparison must therefore also pass the exact
   sign-flip test of its mean (valid for any distribution symmetric about the threshold): its p is the
   larger of the two, valid if either assumption holds. The sign-flip test's floor, 2**-n, means a
   flagged comparison waits for enough seeds (10 for 21 parts) to be decided; it also makes a near-tie
   (all seeds but one identical) behave like the exact tie of point 5.
7. *What would decide it.* An INCONCLUSIVE comparison gets the number of paired seeds at which a
   one-sided t test at the first Holm step's level would decide it with 80% power, at the observed
   mean and spread (noncentral t), toward the side its mean lies on; above ``MAX_FEASIBLE_SEEDS`` it is
   "not decidable at a feasible seed count", and the decision-level interval bounds the effect.

Everything below works on arrays of shape ``(..., n)`` so that the simulation tests run the very same
code on many thousands of synthetic families at once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from scipy import stats

ALPHA = 0.05  # P(any wrong verdict in the report) <= ALPHA
MIN_SEEDS = 3
POWER = 0.8
MAX_FEASIBLE_SEEDS = 50
OUTLIER_LEVEL = 0.01  # normal seeds are flagged as holding an outlier at most this often
SIGN_FLIP_EXACT_UP_TO = 16  # seeds; above, 2**16 random sign patterns from a fixed generator
Side = Literal["greater", "less"]
How = Literal["all", "any"]


class Verdict(StrEnum):
    SUPPORTED = "SUPPORTED"
    REFUTED = "REFUTED"
    INCONCLUSIVE = "INCONCLUSIVE"


ORDER = {Verdict.REFUTED: 0, Verdict.INCONCLUSIVE: 1, Verdict.SUPPORTED: 2}


def _finite_numbers(name: str, what: str, values: object) -> tuple[float, ...]:
    """``values`` as a tuple of floats; ``TypeError``/``ValueError`` naming ``name`` unless it is a flat
    sequence of finite real numbers (a list, tuple or 1-D array)."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"comparison {name!r}: {what} must be one number per seed, got an array of shape "
                             f"{values.shape}")
        values = values.tolist()
    if isinstance(values, str | bytes | dict | set) or not isinstance(values, Iterable):
        raise TypeError(f"comparison {name!r}: {what} must be a sequence of numbers, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"comparison {name!r}: {what} must be numbers, got {v!r} ({type(v).__name__})")
        if not math.isfinite(v):
            raise ValueError(f"comparison {name!r} has a value that is not finite: {v!r} in {what}")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class Comparison:
    """One pre-registered test: the claim says the mean of ``values`` is ``side`` of ``threshold``.

    ``values`` (one per seed) may be any flat sequence of finite real numbers, a 1-D numpy array
    included; it is stored as a tuple of floats. Anything else is refused here, at construction.
    """

    name: str
    values: tuple[float, ...]  # one per seed
    threshold: float
    side: Side
    unit: str = ""
    seeds: tuple[int, ...] = ()  # the seed of each value, when given (needed when some seed is left out)

    def __post_init__(self) -> None:
        if self.side not in ("greater", "less"):
            raise ValueError(f"side must be 'greater' or 'less', got {self.side!r}")
        object.__setattr__(self, "values", _finite_numbers(self.name, "values", self.values))
        (threshold,) = _finite_numbers(self.name, "the threshold", (self.threshold,))
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.seeds and len(self.seeds) != len(self.values):
            raise ValueError(f"comparison {self.name!r} has {len(self.values)} values for seeds {self.seeds}")

    @property
    def rule(self) -> str:
        sign = ">" if self.side == "greater" else "<"
        return f"mean {sign} {self.threshold:g}{(' ' + self.unit) if self.unit else ''}"

    @property
    def testable(self) -> bool:
        return len(self.values) >= MIN_SEEDS


@dataclass(frozen=True)
class Part:
    """A part of a claim: its comparisons, combined with ``all`` or ``any``."""

    name: str
    comparisons: tuple[Comparison, ...]
    how: How = "all"

    def __post_init__(self) -> None:
        if self.how not in ("all", "any"):
            raise ValueError(f"part {self.name!r}: how must be 'all' or 'any', got {self.how!r}")
        object.__setattr__(self, "comparisons", tuple(self.comparisons))
        bad = [c for c in self.comparisons if not isinstance(c, Comparison)]
        if bad:
            raise TypeError(f"part {self.name!r} holds something that is not a Comparison: {bad[0]!r}")


# ---------------------------------------------------------------- vectorised core


def one_sided_p(values: np.ndarray | Sequence[float], threshold: np.ndarray | float = 0.0) -> tuple:
    """(p that the mean > threshold, p that it is < threshold), for samples along the last axis.

    A one-sample t test; where every value is the same (a zero spread) the sign test instead, whose p
    is 2**-n on the side the values lie (1 on the other, and 1 both ways at the threshold itself).
    Fewer than 2 values give (1, 1). Returns floats for a 1-D input, arrays of shape ``(...)`` otherwise.
    """
    x = np.asarray(values, dtype=float)
    scalar = x.ndim == 1
    x = np.atleast_2d(x) - np.asarray(threshold, dtype=float)[..., None]
    n = x.shape[-1]
    if n < 2:
        ones = np.ones(x.shape[:-1])
        return (1.0, 1.0) if scalar else (ones, ones)
    scale = np.abs(x).max(-1, keepdims=True)
    # Scaled so that squaring tiny differences cannot underflow to a false zero spread.
    z = np.divide(x, scale, out=np.zeros_like(x), where=scale > 0)
    mean, sd = z.mean(-1), z.std(-1, ddof=1)
    constant = np.ptp(z, axis=-1) == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(constant, 0.0, mean / (sd / math.sqrt(n)))
    p_greater, p_less = stats.t.sf(t, n - 1), stats.t.cdf(t, n - 1)
    floor = 0.5**n
    p_greater = np.where(constant, np.where(mean > 0, floor, 1.0), p_greater)
    p_less = np.where(constant, np.where(mean < 0, floor, 1.0), p_less)
    if scalar:
        return float(p_greater[0]), float(p_less[0])
    return p_greater, p_less


def outliers(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Booleans (same shape, along the last axis): the values a Grubbs-type test at ``OUTLIER_LEVEL`` calls
    outliers. Each value's externally studentised residual, (x_i - mean of the others) / (sd of the
    others * sqrt(1 + 1/(n - 1))), follows t with n - 2 degrees of freedom under normality; a value is
    flagged past the Bonferroni critical value over the n seeds, so that normal seeds are flagged at most
    ``OUTLIER_LEVEL`` of the time. A value off a set of otherwise identical ones is always flagged.
    Needs 3 values; fewer are never flagged."""
    x = np.asarray(values, dtype=float)
    n = x.shape[-1]
    if n < 3:
        return np.zeros(x.shape, dtype=bool)
    centre = x - x.mean(-1, keepdims=True)
    scale = np.abs(centre).max(-1, keepdims=True)
    z = np.divide(centre, scale, out=np.zeros_like(centre), where=scale > 0)
    others_mean = (z.sum(-1, keepdims=True) - z) / (n - 1)
    others_ss = (z**2).sum(-1, keepdims=True) - z**2 - (n - 1) * others_mean**2
    others_sd = np.sqrt(np.maximum(others_ss, 0.0) / (n - 2))
    off = np.abs(z - others_mean)
    critical = stats.t.ppf(1 - OUTLIER_LEVEL / (2 * n), n - 2) * math.sqrt(1 + 1 / (n - 1))
    tiny = 1e-9  # relative to the largest deviation: otherwise-identical values
    with np.errstate(divide="ignore", invalid="ignore"):
        flagged = np.where(others_sd > tiny, off / others_sd > critical, off > tiny)
    return flagged


def _sign_patterns(n: int) -> np.ndarray:
    """(patterns, n) signs: all 2**n for small n, else 2**16 from a fixed generator (with identity)."""
    if n <= SIGN_FLIP_EXACT_UP_TO:
        codes = np.arange(2**n)[:, None] >> np.arange(n)[None, :] & 1
        return 1.0 - 2.0 * codes
    rng = np.random.default_rng(20261125)
    signs = rng.choice([-1.0, 1.0], size=(2**16, n))
    signs[0] = 1.0
    return signs


def sign_flip_p(values: np.ndarray | Sequence[float], threshold: np.ndarray | float = 0.0) -> tuple:
    """(p that the mean > threshold, p that it is < threshold) by the sign-flip randomisation test,
    valid when the values' distribution is symmetric about the threshold under the null. Its smallest
    p with n seeds is 2**-n."""
    x = np.asarray(values, dtype=float)
    scalar = x.ndim == 1
    x = np.atleast_2d(x) - np.asarray(threshold, dtype=float)[..., None]
    signs = _sign_patterns(x.shape[-1])
    observed = x.sum(-1, keepdims=True)
    flipped = x @ signs.T  # (..., patterns)
    tolerance = 1e-12 * np.abs(x).sum(-1, keepdims=True)
    p_greater = (flipped >= observed - tolerance).mean(-1)
    p_less = (flipped <= observed + tolerance).mean(-1)
    if scalar:
        return float(p_greater[0]), float(p_less[0])
    return p_greater, p_less


def comparison_p(values: np.ndarray, threshold: np.ndarray | float, side: np.ndarray | str) -> dict[str, np.ndarray]:
    """The per-comparison tests, for samples ``values`` of shape (..., n): p_support, p_refute (on the
    claim's side and the other), and whether an outlier was flagged. Untestable (n < MIN_SEEDS) gives 1."""
    x = np.asarray(values, dtype=float)
    p_greater, p_less = (np.asarray(p, dtype=float) for p in one_sided_p(np.atleast_2d(x), threshold))
    flagged = outliers(np.atleast_2d(x)).any(-1)
    if flagged.any():
        xs = np.atleast_2d(x)
        thr = np.broadcast_to(np.asarray(threshold, dtype=float), xs.shape[:-1])
        flip_greater, flip_less = sign_flip_p(xs[flagged], thr[flagged])
        p_greater, p_less = p_greater.copy(), p_less.copy()
        p_greater[flagged] = np.maximum(p_greater[flagged], flip_greater)
        p_less[flagged] = np.maximum(p_less[flagged], flip_less)
    greater = np.asarray(side) == "greater"
    p_support, p_refute = np.where(greater, p_greater, p_less), np.where(greater, p_less, p_greater)
    if x.shape[-1] < MIN_SEEDS:
        p_support, p_refute = np.ones_like(p_support), np.ones_like(p_refute)
    return {"p_support": p_support, "p_refute": p_refute, "flagged": flagged}


def part_p(p_support: np.ndarray, p_refute: np.ndarray, how: How) -> tuple[np.ndarray, np.ndarray]:
    """A part's (p_support, p_refute) from its comparisons' (shape (..., k)): intersection-union for
    the side that needs every comparison, Bonferroni over the k for the side that needs any one."""
    k = p_support.shape[-1]
    if how == "all":
        return p_support.max(-1), np.minimum(1.0, k * p_refute.min(-1))
    return np.minimum(1.0, k * p_support.min(-1)), p_refute.max(-1)


def holm_rejects(p: np.ndarray, level: float, family: int | None = None) -> np.ndarray:
    """Holm's step-down at ``level`` over the last axis (shape (..., m)); True where rejected.

    ``family`` (at least m) is the size of the registered family when only m of its p-values are known:
    the unknown ones count as never rejected, which is never stronger than knowing them.
    """
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    family = m if family is None else family
    if family < m:
        raise ValueError(f"the family ({family}) cannot be smaller than the p-values given ({m})")
    if m == 0:
        return np.zeros(p.shape, dtype=bool)
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, -1)
    passes = ranked <= level / (family - np.arange(m))
    accepted_so_far = np.logical_and.accumulate(passes, axis=-1)
    rejected = np.empty_like(accepted_so_far)
    np.put_along_axis(rejected, order, accepted_so_far, -1)
    return rejected


def holm_adjusted(p: np.ndarray, family: int | None = None) -> np.ndarray:
    """Holm-adjusted p-values over the last axis: the smallest level at which each is rejected."""
    p = np.asarray(p, dtype=float)
    m = p.shape[-1]
    family = m if family is None else family
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, -1) * (family - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, -1)
    return out


def decide(part_support: np.ndarray, part_refute: np.ndarray, family: int | None = None,
           alpha: float = ALPHA) -> np.ndarray:
    """Each part's verdict code (+1 SUPPORTED, -1 REFUTED, 0 INCONCLUSIVE), shape (..., m), from the
    parts' p-values: Holm over the family at ``alpha / 2`` in each direction."""
    supported = holm_rejects(part_support, alpha / 2, family)
    refuted = holm_rejects(part_refute, alpha / 2, family)
    return supported.astype(int) - refuted.astype(int)


# ---------------------------------------------------------------- one report's judging


@dataclass(frozen=True)
class Judgement:
    """A comparison with its statistics. Verdicts belong to parts; a comparison says what it shows."""

    comparison: Comparison
    n: int
    mean: float
    ci95: tuple[float, float]  # two-sided 95% t interval of the mean, unadjusted
    decision_interval: tuple[float, float]  # one-sided bounds at the levels the first Holm step uses
    decision_confidence: tuple[float, float]  # the confidence of each of those bounds
    p_support: float  # one-sided p that the mean is on the claim's side
    p_refute: float  # one-sided p that it is on the other side
    flagged: tuple[int, ...]  # seeds whose value is an outlier (empty if none)
    seeds_needed: int | None  # paired seeds for 80% power at the observed effect; None if decided or n/a
    toward: str  # "support" or "refute": the side the observed mean lies on
    note: str = ""

    @property
    def feasible(self) -> bool:
        return self.seeds_needed is not None and self.seeds_needed <= MAX_FEASIBLE_SEEDS


@dataclass(frozen=True)
class JudgedPart:
    part: Part
    judgements: list[Judgement]
    p_support: float  # the part's, before Holm
    p_refute: float
    p_support_holm: float  # Holm-adjusted over the family: SUPPORTED when <= ALPHA / 2
    p_refute_holm: float  # REFUTED when <= ALPHA / 2
    verdict: Verdict


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t interval of the mean (scipy's), (nan, nan) with fewer than two values."""
    if len(values) < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def bound(values: Sequence[float], level: float, upper: bool) -> float:
    """One-sided t bound of the mean at ``level`` (lower, or upper), nan with fewer than two values."""
    n = len(values)
    if n < 2:
        return math.nan
    half = float(stats.t.ppf(1 - level, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return float(np.mean(values)) + (half if upper else -half)


def seeds_needed(effect: float, sd: float, level: float, power: float = POWER,
                 cap: int = MAX_FEASIBLE_SEEDS) -> int | None:
    """The fewest paired seeds at which a one-sided one-sample t test at ``level`` rejects with
    ``power``, when the mean lies ``effect`` (> 0) from the threshold with spread ``sd``; ``cap + 1`` when
    even ``cap`` seeds are not enough. Noncentral t. With a zero spread no t test applies: the sign test
    decides once its floor 2**-n reaches ``level``."""
    if effect == 0:
        return cap + 1
    if not sd > 0:
        return max(MIN_SEEDS, math.ceil(-math.log2(level)))
    if not math.isfinite(effect / sd):
        return None
    d = abs(effect) / sd
    for n in range(MIN_SEEDS, cap + 1):
        critical = stats.t.ppf(1 - level, n - 1)
        if stats.nct.sf(critical, n - 1, d * math.sqrt(n)) >= power:
            return n
    return cap + 1


def _judgement(c: Comparison, tests: dict[str, float], levels: tuple[float, float], decided: bool) -> Judgement:
    """``levels``: the one-sided levels (support, refute) the first Holm step would ask of this comparison."""
    values = np.asarray(c.values)
    n = len(values)
    greater = c.side == "greater"
    mean = float(values.mean()) if n else math.nan
    support_bound = bound(c.values, levels[0], upper=not greater)
    refute_bound = bound(c.values, levels[1], upper=greater)
    interval = (support_bound, refute_bound) if greater else (refute_bound, support_bound)
    on_claim_side = (mean > c.threshold) if greater else (mean < c.threshold)
    toward = "support" if on_claim_side else "refute"
    needed = None
    note = ""
    flagged = tuple(int(s) for s, f in zip(c.seeds or range(n), outliers(values) if n else []) if f)
    if not c.testable:
        note = f"{n} seed(s): at least {MIN_SEEDS} are needed to decide"
    elif not decided:
        level = levels[0] if on_claim_side else levels[1]
        needed = seeds_needed(mean - c.threshold, float(values.std(ddof=1)), level)
    if flagged:
        note = (note + "; " if note else "") + (
            "outlier seed(s) " + ", ".join(map(str, flagged)) + ": must pass the sign-flip test as well as the t test"
        )
    return Judgement(
        comparison=c, n=n, mean=mean, ci95=mean_interval(c.values),
        decision_interval=interval, decision_confidence=(1 - levels[0], 1 - levels[1]) if greater else
        (1 - levels[1], 1 - levels[0]),
        p_support=float(tests["p_support"]), p_refute=float(tests["p_refute"]), flagged=flagged,
        seeds_needed=needed, toward=toward, note=note,
    )


def judge_parts(parts: Sequence[Part], family: int | None = None, alpha: float = ALPHA) -> list[JudgedPart]:
    """Judge ``parts`` as members of a registered family of ``family`` parts (default: just these).

    Parts of the family that are not given count as never rejected (see the module doc, point 4).
    """
    family = len(parts) if family is None else family
    per_part = []
    for part in parts:
        if not part.comparisons:
            raise ValueError(f"part {part.name!r} has no comparisons")
        tests = [comparison_p(np.asarray(c.values, dtype=float), c.threshold, c.side) for c in part.comparisons]
        p_s = np.array([float(t["p_support"][0]) for t in tests])
        p_r = np.array([float(t["p_refute"][0]) for t in tests])
        per_part.append((tests, *part_p(p_s, p_r, part.how)))
    support = np.array([float(ps) for _, ps, _ in per_part])
    refute = np.array([float(pr) for _, _, pr in per_part])
    codes = decide(support, refute, family, alpha) if parts else np.array([], dtype=int)
    adjusted_s = holm_adjusted(support, family) if parts else support
    adjusted_r = holm_adjusted(refute, family) if parts else refute
    first_step = alpha / 2 / max(family, 1)
    judged = []
    for i, (part, (tests, ps, pr)) in enumerate(zip(parts, per_part)):
        k = len(part.comparisons)
        levels = (first_step, first_step / k) if part.how == "all" else (first_step / k, first_step)
        verdict = {1: Verdict.SUPPORTED, -1: Verdict.REFUTED, 0: Verdict.INCONCLUSIVE}[int(codes[i])]
        decided = verdict is not Verdict.INCONCLUSIVE
        judgements = [
            _judgement(c, {k_: float(np.asarray(v).reshape(-1)[0]) for k_, v in t.items()}, levels, decided)
            for c, t in zip(part.comparisons, tests)
        ]
        judged.append(JudgedPart(part, judgements, float(ps), float(pr), float(adjusted_s[i]),
                                 float(adjusted_r[i]), verdict))
    return judged


def combine(verdicts: Sequence[Verdict], how: How = "all") -> Verdict:
    """A claim's verdict from its parts' (``all``), or any "some of them" combination (``any``).

    ``all``: SUPPORTED only if every one is, REFUTED if any is. ``any``: SUPPORTED if any is, REFUTED
    only if every one is.
    """
    if not verdicts:
        return Verdict.INCONCLUSIVE
    if how == "all":
        if any(v is Verdict.REFUTED for v in verdicts):
            return Verdict.REFUTED
        return Verdict.SUPPORTED if all(v is Verdict.SUPPORTED for v in verdicts) else Verdict.INCONCLUSIVE
    if any(v is Verdict.SUPPORTED for v in verdicts):
        return Verdict.SUPPORTED
    return Verdict.REFUTED if all(v is Verdict.REFUTED for v in verdicts) else Verdict.INCONCLUSIVE
