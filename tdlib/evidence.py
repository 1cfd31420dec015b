"""The numbers claims are judged on: per-seed measurements of a profile's runs, cached on disk.

Every (condition, seed) is trained once through the :class:`~tdlib.runs.RunCache` and shared by every
claim that needs it. Every measurement (an accuracy after pruning, an activation statistic, ...) is
stored beside the cache in ``evidence/<run name>.json`` under a key naming what was measured, so that
re-rendering a report from a warm cache trains nothing and measures nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import torch
from filelock import FileLock

from tdlib.data import FashionMNIST
from tdlib.metrics import (
    SWEEP,
    PruneKind,
    accuracy,
    activation_stats,
    incoming,
    pruning_sweep,
    small_weight_fraction,
)
from tdlib.model import MLP
from tdlib.profiles import Profile
from tdlib.runs import Run, RunCache, atomic_write

# Bump when a measurement changes meaning, so that stored numbers are measured again.
EVIDENCE_FORMAT = 1
SWEEP_KINDS = ("weight", "unit", "random_weight", "global")  # drawn for every condition in the report


class BrokenEvidence(AssertionError):
    """The runs cannot support any verdict: a run is missing, a value is not finite, B did not learn."""


class Evidence:
    """Per-seed measurements of ``profile``'s runs: arrays with one value per seed, in seed order."""

    def __init__(self, profile: Profile, cache: RunCache, device: str = "cpu") -> None:
        self.profile = profile
        self.cache = cache
        self.device = device
        self._runs: dict[str, list[Run]] = {}
        self._models: dict[tuple[str, int], MLP] = {}
        self._data: FashionMNIST | None = None
        self.store = cache.root / "evidence"
        self.store.mkdir(exist_ok=True)

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.profile.seeds

    @property
    def data(self) -> FashionMNIST:
        """The profile's images (its test set is what every accuracy is measured on)."""
        if self._data is None:
            self._data = self.cache.data_for(self.profile.spec("B", self.seeds[0]))
        return self._data

    def runs(self, condition: str) -> list[Run]:
        """One finished run per seed (trained now if the cache lacks it)."""
        if condition not in self._runs:
            runs = [self.cache.get(self.profile.spec(condition, seed, self.device)) for seed in self.seeds]
            self._runs[condition] = runs
        return self._runs[condition]

    def check_baseline(self) -> None:
        """Raise :class:`BrokenEvidence` unless every seed of B clears the profile's accuracy floor."""
        for run in self.runs("B"):
            if not run.final_accuracy >= self.profile.accuracy_floor:
                raise BrokenEvidence(
                    f"the baseline did not learn: {run.spec.name} reached {run.final_accuracy:.4f} test accuracy, "
                    f"under the {self.profile.name} profile's floor of {self.profile.accuracy_floor}"
                )

    def model(self, condition: str, seed: int) -> MLP:
        key = (condition, seed)
        if key not in self._models:
            self._models[key] = self.runs(condition)[self.seeds.index(seed)].model()
        return self._models[key]

    def measure(
        self, condition: str, key: str, compute: Callable[[Run, MLP], float], undefined_ok: bool = False
    ) -> np.ndarray:
        """``compute(run, model)`` for each seed, stored under ``key``; shape (seeds,).

        A value that is not finite is broken evidence, except NaN with ``undefined_ok``: a statistic
        that does not exist for that seed (a ratio over dead units when it has none).
        """
        return self.measure_many(condition, key, lambda run, model: {key: compute(run, model)}, undefined_ok)

    def measure_many(
        self, condition: str, key: str, compute: Callable[[Run, MLP], dict[str, float]], undefined_ok: bool = False
    ) -> np.ndarray:
        """Like :meth:`measure`, where one computation also yields other keys worth storing."""
        values = []
        for run in self.runs(condition):
            path = self.store / f"{run.spec.name}.json"
            stored = json.loads(path.read_text()) if path.exists() else {}
            if f"v{EVIDENCE_FORMAT}:{key}" not in stored:
                new = compute(run, self.model(condition, run.spec.seed))
                with FileLock(str(path) + ".lock"):
                    stored = json.loads(path.read_text()) if path.exists() else {}
                    stored.update({f"v{EVIDENCE_FORMAT}:{k}": float(v) for k, v in new.items()})
                    atomic_write(path, json.dumps(stored, indent=0, sort_keys=True).encode())
            value = stored[f"v{EVIDENCE_FORMAT}:{key}"]
            if not np.isfinite(value) and not (undefined_ok and np.isnan(value)):
                raise BrokenEvidence(f"{key} of {run.spec.name} is {value}")
            values.append(value)
        return np.asarray(values)

    def accuracy(self, condition: str) -> np.ndarray:
        """Dense test accuracy in percent, per seed."""
        x, y = self.data.test_x, self.data.test_y
        return self.measure(condition, "accuracy", lambda run, model: 100 * accuracy(model, x, y))

    def pruned(self, condition: str, kind: PruneKind, k: float) -> np.ndarray:
        """Test accuracy in percent after pruning ``k``% by ``kind``, per seed (random kinds use the seed)."""
        x, y = self.data.test_x, self.data.test_y
        # One ranking serves a whole sweep: for the kinds the report draws, measure it all at once.
        ks = sorted({*SWEEP, k}) if kind in SWEEP_KINDS else [k]

        def sweep(run: Run, model: MLP) -> dict[str, float]:
            accuracies = pruning_sweep(model, kind, x, y, ks, seed=run.spec.seed)
            return {f"pruned:{kind}:{k_:g}": 100 * a for k_, a in accuracies.items()}

        return self.measure_many(condition, f"pruned:{kind}:{k:g}", sweep)

    def small_weights(self, condition: str, epoch: int) -> np.ndarray:
        """Percent of hidden weights with |w| < 1e-3 after ``epoch`` epochs (a kept checkpoint), per seed."""
        return self.measure(
            condition, f"small-weights:{epoch}",
            lambda run, model: 100 * small_weight_fraction(run.checkpoint(epoch), 1e-3),
        )

    def activation_fractions(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """(percent of hidden activations exactly 0, percent of hidden units dead) on the test set."""

        def both(run: Run, model: MLP) -> dict[str, float]:
            stats = activation_stats(model, self.data.test_x)
            units = sum(s.units for s in stats)
            return {
                "zero-activations": 100 * sum(s.zero_fraction * s.units for s in stats) / units,
                "dead-units": 100 * sum(s.dead_units for s in stats) / units,
            }

        zero = self.measure_many(condition, "zero-activations", both)
        return zero, self.measure_many(condition, "dead-units", both)

    def dead_unit_masks(self, model: MLP) -> list[torch.Tensor]:
        """Per hidden layer, (units,) True where the unit is 0 on every test image."""
        return [s.dead for s in activation_stats(model, self.data.test_x)]

    def unit_movement(self, run: Run, model: MLP, since: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(how far each hidden unit's incoming weights and bias moved from epoch ``since`` to the end,
        whether it is dead), both (all hidden units,), pooled over layers."""
        moved = [(a - b).norm(dim=1) for a, b in zip(incoming(model), incoming(run.checkpoint(since)))]
        return torch.cat(moved), torch.cat(self.dead_unit_masks(model))

    def training_seconds(self) -> float:
        """Wall time of training all runs used so far, from their records."""
        return sum(run.record["wall_seconds"] for runs in self._runs.values() for run in runs)

    def run_records(self) -> list[dict]:
        return [run.record for runs in self._runs.values() for run in runs]
