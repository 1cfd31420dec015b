"""Running the follow-up design of :mod:`tdlib.sequential`: fresh seeds for what the pilot left undecided.

:func:`follow_up` takes the pilot's judging (the registered family at ``ALPHA_PILOT``) and the claim
functions, and at each look of ``LOOKS`` trains the fresh seeds that the still-open comparisons need,
evaluates the claims' own functions on them, and applies the design's boundaries. It keeps no state of
its own: every look is computed again from the run cache and the stored evidence, so a second call
after an interruption (or a new machine with a partial cache) walks the looks already taken in seconds
and goes on where the first stopped, to the same decisions.

Which conditions a comparison needs is found from the pilot: the claim function is run on the pilot's
evidence with each of its conditions left out in turn (:meth:`Evidence.restricted`); the comparisons
whose values change need that condition. At a look, only the conditions of open comparisons train.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tdlib.claim import ClaimResult, Finding, Judged
from tdlib.conditions import CONDITIONS
from tdlib.evidence import BrokenEvidence, Evidence, NotStored
from tdlib.executors import Engine, Trained, train_all
from tdlib.plan import plan
from tdlib.sequential import (
    ALPHA_FOLLOW_UP,
    LOOKS,
    MAX_RUNS,
    comparison_levels,
    decide_at_look,
    fresh_seeds,
    nominal_level,
)
from tdlib.stats import How, Verdict, combine, mean_interval

ClaimFunction = Callable[[Evidence], Finding]
Key = tuple[str, str, str]  # (claim id, part name, comparison name)


@dataclass(frozen=True)
class Look:
    """One comparison at one look: its fresh values' statistics, and what the boundary made of them."""

    index: int  # into the design's looks
    n: int
    mean: float
    ci95: tuple[float, float]
    p_support: float
    p_refute: float
    code: int  # +1 crossed toward SUPPORTED, -1 toward REFUTED, 0 neither
    dropped: bool


@dataclass
class Track:
    """A followed comparison: its place, its rule, the conditions it needs, its levels, and its looks."""

    key: Key
    how: How  # of its part
    threshold: float
    side: str
    unit: str
    conditions: tuple[str, ...]
    levels: tuple[float, float]  # (support, refute) across all looks
    boundary: tuple[float, float]  # the nominal p-level at every look (support, refute)
    looks: list[Look] = field(default_factory=list)
    stopped: str = ""  # "" while open; else why it stopped

    @property
    def code(self) -> int:
        return self.looks[-1].code if self.looks else 0

    @property
    def open(self) -> bool:
        return not self.stopped


@dataclass
class PartOutcome:
    """A followed part: the verdict its fresh seeds reached (INCONCLUSIVE if none), and at which look."""

    claim: str
    part: str
    how: How
    verdict: Verdict = Verdict.INCONCLUSIVE
    look: int | None = None  # index of the look that decided or dropped it
    status: str = "open"  # "decided", "dropped for futility", "not decided within N fresh seeds", or an error


@dataclass
class FollowUp:
    """What the follow-up did: its design, its parts and comparisons, the runs it spent, and why it ended."""

    looks: tuple[int, ...]
    alpha: float
    parts: list[PartOutcome]
    tracks: list[Track]
    runs: list[str] = field(default_factory=list)  # the fresh-seed runs it used, in the order first used
    training_seconds: float = 0.0  # of every epoch of those runs, from their histories
    code_versions: dict[str, int] = field(default_factory=dict)  # code version that trained them -> how many
    looks_taken: int = 0
    ended: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # claim id -> the error that stopped its parts

    def part(self, claim_id: str, part: str) -> PartOutcome | None:
        return next((p for p in self.parts if (p.claim, p.part) == (claim_id, part)), None)

    def tracks_of(self, claim_id: str, part: str) -> list[Track]:
        return [t for t in self.tracks if t.key[:2] == (claim_id, part)]


def comparison_values(finding: Finding) -> dict[tuple[str, str], tuple[float, ...]]:
    """Every comparison's values, by (part, comparison) name."""
    return {(p.name, c.name): tuple(c.values) for p in finding.parts for c in p.comparisons}


