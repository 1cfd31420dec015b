"""The numbers claims are judged on: per-seed measurements of a profile's runs, cached on disk.

Every (condition, seed) is trained once through the :class:`~tdlib.runs.RunCache` and shared by every
claim that needs it. Every measurement (an accuracy after pruning, an activation statistic, ...) is
stored beside the cache in ``evidence/<run name>.json`` under a key naming what was measured, so that
re-rendering a report from a warm cache trains nothing and measures nothing twice.

An evidence file is tied to what it measured: it names the run's key and the SHA-256 of the weight
files the run's record certifies (so a retrained run, or a file swapped in from another seed or condition, does not
match), and carries a checksum of its values. A file that fails any check is named in a warning, moved
aside to ``evidence/corrupt/`` and measured again; it is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import replace
from enum import Enum
from pathlib import Path

import numpy as np
from filelock import FileLock

from tdlib.claims.fingerprint import code_identity
from tdlib.claims.profiles import Profile
from tdlib.claims.sweeps import SWEEPS
from tdlib.data import FashionMNIST
from tdlib.files import atomic_write
from tdlib.metrics import (
    SWEEP,
    PruneKind,
    accuracy,
    activation_stats,
    pruning_sweep,
    small_weight_fraction,
)
from tdlib.model import MLP
from tdlib.runs import CertificateMismatch, Run, RunCache, weight_digests
from tdlib.spec import RunSpec

# Bump when a measurement changes meaning, so that stored numbers are measured again.
# 2: each file is tied to its run's key and files, and checksummed.
# 3: tied to the run's weight files only (not to its history's seconds), so that it survives a retraining.
# 4: each value names the identity of the code that measured it (tdlib.claims.fingerprint), so that changing a
#    measurement makes exactly what it measured stale; a format-3 value is taken as measured by the code of
#    LEGACY_IDENTITIES (that of 2026-12-06, which measured every format-3 value in git).
EVIDENCE_FORMAT = 4
# A file to append every measuring identity used to, taking format-3 values as measured by today's code: how
# legacy_identities.txt was made, by drawing both committed reports from their archives and a smoke session.
RECORD_IDENTITIES = "TDLIB_RECORD_IDENTITIES"
WITHHELD = -1e6  # what a restricted Evidence answers for a condition it does not hold (see Evidence.restricted)


# What a timing decides: the seconds a measurement took, a round's seconds per call (seconds<r>), a speed-up,
# the form chosen by timing it (fused, tiled, layer<i>:csr) and the multiply-adds of that form (flop_ratio).
# They measure the machine, not the run, so a run trained again is not held to them.
TIMED = re.compile(r"(^|:)(seconds\d*|speedup|fused|tiled|layer\d+:csr|flop_ratio)$")


def measures_the_machine(key: str) -> bool:
    """Whether the stored measurement ``key`` is a timing or was chosen by one (see :data:`TIMED`; the keys
    are :mod:`tdlib.claims.savings_report`'s)."""
    return TIMED.search(key) is not None


class EvidenceMismatch(ValueError):
    """An evidence file that is damaged, or that measured another model than the run's."""


def _run_digest(run: Run) -> str:
    """The SHA-256 of the run's certified weights (:func:`~tdlib.runs.weight_digests`): it changes whenever
    any weight file does, and not with the seconds its history holds, so that an archived run trained again
    to the same bits keeps its measurements."""
    return hashlib.sha256(json.dumps(weight_digests(run.record), sort_keys=True).encode()).hexdigest()


def _format2_digest(run: Run) -> str:
    """What format 2 tied a file to: every file of the record, history included (still valid for the run
    that record describes, which has not been trained again)."""
    return hashlib.sha256(json.dumps(run.record["files"], sort_keys=True).encode()).hexdigest()


def evidence_bytes(run: Run, values: dict[str, float], measured_by: dict[str, str] | None = None) -> bytes:
    """An evidence file of ``values`` measured on ``run`` (each by the code ``measured_by`` names, where it
    names one): tied to its key and record, and checksummed."""
    body = {"format": EVIDENCE_FORMAT, "run": run.spec.name, "key": run.spec.key(), "files": _run_digest(run),
            "values": dict(sorted(values.items())),
            "measured_by": {k: v for k, v in sorted((measured_by or {}).items()) if k in values}}
    text = json.dumps(body, sort_keys=True)
    return json.dumps({**body, "sha256": hashlib.sha256(text.encode()).hexdigest()}, indent=0, sort_keys=True).encode()


def verified_values(raw: bytes, run: Run) -> dict[str, float]:
    """The values of an evidence file written by :func:`evidence_bytes` for ``run``; raises
    :class:`EvidenceMismatch` saying what is wrong otherwise."""
    return verified(raw, run)[0]


def verified(raw: bytes, run: Run) -> tuple[dict[str, float], dict[str, str]]:
    """The values of an evidence file for ``run``, and the identity of the code that measured each (none for a
    value of format 3, before identities were kept); raises :class:`EvidenceMismatch` saying what is wrong."""
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise EvidenceMismatch(f"not JSON ({error})") from None
    if isinstance(data, dict) and "values" not in data and any(str(k).startswith("v1:") for k in data):
        raise EvidenceMismatch(f"written in evidence format 1, this code writes {EVIDENCE_FORMAT}")
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
        raise EvidenceMismatch(f"not an evidence file (a {type(data).__name__} without values)")
    digest = data.pop("sha256", None)
    if digest != hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest():
        raise EvidenceMismatch("its checksum does not match its contents")
    if data.get("format") == 2 and data.get("files") == _format2_digest(run):  # tied to all of the record's files
        data["files"] = _run_digest(run)
    elif data.get("format") not in (3, EVIDENCE_FORMAT):
        raise EvidenceMismatch(f"evidence format {data.get('format')}, this code writes {EVIDENCE_FORMAT}")
    if (data.get("run"), data.get("key")) != (run.spec.name, run.spec.key()):
        raise EvidenceMismatch(f"it measured run {data.get('run')}, not {run.spec.name}")
    if data.get("files") != _run_digest(run):
        raise EvidenceMismatch("it measured other files than the run's record holds now (the run was trained again)")
    values, measured_by = data["values"], data.get("measured_by", {})
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values.values()):
        raise EvidenceMismatch("it holds a value that is not a number")
    if not isinstance(measured_by, dict) or not all(isinstance(v, str) for v in measured_by.values()):
        raise EvidenceMismatch("its measured_by is not a table of code identities")
    return {k: float(v) for k, v in values.items()}, dict(measured_by)


