"""Training many runs on an engine: in this process, in local worker processes, through submitit; the
same bits from each, every run trained once in a shared cache, and the command line around them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tdlib.dropout import TargetedDropout
from tdlib.executors import train_all
from tdlib.spec import DataSpec, RunSpec

SMALL = DataSpec(n_train=600, n_test=300, seed=0)
SPECS = [
    RunSpec("B", 0, 2, batch_size=64, hidden=(64, 32), data=SMALL, checkpoints=(0, 1, 2)),
    RunSpec("TW", 1, 2, batch_size=64, hidden=(64, 32), data=SMALL,
            targeted=TargetedDropout.constant("weight", 0.5, 0.5)),
    RunSpec("TU", 0, 2, batch_size=64, hidden=(64, 32), data=SMALL,
            targeted=TargetedDropout.constant("unit", 0.5, 0.5)),
]
ROOT = Path(__file__).resolve().parent.parent


def model_digests(cache: Path) -> dict[str, str]:
    return {spec.name: json.loads((cache / spec.name / "record.json").read_text())["files"]["model.pt"]
            for spec in SPECS}


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("inprocess")
    results = train_all(SPECS, cache, engine="inprocess", threads=1, progress=False)
    assert [r.name for r in results] == [s.name for s in SPECS] and all(r.trained_now for r in results)
    return model_digests(cache)


def test_local_workers_give_the_same_bits_and_train_each_run_once(tmp_path: Path, in_process: dict) -> None:
    twice = SPECS + SPECS  # the same runs submitted twice: the locks let one worker train, the other load
    results = train_all(twice, tmp_path, engine="local", workers=2, threads=1, progress=False)
    assert sum(r.trained_now for r in results) == len(SPECS)
    assert all(r.threads == 1 for r in results)
    assert model_digests(tmp_path) == in_process


def test_submitit_gives_the_same_bits(tmp_path: Path, in_process: dict) -> None:
    pytest.importorskip("submitit")
    results = train_all(SPECS, tmp_path / "cache", engine="submitit", threads=1, progress=False,
                        slurm={"cluster": "local", "timeout_min": 10})
    assert [r.name for r in results] == [s.name for s in SPECS]
    assert model_digests(tmp_path / "cache") == in_process


def test_in_process_training_gives_the_caller_its_thread_count_back(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    train_all(SPECS[:1], tmp_path, engine="inprocess", threads=1 if before != 1 else 2, progress=False)
    assert torch.get_num_threads() == before


def test_bad_engines_are_named() -> None:
    with pytest.raises(ValueError, match="engine must be one of"):
        train_all(SPECS, "unused", engine="ray")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers must be at least 1"):
        train_all(SPECS, "unused", engine="local", workers=0)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tdlib", "train", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=None if env is None else {**os.environ, **env})


def test_the_command_line_helps_plans_and_refuses(tmp_path: Path) -> None:
    helped = cli("--help")
    assert helped.returncode == 0 and "--engine" in helped.stdout and "--plan" in helped.stdout
    planned = cli("smoke", "--cache", str(tmp_path), "--plan")
    assert planned.returncode == 0 and "31 runs, 0 cached, 31 to train" in planned.stdout  # 8 x 2 + 15 map cells
    assert "16 runs, 0 cached, 16 to train" in cli("smoke", "--cache", str(tmp_path), "--plan", "--no-sections").stdout
    assert not any(tmp_path.iterdir())  # a plan trains nothing, creates nothing
    refused = cli("smoke", "--conditions", "B,XYZ", "--plan")
    assert refused.returncode == 2 and "condition must be one of" in refused.stderr
    no_data = cli("smoke", "--cache", str(tmp_path), "--conditions", "B", env={"TDLIB_DATA_DIR": str(tmp_path / "no")})
    assert no_data.returncode == 1 and no_data.stderr.startswith("python -m tdlib train: TDLIB_DATA_DIR=")
    assert len(no_data.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())  # before any worker


# Runs long enough (seconds each) that a test starved of the CPU on a loaded machine still stops them while
# the first ones train.
QUEUE = """
import signal
import sys
# As a terminal starts a process: a test runner may hand its children SIGINT ignored or blocked (once, in the
# whole suite on two workers, the queue ran to its end through the test's Ctrl-C and exited 0)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
signal.signal(signal.SIGINT, signal.default_int_handler)
from tdlib.executors import train_all
from tdlib.spec import DataSpec, RunSpec
specs = [RunSpec("B", seed, 100, batch_size=64, hidden=(64, 32), data=DataSpec(n_train=2000, n_test=300, seed=0))
         for seed in range(8)]
train_all(specs, sys.argv[1], engine="local", workers=2, progress=False)
"""


def started(cache: Path) -> set[str]:
    """The runs that began training in ``cache`` (each has a directory from its first epoch on)."""
    return {p.name for p in cache.glob("B-s*") if p.is_dir()} if cache.exists() else set()


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("how", ["Ctrl-C", "parent killed"])
def test_stopped_training_starts_no_queued_run_and_leaves_no_worker(tmp_path: Path, how: str) -> None:
    # Eight runs queued on two workers: stopped while the first ones train, nothing else may start, and no
    # worker may live on (a killed parent runs no clean-up: its workers notice it is gone).
    cache = tmp_path / "cache"
    parent = subprocess.Popen([sys.executable, "-c", QUEUE, str(cache)], cwd=ROOT, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(started(cache)) >= 1)
        workers = children(parent.pid)
        begun = started(cache)
        if how == "Ctrl-C":
            os.killpg(parent.pid, signal.SIGINT)  # as a terminal sends it: to the whole process group
            _, err = parent.communicate(timeout=120)
            inherited = [line for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith(("SigBlk", "SigIgn"))]
            assert parent.returncode != 0 and "KeyboardInterrupt" in err, (parent.returncode, inherited, err[-2000:])
        else:
            parent.kill()
            parent.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in workers), seconds=30)
        assert len(started(cache)) <= len(begun) + 2, (begun, started(cache))  # at most one more a worker
        assert len(started(cache)) < 8
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
