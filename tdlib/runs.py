"""The cache of trained runs: one directory per run description, safe to share between processes.

A run's directory, ``<root>/<condition>-s<seed>-<hash>/``, holds

- ``model.pt``: the final weights, as the plain network's state dict (no dropout);
- ``checkpoint-epochNNN.pt``: the weights after each epoch the description asks for;
- ``state.pt``: the final training state (weights with their dropout, optimizer, generator), from which a
  longer run of the same description continues (:meth:`RunSpec.continues`);
- ``history.json``: per-epoch training loss, test accuracy and seconds;
- ``record.json``, written last: the description, its provenance (code version, torch, machine, wall
  time) and the SHA-256 of every file above. An entry without it is unfinished.

While a run trains, ``resume.pt`` holds its last completed epoch, so a killed run resumes from there
and ends with the same weights, whatever the epoch it was killed at. ``resume.pt`` and ``state.pt``
carry a header with the run's key, their epoch, the SHA-256 of their payload and of every checkpoint
written so far; all are verified before use. Every checkpoint is verified when written and again
before it enters the record. Every file is written atomically (temporary file, then rename), and a
per-run file lock makes a second process wait (saying who holds the lock) and then load instead of
training again. A damaged entry is named in a warning, moved aside to ``<root>/corrupt/`` (never
deleted) and trained again.

An *archived* entry (:mod:`tdlib.claims.archive`) holds only ``record.json`` and ``history.json``, with
``archived.json`` beside them: a run trained on another machine, kept as its certificate (the record, with
the SHA-256 of every file it wrote) and its measurements, so that a report can be drawn without its
weights. It counts as finished; the first time anything needs its weights, :meth:`RunCache.materialize`
trains it again from scratch, which must reproduce the certified weights bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout
from torch import nn

from tdlib.data import Data
from tdlib.factories import check_names, data_of, plain_network
from tdlib.files import atomic_write, sha256
from tdlib.provenance import provenance
from tdlib.spec import RunSpec
from tdlib.train import TrainState, initial_state, restore_state, train

RECORD = "record.json"
RESUME = "resume.pt"
FINAL_STATE = "state.pt"
ARCHIVED = "archived.json"  # marks an entry without weights, taken from an archive (tdlib.claims.archive)
EXTENDED = "extended-from.json"  # while a run that continues a shorter one trains: that run's name
STATE_MAGIC = b"tdlib-train-state\n"
DEFAULT_LOCK_TIMEOUT = 24 * 3600.0  # seconds to wait for another process's run, unless TDLIB_LOCK_TIMEOUT says


def lock_timeout() -> float:
    """How long to wait for a run another process holds: ``TDLIB_LOCK_TIMEOUT`` seconds, else a day.

    Raises ``ValueError`` naming the variable if it is not a non-negative number of seconds.
    """
    text = os.environ.get("TDLIB_LOCK_TIMEOUT")
    if text is None:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # NaN too
        raise ValueError(f"TDLIB_LOCK_TIMEOUT={text!r}: give the seconds to wait for a run another process holds, "
                         "a number of at least 0")
    return seconds


def weight_digests(record: dict[str, Any]) -> dict[str, str]:
    """The SHA-256 of the weight files a run's record certifies (the model and its checkpoints): what a
    run trained again must reproduce. The history and the final state also hold each epoch's seconds, which
    no two trainings share."""
    return {name: digest for name, digest in record["files"].items() if name not in ("history.json", FINAL_STATE)}


class CorruptEntry(RuntimeError):
    """A cache entry failed its checks."""


class CertificateMismatch(RuntimeError):
    """An archived run, trained again here, did not reproduce the files its record certifies; ``kept`` is
    where the new training was put (None for a check at load)."""

    def __init__(self, message: str, kept: Path | None = None, run: str = "") -> None:
        super().__init__(message)
        self.kept, self.run = kept, run


class LockTimeout(RuntimeError):
    """Another process held a run's lock for longer than the caller would wait."""


def checkpoint_file(epoch: int) -> str:
    return f"checkpoint-epoch{epoch:03d}.pt"


