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
  The thread count changes a run's bits, so each run records it. Stopped (Ctrl-C, or any error here), no
  queued run starts; a worker whose parent process is gone (killed) stops its run, resumable, and exits;
- ``submitit``: one Slurm job per run through ``submitit.AutoExecutor`` (``submitit.LocalExecutor``
  where there is no Slurm, as the tests use it). A GPU cluster passes ``device="cuda"`` in the specs;
  that path is untested here (no GPU).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from tdlib.factories import DATASETS, MODELS, DataFactory, ModelFactory, register_dataset, register_model
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


class Stopped(RuntimeError):
    """A queued run that a local worker did not start, since the training was stopped."""


_stop: Any = None  # in a local worker: the pool's event, set when the parent stops the training


def _worker_started(stop: Any, parent: int) -> None:
    """A local worker's start: keep the stop event, and watch the parent. A worker outliving its parent (a
    parent killed, which no clean-up ran in) would go on with runs no one waits for: it exits instead, and
    the run it was training resumes from its last epoch whenever it is asked for again."""
    global _stop
    _stop = stop

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(70)  # like a kill at any instant, which the cache is built to survive

    threading.Thread(target=watch, name="tdlib-parent-watch", daemon=True).start()


def train_one(spec_json: dict[str, Any], cache_root: str, threads: int | None,
              factories: tuple[ModelFactory, DataFactory] | None = None) -> Trained:
    """Train (or load) one run into the cache at ``cache_root``: the job every engine runs.

    Takes the spec as JSON so that it crosses process and cluster boundaries as plain data, with the factories
    of its model and data set (pickled by reference: a worker imports the module that defines them), which
    are registered here first, since a worker has not imported the claims file that registered them.
    """
    if _stop is not None and _stop.is_set():
        raise Stopped(f"{spec_json.get('condition')} seed {spec_json.get('seed')}: not started, training was stopped")
    import torch

    from tdlib.runs import RunCache

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)  # a new run trains with it; a resumed one with its recorded count
    if factories is not None:
        register_model(factories[0])
        register_dataset(factories[1])
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
    jobs = [(spec.to_json(), str(cache_root), threads, factories_of(spec, engine != "inprocess")) for spec in specs]
    bar = tqdm(total=len(jobs), desc=f"runs ({engine})", unit="run", disable=not progress)
    results: dict[int, Trained] = {}
    try:
        if engine == "inprocess":
            for i, job in enumerate(jobs):
                results[i] = train_one(*job)
                bar.update()
        elif engine == "local":
            results = _local(jobs, bar, workers)
        else:
            results = _submitit(jobs, bar, submitit_folder or Path(cache_root) / "submitit", slurm)
    finally:
        bar.close()
    return [results[i] for i in range(len(jobs))]


def _local(jobs: list[tuple], bar: tqdm, workers: int) -> dict[int, Trained]:
    """The jobs on ``workers`` spawned processes (no fork: torch's threads do not survive one). Stopped by an
    exception here (KeyboardInterrupt included), the queued jobs are cancelled, and those already handed to
    the pool's queue are refused by the workers (the stop event), so that nothing new starts."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                                  initializer=_worker_started, initargs=(stop, os.getpid()))
    results: dict[int, Trained] = {}
    try:
        pending = {pool.submit(train_one, spec, root, 1 if t is None else t, made): i
                   for i, (spec, root, t, made) in enumerate(jobs)}
        for done in concurrent.futures.as_completed(pending):
            results[pending[done]] = done.result()
            bar.update()
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results


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


def factories_of(spec: RunSpec, to_send: bool) -> tuple[ModelFactory, DataFactory]:
    """The registered factories of ``spec``'s model and data set; ``ValueError`` in one line for an unregistered
    name, or, ``to_send`` to another process, for one that cannot be pickled (a lambda, a function defined
    inside another: a worker imports a factory by its module and name)."""
    made = (MODELS.named(spec.model), DATASETS.named(spec.dataset))
    if to_send:
        for factory in made:
            try:
                pickle.dumps(factory)
            except (pickle.PicklingError, AttributeError, TypeError) as error:
                raise ValueError(f"the {type(factory).__name__} {factory.name!r} cannot be sent to a worker process "
                                 f"({error}): define its function at the top level of a module") from None
    return made


def describe(results: Iterable[Trained]) -> str:
    results = list(results)
    trained = [r for r in results if r.trained_now]
    return (f"{len(results)} runs: {len(trained)} trained ({sum(r.wall_seconds for r in trained) / 60:.1f} min of "
            f"training), {len(results) - len(trained)} from the cache")
