"""From per-seed numbers to verdicts whose error is controlled over a fixed, registered family.

**What a comparison claims** (``claims.md``, convention of 2026-12-04). A :class:`Comparison` holds one
number per seed (a paired difference, or one condition's value), in the order of the profile's sequence of
seeds, and the claim's side of a threshold. It holds when the *typical run* lands on the claim's side: when
more than half of all runs of its training procedure land strictly on that side, so that the median seed
does. A seed exactly at the threshold counts against whichever side is being supported.

**What is controlled.** The chance that the report holds *any* wrong verdict, a part or a claim SUPPORTED
when it is false or REFUTED when it is true, is at most the report's ``alpha`` (its share of the study's
0.05), over every part of every *registered* claim, whichever claims a run selected, however many seeds
each comparison has, and whenever one stops adding them. A verdict at the exact threshold counts as wrong
either way. The one assumption: seeds are independent. Nothing is assumed of the per-seed values'
distribution: collapses at the pruning cliff, exact ties and skew are all covered.

**How.**

1. *Comparisons.* Each direction (the claim's side, and the other) is the exact, anytime-valid test of
   :mod:`tdlib.claims.sequences`: a test martingale for the rate of seeds strictly on that side against 1/2, read
   after every seed of the sequence. ``p_support`` and ``p_refute`` stay valid whatever the stopping rule,
   so a condition trained on until its parts are decided (:mod:`tdlib.claims.continuation`) costs nothing.
2. *Parts.* A part is the unit that carries a verdict. An ``all`` part holds when every comparison
   does: it is tested by intersection-union, ``p_support = max(p_support_i)``, with no charge for
   multiplicity, and refuted by Bonferroni over its k comparisons, ``p_refute = min(1, k min p_refute_i)``.
   An ``any`` part (C6, "some layer") is the mirror image.
3. *The family.* Holm's step-down procedure runs over the parts of all registered claims, separately
   for each direction, each at ``alpha / 2``. Each controls its own direction's familywise error at
   ``alpha / 2`` whatever the dependence between parts (it needs only each p-value to be valid, which an
   anytime-valid p is at any stopping time), so both together keep any wrong verdict at ``alpha``. A claim
   is SUPPORTED when all its parts are, REFUTED when any is: it is right whenever its parts are.
4. *Partial runs.* A run that judges only some registered claims counts the missing parts as p = 1
   (never rejected) but keeps the registered family size. Its verdicts are never stronger than the
   full run's: Holm's step for a part in a partial run uses a rank no later than in the full run, and
   every part before it in the full ordering passes whenever the partial run rejects (the j-th
   smallest known p passes level a/(m - j + 1), and an unknown p below it is no larger).
5. *What the tests can reach.* With n seeds the smallest p is ``(n + 1) / (2^(n+1) - 1)``
   (:func:`tdlib.claims.sequences.smallest_p`): 0.095 at 5 seeds, so five seeds decide nothing; the first Holm step
   over 21 parts at 0.0125 a direction needs 14 seeds all on one side.
6. *Description beside the verdict.* Each comparison shows its per-seed values, "k of n seeds" on the
   claim's side (what decides), its median, its mean with the unadjusted 95% t interval (description only:
   a mean is not what is tested), and the seed at which its part's verdict was reached.
7. *What would decide it.* An INCONCLUSIVE part gets, from the same test, the seeds in all at which it
   would be decided if its seeds went on splitting as they have, at the level Holm's next step would ask of
   it; a split near even is "not decidable" (:func:`tdlib.claims.sequences.seeds_to_decide`).

Everything below works on arrays of shape ``(..., n)`` so that the simulation tests run the very same
code on many thousands of synthetic families at once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

import numpy as np
from scipy import stats

from tdlib.claims.sequences import log_e_values, rate_p, seeds_to_decide

ALPHA = 0.05  # the study's P(any wrong verdict) over everything the README states; each report has a share
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
    """One pre-registered test: the claim says the typical seed's value lies ``side`` of ``threshold``.

    ``values`` (one per seed, in the order of the sequence of seeds) may be any flat sequence of finite
    real numbers, a 1-D numpy array included; it is stored as a tuple of floats. Anything else is refused
    here, at construction.
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
        return f"typical seed {sign} {self.threshold:g}{(' ' + self.unit) if self.unit else ''}"

    @property
    def sequence_seeds(self) -> tuple[int, ...]:
        """The seed of each value: its own, or positions 0, 1, ... when the comparison names none."""
        return self.seeds or tuple(range(len(self.values)))


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


