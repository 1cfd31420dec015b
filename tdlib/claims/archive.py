"""A run archive: the certificates and measurements of finished runs, small enough to commit with a report.

A run's weights and checkpoints take tens of megabytes; what a report is drawn from is far smaller. An
archive keeps, for each finished run, the three files that certify and measure it::

    <archive>/<run name>/record.json    the run's record: its description, provenance and the SHA-256 of
                                        every file it wrote (weights, checkpoints, history)
    <archive>/<run name>/history.json   per-epoch loss, accuracy and seconds
    <archive>/<run name>/evidence.json  its stored measurements (tdlib.claims.evidence), tied to that record

:func:`export` writes a cache's finished runs into an archive; :func:`restore` puts an archive's runs into a
cache that lacks them, as *archived* entries (:mod:`tdlib.runs`): a report is judged and drawn from their
measurements without their weights, and a measurement the archive lacks trains the run again, which must
reproduce its record's files bit for bit (training is deterministic for a given torch, thread count and
CPU). So a computation too long for one machine's lifetime goes on across machines from what git holds,
and anyone can retrain one run and check it against the committed SHA-256.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from tdlib.claims.evidence import EvidenceMismatch, evidence_bytes, measures_the_machine, verified
from tdlib.files import atomic_write, sha256, with_umask
from tdlib.runs import ARCHIVED, RECORD, Run, RunCache, weight_digests
from tdlib.spec import RunSpec

EVIDENCE_FILE = "evidence.json"


class ArchiveError(ValueError):
    """An archive entry that is unreadable or does not match what it claims to hold."""


@dataclass(frozen=True)
class Moved:
    """What one call of :func:`export` or :func:`restore` did: run names, each at most in one list."""

    written: tuple[str, ...] = ()  # runs (or their measurements) new or grown in the destination
    unchanged: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # entries that failed a check, with the reason, "name: why"

    def restored(self, archive: Path) -> str:
        """One line (and one more per refused entry) on what :func:`restore` took from ``archive``."""
        return (f"archive {archive}: {len(self.written)} runs or their measurements taken into the cache, "
                f"{len(self.unchanged)} already there" + "".join(f"\n  refused {r}" for r in self.refused))


def _finished(cache: RunCache, keep: Callable[[RunSpec], bool]) -> list[Run]:
    """Every finished, sound run of the cache (archived ones included) that ``keep`` accepts, in name order
    (only those are verified: verifying hashes every weight file)."""
    runs = []
    for record in sorted(cache.root.glob(f"*/{RECORD}")):
        try:
            spec = RunSpec.from_json(json.loads(record.read_text())["spec"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if spec.name == record.parent.name and keep(spec) and (run := cache.cached(spec)) is not None:
            runs.append(run)
    return runs


Measured = tuple[dict[str, float], dict[str, str]]  # values, and the code identity each was measured by


def _values(raw: bytes | None, run: Run) -> Measured:
    """The verified measurements in ``raw`` for ``run``, and what measured each (({}, {}) if none or if they
    fail a check)."""
    if raw is None:
        return {}, {}
    try:
        return verified(raw, run)
    except EvidenceMismatch:
        return {}, {}


class Conflict(ArchiveError):
    """The same measurement of the same weights, by the same code, holds two values, one on each side."""


def _conflicts(old: Measured, new: Measured) -> list[str]:
    """Each measurement ``old`` and ``new`` both hold, by the same code, with other values, as "key: a and b".
    Timings (and what they chose) measure a machine, not the weights: two machines' may differ, and the first
    stored stays."""
    (a, a_by), (b, b_by) = old, new
    return [f"{key}: {a[key]!r} and {b[key]!r}" for key in sorted(a.keys() & b.keys())
            if a_by.get(key) == b_by.get(key) and not measures_the_machine(key) and a[key] != b[key]
            and not (math.isnan(a[key]) and math.isnan(b[key]))]


def _merge(path: Path, run: Run, incoming: Measured, lock: bool = True, where: tuple[str, str] = ("", ""),
           incoming_is_cache: bool = True) -> bool:
    """Add the ``incoming`` measurements to those of ``run`` stored at ``path``; True if the file changed.
    ``lock`` takes the cache's lock on the file (an archive, written by one process, has none, and no lock
    files).

    A measurement both sides hold by the same code with other values (not a timing) is a :class:`Conflict`,
    naming both values (``where`` says which side each is: stored at ``path``, then ``incoming``), and nothing
    is written. One they hold by different code is the cache's (``incoming_is_cache`` says which side it is):
    what the code of the session that measured it last took."""
    with FileLock(str(path) + ".lock") if lock else contextlib.nullcontext():
        old = _values(path.read_bytes() if path.exists() else None, run)
        if conflicts := _conflicts(old, incoming):
            there, here = where
            raise Conflict(f"{len(conflicts)} measurement(s) of the same weights differ between {there} and {here} "
                           f"(in that order): {'; '.join(conflicts[:3])}{'; ...' if len(conflicts) > 3 else ''}")
        (values, by), (new_values, new_by) = old, incoming
        if incoming_is_cache:  # what the cache measured with other code replaces the stored
            replaced = {k for k in new_values.keys() & values.keys() if new_by.get(k) != by.get(k)}
        else:
            replaced = set()
        merged = {**new_values, **values, **{k: new_values[k] for k in replaced}}
        merged_by = {**new_by, **by, **{k: new_by[k] for k in replaced if k in new_by}}
        for k in replaced - new_by.keys():
            merged_by.pop(k, None)
        if (merged, merged_by) == (values, by):
            return False
        atomic_write(path, evidence_bytes(run, merged, merged_by))
        return True


def export(cache: RunCache, archive: Path, keep: Callable[[RunSpec], bool] = lambda spec: True) -> Moved:
    """Write every finished run of ``cache`` that ``keep`` accepts into ``archive``, with its measurements.

    An entry already there for the same weights is grown by the measurements it lacks, and keeps its record
    (the first training's provenance). One that certifies other weights (the run was trained again, to other
    bits) is refused and left as it is: replacing it would throw its measurements away.
    """
    written, unchanged, refused = [], [], []
    for run in _finished(cache, keep):
        entry = archive / run.spec.name
        if (entry / RECORD).exists() and not _same_record(_read_record(entry / RECORD), run):
            refused.append(f"{run.spec.name}: the archive certifies other weights than this cache's run (trained "
                           "again, to other bits); the archived entry is left as it is")
            continue
        new = not (entry / RECORD).exists()
        if new:
            entry.mkdir(parents=True, exist_ok=True)
            atomic_write(entry / "history.json", (run.directory / "history.json").read_bytes())
            atomic_write(entry / RECORD, (run.directory / RECORD).read_bytes())
        stored = cache.root / "evidence" / f"{run.spec.name}.json"
        try:
            grew = _merge(entry / EVIDENCE_FILE, run, _values(stored.read_bytes() if stored.exists() else None, run),
                          lock=False, where=("the archive", "the cache"))
        except Conflict as conflict:
            refused.append(f"{run.spec.name}: {conflict}; the archived entry is left as it is")
            continue
        (written if grew or new else unchanged).append(run.spec.name)
    return Moved(tuple(written), tuple(unchanged), tuple(refused))


def _read_record(path: Path) -> Any:
    """The record at ``path``, or None if it cannot be read as JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _same_record(record: Any, run: Run) -> bool:
    """Whether ``record`` (parsed) certifies the same weights as ``run``'s."""
    try:
        return weight_digests(record) == weight_digests(run.record)
    except (AttributeError, KeyError, TypeError):
        return False


