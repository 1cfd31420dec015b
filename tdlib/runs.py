"""The cache of trained runs: one directory per run description, safe to share between processes.

A run's directory, ``<root>/<condition>-s<seed>-<hash>/``, holds

- ``model.pt``: the final weights, as a plain :class:`~tdlib.model.MLP` state dict;
- ``checkpoint-epochNNN.pt``: the weights after each epoch the description asks for;
- ``history.json``: per-epoch training loss, test accuracy and seconds;
- ``record.json``, written last: the description, its provenance (code version, torch, machine, wall
  time) and the SHA-256 of every file above. An entry without it is unfinished.

While a run trains, ``resume.pt`` holds its last completed epoch, so a killed run resumes from there
and ends with the same weights. Every file is written atomically (temporary file, then rename), and a
per-run file lock makes a second process wait and then load instead of training again. A damaged
entry is named in a warning, moved aside to ``<root>/corrupt/`` (never deleted) and trained again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from tdlib.data import FashionMNIST, load_fashion_mnist
from tdlib.model import MLP
from tdlib.provenance import provenance
from tdlib.spec import RunSpec
from tdlib.train import TrainState, initial_state, restore_state, train

RECORD = "record.json"
RESUME = "resume.pt"


class CorruptEntry(RuntimeError):
    """A cache entry failed its checks."""


def checkpoint_file(epoch: int) -> str:
    return f"checkpoint-epoch{epoch:03d}.pt"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tensor_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Run:
    """A finished, verified run in the cache."""

    spec: RunSpec
    directory: Path
    record: dict[str, Any]
    trained_now: bool  # True if this call trained it, False if it came from the cache

    @cached_property
    def history(self) -> list[dict[str, float]]:
        return json.loads((self.directory / "history.json").read_text())

    @property
    def final_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"]

    def model(self) -> MLP:
        """The trained network, without dropout, in eval mode."""
        return self._load("model.pt")

    def checkpoint(self, epoch: int) -> MLP:
        """The network after ``epoch`` epochs (one of ``spec.checkpoints``), in eval mode."""
        if epoch not in self.spec.checkpoints:
            raise ValueError(
                f"run {self.spec.name} kept no checkpoint at epoch {epoch}; it has {self.spec.checkpoints}"
            )
        return self._load(checkpoint_file(epoch))

    def _load(self, file: str) -> MLP:
        model = MLP(self.spec.hidden, bias=self.spec.bias)
        model.load_state_dict(torch.load(self.directory / file, weights_only=True, map_location="cpu"))
        return model.eval()


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
        directory = self.root / spec.name
        with FileLock(str(self.root / f"{spec.name}.lock")):
            if (directory / RECORD).exists():
                try:
                    return self._verified(spec, directory)
                except CorruptEntry as error:
                    self._quarantine(directory, str(error))
            return self._train(spec, directory, stop_after)

    def data_for(self, spec: RunSpec) -> FashionMNIST:
        d = spec.data
        full = load_fashion_mnist(self.data_root)
        return full if d.n_train is None and d.n_test is None else full.subset(d.n_train, d.n_test, d.seed)

    def _verified(self, spec: RunSpec, directory: Path) -> Run:
        try:
            record = json.loads((directory / RECORD).read_text())
            files = record["files"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptEntry(f"{directory / RECORD} is unreadable ({error})") from error
        if record.get("spec") != json.loads(json.dumps(spec.to_json())):
            raise CorruptEntry(f"{directory / RECORD} describes another run")
        expected = {"model.pt", "history.json", *(checkpoint_file(e) for e in spec.checkpoints)}
        if set(files) != expected:
            raise CorruptEntry(f"{directory / RECORD} lists {sorted(files)}, expected {sorted(expected)}")
        for name, digest in files.items():
            path = directory / name
            actual = sha256(path) if path.exists() else "missing"
            if actual != digest:
                raise CorruptEntry(f"{path}: SHA-256 {actual}, but the record says {digest}")
        return Run(spec, directory, record, trained_now=False)

    def _quarantine(self, directory: Path, reason: str) -> None:
        aside = self.root / "corrupt" / f"{directory.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.parent.mkdir(exist_ok=True)
        os.replace(directory, aside)
        warnings.warn(f"corrupt cache entry: {reason}; moved it to {aside} and training it again", stacklevel=3)

    def _resume_state(self, spec: RunSpec, directory: Path) -> TrainState:
        path = directory / RESUME
        if path.exists():
            try:
                return restore_state(spec, torch.load(path, weights_only=True, map_location=spec.device))
            except Exception as error:  # any unreadable resume file is treated alike: set aside, start over
                self._quarantine(directory, f"{path} cannot be resumed from ({error})")
                directory.mkdir(parents=True)
        return initial_state(spec)

    def _train(self, spec: RunSpec, directory: Path, stop_after: int | None) -> Run:
        directory.mkdir(parents=True, exist_ok=True)
        state = self._resume_state(spec, directory)
        resumed_from = state.epoch
        started = time.perf_counter()
        if 0 in spec.checkpoints and state.epoch == 0:
            atomic_write(directory / checkpoint_file(0), tensor_bytes(state.plain_model_state()))

        def on_epoch_end(s: TrainState) -> None:
            if s.epoch in spec.checkpoints:
                atomic_write(directory / checkpoint_file(s.epoch), tensor_bytes(s.plain_model_state()))
            if s.epoch < spec.epochs:
                atomic_write(directory / RESUME, tensor_bytes(s.state_dict()))
            if stop_after is not None and s.epoch - resumed_from >= stop_after and s.epoch < spec.epochs:
                raise KeyboardInterrupt(f"stopped after epoch {s.epoch} as asked")

        data = self.data_for(spec)
        state = train(state, data, on_epoch_end=on_epoch_end, progress=self.progress)
        atomic_write(directory / "model.pt", tensor_bytes(state.plain_model_state()))
        atomic_write(directory / "history.json", json.dumps(state.history, indent=1).encode())
        files = ["model.pt", "history.json", *(checkpoint_file(e) for e in spec.checkpoints)]
        record = {
            "name": spec.name,
            "key": spec.key(),
            "spec": spec.to_json(),
            "provenance": provenance(),
            "data_source": data.source,
            "resumed_from_epoch": resumed_from,
            "wall_seconds": round(time.perf_counter() - started, 3),
            "files": {name: sha256(directory / name) for name in files},
        }
        atomic_write(directory / RECORD, json.dumps(record, indent=1).encode())
        (directory / RESUME).unlink(missing_ok=True)
        return Run(spec, directory, record, trained_now=True)
