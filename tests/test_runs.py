"""Seeded training and the run cache: same bits, resume, atomic writes, corruption, two processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tdlib import files, runs
from tdlib.dropout import TargetedDropout
from tdlib.files import atomic_write
from tdlib.runs import RunCache
from tdlib.schedules import paper_alpha, paper_gamma
from tdlib.spec import DataSpec, RunSpec
from tdlib.train import build_model, plain_state

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
    assert same_weights(run.checkpoint(0).state_dict(), plain_state(build_model(spec), spec))
    assert same_weights(run.checkpoint(3).state_dict(), run.model().state_dict())
    assert not same_weights(run.checkpoint(1).state_dict(), run.model().state_dict())
    with pytest.raises(ValueError, match="no checkpoint at epoch 2"):
        run.checkpoint(2)


@pytest.fixture(scope="module")
def straight_tu(tmp_path_factory: pytest.TempPathFactory) -> runs.Run:
    """A TU run with checkpoints at 0, 2 and 4 of 5 epochs, trained without a stop."""
    return RunCache(tmp_path_factory.mktemp("straight"), progress=False).get(TU_SPEC)


TU_SPEC = small_spec("TU", epochs=5, targeted=TargetedDropout.constant("unit", 0.5, 0.5), checkpoints=(0, 2, 4))


@pytest.mark.parametrize("stops", [(1,), (2,), (4,), (1, 1), (2, 2), (3, 1)], ids=str)
def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, straight_tu: runs.Run, stops: tuple) -> None:
    """Stopped after any epoch, checkpoint epochs (2, 4) included, and resumed: the same bits."""
    spec = TU_SPEC
    cache = RunCache(tmp_path, progress=False)
    done = 0
    for stop in stops:
        with pytest.raises(KeyboardInterrupt):
            cache.get(spec, stop_after=stop)
        done += stop
        assert (cache.root / spec.name / runs.RESUME).exists()
        assert not (cache.root / spec.name / runs.RECORD).exists()
    resumed = cache.get(spec)
    assert resumed.trained_now and resumed.record["resumed_from_epoch"] == done
    assert same_weights(resumed.model().state_dict(), straight_tu.model().state_dict())
    for epoch in spec.checkpoints:
        assert same_weights(resumed.checkpoint(epoch).state_dict(), straight_tu.checkpoint(epoch).state_dict())
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight_tu.history]
    assert not (cache.root / spec.name / runs.RESUME).exists()


def test_training_leaves_the_callers_generator_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    RunCache(tmp_path, progress=False).get(small_spec(epochs=1, checkpoints=(0, 1)))
    build_model(small_spec())
    assert torch.equal(torch.rand(3), expected)


def test_on_epoch_end_cannot_shift_the_next_epochs_draws(tmp_path: Path) -> None:
    """Whatever a callback draws between epochs, the run's own stream is the same."""
    from tdlib.train import initial_state, train

    spec = small_spec("TW", epochs=3, targeted=TargetedDropout.constant("weight", 0.5, 0.5))
    data = RunCache(tmp_path, progress=False).data_for(spec)
    quiet = train(initial_state(spec), data, progress=False)
    noisy = train(initial_state(spec), data, on_epoch_end=lambda s: torch.rand(1000), progress=False)
    assert same_weights(quiet.model.state_dict(), noisy.model.state_dict())


def test_final_state_continues_to_the_same_bits(tmp_path: Path) -> None:
    """A longer run of a length-independent description continues from the shorter run's final state."""
    targeted = TargetedDropout.constant("weight", 0.5, 0.5)
    short = small_spec("TW", epochs=2, targeted=targeted, checkpoints=(0, 1, 2))
    long = small_spec("TW", epochs=4, targeted=targeted, checkpoints=(0, 2, 3, 4))
    assert long.continues(short) and not short.continues(long)
    scratch = RunCache(tmp_path / "scratch", progress=False).get(long)
    cache = RunCache(tmp_path / "extended", progress=False)
    cache.get(short)
    extended = cache.get(long)
    assert extended.record["extended_from"] == short.name and extended.record["resumed_from_epoch"] == 2
    assert same_weights(extended.model().state_dict(), scratch.model().state_dict())
    for epoch in long.checkpoints:
        assert same_weights(extended.checkpoint(epoch).state_dict(), scratch.checkpoint(epoch).state_dict())
    assert [h["train_loss"] for h in extended.history] == [h["train_loss"] for h in scratch.history]
    assert scratch.record["extended_from"] is None
    # Its provenance names the shorter run's record too, and its training time counts the epochs it holds.
    assert extended.lineage == [extended.record, cache.cached(short).record] and scratch.lineage == [scratch.record]
    assert extended.training_seconds == pytest.approx(sum(h["seconds"] for h in extended.history))
    assert extended.training_seconds > sum(h["seconds"] for h in extended.history[2:])