# ---------------------------------------------------------------- the family


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
    k_support: int  # seeds strictly on the claim's side
    k_refute: int  # seeds strictly on the other side
    median: float
    mean: float
    ci95: tuple[float, float]  # two-sided 95% t interval of the mean, unadjusted: description only
    p_support: float  # anytime-valid p that the typical seed is on the claim's side
    p_refute: float  # anytime-valid p that it is on the other side
    decided_at: int | None = None  # the seed at which this comparison reached what its part's verdict needed

    @property
    def toward(self) -> str:
        """The side most seeds lie on: "support", "refute", or "" when they split evenly."""
        return "support" if self.k_support > self.k_refute else "refute" if self.k_refute > self.k_support else ""


@dataclass(frozen=True)
class JudgedPart:
    part: Part
    judgements: list[Judgement]
    p_support: float  # the part's, before Holm
    p_refute: float
    p_support_holm: float  # Holm-adjusted over the family: SUPPORTED when <= alpha / 2
    p_refute_holm: float  # REFUTED when <= alpha / 2
    verdict: Verdict
    level: float = math.nan  # the Holm step's level its verdict passed (nan: undecided)
    # INCONCLUSIVE only: the seeds in all that would decide it if its seeds went on splitting as they have,
    # toward ``toward`` ("support"/"refute"); None with toward "" when no feasible count would.
    to_decide: int | None = None
    toward: str = ""

    @property
    def n(self) -> int:
        """The most seeds any of its comparisons has."""
        return max((j.n for j in self.judgements), default=0)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t interval of the mean (scipy's), (nan, nan) with fewer than two values."""
    if len(values) < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def on_side(c: Comparison, support: bool) -> np.ndarray:
    """0/1 per seed, in sequence order: strictly on the claim's side (``support``) or strictly on the other."""
    x = np.asarray(c.values, dtype=float)
    above, below = x > c.threshold, x < c.threshold
    return (above if (c.side == "greater") == support else below).astype(float)


def first_seed_at(c: Comparison, support: bool, level: float) -> int | None:
    """The seed after which the comparison's anytime-valid p in one direction first fell to ``level``."""
    if not c.values:
        return None
    running_p = np.exp(-np.maximum(np.maximum.accumulate(log_e_values(on_side(c, support))), 0.0))
    reached = np.flatnonzero(running_p <= level * (1 + 1e-12))
    return c.sequence_seeds[int(reached[0])] if reached.size else None


def _levels(how: How, k: int, support_level: float, refute_level: float) -> tuple[float, float]:
    """The levels each of a part's ``k`` comparisons must reach for the part to pass (support, refute)."""
    return (support_level, refute_level / k) if how == "all" else (support_level / k, refute_level)


def _to_decide(part: Part, judgements: list[Judgement], support_level: float,
               refute_level: float) -> tuple[int | None, str]:
    """(seeds in all, toward) that would decide an undecided part at Holm's next levels, if each comparison's
    seeds went on splitting as they have; (None, "") when no feasible count would."""
    k = len(part.comparisons)
    s_level, r_level = _levels(part.how, k, support_level, refute_level)
    support = [seeds_to_decide(j.k_support, j.n, s_level) for j in judgements]
    refute = [seeds_to_decide(j.k_refute, j.n, r_level) for j in judgements]

    def every(counts: list[int | None]) -> int | None:
        return None if any(c is None for c in counts) else max(counts)  # type: ignore[type-var]

    def one(counts: list[int | None]) -> int | None:
        return min((c for c in counts if c is not None), default=None)

    options = ([(every(support), "support"), (one(refute), "refute")] if part.how == "all"
               else [(one(support), "support"), (every(refute), "refute")])
    feasible = [(n, toward) for n, toward in options if n is not None]
    return min(feasible) if feasible else (None, "")


def _judgement(c: Comparison, tests: dict[str, np.ndarray]) -> Judgement:
    values = np.asarray(c.values, dtype=float)
    n = len(values)
    return Judgement(
        comparison=c, n=n, k_support=int(tests["k_support"]), k_refute=int(tests["k_refute"]),
        median=float(np.median(values)) if n else math.nan, mean=float(values.mean()) if n else math.nan,
        ci95=mean_interval(c.values), p_support=float(tests["p_support"]), p_refute=float(tests["p_refute"]),
    )


def holm_levels(p: np.ndarray, rejected: np.ndarray, level: float, family: int) -> np.ndarray:
    """The Holm step's level each rejected p passed (nan where not rejected), for p of shape (m,)."""
    out = np.full(p.shape, math.nan)
    order = np.argsort(p, kind="stable")
    for rank, index in enumerate(order):
        if rejected[index]:
            out[index] = level / (family - rank)
    return out


def judge_parts(parts: Sequence[Part], family: int | None = None, alpha: float = ALPHA) -> list[JudgedPart]:
    """Judge ``parts`` as members of a registered family of ``family`` parts (default: just these) at ``alpha``.

    Each comparison's values are read in the order given: the sequence's. Parts of the family that are not
    given count as never rejected (see the module doc, point 4).
    """
    family = len(parts) if family is None else family
    per_part = []
    for part in parts:
        if not part.comparisons:
            raise ValueError(f"part {part.name!r} has no comparisons")
        tests = [{k: v.reshape(-1)[0] for k, v in rate_p(np.asarray(c.values, dtype=float)[None], c.threshold,
                                                           c.side).items()} for c in part.comparisons]
        p_s = np.array([float(t["p_support"]) for t in tests])
        p_r = np.array([float(t["p_refute"]) for t in tests])
        per_part.append((tests, *part_p(p_s, p_r, part.how)))
    support = np.array([float(ps) for _, ps, _ in per_part])
    refute = np.array([float(pr) for _, _, pr in per_part])
    half = alpha / 2
    supported = holm_rejects(support, half, family) if parts else np.zeros(0, dtype=bool)
    refuted = holm_rejects(refute, half, family) if parts else np.zeros(0, dtype=bool)
    codes = supported.astype(int) - refuted.astype(int)
    support_levels = holm_levels(support, supported, half, family)
    refute_levels = holm_levels(refute, refuted, half, family)
    adjusted_s = holm_adjusted(support, family) if parts else support
    adjusted_r = holm_adjusted(refute, family) if parts else refute
    # Holm's next step in each direction: the level an undecided part would be asked to pass next.
    next_support = half / max(family - int(supported.sum()), 1)
    next_refute = half / max(family - int(refuted.sum()), 1)
    judged = []
    for i, (part, (tests, ps, pr)) in enumerate(zip(parts, per_part)):
        verdict = {1: Verdict.SUPPORTED, -1: Verdict.REFUTED, 0: Verdict.INCONCLUSIVE}[int(codes[i])]
        judgements = [_judgement(c, t) for c, t in zip(part.comparisons, tests)]
        level, to_decide, toward = math.nan, None, ""
        if verdict is Verdict.INCONCLUSIVE:
            to_decide, toward = _to_decide(part, judgements, next_support, next_refute)
        else:
            support_side = verdict is Verdict.SUPPORTED
            level = float(support_levels[i] if support_side else refute_levels[i])
            needed = _levels(part.how, len(part.comparisons), level, level)[0 if support_side else 1]
            judgements = [_decided_at(j, support_side, needed) for j in judgements]
        judged.append(JudgedPart(part, judgements, float(ps), float(pr), float(adjusted_s[i]),
                                 float(adjusted_r[i]), verdict, level, to_decide, toward))
    return judged


def _decided_at(j: Judgement, support: bool, level: float) -> Judgement:
    """``j`` with the seed at which it reached ``level`` in the verdict's direction (None if it never did:
    a comparison the verdict did not need, such as the others of a part refuted by one)."""
    return replace(j, decided_at=first_seed_at(j.comparison, support, level))


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