def restore(archive: Path, cache: RunCache) -> Moved:
    """Put every run of ``archive`` that ``cache`` lacks into it as an archived entry, and add the archive's
    measurements to those the cache holds for the same weights.

    An entry is checked (its record names it, its history is the one certified) in a staging directory and
    then moved in whole, under the run's lock; a run another process holds the lock of (training it) is
    left alone. Files of an unfinished training here are moved aside to ``<cache>/corrupt/``, not deleted.
    What fails a check is refused, named in the result with the reason.
    """
    written, unchanged, refused = [], [], []
    if not archive.is_dir():
        return Moved()
    for entry in sorted(p for p in archive.iterdir() if (p / RECORD).exists()):
        try:
            record = json.loads((entry / RECORD).read_text())
            spec = RunSpec.from_json(record["spec"])
            if spec.name != entry.name:
                raise ArchiveError(f"its record describes run {spec.name}")
            if sha256(entry / "history.json") != record["files"]["history.json"]:
                raise ArchiveError("its history.json is not the one its record certifies")
        except (OSError, ValueError, KeyError, TypeError) as error:
            refused.append(f"{entry.name}: {error}")
            continue
        directory = cache.root / spec.name
        lock = FileLock(str(cache.root / f"{spec.name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            refused.append(f"{entry.name}: another process holds its lock here (training it); left alone")
            continue
        try:
            grew = not (directory / RECORD).exists()
            if grew:
                _install(entry, directory, archive)
            run = cache.cached(spec)
        finally:
            lock.release()
        if run is None:
            refused.append(f"{entry.name}: the cache's entry of it fails its checks")
            continue
        if not _same_record(record, run):
            refused.append(f"{entry.name}: the cache holds another training of it (other weights than the "
                           "archived record's), so the archived measurements do not apply")
            continue
        raw = (entry / EVIDENCE_FILE).read_bytes() if (entry / EVIDENCE_FILE).exists() else None
        measured = _values(raw, run)
        if raw is not None and not measured[0]:
            refused.append(f"{entry.name}: its {EVIDENCE_FILE} fails its checks (the run itself was taken)")
        if measured[0]:
            store = cache.root / "evidence"
            store.mkdir(exist_ok=True)
            try:
                grew = _merge(store / f"{spec.name}.json", run, measured, where=("the cache", "the archive"),
                              incoming_is_cache=False) or grew
            except Conflict as conflict:
                refused.append(f"{entry.name}: {conflict}; the cache's measurements are left as they are")
                continue
        if raw is None or measured[0]:
            (written if grew else unchanged).append(spec.name)
    return Moved(tuple(written), tuple(unchanged), tuple(refused))


def _install(entry: Path, directory: Path, archive: Path) -> None:
    """Move the archived entry at ``entry`` into the cache as ``directory``, whole (the caller holds its lock)."""
    root = directory.parent
    staging = with_umask(Path(tempfile.mkdtemp(dir=root, prefix=f".{directory.name}.restoring-")))
    try:
        for name in (RECORD, "history.json"):
            shutil.copyfile(entry / name, staging / name)
        atomic_write(staging / ARCHIVED, json.dumps({"from": str(archive)}).encode())
        if directory.exists():  # an unfinished training here: its files go aside, not away
            (root / "corrupt").mkdir(exist_ok=True)
            directory.replace(root / "corrupt" / f"{directory.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        staging.replace(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
