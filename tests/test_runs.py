"""Seeded training and the run cache: same bits, resume, atomic writes, corruption, two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tdlib import runs
from tdlib.dropout import TargetedDropout
from tdlib.runs import RunCache, atomic_write
from tdlib.spec import DataSpec, RunSpec
from tdlib.train import build_model, plain_copy

SMALL = DataSpec(n_train=600, n_test=300, seed=0)


def small_spec(condition: str = "B", seed: int = 0, epochs: int = 3, **changes: object) -> RunSpec:
    fields: dict[str, object] = {"batch_size": 64, "hidden": (32, 16), "data": SMALL, **changes}
    return RunSpec(condition, seed, epochs, **fields)  # type: ignore[arg-type]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def cache(tmp_path: Path) -> RunCache:
    return RunCache(tmp_path / "cache", progress=False)


def test_same_description_same_bits(tmp_path: Path) -> None:
    spec = small_spec("TW", targeted=TargetedDropout.constant("weight", 0.5, 0.5))
    a = RunCache(tmp_path / "a", progress=False).get(spec)
    b = RunCache(tmp_path / "b", progress=False).get(spec)
    assert same_weights(a.model().state_dict(), b.model().state_dict())
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    other = RunCache(tmp_path / "c", progress=False).get(small_spec("TW", seed=1, targeted=spec.targeted))
    assert not same_weights(a.model().state_dict(), other.model().state_dict())


def test_second_get_loads_without_training(cache: RunCache) -> None:
    first = cache.get(small_spec())
    second = cache.get(small_spec())
    assert first.trained_now and not second.trained_now
    assert same_weights(first.model().state_dict(), second.model().state_dict())
    assert second.record["provenance"]["torch"] == torch.__version__
    assert {"code_version", "machine", "date"} <= second.record["provenance"].keys()
    assert len(second.history) == 3 and 0.1 < second.final_accuracy <= 1.0


def test_learns_something(cache: RunCache) -> None:
    history = cache.get(small_spec(epochs=8, batch_size=32)).history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.6  # chance is 0.1


def test_checkpoints_hold_the_weights_of_their_epochs(cache: RunCache) -> None:
    spec = small_spec(checkpoints=(0, 1, 3))
    run = cache.get(spec)
    assert same_weights(run.checkpoint(0).state_dict(), plain_copy(build_model(spec)).state_dict())
    assert same_weights(run.checkpoint(3).state_dict(), run.model().state_dict())
    assert not same_weights(run.checkpoint(1).state_dict(), run.model().state_dict())
    with pytest.raises(ValueError, match="no checkpoint at epoch 2"):
        run.checkpoint(2)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    spec = small_spec("TU", epochs=4, targeted=TargetedDropout.constant("unit", 0.5, 0.5), checkpoints=(2,))
    straight = RunCache(tmp_path / "straight", progress=False).get(spec)
    cache = RunCache(tmp_path / "stopped", progress=False)
    with pytest.raises(KeyboardInterrupt):
        cache.get(spec, stop_after=1)
    assert (cache.root / spec.name / runs.RESUME).exists()
    assert not (cache.root / spec.name / runs.RECORD).exists()
    with pytest.raises(KeyboardInterrupt):
        cache.get(spec, stop_after=2)  # resumes at 1, stops again at 3
    resumed = cache.get(spec)
    assert resumed.trained_now and resumed.record["resumed_from_epoch"] == 3
    assert same_weights(resumed.model().state_dict(), straight.model().state_dict())
    assert same_weights(resumed.checkpoint(2).state_dict(), straight.checkpoint(2).state_dict())
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert not (cache.root / spec.name / runs.RESUME).exists()


WORKER = textwrap.dedent(
    """
    import json, sys
    from tdlib.runs import RunCache
    from tdlib.spec import DataSpec, RunSpec
    spec = RunSpec("B", 0, int(sys.argv[2]), batch_size=64, hidden=(32, 16), data=DataSpec(600, 300, 0))
    run = RunCache(sys.argv[1], progress=False).get(spec)
    print(json.dumps({"trained_now": run.trained_now}))
    """
)


def worker(root: Path, epochs: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(epochs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_train_a_run_once(tmp_path: Path) -> None:
    procs = [worker(tmp_path, 3) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    trained = sorted(json.loads(out)["trained_now"] for out, _ in outputs)
    assert trained == [False, True]
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1


def test_killed_process_resumes_to_the_same_weights(tmp_path: Path) -> None:
    spec = RunSpec("B", 0, 12, batch_size=64, hidden=(32, 16), data=SMALL)
    proc = worker(tmp_path / "killed", 12)
    resume = tmp_path / "killed" / spec.name / runs.RESUME
    deadline = time.monotonic() + 120
    while not resume.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / spec.name / runs.RECORD).exists(), "the worker finished before the kill"
    resumed = RunCache(tmp_path / "killed", progress=False).get(spec)
    assert resumed.record["resumed_from_epoch"] >= 1
    straight = RunCache(tmp_path / "straight", progress=False).get(spec)
    assert same_weights(resumed.model().state_dict(), straight.model().state_dict())


def test_corrupt_model_file_is_named_moved_aside_and_retrained(cache: RunCache) -> None:
    spec = small_spec()
    first = cache.get(spec)
    model_file = first.directory / "model.pt"
    damaged = bytearray(model_file.read_bytes())
    damaged[-10] ^= 0xFF
    model_file.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match=r"model\.pt: SHA-256"):
        again = cache.get(spec)
    assert again.trained_now
    assert (again.directory / "model.pt").read_bytes() != bytes(damaged)
    aside = list((cache.root / "corrupt").iterdir())
    assert len(aside) == 1 and (aside[0] / "model.pt").read_bytes() == bytes(damaged)


def test_unreadable_record_and_resume_file_are_set_aside(cache: RunCache) -> None:
    spec = small_spec(epochs=2)
    run = cache.get(spec)
    (run.directory / runs.RECORD).write_text("{not json")
    with pytest.warns(UserWarning, match="record.json is unreadable"):
        assert cache.get(spec).trained_now
    with pytest.raises(KeyboardInterrupt):
        cache.get(small_spec(epochs=3), stop_after=1)
    resume = cache.root / small_spec(epochs=3).name / runs.RESUME
    resume.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cannot be resumed from"):
        fresh = cache.get(small_spec(epochs=3))
    assert fresh.record["resumed_from_epoch"] == 0
    assert len(list((cache.root / "corrupt").iterdir())) == 2


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.bin"
    atomic_write(target, b"old")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new contents")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_spec_hash_and_validation() -> None:
    assert small_spec().key() == small_spec().key()
    assert small_spec().key() != small_spec(lr=2e-3).key()
    assert small_spec().name.startswith("B-s0-")
    with pytest.raises(ValueError, match="epochs"):
        small_spec(epochs=0)
    with pytest.raises(ValueError, match="checkpoints"):
        small_spec(epochs=3, checkpoints=(4,))
    with pytest.raises(ValueError, match="condition"):
        small_spec("B/../x")
