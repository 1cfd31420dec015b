"""A claim is data (id, quote, rule, conditions, its parts) plus one function that turns evidence into parts.

The judging is shared: :func:`claim` wraps the function into a test that checks its evidence is sound
and hands the finding to the session's :class:`Findings`. At the end of the run the parts of every
claim are judged together, as members of the *registered family*: every claim the claim modules
define, whichever of them the run selected (:mod:`tdlib.claims.stats` says why and what that guarantees).

Adding a claim (the README shows the same)::

    @claim("C14", quote="...", rule="B keeps 99% of its accuracy at 30% weight pruning", conditions=("B",))
    def test_c14_thirty_percent_is_free(ev: Evidence) -> Finding:
        kept = 100 * ev.pruned("B", "weight", 30) / ev.accuracy("B")   # one value per seed
        return Finding([Part("keeps 99%", (Comparison("B: weight 30% / dense", kept, 99.0, "greater", "%"),))])

A claim with several parts names them when it is registered (``parts=("(a) ...", "(b) ...")``), so
that the family's size is fixed before any run; its function must return exactly those parts.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from tdlib.claims.evidence import BrokenEvidence, Evidence
from tdlib.claims.stats import ALPHA, Comparison, JudgedPart, Part, Verdict, combine, judge_parts


@dataclass(frozen=True)
class Claim:
    """What the writeup says, and the rule fixed before any run judges it."""

    id: str
    quote: str
    rule: str
    conditions: tuple[str, ...]
    figures: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()  # the registered parts' names; () registers a single part
    title: str = ""  # a few words for the summary table

    @property
    def n_parts(self) -> int:
        return max(1, len(self.parts))


@dataclass(frozen=True)
class Finding:
    """What a claim function returns: its judged parts, and numbers shown beside them but not judged."""

    parts: list[Part]
    info: dict[str, tuple[float, ...]] = field(default_factory=dict)  # label -> one value per seed
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    finding: Finding | None  # None when the claim could not be judged (see ``error``)
    parts: list[JudgedPart]
    verdict: Verdict
    error: str = ""


@dataclass(frozen=True)
class Judged:
    """The judging of one run: a result per claim it judged, and the family they were judged in."""

    results: list[ClaimResult]
    family: list[Claim]  # every registered claim
    alpha: float = ALPHA  # the report's share of the study's error
    sequence: Any = None  # the tdlib.claims.continuation.Sequence its parts were judged on, or None

    @property
    def missing(self) -> list[Claim]:
        """Registered claims this run did not judge (not selected, or broken)."""
        judged = {r.claim.id for r in self.results if not r.error}
        return [c for c in self.family if c.id not in judged]

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def family_parts(self) -> int:
        return sum(c.n_parts for c in self.family)


class Findings:
    """The findings of one session, in the order the claims ran."""

    def __init__(self) -> None:
        self.items: list[tuple[Claim, Finding]] = []

    def add(self, claim: Claim, finding: Finding) -> None:
        if any(c.id == claim.id for c, _ in self.items):
            raise ValueError(f"claim {claim.id} was judged twice in one session")
        self.items.append((claim, finding))

    def judge(self, family: Iterable[Claim] | None = None, alpha: float = ALPHA) -> Judged:
        """Judge every part as a member of ``family`` (default: the claims found) at ``alpha``, then combine
        into claims.

        A claim whose parts cannot be judged (an error) is reported with its error; its parts count as
        never rejected, so the other claims' verdicts stand, and the run is marked partial.
        """
        family = list(family) if family is not None else [c for c, _ in self.items]
        registered = {c.id for c in family}
        for claim_, _ in self.items:
            if claim_.id not in registered:
                raise ValueError(f"claim {claim_.id} is not in the registered family {sorted(registered)}")
        parts: list[Part] = []
        owners: list[int] = []
        errors: dict[int, str] = {}
        for index, (claim_, finding) in enumerate(self.items):
            try:
                check_parts(claim_, finding)
                judge_parts(finding.parts)  # judged alone first, so that an error names this claim only
            except Exception as error:  # never lose the other claims' results to one claim's error
                errors[index] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
                continue
            parts += finding.parts
            owners += [index] * len(finding.parts)
        judged_parts = judge_parts(parts, family=sum(c.n_parts for c in family), alpha=alpha)
        results = []
        for index, (claim_, finding) in enumerate(self.items):
            if index in errors:
                results.append(ClaimResult(claim_, finding, [], Verdict.INCONCLUSIVE, errors[index]))
                continue
            mine = [jp for jp, owner in zip(judged_parts, owners) if owner == index]
            results.append(ClaimResult(claim_, finding, mine, combine([p.verdict for p in mine])))
        return Judged(results, family, alpha)


def check_parts(claim_: Claim, finding: Finding) -> None:
    """Raise :class:`BrokenEvidence` unless the finding's parts are the ones the claim registered."""
    if not isinstance(finding, Finding):
        raise BrokenEvidence(f"{claim_.id}: a claim function must return a Finding, got {type(finding).__name__}")
    if not finding.parts or any(not isinstance(p, Part) or not p.comparisons for p in finding.parts):
        raise BrokenEvidence(f"{claim_.id}: every claim needs parts, and every part comparisons")
    names = tuple(p.name for p in finding.parts)
    if (claim_.parts and names != claim_.parts) or (not claim_.parts and len(names) != 1):
        raise BrokenEvidence(
            f"{claim_.id}: registered with parts {claim_.parts or '(one part)'}, but its finding has {names}"
        )


