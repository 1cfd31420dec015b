"""What a claims run will train before it trains it: the runs it needs, which are cached, how long the rest take."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tdlib.runs import RECORD, RESUME, continued_runs, resume_epoch
from tdlib.spec import RunSpec

# Seconds per epoch on the full data set when no cached run tells better (a 2-core CPU, batch 256).
FALLBACK_EPOCH_SECONDS = 12.0


@dataclass(frozen=True)
class Plan:
    """The runs a set of conditions needs under a profile, split into cached and to-train."""

    cached: tuple[RunSpec, ...]
    to_train: tuple[RunSpec, ...]
    seconds: float  # estimated wall time of training ``to_train`` (on the workers the plan was made for)
    order: tuple[RunSpec, ...] = ()  # every run, in the order the plan was asked for

    def summary(self) -> str:
        total = len(self.cached) + len(self.to_train)
        if not self.to_train:
            return f"{total} runs, all cached"
        return (f"{total} runs, {len(self.cached)} cached, {len(self.to_train)} to train "
                f"(about {_duration(self.seconds)})")

    def by_condition(self) -> str:
        """Per condition, in the order the plan first names it: how many of its runs are done, of how many,
        and the seeds still to train; e.g. ``"B 7 of 20 done (102-114 left); TWR 5 of 20 done (100-114 left)"``."""
        parts = []
        for name in dict.fromkeys(s.condition for s in self.specs):
            left = [s.seed for s in self.specs if s.condition == name and s in self.to_train]
            total = sum(s.condition == name for s in self.specs)
            done = f"{name} {total - len(left)} of {total} done"
            parts.append(done + (f" ({seed_ranges(left)} left)" if left else ""))
        return "; ".join(parts)

    @property
    def specs(self) -> tuple[RunSpec, ...]:
        return self.order or (*self.cached, *self.to_train)


def seed_ranges(seeds: Sequence[int]) -> str:
    """Seeds as runs of consecutive numbers: ``[0, 1, 2, 3, 4, 100, 101, 104]`` -> ``"0-4, 100-101, 104"``."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and seed == runs[-1][-1] + 1:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"


def epochs_left(spec: RunSpec, cache_dir: Path) -> int:
    """The epochs ``spec`` still has to train: from its ``resume.pt``, else from the end of the longest
    cached shorter run it continues, else all of them."""
    done = resume_epoch(cache_dir / spec.name / RESUME)
    if not done:
        done = max((other.epochs for other in continued_runs(cache_dir, spec)), default=0)
    return max(0, spec.epochs - done)


def parallel_runs(engine: str, workers: int) -> int:
    """How many runs train at once on ``engine``: ``workers`` local processes, else one at a time as far as
    an estimate can know (a cluster's queue decides for submitit)."""
    return max(1, workers) if engine == "local" else 1


def makespan(seconds: list[float], workers: int) -> float:
    """The wall time of jobs of ``seconds`` on ``workers`` parallel workers, each job given, longest first,
    to the worker that is free first (within 4/3 of the best schedule; Graham's bound)."""
    loads = [0.0] * max(1, min(workers, len(seconds)))
    for job in sorted(seconds, reverse=True):
        loads[loads.index(min(loads))] += job
    return max(loads, default=0.0)


def epoch_rates(cache_dir: Path) -> dict[tuple[str, object, int], list[float]]:
    """Seconds per epoch of every run recorded in ``cache_dir``, by (condition, data, batch size): each
    run's wall time over the epochs it trained itself (a resumed or extended run trained fewer)."""
    rates: dict[tuple[str, object, int], list[float]] = {}
    for record in cache_dir.glob(f"*/{RECORD}"):
        try:
            saved = json.loads(record.read_text())
            spec = RunSpec.from_json(saved["spec"])
            trained = spec.epochs - int(saved.get("resumed_from_epoch") or 0)
            rates.setdefault((spec.condition, spec.data, spec.batch_size), []).append(
                float(saved["wall_seconds"]) / max(1, trained))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return rates


def plan(specs: list[RunSpec], cache_dir: Path, workers: int = 1, engine: str = "local") -> Plan:
    """Which ``specs`` are in ``cache_dir``, and an estimate of the wall time of the rest on ``engine`` with
    ``workers`` (:func:`parallel_runs`): each run's epochs left (:func:`epochs_left`) times the lower quartile
    of the seconds per epoch of the cached runs of its condition on the same data and batch size
    (:func:`epoch_rates`), else of any condition on them, else a fallback scaled by the run's share of the
    60,000 training images. Reads only; nothing is created or trained."""
    cached: list[RunSpec] = []
    to_train: list[RunSpec] = []
    for spec in specs:
        (cached if (cache_dir / spec.name / RECORD).exists() else to_train).append(spec)
    rates = epoch_rates(cache_dir) if to_train else {}

    def epoch_seconds(spec: RunSpec) -> float:
        alike = rates.get((spec.condition, spec.data, spec.batch_size)) or [
            r for (_, data, batch), values in rates.items() if (data, batch) == (spec.data, spec.batch_size)
            for r in values]
        if alike:
            # The lower quartile: a neighbour's job only ever slows a run, so the faster runs tell the rate.
            return statistics.quantiles(alike, n=4, method="inclusive")[0] if len(alike) > 1 else alike[0]
        return FALLBACK_EPOCH_SECONDS * (spec.data.n_train or 60_000) / 60_000

    seconds = makespan([epoch_seconds(s) * epochs_left(s, cache_dir) for s in to_train],
                       parallel_runs(engine, workers))
    return Plan(tuple(cached), tuple(to_train), seconds, tuple(specs))