def current(measured_by: str | None, identity: str) -> bool:
    """Whether a value measured by the code ``measured_by`` (None: format 3, before identities were kept) is
    what the code of ``identity`` measures now."""
    if measured_by is None and os.environ.get(RECORD_IDENTITIES):  # listing them: format 3 taken as today's code's
        return True
    return measured_by == identity or (measured_by is None and identity in LEGACY_IDENTITIES)


def _legacy_identities() -> frozenset[str]:
    path = Path(__file__).with_name("legacy_identities.txt")
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip() and line[0] != "#")


LEGACY_IDENTITIES = _legacy_identities()


class BrokenEvidence(AssertionError):
    """The runs cannot support any verdict: a run is missing, a value is not finite, B did not learn."""


class NotStored(BrokenEvidence):
    """Evidence that may only read what is stored was asked for a run or a measurement the cache lacks."""


class NotStoredArchived(NotStored):
    """A measurement that an archived run (without its weights) lacks, asked of evidence that may not train
    it again: ``run`` names it."""

    def __init__(self, message: str, run: str) -> None:
        super().__init__(message)
        self.run = run


class Reading(Enum):
    """How an :class:`Evidence` gets what it reads, fixed when it is made.

    - ``TRAIN``: a run the cache lacks is trained, a number not stored is measured (and stored);
    - ``STORED_ONLY``: nothing is trained or measured: what the cache lacks raises :class:`NotStored`. A report
      drawn so is the one its stored evidence gives, whatever the code that would measure it now;
    - ``FINISHED``: nothing is trained: a run the cache lacks is stood in for by a finished run of the same
      condition (else of another), whose numbers fill its slot but are never stored as its own; so a whole
      claims session measures, and stores, all it needs of the runs that are finished, while the others
      still train elsewhere (``--claims-measure-finished``).
    """

    TRAIN = "train"
    STORED_ONLY = "stored-only"
    FINISHED = "finished"


