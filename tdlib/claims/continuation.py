"""Every claim judged on every stored seed of its sequence, and the sequence continued where parts are open.

The seeds form one sequence per profile, fixed before any of its runs (:meth:`Profile.sequence`: the
profile's own seeds, then the fresh seeds from 100 in order). The claims' tests run on the profile's own
seeds; at the end of a session, :func:`judge_sequence` judges each part on *every* seed of the sequence
that the cache holds finished for every condition the part reads (a seed, once trained, is never left
out: ``claims.md``, convention of 2026-12-04), the seeds in sequence order, so that the anytime-valid
tests of :mod:`tdlib.claims.stats` read them as the sequence they are.

:func:`continue_sequence` then trains on: while a part is INCONCLUSIVE and its conditions have not reached
the profile's budget of seeds, the next seeds of the conditions it reads are trained and everything is
judged again. The tests stay valid whatever this stopping rule does, so there are no fixed looks and no
error spent on them. Stopped at any point and started again, it goes on from what the cache holds, to the
same verdicts.

Which conditions a part reads is found from the claim function itself: it runs on the profile's seeds
with each of its conditions withheld in turn (:meth:`Evidence.restricted`); a comparison whose values
change needs that condition. So C3 (B against TWR) waits for TWR's seeds, while C1 (B alone) goes on with
B's.
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from tdlib.claims.claim import Claim, Finding, Findings, Judged, check_sound
from tdlib.claims.conditions import CONDITIONS
from tdlib.claims.evidence import BrokenEvidence, Evidence, NotStored, NotStoredArchived
from tdlib.claims.stats import Part, Verdict
from tdlib.executors import Engine, train_all
from tdlib.plan import plan
from tdlib.runs import CertificateMismatch

ClaimFunction = Callable[[Evidence], Finding]
PartKey = tuple[str, str]  # (claim id, part name)


@dataclass
class Sequence:
    """How far the sequence went: the seeds it may reach, how many each condition has stored, what each
    part read and was judged on, and what continuing it trained."""

    seeds: tuple[int, ...]  # the whole sequence, up to the budget
    stored: dict[str, int] = field(default_factory=dict)  # condition -> seeds of the sequence stored, in order
    needs: dict[PartKey, tuple[str, ...]] = field(default_factory=dict)  # the conditions each part reads
    judged_on: dict[PartKey, int] = field(default_factory=dict)  # seeds each part was judged on
    trained: list[str] = field(default_factory=list)  # runs trained by continuing, in order
    rounds: int = 0  # rounds of training
    ended: str = ""  # why continuing stopped ("" when it did not run)
    errors: dict[str, str] = field(default_factory=dict)  # claim id -> why its seeds beyond the pilot failed
    # claim id -> why it stops short of its stored seeds: a seed whose evidence needs an archived run's weights,
    # which this machine does not reproduce (CertificateMismatch); judged on the seeds before it
    cut: dict[str, str] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)  # what judged the seeds beyond the profile's

    def part_seeds(self, key: PartKey) -> tuple[int, ...]:
        return self.seeds[: self.judged_on.get(key, 0)]


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


def part_needs(claim_: Claim, finding: Finding, fn: ClaimFunction, ev: Evidence) -> dict[PartKey, tuple[str, ...]]:
    """The conditions each part of ``claim_`` reads (every registered condition of a claim that names one)."""
    if len(claim_.conditions) == 1:
        return {(claim_.id, p.name): tuple(claim_.conditions) for p in finding.parts}
    per_comparison = needed_conditions(fn, ev)
    out = {}
    for p in finding.parts:
        read = set().union(*(per_comparison.get((p.name, c.name), frozenset(claim_.conditions)) for c in p.comparisons))
        out[(claim_.id, p.name)] = tuple(sorted(read or claim_.conditions))
    return out


def stored_lengths(ev: Evidence, seeds: tuple[int, ...], conditions: set[str]) -> dict[str, int]:
    """For each condition, how many seeds of the sequence ``seeds`` are stored, counting from its start and
    stopping at the first gap; the profile's own seeds always count (the session has them, or stands in)."""
    own = len(ev.profile.seeds)
    out = {}
    for condition in sorted(conditions):
        specs = [ev.trained.spec(condition, seed, ev.device) for seed in seeds[own:]]
        done = set(plan(specs, ev.cache.root).cached)
        n = own
        while n < len(seeds) and specs[n - own] in done:
            n += 1
        out[condition] = n
    return out