def needed_conditions(fn: ClaimFunction, ev: Evidence) -> dict[tuple[str, str], frozenset[str]]:
    """For each (part, comparison) that ``fn`` finds, the conditions its values need.

    ``fn`` runs on ``ev`` once to learn which conditions it reads, then once with each of them withheld
    (:meth:`Evidence.restricted`); a comparison whose values change, or that is gone because ``fn``
    cannot run without it, needs that condition. Measurements come from ``ev``'s store.
    """
    probe = ev.restricted(CONDITIONS)
    full = comparison_values(fn(probe))
    needs: dict[tuple[str, str], set[str]] = {k: set() for k in full}
    for condition in sorted(probe.read):
        try:
            without = comparison_values(fn(ev.restricted(probe.read - {condition})))
        except Exception:  # it cannot run at all without this condition: every comparison needs it
            without = {}
        for k, values in full.items():
            if without.get(k) != values:
                needs[k].add(condition)
    return {k: frozenset(v) for k, v in needs.items()}


def follow_up(
    pilot: Judged,
    functions: dict[str, ClaimFunction],
    pilot_evidence: Evidence,
    *,
    engine: Engine = "local",
    workers: int = 2,
    threads: int | None = None,
    looks: Sequence[int] = LOOKS,
    max_runs: int = MAX_RUNS,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> FollowUp:
    """Follow every part ``pilot`` left INCONCLUSIVE on fresh seeds, by the committed design.

    ``functions`` maps claim ids to their claim functions; ``pilot_evidence`` is the pilot's. Runs train
    on ``engine`` into the pilot's cache (see :func:`tdlib.executors.train_all`). ``looks`` and
    ``max_runs`` default to the committed design; other values are for tests. A claim whose function
    fails on the fresh seeds is named in ``errors``, and its followed parts stay INCONCLUSIVE.
    """
    looks = tuple(looks)
    followed = [(r, jp) for r in pilot.results if not r.error for jp in r.parts if jp.verdict is Verdict.INCONCLUSIVE]
    parts = [PartOutcome(r.claim.id, jp.part.name, jp.part.how) for r, jp in followed]
    result = FollowUp(looks, ALPHA_FOLLOW_UP, parts, [])
    if not followed:
        result.ended = "the pilot decided every part"
        return result
    m = len(followed)
    needs: dict[str, dict[tuple[str, str], frozenset[str]]] = {}
    for r, jp in followed:
        claim_ = r.claim
        if claim_.id not in needs:
            needs[claim_.id] = needed_conditions(functions[claim_.id], pilot_evidence)
        k = len(jp.part.comparisons)
        levels = comparison_levels(m, k, jp.part.how)
        boundary = (float(nominal_level(levels[0], looks)), float(nominal_level(levels[1], looks)))
        for c in jp.part.comparisons:
            conditions = needs[claim_.id].get((jp.part.name, c.name), frozenset(claim_.conditions))
            result.tracks.append(Track((claim_.id, jp.part.name, c.name), jp.part.how, c.threshold, c.side, c.unit,
                                       tuple(sorted(conditions)), levels, boundary))
    profile, cache, device = pilot_evidence.profile, pilot_evidence.cache, pilot_evidence.device
    used: dict[str, Trained] = {}
    for index, n in enumerate(looks):
        open_tracks = [t for t in result.tracks if t.open]
        if not open_tracks:
            break
        conditions = sorted({c for t in open_tracks for c in t.conditions})
        seeds = fresh_seeds(n)
        specs = [profile.spec(c, s, device) for c in conditions for s in seeds]
        if len(set(used) | {s.name for s in specs}) > max_runs:
            result.ended = f"the budget of {max_runs} runs"
            break
        the_plan = plan(specs, cache.root, workers, engine)
        log(f"follow-up look {index + 1} of {len(looks)}: {n} fresh seeds ({seeds[0]}-{seeds[-1]}) of "
            f"{', '.join(conditions)} for {len(open_tracks)} open comparisons; {the_plan.summary()}")
        if pilot_evidence.stored_only and the_plan.to_train:
            raise NotStored(f"the follow-up's look {index + 1} needs {len(the_plan.to_train)} runs the cache lacks "
                            f"({', '.join(s.name for s in the_plan.to_train[:3])}, ...): run the report command")
        # Only reading (stored_only): load in this process rather than start workers for nothing.
        for trained in train_all(specs, cache.root, engine="inprocess" if pilot_evidence.stored_only else engine,
                                 workers=workers, threads=threads, progress=progress):
            used.setdefault(trained.name, trained)
        result.looks_taken = index + 1
        _take_look(result, pilot_evidence.with_seeds(seeds, conditions), functions, index, n)
        _settle_parts(result, index, n)
    done = looks[result.looks_taken - 1] if result.looks_taken else 0
    if not result.ended:
        result.ended = ("every followed part is decided or dropped" if not any(t.open for t in result.tracks)
                        else "the last look")
    for part in result.parts:
        if part.status == "open":
            part.status = f"not decided within {done} fresh seeds"
    result.runs = list(used)
    result.training_seconds = float(sum(t.training_seconds for t in used.values()))
    result.code_versions = dict(Counter(t.code_version for t in used.values()).most_common())
    return result


def _take_look(result: FollowUp, ev: Evidence, functions: dict[str, ClaimFunction], index: int, n: int) -> None:
    """Evaluate the claims with open comparisons on ``ev`` (``n`` fresh seeds) and test each open one."""
    for claim_id in dict.fromkeys(t.key[0] for t in result.tracks if t.open):
        tracks = [t for t in result.tracks if t.open and t.key[0] == claim_id]
        try:
            if any("B" in t.conditions for t in tracks):
                ev.check_baseline()
            found = {(claim_id, *k): v for k, v in comparison_values(functions[claim_id](ev)).items()}
            for t in tracks:
                values = found.get(t.key)
                if values is None:
                    raise BrokenEvidence(f"{claim_id}: the fresh seeds' finding has no comparison {t.key[2]!r}")
        except Exception as error:  # one claim's failure stops its parts, never the others'
            traceback.print_exc()
            result.errors[claim_id] = f"{type(error).__name__}: {error}"
            for t in tracks:
                t.stopped = "error"
            for part in result.parts:
                if part.claim == claim_id and part.status == "open":
                    part.status = f"not decided: {type(error).__name__} on the fresh seeds"
            continue
        for t in tracks:
            values = np.asarray(found[t.key], dtype=float)
            if len(values) != n:  # seeds left out (an undefined statistic): this look cannot test it
                continue
            decision = decide_at_look(values, t.threshold, t.side, t.levels, index, result.looks)
            t.looks.append(Look(index, n, float(values.mean()), mean_interval(values), decision.p_support,
                                decision.p_refute, decision.code, decision.dropped))
            if decision.code:
                t.stopped = "decided"
            elif decision.dropped:
                t.stopped = "dropped for futility"


def _settle_parts(result: FollowUp, index: int, n: int) -> None:
    """Decide the parts whose comparisons now decide them; stop the comparisons of a settled part."""
    for part in result.parts:
        if part.status != "open":
            continue
        tracks = result.tracks_of(part.claim, part.part)
        codes = [t.code if t.stopped == "decided" else 0 for t in tracks]
        verdicts = [{1: Verdict.SUPPORTED, -1: Verdict.REFUTED, 0: Verdict.INCONCLUSIVE}[c] for c in codes]
        verdict = combine(verdicts, part.how)
        if verdict is not Verdict.INCONCLUSIVE:
            part.verdict, part.look, part.status = verdict, index, "decided"
        elif not any(t.open for t in tracks):
            part.look = index
            dropped = any(t.stopped == "dropped for futility" for t in tracks)
            part.status = "dropped for futility" if dropped else f"not decided within {n} fresh seeds"
        if part.status != "open":
            for t in tracks:
                if t.open:
                    t.stopped = "its part settled"


def merged(pilot: Judged, result: FollowUp) -> Judged:
    """The combined judging: the pilot's verdicts, with each followed part's verdict from the follow-up."""
    results = []
    for r in pilot.results:
        if r.error:
            results.append(r)
            continue
        parts = []
        for jp in r.parts:
            outcome = result.part(r.claim.id, jp.part.name)
            parts.append(dataclasses.replace(jp, verdict=outcome.verdict) if outcome is not None else jp)
        results.append(ClaimResult(r.claim, r.finding, parts, combine([p.verdict for p in parts]), r.error))
    return dataclasses.replace(pilot, results=results, follow_up=result)
