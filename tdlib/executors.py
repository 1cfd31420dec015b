"""Training many runs at once, on an existing engine: this process, local worker processes, or Slurm.

Every engine trains through the same :class:`~tdlib.runs.RunCache` in a shared directory, whose per-run
locks make two workers never train one run twice, and whose records make the result the same bits
whichever engine trained it (at the same torch thread count, which each run records):

- ``inprocess``: one run after another, here;
- ``local``: :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` spawned processes of
  ``threads`` torch threads each. On this project's 2-core CPU, 2 x 1 trained 37.6 epochs a minute
  in steady state against 33.3 for one process of 2 threads (1.13x), but each worker first spends a
  few seconds importing torch and loading the data: a profile's hours of training gain, a one-minute
  job does not (``benchmarks/test_training_speed.py::test_runs_per_hour_by_workers_and_threads``).
  The thread count changes a run's bits, so each run records it;
- ``submitit``: one Slurm job per run through ``submitit.AutoExecutor`` (``submitit.LocalExecutor``
  where there is no Slurm, as the tests use it). A GPU cluster passes ``device="cuda"`` in the specs;
  that path is untested here (no GPU).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from tdlib.spec import RunSpec

Engine = Literal["inprocess", "local", "submitit"]
ENGINES: tuple[Engine, ...] = ("inprocess", "local", "submitit")


@dataclass(frozen=True)
class Trained:
    """What an engine reports of one run (the run itself is in the cache)."""

    name: str
    trained_now: bool
    final_accuracy: float
    wall_seconds: float  # of the sitting that finished it (its record's)
    threads: int
    code_version: str  # of the tree that trained it (its record's provenance)
    training_seconds: float  # of every epoch it holds (:attr:`tdlib.runs.Run.training_seconds`)


def train_one(spec_json: dict[str, Any], cache_root: str, threads: int | None) -> Trained:
    """Train (or load) one run into the cache at ``cache_root``: the job every engine runs.

    Takes the spec as JSON so that it crosses process and cluster boundaries as plain data.
    """
    import torch

    from tdlib.runs import RunCache

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)  # a new run trains with it; a resumed one with its recorded count
    try:
        run = RunCache(cache_root, progress=False).get(RunSpec.from_json(spec_json))
    finally:
        torch.set_num_threads(before)  # in process, the caller keeps its own count
    return Trained(run.spec.name, run.trained_now, run.final_accuracy, float(run.record["wall_seconds"]),
                   int(run.record.get("threads", torch.get_num_threads())), run.record["provenance"]["code_version"],
                   run.training_seconds)


def train_all(
    specs: Sequence[RunSpec],
    cache_root: str | Path,
    engine: Engine = "inprocess",
    workers: int = 2,
    threads: int | None = None,
    progress: bool = True,
    submitit_folder: str | Path | None = None,
    slurm: dict[str, Any] | None = None,
) -> list[Trained]:
    """Train every spec into the cache (each at most once), on ``engine``; results in ``specs``' order.

    ``threads`` sets the torch threads of each run (None: the process's own; ``local`` defaults to 1).
    ``slurm`` holds ``submitit`` parameters (e.g. ``{"slurm_partition": "gpu", "timeout_min": 60}``).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    jobs = [(spec.to_json(), str(cache_root), threads) for spec in specs]
    bar = tqdm(total=len(jobs), desc=f"runs ({engine})", unit="run", disable=not progress)
    results: dict[int, Trained] = {}
    try:
        if engine == "inprocess":
            for i, job in enumerate(jobs):
                results[i] = train_one(*job)
                bar.update()
        elif engine == "local":
            context = multiprocessing.get_context("spawn")  # no fork: torch's threads do not survive one
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                pending = {pool.submit(train_one, spec, root, 1 if t is None else t): i for i, (spec, root, t) in
                           enumerate(jobs)}
                for done in concurrent.futures.as_completed(pending):
                    results[pending[done]] = done.result()
                    bar.update()
        else:
            results = _submitit(jobs, bar, submitit_folder or Path(cache_root) / "submitit", slurm)
    finally:
        bar.close()
    return [results[i] for i in range(len(jobs))]


def _submitit(jobs: list[tuple], bar: tqdm, folder: str | Path, slurm: dict[str, Any] | None) -> dict[int, Trained]:
    import submitit

    if slurm is None or slurm.get("cluster") == "local":
        executor: Any = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=(slurm or {}).get("timeout_min", 24 * 60))
    else:
        executor = submitit.AutoExecutor(folder=str(folder))
        executor.update_parameters(**slurm)
    submitted = [executor.submit(train_one, *job) for job in jobs]
    results = {}
    for i, job in enumerate(submitted):
        results[i] = job.result()
        bar.update()
    return results


def describe(results: Iterable[Trained]) -> str:
    results = list(results)
    trained = [r for r in results if r.trained_now]
    return (f"{len(results)} runs: {len(trained)} trained ({sum(r.wall_seconds for r in trained) / 60:.1f} min of "
            f"training), {len(results) - len(trained)} from the cache")