def check_sound(claim_: Claim, finding: Finding, seeds: int) -> None:
    """Raise :class:`BrokenEvidence` if the finding cannot be judged as the claim was registered."""
    check_parts(claim_, finding)
    for part in finding.parts:
        for c in part.comparisons:  # fewer values than seeds only when the comparison names its seeds
            if len(c.values) != seeds and len(c.seeds) != len(c.values):
                raise BrokenEvidence(f"{claim_.id}: {c.name} has {len(c.values)} values for {seeds} seeds, and does "
                                     "not name the seeds they belong to")


def claim(
    id: str, quote: str, rule: str, conditions: tuple[str, ...], figures: tuple[str, ...] = (),
    parts: tuple[str, ...] = (), title: str = "",
) -> Callable[[Callable[[Evidence], Finding]], Callable[[Evidence, Findings], None]]:
    """Make a claim function a test of the ``evidence`` and ``findings`` fixtures (see the module doc).

    The test carries the :class:`Claim` as its ``claim`` attribute; the plugin finds the registered
    family there, and marks the test with ``@pytest.mark.claim(id)``.
    """

    def decorate(fn: Callable[[Evidence], Finding]) -> Callable[[Evidence, Findings], None]:
        default_title = fn.__name__.removeprefix("test_").split("_", 1)[-1].replace("_", " ")
        meta = Claim(id, quote, rule, tuple(conditions), tuple(figures), tuple(parts), title or default_title)

        # Not functools.wraps: pytest must see this signature (the fixtures it asks for), not fn's.
        def test(evidence: Evidence, findings: Findings) -> None:
            evidence.check_baseline()
            for condition in meta.conditions:
                evidence.runs(condition)
            finding = fn(evidence)
            check_sound(meta, finding, len(evidence.seeds))
            findings.add(meta, finding)

        test.__name__, test.__qualname__, test.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        test.__module__ = fn.__module__
        test.claim = meta  # type: ignore[attr-defined]
        test.evaluate = fn  # type: ignore[attr-defined]  # Evidence -> Finding, for the sequence's further seeds
        return test

    return decorate


def claims_in(module: ModuleType) -> list[Claim]:
    """The claims a module defines, in the order it defines them."""
    return [obj.claim for obj in vars(module).values() if isinstance(getattr(obj, "claim", None), Claim)]


def registered_family(modules: Iterable[ModuleType]) -> list[Claim]:
    """Every claim the claim ``modules`` define; ``ValueError`` naming both places if an id is defined twice."""
    family: dict[str, tuple[Claim, str]] = {}
    for module in modules:
        for c in claims_in(module):
            if c.id in family and family[c.id][0] is not c:
                raise ValueError(f"claim id {c.id} is defined twice: in {family[c.id][1]} and in {module.__name__}")
            family[c.id] = (c, module.__name__)
    return [c for c, _ in family.values()]


def values(array: Any) -> tuple[float, ...]:
    """A per-seed array as the tuple a :class:`Comparison` holds."""
    return tuple(float(v) for v in array)


__all__ = [
    "Claim", "ClaimResult", "Comparison", "Finding", "Findings", "Judged", "Part", "claim", "registered_family",
    "values",
]
