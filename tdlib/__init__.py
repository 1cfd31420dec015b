"""tdlib: targeted dropout, magnitude pruning and the experiments around them, on Fashion-MNIST.

The names below are imported on first use (PEP 562), so that ``import tdlib`` costs nothing: pytest
imports this package at startup, for the plugin its entry point names, in every project where tdlib is
installed, and torch would add seconds to each of those runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_WHERE = {
    "DataError": "data", "FashionMNIST": "data", "load_fashion_mnist": "data",
    "TargetedDropout": "dropout", "add_targeted_dropout": "dropout", "add_targeted_dropout_to": "dropout",
    "accuracy": "metrics", "activation_stats": "metrics", "pruning_sweep": "metrics", "weight_stats": "metrics",
    "MLP": "model",
    "apply_masks": "prune", "random_unit_masks": "prune", "random_weight_masks": "prune", "unit_masks": "prune",
    "weight_masks": "prune",
    "Run": "runs", "RunCache": "runs",
    "Schedule": "schedules", "constant": "schedules", "paper_alpha": "schedules", "paper_gamma": "schedules",
    "ramp": "schedules",
    "DataSpec": "spec", "RunSpec": "spec",
}

__all__ = [
    "MLP", "DataError", "DataSpec", "FashionMNIST", "Run", "RunCache", "RunSpec", "Schedule",
    "TargetedDropout", "accuracy", "activation_stats", "add_targeted_dropout", "add_targeted_dropout_to", "apply_masks",
    "constant", "load_fashion_mnist", "paper_alpha", "paper_gamma", "pruning_sweep", "ramp", "random_unit_masks",
    "random_weight_masks", "unit_masks", "weight_masks", "weight_stats",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tdlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tdlib.{_WHERE[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from tdlib.data import DataError, FashionMNIST, load_fashion_mnist
    from tdlib.dropout import TargetedDropout, add_targeted_dropout, add_targeted_dropout_to
    from tdlib.metrics import accuracy, activation_stats, pruning_sweep, weight_stats
    from tdlib.model import MLP
    from tdlib.prune import apply_masks, random_unit_masks, random_weight_masks, unit_masks, weight_masks
    from tdlib.runs import Run, RunCache
    from tdlib.schedules import Schedule, constant, paper_alpha, paper_gamma, ramp
    from tdlib.spec import DataSpec, RunSpec