def test_what_cannot_be_continued() -> None:
    ramped = TargetedDropout("weight", paper_gamma(0.9), paper_alpha(0.9))
    assert not small_spec("TWR", epochs=4, targeted=ramped).continues(small_spec("TWR", epochs=2, targeted=ramped))
    assert not small_spec(epochs=4, checkpoints=(1,)).continues(small_spec(epochs=2, checkpoints=(2,)))
    assert not small_spec(epochs=4, lr=2e-3).continues(small_spec(epochs=2))
    assert small_spec(epochs=4, checkpoints=(3,)).continues(small_spec(epochs=2))


def test_spec_json_round_trip() -> None:
    ramped = TargetedDropout("weight", paper_gamma(0.9), paper_alpha(0.9))
    for spec in (small_spec(), TU_SPEC, small_spec("TWR", targeted=ramped)):
        assert RunSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def damage(path: Path, at: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def stopped(cache: RunCache, spec: RunSpec, after: int) -> Path:
    with pytest.raises(KeyboardInterrupt):
        cache.get(spec, stop_after=after)
    return cache.root / spec.name


def rewritten_payload(resume: Path, change) -> None:
    """``resume`` with its payload changed by ``change`` and its header's checksum made to match: a file that
    only its types can tell from a good one."""
    header, saved = runs.read_state(resume, TU_SPEC)
    change(saved)
    payload = runs.tensor_bytes(saved)
    header["sha256"] = hashlib.sha256(payload).hexdigest()
    resume.write_bytes(runs.STATE_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)


WRONG_TYPES = {
    "model a list": lambda saved: saved.update(model=list(saved["model"].values())),
    "rng a number": lambda saved: saved.update(rng=7),
    "history a number": lambda saved: saved.update(history=3),
    "optimizer state a string": lambda saved: saved.update(optimizer="adam"),
}


@pytest.mark.parametrize("how", ["bit flip", "other run's", "edited epoch", "checkpoint damaged", "checkpoint gone",
                                 *WRONG_TYPES])
def test_a_bad_resume_is_named_set_aside_and_never_used(
    tmp_path: Path, straight_tu: runs.Run, how: str
) -> None:
    spec = TU_SPEC
    cache = RunCache(tmp_path, progress=False)
    directory = stopped(cache, spec, 3)
    resume = directory / runs.RESUME
    if how == "bit flip":
        damage(resume)
    elif how == "other run's":
        other = stopped(cache, small_spec("TU", seed=1, epochs=5, targeted=spec.targeted, checkpoints=(0, 2, 4)), 3)
        resume.write_bytes((other / runs.RESUME).read_bytes())
    elif how == "edited epoch":
        resume.write_bytes(resume.read_bytes().replace(b'"epoch": 3', b'"epoch": 4', 1))
    elif how == "checkpoint damaged":
        damage(directory / runs.checkpoint_file(2))
    elif how in WRONG_TYPES:
        rewritten_payload(resume, WRONG_TYPES[how])
    else:
        (directory / runs.checkpoint_file(2)).unlink()
    with pytest.warns(UserWarning, match=r"resume\.pt cannot be resumed from"):
        run = cache.get(spec)
    assert run.record["resumed_from_epoch"] == 0
    assert same_weights(run.model().state_dict(), straight_tu.model().state_dict())
    assert len(list((cache.root / "corrupt").iterdir())) == 1


def test_a_checkpoint_damaged_during_training_is_never_certified(
    tmp_path: Path, straight_tu: runs.Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that changes on disk after it was written sends the run back to the start."""
    spec = TU_SPEC
    cache = RunCache(tmp_path, progress=False)
    real_train, calls = runs.train, []

    def train_then_damage(state, data, on_epoch_end=None, progress=True):
        result = real_train(state, data, on_epoch_end=on_epoch_end, progress=progress)
        if not calls:
            damage(cache.root / spec.name / runs.checkpoint_file(2))
        calls.append(1)
        return result

    monkeypatch.setattr(runs, "train", train_then_damage)
    with pytest.warns(UserWarning, match=r"checkpoint-epoch002\.pt changed after it was written"):
        run = cache.get(spec)
    assert len(calls) == 2
    assert same_weights(run.checkpoint(2).state_dict(), straight_tu.checkpoint(2).state_dict())


def test_a_record_without_its_provenance_is_retrained(cache: RunCache) -> None:
    run = cache.get(small_spec(epochs=1))
    record = json.loads((run.directory / runs.RECORD).read_text())
    del record["provenance"]
    (run.directory / runs.RECORD).write_text(json.dumps(record))
    with pytest.warns(UserWarning, match="has no 'provenance'"):
        assert cache.get(small_spec(epochs=1)).trained_now


def test_stale_temporary_files_are_cleaned(cache: RunCache) -> None:
    directory = stopped(cache, small_spec(epochs=3), 1)
    (directory / ".model.pt.x1.tmp").write_bytes(b"half")
    run = cache.get(small_spec(epochs=3))
    assert sorted(p.name for p in run.directory.iterdir()) == sorted([*run.record["files"], runs.RECORD])


def test_a_held_lock_is_named_and_given_up_on(cache: RunCache, monkeypatch: pytest.MonkeyPatch) -> None:
    from filelock import FileLock

    spec = small_spec(epochs=1)
    monkeypatch.setenv("TDLIB_LOCK_TIMEOUT", "0.5")
    held = FileLock(str(cache.root / f"{spec.name}.lock"))
    held.acquire()
    runs._note_lock_holder(cache.root / f"{spec.name}.lock")
    try:
        with pytest.raises(runs.LockTimeout, match=rf"locked by process {os.getpid()} on .* TDLIB_LOCK_TIMEOUT"):
            cache.get(spec)
    finally:
        held.release()


WORKER = textwrap.dedent(
    """
    import json, sys
    from tdlib.runs import RunCache
    from tdlib.spec import DataSpec, RunSpec
    every = sys.argv[3:] == ["every"]
    spec = RunSpec("B", 0, int(sys.argv[2]), batch_size=64, hidden=(32, 16), data=DataSpec(600, 300, 0),
                   checkpoints=tuple(range(int(sys.argv[2]) + 1)) if every else ())
    run = RunCache(sys.argv[1], progress=False).get(spec)
    print(json.dumps({"trained_now": run.trained_now}))
    """
)


def worker(root: Path, epochs: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(epochs), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_train_a_run_once(tmp_path: Path) -> None:
    procs = [worker(tmp_path, 3) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    trained = sorted(json.loads(out)["trained_now"] for out, _ in outputs)
    assert trained == [False, True]
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1


@pytest.mark.parametrize("checkpoints", ["none", "every"])
def test_killed_process_resumes_to_the_same_weights(tmp_path: Path, checkpoints: str) -> None:
    """SIGKILL once a resume point exists; with ``every``, each epoch is a checkpoint epoch."""
    epochs = 12
    spec = RunSpec("B", 0, epochs, batch_size=64, hidden=(32, 16), data=SMALL,
                   checkpoints=tuple(range(epochs + 1)) if checkpoints == "every" else ())
    proc = worker(tmp_path / "killed", epochs, checkpoints)
    resume = tmp_path / "killed" / spec.name / runs.RESUME
    deadline = time.monotonic() + 120
    while not resume.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / spec.name / runs.RECORD).exists(), "the worker finished before the kill"
    resumed = RunCache(tmp_path / "killed", progress=False).get(spec)
    assert resumed.record["resumed_from_epoch"] >= 1
    before = torch.get_num_threads()
    torch.set_num_threads(resumed.record["threads"])  # the worker's count, which the resumed run kept
    try:
        straight = RunCache(tmp_path / "straight", progress=False).get(spec)
    finally:
        torch.set_num_threads(before)
    assert same_weights(resumed.model().state_dict(), straight.model().state_dict())
    for epoch in spec.checkpoints:
        assert same_weights(resumed.checkpoint(epoch).state_dict(), straight.checkpoint(epoch).state_dict())


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
    other = small_spec(epochs=3, lr=2e-3)  # not a continuation of ``spec``
    with pytest.raises(KeyboardInterrupt):
        cache.get(other, stop_after=1)
    resume = cache.root / other.name / runs.RESUME
    resume.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cannot be resumed from"):
        fresh = cache.get(other)
    assert fresh.record["resumed_from_epoch"] == 0
    assert len(list((cache.root / "corrupt").iterdir())) == 2


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.bin"
    atomic_write(target, b"old")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
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


@pytest.mark.parametrize(("changes", "field"), [
    ({"seed": "0"}, "seed"), ({"seed": 0.7}, "seed"), ({"seed": True}, "seed"), ({"seed": -1}, "seed"),
    ({"epochs": 2.0}, "epochs"), ({"epochs": True}, "epochs"), ({"batch_size": "64"}, "batch_size"),
    ({"lr": float("nan")}, "lr"), ({"lr": float("inf")}, "lr"), ({"lr": "1e-3"}, "lr"), ({"bias": 1}, "bias"),
    ({"hidden": [32, 16]}, "hidden"), ({"hidden": (32, 0)}, "hidden"), ({"hidden": ()}, "hidden"),
    ({"dropout": "0.5"}, "dropout"), ({"targeted": "weight"}, "targeted"), ({"checkpoints": (1.5,)}, "checkpoints"),
    ({"data": {"n_train": 10}}, "data"), ({"condition": 3}, "condition"),
])
def test_a_description_that_would_name_other_weights_is_refused(changes: dict[str, object], field: str) -> None:
    """A seed of "0" or 0.7 (or an epoch count of 2.0) would train what another description names, under a
    name of its own: refused, naming the field."""
    fields = {"condition": "B", "seed": 0, "epochs": 3, "batch_size": 64, "hidden": (32, 16), "data": SMALL, **changes}
    with pytest.raises(ValueError, match=f"^{field}"):
        RunSpec(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_train"):
        DataSpec(n_train=0)
    with pytest.raises(ValueError, match="seed"):
        DataSpec(seed="1")  # type: ignore[arg-type]


def test_a_run_resumed_with_another_thread_count_trains_on_with_its_own(tmp_path: Path) -> None:
    """Thread counts change the bits of a matrix product; the state keeps the count it started with."""
    spec = small_spec(epochs=3, hidden=(512, 256), batch_size=300)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        straight = RunCache(tmp_path / "straight", progress=False).get(spec)
        cache = RunCache(tmp_path / "stopped", progress=False)
        with pytest.raises(KeyboardInterrupt):
            cache.get(spec, stop_after=1)
        torch.set_num_threads(1)
        one_thread = RunCache(tmp_path / "one", progress=False).get(spec)
        resumed = cache.get(spec)
        assert torch.get_num_threads() == 1  # the caller's count is given back
    finally:
        torch.set_num_threads(before)
    assert straight.record["threads"] == resumed.record["threads"] == 2 and one_thread.record["threads"] == 1
    assert same_weights(resumed.model().state_dict(), straight.model().state_dict())
    if same_weights(one_thread.model().state_dict(), straight.model().state_dict()):
        pytest.skip("on this machine one and two threads happen to give the same bits for this network")


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_and_directories_take_the_processs_umask(tmp_path: Path, umask: int) -> None:
    """A shared machine's other users read what a group-readable umask lets them, as with any tool: a
    run's files, its directory, and the staging directories that reports and archives are swapped in from."""
    import tempfile

    from tdlib.compress import compress, save
    from tdlib.files import with_umask
    from tdlib.metrics import masks_for

    previous = os.umask(umask)
    try:
        run = RunCache(tmp_path / "cache", progress=False).get(small_spec(epochs=1))
        staged = with_umask(Path(tempfile.mkdtemp(dir=tmp_path)))
        model = run.model()
        save(compress(model, masks_for(model, "weight", 50)), tmp_path / "model.safetensors")
    finally:
        os.umask(previous)
    files = [p for p in run.directory.iterdir() if p.is_file()] + [tmp_path / "model.safetensors"]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}
    assert {run.directory.stat().st_mode & 0o777, staged.stat().st_mode & 0o777} == {0o777 & ~umask}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_the_umask_is_read_without_being_changed(umask: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from /proc where the kernel shows it (no instant in which another thread's file gets 0o022),
    and by setting it back at once where it does not."""
    previous = os.umask(umask)
    try:
        assert files.current_umask() == umask
        monkeypatch.setattr(files.Path, "read_text", lambda self: (_ for _ in ()).throw(OSError("no /proc")))
        assert files.current_umask() == umask and os.umask(umask) == umask
    finally:
        os.umask(previous)


@pytest.mark.parametrize("how", ["bit flip", "another valid network"])
def test_a_weight_file_changed_after_the_run_was_looked_up_is_never_loaded(
        tmp_path: Path, straight_tu: runs.Run, how: str) -> None:
    cache = RunCache(tmp_path / "cache", progress=False)
    shutil.copytree(straight_tu.directory, cache.root / TU_SPEC.name)
    run = cache.cached(TU_SPEC)
    assert run is not None
    model = run.directory / "model.pt"
    if how == "bit flip":  # in the last weights, where torch still loads it
        damage(model)
    else:
        shutil.copyfile(run.directory / runs.checkpoint_file(2), model)
    with pytest.raises(runs.CorruptEntry, match=r"model\.pt: SHA-256 [0-9a-f]{64}, but the record of run TU-s0-.* "
                                                r"certifies [0-9a-f]{64}: the file changed after the run was checked; "
                                                r"remove .* to train it again"):
        run.model()
    assert torch.equal(run.checkpoint(2).layers[0].weight, straight_tu.checkpoint(2).layers[0].weight)  # the rest loads
