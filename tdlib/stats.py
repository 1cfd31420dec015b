"""From per-seed numbers to a verdict: one-sided t bounds, Holm's adjustment, effect intervals.

A :class:`Comparison` holds one number per seed (a paired difference, or a single condition's value)
and the claim's side of a threshold. Its two one-sided t tests ask whether the mean lies on the
claim's side (support) or on the other side (refute). Over all comparisons of a run, Holm's step-down
procedure keeps the chance of any wrong SUPPORTED, and of any wrong REFUTED, at ``ALPHA``:

- SUPPORTED when the one-sided bound at the adjusted level lies on the claim's side of the threshold;
- REFUTED when the opposite bound lies on the other side;
- INCONCLUSIVE otherwise, and always with fewer than ``MIN_SEEDS`` seeds.

Why a t bound: the per-seed numbers are means over 10,000 test images, so near-normal, and with 3 to
10 seeds a sign-flip or Wilcoxon test cannot reach p < 0.05 at all (its smallest p is 2**-n).
With 2 seeds a t bound has 1 degree of freedom and the spread is barely estimated, so
``MIN_SEEDS = 3``: fewer seeds never decide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_SEEDS = 3
Side = Literal["greater", "less"]


class Verdict(StrEnum):
    SUPPORTED = "SUPPORTED"
    REFUTED = "REFUTED"
    INCONCLUSIVE = "INCONCLUSIVE"


ORDER = {Verdict.REFUTED: 0, Verdict.INCONCLUSIVE: 1, Verdict.SUPPORTED: 2}


@dataclass(frozen=True)
class Comparison:
    """One pre-registered test: the claim says the mean of ``values`` is ``side`` of ``threshold``."""

    name: str
    values: tuple[float, ...]  # one per seed
    threshold: float
    side: Side
    unit: str = ""
    seeds: tuple[int, ...] = ()  # the seed of each value, when given (needed when some seed is left out)

    def __post_init__(self) -> None:
        if self.side not in ("greater", "less"):
            raise ValueError(f"side must be 'greater' or 'less', got {self.side!r}")
        if self.seeds and len(self.seeds) != len(self.values):
            raise ValueError(f"comparison {self.name!r} has {len(self.values)} values for seeds {self.seeds}")
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"comparison {self.name!r} has a value that is not finite: {self.values}")

    @property
    def rule(self) -> str:
        sign = ">" if self.side == "greater" else "<"
        return f"mean {sign} {self.threshold:g}{(' ' + self.unit) if self.unit else ''}"

    @property
    def testable(self) -> bool:
        return len(self.values) >= MIN_SEEDS


@dataclass(frozen=True)
class Judgement:
    """A comparison with its statistics and verdict."""

    comparison: Comparison
    n: int
    mean: float
    ci95: tuple[float, float]  # two-sided 95% t interval of the mean (unadjusted), for reporting
    p_support: float  # one-sided p that the mean is on the claim's side
    p_refute: float  # one-sided p that it is on the other side
    p_holm: float  # Holm-adjusted p of the smaller of the two; 1 when untestable
    verdict: Verdict
    note: str = ""


def one_sided_p(values: Sequence[float], threshold: float) -> tuple[float, float]:
    """(p that the mean > threshold, p that the mean < threshold), from a one-sample t test."""
    x = np.asarray(values, dtype=float) - threshold
    scale = float(np.abs(x).max()) if len(x) else 0.0
    if len(x) < 2 or scale == 0.0:
        return 1.0, 1.0
    x = x / scale  # so that squaring tiny differences cannot underflow to a zero spread
    if float(np.ptp(x)) == 0.0:  # every seed agrees exactly: decisive in the direction of the difference
        return (0.0, 1.0) if x[0] > 0 else (1.0, 0.0)
    t = float(x.mean()) / (float(x.std(ddof=1)) / math.sqrt(len(x)))
    return float(stats.t.sf(t, len(x) - 1)), float(stats.t.cdf(t, len(x) - 1))


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t interval of the mean; (nan, nan) with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()) - half, float(x.mean()) + half


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def judge(comparisons: Sequence[Comparison], alpha: float = ALPHA) -> list[Judgement]:
    """Judge every comparison of a run together (Holm over the testable ones), in the order given."""
    sides = [one_sided_p(c.values, c.threshold) for c in comparisons]
    claim_side = [ps if c.side == "greater" else pr for c, (ps, pr) in zip(comparisons, sides)]
    other_side = [pr if c.side == "greater" else ps for c, (ps, pr) in zip(comparisons, sides)]
    testable = [i for i, c in enumerate(comparisons) if c.testable]
    adjusted = dict(zip(testable, holm([min(claim_side[i], other_side[i]) for i in testable])))
    judgements = []
    for i, c in enumerate(comparisons):
        p_holm = adjusted.get(i, 1.0)
        if not c.testable:
            verdict, note = Verdict.INCONCLUSIVE, f"{len(c.values)} seed(s): at least {MIN_SEEDS} are needed to decide"
        elif p_holm < alpha:
            verdict = Verdict.SUPPORTED if claim_side[i] < other_side[i] else Verdict.REFUTED
            note = ""
        else:
            verdict, note = Verdict.INCONCLUSIVE, ""
        judgements.append(Judgement(
            comparison=c,
            n=len(c.values),
            mean=float(np.mean(c.values)) if c.values else math.nan,
            ci95=mean_interval(c.values),
            p_support=claim_side[i],
            p_refute=other_side[i],
            p_holm=p_holm,
            verdict=verdict,
            note=note,
        ))
    return judgements


def combine(verdicts: Sequence[Verdict], how: Literal["all", "any"] = "all") -> Verdict:
    """A part's verdict from its comparisons', or a claim's from its parts'.

    ``all``: SUPPORTED only if every one is, REFUTED if any is. ``any`` (e.g. "some hidden layer"):
    SUPPORTED if any is, REFUTED only if every one is.
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


@dataclass(frozen=True)
class Part:
    """A part of a claim: its comparisons, combined with ``all`` or ``any``."""

    name: str
    comparisons: tuple[Comparison, ...]
    how: Literal["all", "any"] = "all"