def tensor_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def checked_write(path: Path, data: bytes) -> str:
    """:func:`atomic_write`, then read the file back: the SHA-256 of what is on disk, which is ``data``'s.

    Raises :class:`CorruptEntry` if the disk does not hold what was written.
    """
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(path, data)
    if (found := sha256(path)) != digest:
        raise CorruptEntry(f"{path} reads back with SHA-256 {found} right after writing {digest}")
    return digest


def state_bytes(spec: RunSpec, state: TrainState, checkpoints: dict[str, str]) -> bytes:
    """A training state as a file: a magic line, a JSON header line, then the ``torch.save`` payload.

    The header names the run (its key), the epoch, the payload's SHA-256, and the SHA-256 of every
    checkpoint written up to that epoch, so that a resume can check all it depends on.
    """
    payload = tensor_bytes(state.state_dict())
    header = {"key": spec.key(), "epoch": state.epoch, "sha256": hashlib.sha256(payload).hexdigest(),
              "checkpoints": checkpoints}
    return STATE_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def _split_state(raw: bytes, path: Path) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of the bytes of a state file (or of its first two lines, for the header alone)."""
    if not raw.startswith(STATE_MAGIC):
        raise CorruptEntry(f"{path} is not a tdlib training state (no header)")
    line, _, payload = raw[len(STATE_MAGIC):].partition(b"\n")
    try:
        header = json.loads(line)
        if not isinstance(header, dict) or not {"key", "epoch", "sha256", "checkpoints"} <= header.keys():
            raise ValueError(f"a header needs key, epoch, sha256 and checkpoints, not {line[:80]!r}")
    except ValueError as error:
        raise CorruptEntry(f"{path} has an unreadable header ({error})") from error
    return header, payload


def read_state(path: Path, spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, state dict) of a file written from :func:`state_bytes` for ``spec``, verified.

    Raises :class:`CorruptEntry`, naming the file and what is wrong, unless the magic, the key, the
    payload's checksum and the epoch all agree.
    """
    header, payload = _split_state(path.read_bytes(), path)
    key, epoch, digest, checkpoints = header["key"], header["epoch"], header["sha256"], header["checkpoints"]
    if key != spec.key():
        raise CorruptEntry(f"{path} belongs to run {key}, not to {spec.name}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptEntry(f"{path}: its payload does not match the SHA-256 in its header")
    if not isinstance(epoch, int) or not 0 <= epoch <= spec.epochs or not isinstance(checkpoints, dict):
        raise CorruptEntry(f"{path} has an impossible header: epoch {epoch!r}, checkpoints {checkpoints!r}")
    try:
        saved = torch.load(io.BytesIO(payload), weights_only=True, map_location=spec.device)
    except Exception as error:  # a payload that hashes right but does not load: written by other code
        raise CorruptEntry(f"{path}: its payload does not load ({error})") from error
    if not isinstance(saved, dict) or saved.get("epoch") != epoch:
        raise CorruptEntry(f"{path}: its header says epoch {epoch}, its payload does not")
    return header, saved


@dataclass(frozen=True)
class Run:
    """A finished, verified run in the cache."""

    spec: RunSpec
    directory: Path
    record: dict[str, Any]
    trained_now: bool  # True if this call trained it, False if it came from the cache
    # Archived: the cache holds its record, history and measurements but not (yet) its weights, which the
    # first load trains again through ``cache`` (:meth:`RunCache.materialize`).
    archived: bool = False
    stand_in: bool = False  # filling another run's slot in evidence that measures finished runs only
    cache: RunCache | None = field(default=None, compare=False, repr=False)

    @cached_property
    def history(self) -> list[dict[str, float]]:
        return json.loads((self.directory / "history.json").read_text())

    @property
    def weights_here(self) -> bool:
        """Whether its weight files are on disk: an archived run has none until it is trained again."""
        return not self.archived or (self.directory / "model.pt").exists()

    @property
    def final_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"]

    @property
    def training_seconds(self) -> float:
        """Time spent on every epoch the run holds, from its history: also the epochs of earlier sittings
        of a resumed run, and those of the shorter run it continues (which its record's wall time omits)."""
        return float(sum(epoch["seconds"] for epoch in self.history))

    @cached_property
    def lineage(self) -> list[dict[str, Any]]:
        """The run's record, then those of the shorter runs it continues (``extended_from``), which trained
        its first epochs: their code versions and dates, for provenance. Read, not verified."""
        records = [self.record]
        # Each step goes to a shorter run, so the chain ends; the bound stops a loop of damaged records.
        while (name := records[-1].get("extended_from")) and len(records) < 100:
            try:
                records.append(json.loads((self.directory.parent / name / RECORD).read_text()))
            except (OSError, ValueError):
                break
        return records

    def model(self) -> nn.Module:
        """The trained network, without dropout, in eval mode."""
        return self._load("model.pt")

    def checkpoint(self, epoch: int) -> nn.Module:
        """The network after ``epoch`` epochs (one of ``spec.checkpoints``), in eval mode."""
        if epoch not in self.spec.checkpoints:
            raise ValueError(
                f"run {self.spec.name} kept no checkpoint at epoch {epoch}; it has {self.spec.checkpoints}"
            )
        return self._load(checkpoint_file(epoch))

    def final_state(self) -> dict[str, Any]:
        """The training state at the end (``TrainState.state_dict()``), verified against its header."""
        self._weights()
        return read_state(self.directory / FINAL_STATE, self.spec)[1]

    def _weights(self) -> None:
        """Make sure the run's files are on disk: an archived run is trained again, once (raises
        :class:`CertificateMismatch` if that does not reproduce its record's files)."""
        if not self.weights_here:
            if self.cache is None:
                raise FileNotFoundError(f"run {self.spec.name} is archived without its weights, and no cache is "
                                        "given to train it again")
            self.cache.materialize(self.spec)

    def _load(self, file: str) -> nn.Module:
        """The network in ``file``, checked against the record as it is read: the bytes hashed are the bytes
        loaded, so a file changed since the run was looked up is never used."""
        self._weights()
        data = (self.directory / file).read_bytes()
        if (found := hashlib.sha256(data).hexdigest()) != self.record["files"][file]:
            if self.archived:  # trained again, here or by another process, to other bits than this Run certifies
                raise CertificateMismatch(f"{self.directory / file}: SHA-256 {found}, but the archived record of "
                                          f"run {self.spec.name} certifies {self.record['files'][file]}",
                                          run=self.spec.name)
            raise CorruptEntry(f"{self.directory / file}: SHA-256 {found}, but the record of run {self.spec.name} "
                               f"certifies {self.record['files'][file]}: the file changed after the run was "
                               f"checked; remove {self.directory} to train it again")
        return plain_network(self.spec, torch.load(io.BytesIO(data), weights_only=True, map_location="cpu"))


class RunCache:
    """Trains each run description at most once and hands back the verified result."""

    def __init__(self, root: str | os.PathLike[str], data_root: str | None = None, progress: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_root = data_root
        self.progress = progress

    def get(self, spec: RunSpec, stop_after: int | None = None) -> Run:
        """The run of ``spec``: loaded if cached and sound, else trained (resuming if it can).

        ``stop_after`` (for tests) interrupts training after that many epochs, as a kill would, by
        raising :class:`KeyboardInterrupt`.
        """
        check_names(spec)  # before a lock or a directory is made
        directory = self.root / spec.name
        with self._lock(spec):
            if (directory / RECORD).exists():
                try:
                    return self._verified(spec, directory)
                except CorruptEntry as error:
                    self._quarantine(directory, str(error))
            try:
                return self._train(spec, directory, stop_after)
            except CorruptEntry as error:  # a file it depends on went bad while it trained: once more, from scratch
                self._quarantine(directory, str(error))
                return self._train(spec, directory, stop_after)

    def cached(self, spec: RunSpec) -> Run | None:
        """The run of ``spec`` if the cache holds it finished and sound, else None (nothing is trained)."""
        directory = self.root / spec.name
        if not (directory / RECORD).exists():
            return None
        try:
            return self._verified(spec, directory)
        except CorruptEntry:
            return None

    def materialize(self, spec: RunSpec) -> Run:
        """The run of ``spec`` with its weights: an archived entry is trained again from scratch, with the
        thread count its record names, and must reproduce the weights its record certifies
        (:func:`weight_digests`, which its archived measurements are tied to).

        Raises :class:`CertificateMismatch`, naming the files that differ and the CPUs of both trainings, if
        the new run does not reproduce them (bits differ across CPU models): the archived entry then stays
        as it is, so nothing is measured on other weights than those it certifies, and the new training is
        kept under ``<root>/unreproduced/`` for inspection (the exception's ``kept``).
        """
        directory = self.root / spec.name
        with self._lock(spec):
            run = self._verified(spec, directory)
            if run.weights_here:
                return run
            if tried := self._unreproduced(spec):
                raise CertificateMismatch(f"run {spec.name} was trained again here before, by the same code on the "
                                          f"same CPU, and did not reproduce its archived record: that training is "
                                          f"in {tried}. Bits differ across CPU models: what needs this run's weights "
                                          "is measured on a CPU like its record's", kept=tried, run=spec.name)
            aside = self.root / "archived" / f"{spec.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            aside.parent.mkdir(exist_ok=True)
            os.replace(directory, aside)
            warnings.warn(f"run {spec.name} is archived without its weights; training it again (its record says "
                          f"{run.record.get('wall_seconds', 0):.0f} s, at {run.record.get('threads', '?')} threads)",
                          stacklevel=3)
            before = torch.get_num_threads()
            torch.set_num_threads(int(run.record.get("threads", before)))
            try:
                new = self._train(spec, directory, None, scratch=True)
            finally:
                torch.set_num_threads(before)
            new_weights = weight_digests(new.record)
            differ = sorted(name for name, digest in weight_digests(run.record).items()
                            if new_weights.get(name) != digest)
            if not differ:
                return new
            kept = self.root / "unreproduced" / aside.name
            kept.parent.mkdir(exist_ok=True)
            os.replace(directory, kept)
            os.replace(aside, directory)  # the archived entry, as it was
        archived, here = run.record["provenance"], new.record["provenance"]
        raise CertificateMismatch(
            f"run {spec.name}, trained again here, does not reproduce its archived record: {', '.join(differ)} "
            f"differ (archived: code {archived.get('code_version')}, CPU {archived.get('cpu', 'not recorded')}; "
            f"here: code {here.get('code_version')}, CPU {here.get('cpu')}). Bits differ across CPU models: what "
            f"needs this run's weights is measured on a CPU like its record's. The archived entry stays as it is; "
            f"the new training is in {kept}", kept=kept, run=spec.name)

    def _unreproduced(self, spec: RunSpec) -> Path | None:
        """A training of ``spec`` kept under ``unreproduced/`` that this code on this CPU made (so training it
        again would give the same bits again), or None."""
        here = provenance()
        for kept in sorted((self.root / "unreproduced").glob(f"{spec.name}-*")):
            try:
                made = json.loads((kept / RECORD).read_text())["provenance"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if all(made.get(k) == here[k] for k in ("code_version", "torch", "cpu")):
                return kept
        return None

    @contextmanager
    def _lock(self, spec: RunSpec) -> Iterator[None]:
        """The run's file lock; while another process holds it, say so every minute, and give up after
        :func:`lock_timeout` seconds (``TDLIB_LOCK_TIMEOUT``) with :class:`LockTimeout`."""
        timeout = lock_timeout()
        path = self.root / f"{spec.name}.lock"
        lock = FileLock(str(path))
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            try:
                lock.acquire(timeout=max(0.0, min(60.0, timeout - waited)))
                break
            except Timeout:
                waited = time.monotonic() - started
                holder = _lock_holder(path)
                if waited >= timeout:
                    raise LockTimeout(
                        f"{spec.name} has been locked by {holder} for over {timeout:g} s; if that process is "
                        f"stopped, end it (or delete {path} if it is gone); TDLIB_LOCK_TIMEOUT sets the wait"
                    ) from None
                warnings.warn(f"waiting for {spec.name}: it is locked by {holder} ({waited:.0f} s so far)",
                              stacklevel=4)
        try:
            _note_lock_holder(path)
            yield
        finally:
            lock.release()

    def data_for(self, spec: RunSpec) -> Data:
        """The data ``spec`` trains and is tested on (its registered data set, or a subset of it)."""
        return data_of(spec, self.data_root)

    def _verified(self, spec: RunSpec, directory: Path) -> Run:
        try:
            record = json.loads((directory / RECORD).read_text())
            files = record["files"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptEntry(f"{directory / RECORD} is unreadable ({error})") from error
        if record.get("spec") != json.loads(json.dumps(spec.to_json())):
            raise CorruptEntry(f"{directory / RECORD} describes another run")
        expected = {"model.pt", FINAL_STATE, "history.json", *(checkpoint_file(e) for e in spec.checkpoints)}
        if set(files) != expected:
            raise CorruptEntry(f"{directory / RECORD} lists {sorted(files)}, expected {sorted(expected)}")
        archived = (directory / ARCHIVED).exists()
        for name, digest in files.items():
            if archived and name != "history.json" and not (directory / name).exists():  # certified, not held
                continue
            path = directory / name
            actual = sha256(path) if path.exists() else "missing"
            if actual != digest:
                raise CorruptEntry(f"{path}: SHA-256 {actual}, but the record says {digest}")
        for field_ in ("provenance", "wall_seconds", "data_source"):
            if field_ not in record:
                raise CorruptEntry(f"{directory / RECORD} has no {field_!r}")
        return Run(spec, directory, record, trained_now=False, archived=archived, cache=self)

    def _quarantine(self, directory: Path, reason: str) -> None:
        aside = self.root / "corrupt" / f"{directory.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.parent.mkdir(exist_ok=True)
        os.replace(directory, aside)
        warnings.warn(f"corrupt cache entry: {reason}; moved it to {aside} and training it again", stacklevel=3)

    def _resume_state(self, spec: RunSpec, directory: Path) -> tuple[TrainState, dict[str, str], str | None]:
        """The state to train on from, the checkpoints it vouches for (file name -> SHA-256), and the name
        of the shorter run it continues, if any.

        ``resume.pt`` is used only if its header, its payload and every checkpoint it names check out;
        otherwise the entry is named, moved aside, and the run starts over.
        """
        path = directory / RESUME
        if path.exists():
            try:
                header, saved = read_state(path, spec)
                for name, digest in header["checkpoints"].items():
                    if not (directory / name).exists() or sha256(directory / name) != digest:
                        raise CorruptEntry(f"{directory / name}, written before {path}, is missing or damaged")
                extended = path.with_name(EXTENDED)
                previous = json.loads(extended.read_text()) if extended.exists() else None
                return restore_state(spec, saved), dict(header["checkpoints"]), previous
            # A payload that loads yet holds other types than a state (TypeError, AttributeError) was written
            # by other code: as unusable as a damaged one.
            except (CorruptEntry, OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
                self._quarantine(directory, f"{path} cannot be resumed from ({error})")
                directory.mkdir(parents=True)
        return self._extended_state(spec, directory) or (initial_state(spec), {}, None)

    def _extended_state(
        self, spec: RunSpec, directory: Path
    ) -> tuple[TrainState, dict[str, str], str | None] | None:
        """The final state of the longest cached shorter run that ``spec`` continues, with its checkpoints
        copied in; None if there is none."""
        shorter = [run for other in continued_runs(self.root, spec) if (run := self.cached(other)) is not None]
        for run in shorter:
            if run.archived:  # no state to continue from here; training from scratch gives the same bits
                continue
            try:
                saved = run.final_state()
            except CorruptEntry:
                continue
            written = {}
            for epoch in (e for e in spec.checkpoints if e <= run.spec.epochs):
                name = checkpoint_file(epoch)
                written[name] = checked_write(directory / name, (run.directory / name).read_bytes())
                if written[name] != run.record["files"][name]:
                    break
            else:
                atomic_write(directory / EXTENDED, json.dumps(run.spec.name).encode())
                return restore_state(spec, saved), written, run.spec.name
        return None

    def _train(self, spec: RunSpec, directory: Path, stop_after: int | None, scratch: bool = False) -> Run:
        """Train ``spec`` into ``directory``: resumed, or continuing a shorter run, if it can; with ``scratch``,
        from the first epoch, at this process's thread count (:meth:`materialize`)."""
        directory.mkdir(parents=True, exist_ok=True)
        state, written, extended_from = ((initial_state(spec), {}, None) if scratch
                                         else self._resume_state(spec, directory))
        resumed_from = state.epoch
        started = time.perf_counter()
        if 0 in spec.checkpoints and state.epoch == 0:
            written[checkpoint_file(0)] = checked_write(
                directory / checkpoint_file(0), tensor_bytes(state.plain_model_state())
            )

        def on_epoch_end(s: TrainState) -> None:
            if s.epoch in spec.checkpoints:
                name = checkpoint_file(s.epoch)
                written[name] = checked_write(directory / name, tensor_bytes(s.plain_model_state()))
            if s.epoch < spec.epochs:
                checked_write(directory / RESUME, state_bytes(spec, s, written))
            if stop_after is not None and s.epoch - resumed_from >= stop_after and s.epoch < spec.epochs:
                raise KeyboardInterrupt(f"stopped after epoch {s.epoch} as asked")

        data = self.data_for(spec)
        state = train(state, data, on_epoch_end=on_epoch_end, progress=self.progress)
        checked_write(directory / "model.pt", tensor_bytes(state.plain_model_state()))
        checked_write(directory / FINAL_STATE, state_bytes(spec, state, written))
        checked_write(directory / "history.json", json.dumps(state.history, indent=1).encode())
        for name, digest in written.items():  # checkpoints written earlier, perhaps by a killed process
            if not (directory / name).exists() or sha256(directory / name) != digest:
                raise CorruptEntry(f"{directory / name} changed after it was written")
        files = ["model.pt", FINAL_STATE, "history.json", *(checkpoint_file(e) for e in spec.checkpoints)]
        record = {
            "name": spec.name,
            "key": spec.key(),
            "spec": spec.to_json(),
            "provenance": provenance(),
            "data_source": data.source,
            "resumed_from_epoch": resumed_from,
            "threads": state.threads,
            "extended_from": extended_from,
            "wall_seconds": round(time.perf_counter() - started, 3),
            "files": {name: sha256(directory / name) for name in files},
        }
        atomic_write(directory / RECORD, json.dumps(record, indent=1).encode())
        (directory / RESUME).unlink(missing_ok=True)
        (directory / EXTENDED).unlink(missing_ok=True)
        for stale in directory.glob(".*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        return Run(spec, directory, record, trained_now=True, cache=self)


def continued_runs(root: Path, spec: RunSpec) -> list[RunSpec]:
    """The runs recorded in the cache at ``root`` that ``spec`` continues (:meth:`RunSpec.continues`),
    longest first. Reads only the records; whether a run's files check out is the cache's to say."""
    shorter = []
    for record_path in root.glob(f"{spec.condition}-s{spec.seed}-*/{RECORD}"):
        try:
            other = RunSpec.from_json(json.loads(record_path.read_text())["spec"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if spec.continues(other):
            shorter.append(other)
    return sorted(shorter, key=lambda other: -other.epochs)


def resume_epoch(path: Path) -> int:
    """The epoch a ``resume.pt`` (or final state) file was written at, from its header alone; 0 if the file
    is missing or has no readable header. Unverified: for estimates, never for training."""
    try:
        with path.open("rb") as file:
            header, _ = _split_state(file.readline() + file.readline(), path)
        return int(header["epoch"])
    except (OSError, CorruptEntry, ValueError, TypeError):
        return 0


def _note_lock_holder(lock_path: Path) -> None:
    """Leave a note of who holds the lock (pid, host, since when), for processes that wait on it."""
    note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    with contextlib.suppress(OSError):
        atomic_write(lock_path.with_suffix(".holder"), json.dumps(note).encode())


def _lock_holder(lock_path: Path) -> str:
    try:
        note = json.loads(lock_path.with_suffix(".holder").read_text())
        return f"process {note['pid']} on {note['host']} (since {time.ctime(note['since'])})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
