"""What a claims run will train before it trains it: the runs it needs, which are cached, how long the rest take."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tdlib.runs import RECORD
from tdlib.spec import RunSpec

# Seconds per epoch on the full data set when no cached run tells better (a 2-core CPU, batch 256).
FALLBACK_EPOCH_SECONDS = 12.0


@dataclass(frozen=True)
class Plan:
    """The runs a set of conditions needs under a profile, split into cached and to-train."""

    cached: tuple[RunSpec, ...]
    to_train: tuple[RunSpec, ...]
    seconds: float  # estimated wall time of training ``to_train``

    def summary(self) -> str:
        total = len(self.cached) + len(self.to_train)
        if not self.to_train:
            return f"{total} runs, all cached"
        return (f"{total} runs, {len(self.cached)} cached, {len(self.to_train)} to train "
                f"(about {_duration(self.seconds)})")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"


def plan(specs: list[RunSpec], cache_dir: Path) -> Plan:
    """Which ``specs`` are in ``cache_dir``, and an estimate for the rest from the cached runs' records
    (seconds per epoch, per condition; else any condition's; else a fallback scaled by the run's share of
    the 60,000 training images). Reads only; nothing is created or trained."""
    cached, to_train, per_epoch = [], [], {}
    for spec in specs:
        record = cache_dir / spec.name / RECORD
        if record.exists():
            cached.append(spec)
            try:
                seconds = json.loads(record.read_text())["wall_seconds"] / max(1, spec.epochs)
                per_epoch.setdefault(spec.condition, []).append(seconds)
            except (OSError, ValueError, KeyError, TypeError):
                pass
        else:
            to_train.append(spec)
    everything = [s for values in per_epoch.values() for s in values]
    default = sum(everything) / len(everything) if everything else None

    def epoch_seconds(spec: RunSpec) -> float:
        values = per_epoch.get(spec.condition)
        if values:
            return sum(values) / len(values)
        return default if default is not None else FALLBACK_EPOCH_SECONDS * (spec.data.n_train or 60_000) / 60_000

    seconds = sum(epoch_seconds(s) * s.epochs for s in to_train)
    return Plan(tuple(cached), tuple(to_train), seconds)