def judge_sequence(findings: Findings, functions: dict[str, ClaimFunction], ev: Evidence, family: list[Claim],
                   alpha: float, seq: Sequence) -> Judged:
    """Judge every part on all the seeds of the sequence its conditions have stored (``seq`` is filled in).

    A claim whose parts reach beyond the profile's seeds is evaluated again, by its own function, on the
    longer prefix (once per distinct length among its parts, on the conditions of the parts that reach it);
    each part takes its comparisons from the evaluation at its own length. A claim that fails there keeps its
    profile-seed finding and is named in ``seq.errors``: its verdicts are then those of the shorter prefix,
    which the tests allow, and the report says so.
    """
    own = len(ev.profile.seeds)
    items = []
    for claim_, finding in findings.items:
        fn = functions.get(claim_.id)
        if fn is None:
            items.append((claim_, finding))
            continue
        try:
            registered = set(claim_.conditions) - seq.stored.keys()
            seq.stored.update(stored_lengths(ev, seq.seeds, registered))
            if all(seq.stored[c] == own for c in claim_.conditions):  # nothing beyond the profile's seeds
                seq.judged_on.update({(claim_.id, p.name): own for p in finding.parts})
                items.append((claim_, finding))
                continue
            if not seq.needs.keys() >= {(claim_.id, p.name) for p in finding.parts}:
                seq.needs.update(part_needs(claim_, finding, fn, ev))
            reads = {(claim_.id, p.name): seq.needs[(claim_.id, p.name)] for p in finding.parts}
            missing = set().union(*reads.values()) - seq.stored.keys()
            seq.stored.update(stored_lengths(ev, seq.seeds, missing))
            lengths = {key: min(seq.stored[c] for c in conditions) for key, conditions in reads.items()}
            while True:
                try:
                    extended = _extended(claim_, finding, fn, ev, seq, lengths, own)
                    break
                except Unmeasurable as cut:  # judged on the seeds before the one this machine cannot measure
                    lengths = {key: min(m, cut.length - 1) for key, m in lengths.items()}
                    seq.cut[claim_.id] = f"judged on {cut.length - 1} seeds at most: {cut.cause}"
            seq.judged_on.update(lengths)
            items.append((claim_, extended))
        except NotStored:
            raise
        except Exception as error:  # the other claims' sequences go on
            traceback.print_exc()
            seq.errors[claim_.id] = f"{type(error).__name__}: {error}"
            seq.judged_on.update({(claim_.id, p.name): own for p in finding.parts})
            items.append((claim_, finding))
    extended = Findings()
    extended.items = items
    return dataclasses.replace(extended.judge(family, alpha=alpha), sequence=seq)


class Unmeasurable(Exception):
    """A claim's evaluation on ``length`` seeds needs a measurement that an archived run lacks, and its weights
    are not at hand: trained again here they do not reproduce its record (:class:`~tdlib.runs.CertificateMismatch`;
    each try after the first fails at once, the same code on the same CPU not training it again), or the session
    may not train (:class:`NotStoredArchived`). A shorter prefix may still be judged, the same either way."""

    def __init__(self, length: int, cause: str) -> None:
        super().__init__(cause)
        self.length, self.cause = length, cause


UNMEASURED_STAND_INS = (1e6, -1e6)  # what a number that cannot be had reads as: one, or for one run the other


def _evaluated(claim_: Claim, fn: ClaimFunction, ev: Evidence, seeds: tuple[int, ...], conditions: set[str],
               lengths: dict[PartKey, int], n: int) -> tuple[Evidence, Finding | None, str | None]:
    """``claim_`` evaluated on ``seeds``: its evidence, its finding, and the run that cuts it short, if one does.

    A number that cannot be had here (an archived run lacks it and its weights are not at hand) cuts the claim
    short only if a part judged on these seeds needs it: it reads as a stand-in, and the claim is evaluated
    again with each such run's numbers at another stand-in far from the first; a run whose numbers move a
    judged comparison, or an evaluation that fails, cuts it. What is reported beside the rule is taken from
    the profile's own seeds, not from this evaluation."""
    usual, other = UNMEASURED_STAND_INS

    def evaluate(moved: str | None) -> tuple[Evidence, Finding | None, str | None]:
        longer = ev.with_seeds(seeds, conditions)
        longer.unmeasured, longer.unmeasured_reads_as = {}, lambda run: other if run == moved else usual
        try:
            return longer, fn(longer), None
        except (CertificateMismatch, NotStoredArchived) as error:  # the same cut whether trained here or drawn
            return longer, None, error.run
        except BrokenEvidence:  # a stand-in read where a number was checked
            if not longer.unmeasured:
                raise
            return longer, None, next(iter(longer.unmeasured))

    def judged(found: Finding) -> list[tuple[float, ...]]:
        return [tuple(c.values) for p in found.parts if lengths.get((claim_.id, p.name)) == n for c in p.comparisons]

    longer, found, cause = evaluate(None)
    if found is None or not longer.unmeasured:
        return longer, found, cause
    usual_judged = judged(found)
    for run in longer.unmeasured:
        _, moved, cause = evaluate(run)
        if moved is None:
            return longer, None, cause
        if judged(moved) != usual_judged:
            return longer, None, run
    return longer, found, None


