"""A claim is data (id, quote, rule, conditions) plus one function that turns evidence into parts.

The judging is shared: :func:`claim` wraps the function into a test that checks its evidence is sound
and hands the finding to the session's :class:`Findings`; at the end of the run every comparison of
every claim is judged together (:func:`tdlib.stats.judge`) and the report is written.

Adding a claim (the README shows the same)::

    @claim("C14", quote="...", rule="B keeps 99% of its accuracy at 30% weight pruning", conditions=("B",))
    def test_c14_thirty_percent_is_free(ev: Evidence) -> Finding:
        kept = 100 * ev.pruned("B", "weight", 30) / ev.accuracy("B")   # one value per seed
        return Finding([Part("keeps 99%", (Comparison("B: weight 30% / dense", values(kept), 99.0, "greater", "%"),))])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tdlib.evidence import BrokenEvidence, Evidence
from tdlib.stats import Comparison, Judgement, Part, Verdict, combine, judge


@dataclass(frozen=True)
class Claim:
    """What the writeup says, and the rule fixed before any run judges it."""

    id: str
    quote: str
    rule: str
    conditions: tuple[str, ...]
    figures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """What a claim function returns: its judged parts, and numbers shown beside them but not judged."""

    parts: list[Part]
    info: dict[str, tuple[float, ...]] = field(default_factory=dict)  # label -> one value per seed
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class JudgedPart:
    part: Part
    judgements: list[Judgement]
    verdict: Verdict


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    finding: Finding
    parts: list[JudgedPart]
    verdict: Verdict


class Findings:
    """The findings of one session, in the order the claims ran."""

    def __init__(self) -> None:
        self.items: list[tuple[Claim, Finding]] = []

    def add(self, claim: Claim, finding: Finding) -> None:
        self.items.append((claim, finding))

    def judge(self) -> list[ClaimResult]:
        """Judge every comparison together (Holm over the run), then combine into parts and claims."""
        comparisons = [c for _, f in self.items for part in f.parts for c in part.comparisons]
        judgements = iter(judge(comparisons))
        results = []
        for claim_, finding in self.items:
            parts = []
            for part in finding.parts:
                js = [next(judgements) for _ in part.comparisons]
                parts.append(JudgedPart(part, js, combine([j.verdict for j in js], part.how)))
            results.append(ClaimResult(claim_, finding, parts, combine([p.verdict for p in parts])))
        return results


def check_sound(claim_: Claim, finding: Finding, seeds: int) -> None:
    """Raise :class:`BrokenEvidence` if the finding cannot be judged as the claim was registered."""
    if not finding.parts or any(not part.comparisons for part in finding.parts):
        raise BrokenEvidence(f"{claim_.id}: every claim needs parts, and every part comparisons")
    for part in finding.parts:
        for c in part.comparisons:
            if len(c.values) != seeds and not finding.notes:
                raise BrokenEvidence(f"{claim_.id}: {c.name} has {len(c.values)} values for {seeds} seeds, unexplained")


def claim(
    id: str, quote: str, rule: str, conditions: tuple[str, ...], figures: tuple[str, ...] = ()
) -> Callable[[Callable[[Evidence], Finding]], Callable[[Evidence, Findings], None]]:
    """Make a claim function a test of the ``evidence`` and ``findings`` fixtures (see the module doc)."""
    meta = Claim(id, quote, rule, conditions, figures)

    def decorate(fn: Callable[[Evidence], Finding]) -> Callable[[Evidence, Findings], None]:
        # Not functools.wraps: pytest must see this signature (the fixtures it asks for), not fn's.
        def test(evidence: Evidence, findings: Findings) -> None:
            evidence.check_baseline()
            for condition in conditions:
                evidence.runs(condition)
            finding = fn(evidence)
            check_sound(meta, finding, len(evidence.seeds))
            findings.add(meta, finding)

        test.__name__, test.__qualname__, test.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        test.__module__ = fn.__module__
        test.claim = meta  # type: ignore[attr-defined]
        return test

    return decorate


def values(array: Any) -> tuple[float, ...]:
    """A per-seed array as the tuple a :class:`Comparison` holds."""
    return tuple(float(v) for v in array)


__all__ = ["Claim", "ClaimResult", "Comparison", "Finding", "Findings", "Part", "claim", "values"]
