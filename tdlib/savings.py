"""What pruning buys at inference: a pruned model's size on disk, parameters, FLOPs and measured speed.

A masked model (``torch.nn.utils.prune``) is the dense model plus masks; :func:`tdlib.compress.compress`
is what makes it smaller and faster. :func:`saving` measures one pruned model in all three forms, and
:func:`speedup_curve` the speed-up over a range of sparsities. Speed-ups are ratios of median wall times
measured in the same call (:func:`tdlib.compress.median_seconds`), so they compare like with like.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from tdlib.compress import CompressedMLP, compress, dense_flops, fastest, median_seconds, save
from tdlib.metrics import PruneKind, masks_at
from tdlib.model import MLP, eval_mode
from tdlib.prune import Masks, apply_masks, install_with_torch_prune

MIN_RUN_TIME = 0.2  # seconds of repeated calls behind each model's timing
CHOICE_RUN_TIME = 0.02  # seconds behind each candidate layout's timing: enough to tell them apart where it matters


@dataclass(frozen=True)
class Speed:
    """Dense against compressed at one batch size (the compressed layouts chosen for that batch)."""

    batch: int
    speedup: float  # dense median time / compressed median time
    flop_ratio: float  # dense multiply-adds / compressed multiply-adds as run
    layouts: tuple[str, ...]
    fused: bool  # run as one compiled chain rather than layer by layer


@dataclass(frozen=True)
class Saving:
    """One pruned model in its dense, torch.prune-masked and compressed forms."""

    accuracy: dict[str, float]  # top-1 accuracy: "masked", "compressed"
    differing_predictions: dict[str, int]  # per compressed form ("dense", "csr", "fused"): images whose
    # predicted class differs from the masked model's
    kib: dict[str, float]  # bytes on disk / 1024: "dense", "masked", "compressed"
    parameters: dict[str, int]  # "dense": every parameter; "compressed": non-zero weights and biases left
    speeds: tuple[Speed, ...]  # one per batch size timed (empty when not timed)


def file_kib(obj: object, save_to: Callable[[object, Path], None] = torch.save) -> float:
    """Size of ``obj`` written to a file by ``save_to(obj, path)``, in KiB."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model"
        save_to(obj, path)
        return path.stat().st_size / 1024


def speed(model: MLP, small: CompressedMLP, batch: int, threads: int = 1, min_run_time: float = MIN_RUN_TIME,
          rounds: int = 5) -> Speed:
    """Time the dense ``model`` and ``small``, its compression (run in the form fastest at ``batch``), on
    random inputs.

    The two are timed in ``rounds`` alternating rounds, and the speed-up is the ratio of their medians
    over rounds, so that a passing disturbance of the machine cannot favour either. The layouts are
    chosen on ``CHOICE_RUN_TIME`` a candidate, scaled as ``min_run_time`` is from ``MIN_RUN_TIME``.
    """
    choice = partial(median_seconds, min_run_time=CHOICE_RUN_TIME * min_run_time / MIN_RUN_TIME)
    with eval_mode(model):
        fast = fastest(small, batch, threads, seconds=choice)
        x = torch.rand(batch, model.layers[0].in_features)
        times: dict[str, list[float]] = {"dense": [], "compressed": []}
        for _ in range(rounds):
            times["dense"].append(median_seconds(model, x, threads, min_run_time / rounds))
            times["compressed"].append(median_seconds(fast, x, threads, min_run_time / rounds))
    return Speed(
        batch=batch,
        speedup=statistics.median(times["dense"]) / statistics.median(times["compressed"]),
        flop_ratio=dense_flops(model) / fast.flops() if fast.flops() else math.inf,  # inf: nothing left to run
        layouts=tuple(fast.layouts),
        fused=fast.fused,
    )


@torch.no_grad()
def saving(
    model: MLP, masks: Masks, x: Tensor, y: Tensor, batches: Iterable[int] = (), threads: int = 1,
    min_run_time: float = MIN_RUN_TIME,
) -> Saving:
    """Measure ``model`` pruned by ``masks``: accuracy on images ``x`` (N, 784) float32 with labels ``y``
    (N,), masked and compressed (every form checked against the masked model); sizes on disk;
    parameters; the speed-up at each of ``batches`` on ``threads`` (:func:`speed`)."""
    with eval_mode(model):
        small: CompressedMLP = compress(model, masks, "dense")
        masked = apply_masks(model, masks)(x).argmax(1)
        forms = {"dense": small, "csr": small.with_layouts(["csr"] * len(small.shapes)), "fused": small.fuse()}
        predictions = {name: form(x).argmax(1) for name, form in forms.items()}
        return Saving(
            accuracy={
                "masked": float((masked == y).float().mean()),
                "compressed": float((predictions["dense"] == y).float().mean()),
            },
            differing_predictions={name: int((p != masked).sum()) for name, p in predictions.items()},
            kib={
                "dense": file_kib(model.state_dict()),
                "masked": file_kib(install_with_torch_prune(model, masks).state_dict()),
                "compressed": file_kib(small, save),
            },
            parameters={"dense": sum(p.numel() for p in model.parameters()), "compressed": small.parameter_count()},
            speeds=tuple(speed(model, small, batch, threads, min_run_time) for batch in batches),
        )


def speedup_curve(
    model: MLP, kind: PruneKind, ks: Iterable[float], batch: int, threads: int = 1, min_run_time: float = MIN_RUN_TIME
) -> dict[float, Speed]:
    """The measured speed-up (:func:`speed`) of ``model`` pruned by ``kind`` at each of ``ks`` (%), ranking it once."""
    return {k: speed(model, compress(model, masks, "dense"), batch, threads, min_run_time)
            for k, masks in masks_at(model, kind, ks)}