def _extended(claim_: Claim, finding: Finding, fn: ClaimFunction, ev: Evidence, seq: Sequence,
              lengths: dict[PartKey, int], own: int) -> Finding:
    """``finding`` with each part's comparisons taken from its claim evaluated on its own prefix; raises
    :class:`Unmeasurable` at the shortest prefix beyond the profile's seeds that this machine cannot measure."""
    parts: dict[str, Part] = {}
    for n in sorted(set(lengths.values()) - {own}):
        conditions = set().union(*(seq.needs[key] for key, m in lengths.items() if m >= n))
        seeds = seq.seeds[:n]
        longer, found, cause = _evaluated(claim_, fn, ev, seeds, conditions, lengths, n)
        if cause is not None:
            raise Unmeasurable(n, f"run {cause} is archived without a measurement this needs, and its weights "
                                  "are not at hand (trained again here, they do not reproduce its record; or this "
                                  "session may not train)")
        seq.evidence.append(longer)
        check_sound(claim_, found, n)
        for p in found.parts:
            if lengths[(claim_.id, p.name)] == n:
                parts[p.name] = dataclasses.replace(p, comparisons=tuple(
                    c if c.seeds else dataclasses.replace(c, seeds=seeds) for c in p.comparisons))
    if not parts:
        return finding
    return dataclasses.replace(finding, parts=[parts.get(p.name, p) for p in finding.parts])


def continue_sequence(findings: Findings, functions: dict[str, ClaimFunction], ev: Evidence, family: list[Claim],
                      alpha: float, *, engine: Engine = "local", workers: int = 2, threads: int | None = None,
                      log: Callable[[str], None] = print, progress: bool = True) -> tuple[Judged, Sequence]:
    """Judge on every stored seed; then, while parts are open and their conditions are under the profile's
    budget, train the next seeds of those conditions and judge again. Each round gives every condition an
    open part reads ``max(1, workers // conditions)`` more seeds, so that the workers stay busy."""
    seq = Sequence(ev.profile.sequence())
    while True:
        judged = judge_sequence(findings, functions, ev, family, alpha, seq)
        # A claim cut short cannot use more seeds here: its conditions are not trained on for it.
        open_parts = [(r.claim.id, p.part.name) for r in judged.results
                      if not r.error and r.claim.id not in seq.errors and r.claim.id not in seq.cut
                      for p in r.parts if p.verdict is Verdict.INCONCLUSIVE]
        for claim_, finding in findings.items:  # what the open parts read, where no longer prefix asked yet
            if claim_.id in functions and any((claim_.id, p.name) in open_parts and (claim_.id, p.name) not in seq.needs
                                              for p in finding.parts):
                seq.needs.update(part_needs(claim_, finding, functions[claim_.id], ev))
        reads = {c for key in open_parts for c in seq.needs.get(key, ())}
        seq.stored.update(stored_lengths(ev, seq.seeds, reads - seq.stored.keys()))
        wanted = {c for c in reads if seq.stored[c] < len(seq.seeds)}
        if not wanted:
            seq.ended = ("every part is decided" if not open_parts else
                         f"the budget of {len(seq.seeds)} seeds a condition")
            return judged, seq
        step = max(1, workers // len(wanted))
        targets = {c: min(len(seq.seeds), seq.stored[c] + step) for c in sorted(wanted)}
        specs = [ev.trained.spec(c, seed, ev.device) for c, n in targets.items() for seed in seq.seeds[seq.stored[c]:n]]
        the_plan = plan(specs, ev.cache.root, workers, engine)
        seq.rounds += 1
        log(f"sequence round {seq.rounds}: {len(open_parts)} open part(s); "
            + ", ".join(f"{c} to {n} seeds" for c, n in targets.items()) + f"; {the_plan.summary()}")
        if ev.stored_only:
            raise NotStored(f"continuing the sequence needs {len(the_plan.to_train)} runs the cache lacks "
                            f"({', '.join(s.name for s in the_plan.to_train[:3])}): run the report command")
        for trained in train_all(specs, ev.cache.root, engine=engine, workers=workers, threads=threads,
                                 progress=progress):
            seq.trained.append(trained.name)
        for c in targets:  # counted again from the cache, which may hold later seeds too
            del seq.stored[c]
        seq.evidence.clear()
