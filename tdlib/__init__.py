"""tdlib: targeted dropout, magnitude pruning and the experiments around them, on Fashion-MNIST."""

from tdlib.data import DataError, FashionMNIST, load_fashion_mnist
from tdlib.dropout import TargetedDropout, add_targeted_dropout
from tdlib.metrics import accuracy, activation_stats, pruning_sweep, weight_stats
from tdlib.model import MLP
from tdlib.prune import apply_masks, random_unit_masks, random_weight_masks, unit_masks, weight_masks
from tdlib.runs import Run, RunCache
from tdlib.schedules import Schedule, constant, paper_alpha, paper_gamma, ramp
from tdlib.spec import DataSpec, RunSpec

__all__ = [
    "MLP", "DataError", "DataSpec", "FashionMNIST", "Run", "RunCache", "RunSpec", "Schedule",
    "TargetedDropout", "accuracy", "activation_stats", "add_targeted_dropout", "apply_masks", "constant",
    "load_fashion_mnist", "paper_alpha", "paper_gamma", "pruning_sweep", "ramp", "random_unit_masks",
    "random_weight_masks", "unit_masks", "weight_masks", "weight_stats",
]
