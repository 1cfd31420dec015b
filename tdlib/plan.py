"""What a claims run will train before it trains it: the runs it needs, which are cached, how long the rest take."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tdlib.profiles import Profile
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


def plan(profile: Profile, conditions: list[str], cache_dir: Path, device: str = "cpu") -> Plan:
    """Which of ``conditions`` x ``profile.seeds`` are in ``cache_dir``, and an estimate for the rest (see
    :func:`plan_specs`). Reads only; nothing is created or trained."""
    return plan_specs([profile.spec(c, seed, device) for c in conditions for seed in profile.seeds], cache_dir,
                      _data_share(profile))


def plan_specs(specs: list[RunSpec], cache_dir: Path, data_share: float = 1.0) -> Plan:
    """Which ``specs`` are in ``cache_dir``, and an estimate for the rest from the cached runs' records
    (seconds per epoch, per condition; else any condition's; else a fallback scaled by ``data_share``)."""
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
    default = sum(everything) / len(everything) if everything else FALLBACK_EPOCH_SECONDS * data_share

    def epoch_seconds(condition: str) -> float:
        values = per_epoch.get(condition)
        return sum(values) / len(values) if values else default

    seconds = sum(epoch_seconds(s.condition) * s.epochs for s in to_train)
    return Plan(tuple(cached), tuple(to_train), seconds)


def _data_share(profile: Profile) -> float:
    return (profile.data.n_train or 60_000) / 60_000