class Evidence:
    """Per-seed measurements of ``profile``'s runs: arrays with one value per seed, in seed order, read as
    ``reading`` says (:class:`Reading`)."""

    def __init__(self, profile: Profile, cache: RunCache, device: str = "cpu",
                 conditions: Collection[str] | None = None, reading: Reading = Reading.TRAIN) -> None:
        self.profile = profile  # what the claims see (its epochs are the view's: see at_epoch)
        self.trained = profile  # the profile whose runs are read
        self.epoch: int | None = None  # with a value, the models are the runs' checkpoints at that epoch
        self.cache = cache
        self.device = device
        # With ``conditions``, only those are trained or measured: another's measurements are WITHHELD, a
        # finite stand-in, so that a claim function still runs, and only the comparisons that read them
        # change (the follow-up trains only what its open comparisons need, and finds what they need so).
        self.conditions = None if conditions is None else frozenset(conditions)
        self.read: set[str] = set()  # the conditions measured or asked for so far
        self.withheld: set[str] = set()  # those of them answered with the stand-in
        self.reading = reading
        # With a dict, a number that cannot be had (an archived run lacks it, and its weights are not at hand)
        # reads as ``unmeasured_reads_as(run name)``, and the run is named here, rather than raising.
        self.unmeasured: dict[str, str] | None = None
        self.unmeasured_reads_as: Callable[[str], float] = lambda run: np.nan
        self._unstored: dict[tuple[str, int | None], dict[str, float]] = {}  # stand-ins' numbers, by run and epoch
        self._runs: dict[str, list[Run]] = {}
        self._models: dict[tuple[str, int], MLP] = {}
        self._data: FashionMNIST | None = None
        self.store = cache.root / "evidence"
        self.store.mkdir(exist_ok=True)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.profile.seeds

    @property
    def stored_only(self) -> bool:
        return self.reading is Reading.STORED_ONLY

    @property
    def stand_ins(self) -> bool:
        return self.reading is Reading.FINISHED

    @property
    def data(self) -> FashionMNIST:
        """The profile's images (its test set is what every accuracy is measured on)."""
        if self._data is None:
            self._data = self.cache.data_for(self.trained.spec(self.trained.baseline, self.seeds[0]))
        return self._data

    def restricted(self, conditions: Collection[str] | None) -> Evidence:
        """This evidence with only ``conditions`` trained or measured (None: all; see the constructor)."""
        ev = Evidence(self.trained, self.cache, self.device, conditions, self.reading)
        ev.profile, ev.epoch, ev._data, ev._unstored = self.profile, self.epoch, self._data, self._unstored
        return ev

    def with_seeds(self, seeds: tuple[int, ...], conditions: Collection[str] | None = None) -> Evidence:
        """The same profile's evidence over ``seeds`` (with ``conditions``, only those), read as this one is."""
        ev = Evidence(self.trained.with_seeds(seeds), self.cache, self.device, conditions, self.reading)
        ev._unstored = self._unstored
        return ev

    def at_epoch(self, epoch: int) -> Evidence:
        """This evidence as if training had stopped at ``epoch``, a checkpoint every run it reads kept: the
        models are those checkpoints, the profile's ``epochs`` (so its ``tenth`` and ``half``) are
        ``epoch``'s, and measurements are stored under keys of their own."""
        ev = self.restricted(self.conditions)
        at_end = epoch == self.trained.epochs
        ev.profile, ev.epoch = (self.trained, None) if at_end else (replace(self.trained, epochs=epoch), epoch)
        return ev

    def runs(self, condition: str) -> list[Run]:
        """One finished run per seed (trained now if the cache lacks it)."""
        self.read.add(condition)
        if self.conditions is not None and condition not in self.conditions:
            self.withheld.add(condition)
            raise BrokenEvidence(f"condition {condition} is not among this evidence's {sorted(self.conditions)}")
        if condition not in self._runs:
            runs = [self._run(self.trained.spec(condition, seed, self.device)) for seed in self.seeds]
            self._runs[condition] = [run if run is not None else self._stand_in(condition, runs) for run in runs]
        return self._runs[condition]

    def _run(self, spec: RunSpec) -> Run | None:
        if not self.stored_only and not self.stand_ins:
            return self.cache.get(spec)
        run = self.cache.cached(spec)
        if run is None and not self.stand_ins:
            raise NotStored(f"run {spec.name} is not in the cache {self.cache.root} (finished and sound)")
        return run

    def _stand_in(self, condition: str, runs: list[Run | None]) -> Run:
        """A finished run to fill a slot of ``condition`` whose own run is not finished: one of its other
        seeds, else one of another condition's (the baseline's first), marked so that its numbers are not stored."""
        found, baseline = [run for run in runs if run is not None], self.trained.baseline
        if not found:
            for other in [baseline, *sorted(c for c in self._runs if c != baseline)]:
                found += [run for run in self._runs.get(other, []) if not run.stand_in]
            for seed in self.seeds if not found else ():
                found += [run for run in [self.cache.cached(self.trained.spec(baseline, seed, self.device))] if run]
        if not found:
            raise BrokenEvidence(f"no finished run of {condition} or {baseline} in {self.cache.root} to measure")
        # One with its weights here, if any: an archived one can only answer what it has stored.
        found.sort(key=lambda run: not run.weights_here)
        return replace(found[0], stand_in=True)

    def check_baseline(self) -> None:
        """Raise :class:`BrokenEvidence` unless every seed of the baseline clears the profile's accuracy floor."""
        for run in self.runs(self.profile.baseline):
            if not run.stand_in and not run.final_accuracy >= self.profile.accuracy_floor:
                raise BrokenEvidence(
                    f"the baseline did not learn: {run.spec.name} reached {run.final_accuracy:.4f} test accuracy, "
                    f"under the {self.profile.name} profile's floor of {self.profile.accuracy_floor}"
                )

    def model(self, condition: str, seed: int) -> MLP:
        key = (condition, seed)
        if key not in self._models:
            run = self.runs(condition)[self.seeds.index(seed)]
            if (self.stored_only or self.stand_ins) and not run.weights_here:
                raise NotStored(f"the weights of run {run.spec.name}, which is archived without them: a session "
                                "that may train (without --claims-stored-only or --claims-measure-finished) trains "
                                "it again")
            trained_again = not run.weights_here  # an archived run, which loading trains again
            self._models[key] = run.model() if self.epoch is None else run.checkpoint(self.epoch)
            if trained_again:
                self._measure_again(run)
        return self._models[key]

    def _measure_again(self, run: Run) -> None:
        """After an archived run was trained again to the bits its record certifies, what was stored of it (the
        archive's numbers) is moved aside, so that every number read of it is measured here from its weights:
        exporting to the archive then compares each with the archive's, and a forged or mistaken one is named
        (:func:`tdlib.claims.archive.export`)."""
        path = self.store / f"{run.spec.name}.json"
        aside = self.store / "archived" / f"{run.spec.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
        aside.parent.mkdir(exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                os.replace(path, aside)
                warnings.warn(f"run {run.spec.name} was trained again to the bits its archive certifies: its "
                              f"stored numbers (moved to {aside}) are measured again from its weights, and compared "
                              "with the archive's when the archive is written", stacklevel=3)

    def measure(
        self, condition: str, key: str, compute: Callable[[Run, MLP], float], undefined_ok: bool = False
    ) -> np.ndarray:
        """``compute(run, model)`` for each seed, stored under ``key``; shape (seeds,).

        A value that is not finite is broken evidence, except NaN with ``undefined_ok``: a statistic
        that does not exist for that seed (a ratio over dead units when it has none).
        """
        return self.measure_many(condition, key, lambda run, model: {key: compute(run, model)}, undefined_ok)

    def measure_many(
        self, condition: str, key: str, compute: Callable[[Run, MLP], dict[str, float]], undefined_ok: bool = False
    ) -> np.ndarray:
        """Like :meth:`measure`, where one computation also yields other keys worth storing. A seed whose
        number cannot be had (its run archived without it and without its weights, or trained again here to
        other bits) raises, or, where :attr:`unmeasured` is a dict, reads as :attr:`unmeasured_reads_as` says
        for its run, named there."""
        self.read.add(condition)
        if self.conditions is not None and condition not in self.conditions:
            self.withheld.add(condition)
            return np.full(len(self.seeds), WITHHELD)
        values = []
        tag = self._tag()
        identity = self._identity(compute)

        def tagged(run: Run) -> dict[str, float]:
            return {k + tag: float(v) for k, v in compute(run, self.model(condition, run.spec.seed)).items()}

        for run in self.runs(condition):
            try:
                stored = self._stored(run, key + tag, lambda stored: key + tag in stored, tagged, identity)
            except (NotStoredArchived, CertificateMismatch) as error:
                if self.unmeasured is None:
                    raise
                self.unmeasured.setdefault(error.run, str(error))
                values.append(self.unmeasured_reads_as(error.run))
                continue
            value = stored[key + tag]
            if not np.isfinite(value) and not (undefined_ok and np.isnan(value)):
                raise BrokenEvidence(f"{key} of {run.spec.name} is {value}")
            values.append(value)
        return np.asarray(values)

    def measure_group(
        self, condition: str, prefix: str, compute: Callable[[Run, MLP], dict[str, float]],
        seeds: Collection[int] | None = None,
    ) -> dict[int, dict[str, float]]:
        """Many numbers of one measurement (a histogram's counts, a timing's parts), stored under
        ``prefix:<name>`` for each ``name`` that ``compute(run, model)`` returns; per seed (all, or ``seeds``),
        those numbers by name. The numbers may be NaN or infinite: the caller knows what they mean."""
        if self.conditions is not None and condition not in self.conditions:
            self.runs(condition)  # raises, naming what this evidence holds
        head = f"{prefix}{self._tag()}:"

        def compute_all(run: Run) -> dict[str, float]:
            values = compute(run, self.model(condition, run.spec.seed))
            if not values:
                raise ValueError(f"{prefix} of {run.spec.name}: the measurement returned no numbers")
            return {head + name: float(v) for name, v in values.items()}

        groups = {}
        identity = self._identity(compute)
        for seed, run in zip(self.seeds, self.runs(condition), strict=True):
            if seeds is None or seed in seeds:
                stored = self._stored(run, head + "*", lambda stored: any(k.startswith(head) for k in stored),
                                      compute_all, identity)
                groups[seed] = {k[len(head):]: v for k, v in stored.items() if k.startswith(head)}
        return groups

    def group_at_hand(self, condition: str, prefix: str, compute: Callable[[Run, MLP], dict[str, float]],
                      seeds: Collection[int] | None = None) -> bool:
        """Whether :meth:`measure_group` can give these numbers for every seed asked: each is stored, measured by
        the code of ``compute``, or its run's weights are here to measure it (and this evidence may measure)."""
        head = f"{prefix}{self._tag()}:"
        identity = self._identity(compute)
        for seed, run in zip(self.seeds, self.runs(condition), strict=True):
            if seeds is not None and seed not in seeds:
                continue
            every, measured_by = self._read(self.store / f"{run.spec.name}.json", run)
            if any(k.startswith(head) and current(measured_by.get(k), identity) for k in every):
                continue
            if self.stored_only or not run.weights_here or run.stand_in:
                return False
        return True

    def _tag(self) -> str:
        """What a key is suffixed with: a checkpoint's numbers are stored apart from the end's."""
        return "" if self.epoch is None else f"@epoch{self.epoch}"

    @staticmethod
    def _identity(compute: Callable[..., object]) -> str:
        identity = code_identity(compute)
        if record := os.environ.get(RECORD_IDENTITIES):  # for a maintainer listing the code of today's values
            with open(record, "a") as listing:
                listing.write(identity + "\n")
        return identity

    def _stored(self, run: Run, what: str, has: Callable[[dict[str, float]], bool],
                compute: Callable[[Run], dict[str, float]], identity: str) -> dict[str, float]:
        """``run``'s stored measurements that the code of ``identity`` measured (:func:`current`), after adding
        ``compute(run)``'s unless ``has`` finds ``what`` among them."""
        path = self.store / f"{run.spec.name}.json"
        every, measured_by = self._read(path, run)
        stored = {k: v for k, v in every.items() if current(measured_by.get(k), identity)}
        if run.stand_in:  # what it computed for other slots, kept in memory for this session only
            stored = {**stored, **self._unstored.get((run.spec.name, self.epoch), {})}
        if not has(stored):
            stale = "" if not has(every) else (", measured by other code than measures it now (a change to the "
                                                "measurement, or to what it calls): it is measured again")
            if self.stored_only and run.weights_here:
                raise NotStored(f"{what} of run {run.spec.name} is not stored in {path}{stale}")
            if (self.stored_only or self.stand_ins) and not run.weights_here:
                raise NotStoredArchived(f"{what} of run {run.spec.name} is not stored in {path}{stale}, and the run "
                                        "is archived without its weights: a session that may train (without "
                                        "--claims-stored-only or --claims-measure-finished) trains it again",
                                        run.spec.name)
            new = compute(run)
            if run.stand_in:  # a slot's filler: its numbers are the run's, but this slot never asked the run
                self._unstored.setdefault((run.spec.name, self.epoch), {}).update(new)
                return {**stored, **new}
            with FileLock(str(path) + ".lock"):
                every, measured_by = self._read(path, run)
                for stale_file in path.parent.glob(f".{path.name}.*.tmp"):  # a killed writer's, safe under the lock
                    stale_file.unlink(missing_ok=True)
                by = {**measured_by, **dict.fromkeys(new, identity)}
                atomic_write(path, evidence_bytes(run, {**every, **new}, by))
            # what other code measured stays in the file, but is not read: as when the file is read again
            stored = {**{k: v for k, v in every.items() if current(measured_by.get(k), identity)}, **new}
        return stored

    def _read(self, path: Path, run: Run) -> tuple[dict[str, float], dict[str, str]]:
        """The verified measurements of ``run`` in ``path``, and the code that measured each ({} if none); a
        file that fails a check is named, moved aside and treated as absent."""
        if not path.exists():
            return {}, {}
        try:
            return verified(path.read_bytes(), run)
        except EvidenceMismatch as error:
            aside = self.store / "corrupt" / f"{path.stem}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
            aside.parent.mkdir(exist_ok=True)
            try:
                os.replace(path, aside)
            except FileNotFoundError:  # another process moved it first
                return {}, {}
            warnings.warn(f"evidence file {path}: {error}; moved it to {aside} and measuring again", stacklevel=4)
            return {}, {}

    def accuracy(self, condition: str) -> np.ndarray:
        """Dense test accuracy in percent, per seed."""
        x, y = self.data.test_x, self.data.test_y
        return self.measure(condition, "accuracy", lambda run, model: 100 * accuracy(model, x, y))

    def pruned(self, condition: str, kind: PruneKind, k: float) -> np.ndarray:
        """Test accuracy in percent after pruning ``k``% by ``kind``, per seed (random kinds use the seed)."""
        x, y = self.data.test_x, self.data.test_y
        # One ranking serves a whole sweep: for the kinds the report draws, measure it all at once.
        ks = sorted({*SWEEP, k}) if kind in SWEEPS else [k]

        def sweep(run: Run, model: MLP) -> dict[str, float]:
            accuracies = pruning_sweep(model, kind, x, y, ks, seed=run.spec.seed)
            return {f"pruned:{kind}:{k_:g}": 100 * a for k_, a in accuracies.items()}

        return self.measure_many(condition, f"pruned:{kind}:{k:g}", sweep)

    def small_weights(self, condition: str, epoch: int) -> np.ndarray:
        """Percent of hidden weights with |w| < 1e-3 after ``epoch`` epochs (a kept checkpoint), per seed."""
        return self.measure(
            condition, f"small-weights:{epoch}",
            lambda run, model: 100 * small_weight_fraction(run.checkpoint(epoch), 1e-3),
        )

    def activation_fractions(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """(percent of hidden activations exactly 0, percent of hidden units dead) on the test set."""

        def both(run: Run, model: MLP) -> dict[str, float]:
            stats = activation_stats(model, self.data.test_x)
            units = sum(s.units for s in stats)
            return {
                "zero-activations": 100 * sum(s.zero_fraction * s.units for s in stats) / units,
                "dead-units": 100 * sum(s.dead_units for s in stats) / units,
            }

        zero = self.measure_many(condition, "zero-activations", both)
        return zero, self.measure_many(condition, "dead-units", both)

    def rows(self) -> list[dict[str, object]]:
        """The stored measurements of every run used so far as a tidy table: one row per run and measurement
        (condition, seed, epochs, run, key, value), for pandas or any tool (the report writes it as CSV)."""
        rows = []
        for runs in self._runs.values():
            for run in (r for r in runs if not r.stand_in):
                stored = self._read(self.store / f"{run.spec.name}.json", run)[0]
                rows += [{"condition": run.spec.condition, "seed": run.spec.seed, "epochs": run.spec.epochs,
                          "run": run.spec.name, "key": key, "value": value} for key, value in sorted(stored.items())]
        return rows

    def used_runs(self) -> list[Run]:
        """The runs used so far (never a stand-in)."""
        return [run for runs in self._runs.values() for run in runs if not run.stand_in]

    def training_seconds(self) -> float:
        """Time spent training every epoch of the runs used so far, from their histories
        (:attr:`Run.training_seconds`)."""
        return sum(run.training_seconds for runs in self._runs.values() for run in runs if not run.stand_in)

    def run_records(self, lineage: bool = False) -> list[dict]:
        """The records of the runs used so far; with ``lineage``, also those of the shorter runs they
        continue (:attr:`Run.lineage`)."""
        return [r for runs in self._runs.values() for run in runs if not run.stand_in
                for r in (run.lineage if lineage else [run.record])]
