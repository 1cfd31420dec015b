"""Schedules: a value in [0, 1] as a function of training progress in [0, 1].

A schedule is a frozen, hashable dataclass, so it can sit inside a run description and feed its hash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tdlib.selection import check_fraction


@dataclass(frozen=True)
class Schedule:
    """Piecewise-linear in progress through ``knots`` ``((p0, v0), (p1, v1), ...)``, flat outside them.

    The progresses must rise strictly and lie in [0, 1]; the values must lie in [0, 1].
    """

    name: str
    knots: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.knots:
            raise ValueError(f"schedule {self.name!r} needs at least one knot")
        previous = -math.inf
        for progress, value in self.knots:
            check_fraction(f"schedule {self.name!r} progress", progress)
            check_fraction(f"schedule {self.name!r} value", value)
            if progress <= previous:
                raise ValueError(
                    f"schedule {self.name!r} must move forward in progress, got knots {self.knots!r}"
                )
            previous = progress

    def __call__(self, progress: float) -> float:
        """The value at ``progress`` (clamped to [0, 1])."""
        p = min(max(progress, 0.0), 1.0)
        (p0, v0) = self.knots[0]
        if p <= p0:
            return v0
        for p1, v1 in self.knots[1:]:
            if p == p1:  # exactly the knot's value, with no rounding from the interpolation
                return v1
            if p < p1:
                return v0 + (v1 - v0) * (p - p0) / (p1 - p0)
            p0, v0 = p1, v1
        return v0

    @property
    def is_constant(self) -> bool:
        """True if the value never changes, so it does not matter how long the run is."""
        return len({value for _, value in self.knots}) == 1

    def describe(self) -> str:
        """A short human-readable form, for reports."""
        if len(self.knots) == 1:
            return f"{self.knots[0][1]:g}"
        return " -> ".join(f"{v:g}@{p:.0%}" for p, v in self.knots)


def constant(value: float, name: str = "constant") -> Schedule:
    """The same ``value`` throughout training."""
    check_fraction(name, value)
    return Schedule(name, ((0.0, value),))


def ramp(start: float, end: float, until: float, begin: float = 0.0, name: str = "ramp") -> Schedule:
    """``start`` up to progress ``begin``, then linearly to ``end`` at progress ``until``, then flat."""
    for label, p in (("begin", begin), ("until", until)):
        check_fraction(f"ramp {label}", p)
    if until <= begin:
        raise ValueError(f"ramp must end after it begins, got begin={begin!r}, until={until!r}")
    return Schedule(name, ((begin, start), (until, end)))


def paper_gamma(final: float, ramp_end: float = 0.4) -> Schedule:
    """The official code's targeting ramp, in fractions of the run instead of steps.

    ``targeted_weight_piecewise`` reaches 95% of the final proportion at step 20k and all of it at 40k;
    here that is ``ramp_end / 2`` and ``ramp_end`` of the run.
    """
    check_fraction("gamma final", final)
    check_fraction("ramp_end", ramp_end)
    return Schedule("paper-gamma", ((0.0, 0.0), (ramp_end / 2, 0.95 * final), (ramp_end, final)))


def paper_alpha(final: float, ramp_end: float = 0.4) -> Schedule:
    """The official code's drop-rate ramp: linear from 0 to ``final`` at ``ramp_end`` of the run."""
    check_fraction("alpha final", final)
    return Schedule("paper-alpha", ((0.0, 0.0), (ramp_end, final)))
