"""What pruning buys at inference: a pruned model's size on disk, parameters, FLOPs and measured speed.

A masked model (``torch.nn.utils.prune``) is the dense model plus masks; :func:`tdlib.compress.compress`
is what makes it smaller and faster. :func:`saving` measures one pruned model in all three forms.

:func:`timings` times pruned models against every dense runtime of the same network: the dense torch
module (a masked one is slower still), ONNX Runtime (where installed), and the compressed
control, the unpruned model in the compressed form. The control shows what the form alone buys: a speed-up
over the torch module counts per-call overhead that the form removes as a gain of pruning, while a
speed-up over the fastest dense runtime is what pruning itself buys. All are timed in the same paired
rounds (:func:`tdlib.compress.paired_seconds`) on real inputs; a speed-up is the ratio of the two
runtimes' fastest rounds, and the quartiles of the rounds' ratios say how much it moves. :func:`speed` and
:func:`speedup_curve` are the short form: the torch module against the compressed model, as a ratio of
medians.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from tdlib.compress import (
    CompressedMLP,
    OnnxRuntime,
    TiledMLP,
    compress,
    dense_flops,
    fastest,
    fastest_tiled,
    median_seconds,
    paired_seconds,
    save,
    tiled,
    timing_inputs,
)
from tdlib.compress.chain import Chain
from tdlib.compress.module import compact_layouts
from tdlib.compress.tiled import tiled_forms
from tdlib.metrics import PruneKind, masks_at
from tdlib.model import MLP, eval_mode
from tdlib.prune import Masks, apply_masks, install_with_torch_prune

MIN_RUN_TIME = 0.2  # seconds of repeated calls behind each model's timing
CHOICE_RUN_TIME = 0.02  # seconds behind each candidate layout's timing: enough to tell them apart where it matters
TIMING_SECONDS = 1.0  # seconds of calls behind each runtime's times in :func:`timings`, over all its rounds
TIMING_ROUNDS = 21
TIMING_CHOICE_SECONDS = 0.15  # seconds behind each candidate form's timing when :func:`timings` chooses it
DENSE_RUNTIMES = ("module", "onnxruntime", "control")  # what a pruned model is timed against
RUNTIME_NAMES = {"module": "torch module", "onnxruntime": "ONNX Runtime", "control": "compressed control",
                 "compressed": "compressed"}


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


@dataclass(frozen=True)
class Form:
    """How a compressed model ran when it was timed: the form measured fastest at the batch size."""

    flop_ratio: float  # dense multiply-adds / compressed multiply-adds as run (inf: nothing left to run)
    layouts: tuple[str, ...]  # per layer, "dense" or "csr"
    fused: bool  # one compiled chain rather than layer by layer
    tiled: bool  # the chain by rows of the batch (tdlib.compress.tiled): dense layers tiled, CSR ones by features

    @classmethod
    def of(cls, dense: MLP, fast: CompressedMLP, batch: int) -> Form:
        """How ``fast`` runs at ``batch`` (a tiled model runs a batch of one through the fused chain's kernel)."""
        flops = fast.flops()
        return cls(flop_ratio=dense_flops(dense) / flops if flops else math.inf, layouts=tuple(fast.layouts),
                   fused=fast.fused, tiled=isinstance(fast, TiledMLP) and batch > 1)

    @property
    def short(self) -> str:
        """"tiled", "fused", or the layers' layouts as letters (C = CSR, D = dense), first to last."""
        return "tiled" if self.tiled else "fused" if self.fused else "".join(x[0].upper() for x in self.layouts)


@dataclass(frozen=True)
class Timing:
    """A compressed model and the dense runtimes of its network, timed in the same paired rounds at one
    batch size (:func:`timings`)."""

    batch: int
    seconds: dict[str, tuple[float, ...]]  # per-call seconds in each round: "compressed" and each dense runtime
    form: Form

    def fastest(self, runtime: str) -> float:
        """``runtime``'s per-call seconds in its fastest round: what the code costs when nothing else on the
        machine gets in its way (interference only ever adds time, so the minimum is the figure it touches
        least)."""
        return min(self.seconds[runtime])

    def speedup(self, over: str) -> float:
        """The compressed model's speed-up over the runtime ``over``: the ratio of their fastest rounds."""
        return self.fastest(over) / self.fastest("compressed")

    def spread(self, over: str) -> tuple[float, float]:
        """How the speed-up over ``over`` moves from round to round: the quartiles (lower, upper) of the
        ratios of ``over``'s time to the compressed model's, round by round."""
        ratios = [a / b for a, b in zip(self.seconds[over], self.seconds["compressed"], strict=True)]
        if len(ratios) == 1:
            return ratios[0], ratios[0]
        lower, _, upper = statistics.quantiles(ratios, n=4, method="inclusive")
        return lower, upper

    @property
    def fastest_dense(self) -> str:
        """The dense runtime that holds its own best against the compressed model: the one its speed-up is
        smallest over."""
        return min((r for r in DENSE_RUNTIMES if r in self.seconds), key=self.speedup)


def dense_runtimes(model: MLP, batch: int, threads: int = 1, sample: Tensor | None = None,
                   choice_seconds: float = TIMING_CHOICE_SECONDS) -> dict[str, Callable[[Tensor], Tensor]]:
    """The dense ``model``'s runtimes, by the names of :data:`DENSE_RUNTIMES`: itself (a torch module), ONNX
    Runtime on its layers (left out where onnxruntime or the exporter's onnxscript is not installed), and its
    compressed control, in the form measured fastest at ``batch`` on ``threads`` threads (chosen on
    ``sample`` as :func:`fastest_form` chooses, ``choice_seconds`` a candidate)."""
    control = compress(model, {}, "dense")
    runtimes: dict[str, Callable[[Tensor], Tensor]] = {
        "module": model,
        "control": fastest_form(control, batch, threads, sample, choice_seconds),
    }
    if all(importlib.util.find_spec(package) for package in ("onnxruntime", "onnxscript")):
        runtimes["onnxruntime"] = OnnxRuntime(control, threads)
    return runtimes


def _in_form_of(model: CompressedMLP, like: CompressedMLP) -> CompressedMLP:
    """``model``'s layers run in the form ``like`` runs in (its layouts, fused or not, tiled or not)."""
    if isinstance(like, TiledMLP):
        return tiled(model, like.layouts, like.depth, like.sparse_inputs)
    if like.fused:
        return model.fuse(like.layouts, sparse_inputs=like.sparse_inputs)
    return model.with_layouts(like.layouts)


def fastest_form(model: CompressedMLP, batch: int, threads: int = 1, sample: Tensor | None = None,
                 seconds: float = TIMING_CHOICE_SECONDS, also: Iterable[CompressedMLP] = ()) -> CompressedMLP:
    """``model`` in the form fastest at ``batch`` inputs of ``sample`` (as :func:`tdlib.compress.timing_inputs`
    takes them; uniform random numbers without one) on ``threads`` threads, among: what
    :func:`tdlib.compress.fastest_tiled` picks (timing each candidate once, one after another), the chain in
    its compact layouts (by rows, and with a dense first layer by columns), the same as tiled models
    (:class:`tdlib.compress.TiledMLP`: at a batch of one, the same kernel on aligned arrays) or, at larger
    batches, tiled in each of :func:`tdlib.compress.tiled.tiled_forms`, and ``model``'s layers in the form of
    each of ``also``. These are timed against each other in paired rounds
    (:func:`tdlib.compress.paired_seconds`, ``seconds`` each), so that a drift of the machine while they are
    timed cannot pick a slower one, as it can one after another."""
    choice = partial(median_seconds, min_run_time=seconds / 3)
    first = model.linears[0].weight
    at = timing_inputs(sample, batch, model.shapes[0][1], first)
    candidates = [fastest_tiled(model, batch, threads, choice, sample=sample),
                  *(_in_form_of(model, like) for like in also)]
    if Chain.runs(first):
        compact = compact_layouts(model.linears)
        by_columns = [False, True] if compact[0] == "dense" else [False]
        candidates += [model.fuse(compact, sparse_inputs=s) for s in by_columns]
        # at a batch of one, the same chains run on aligned arrays
        candidates += tiled_forms(model) if batch > 1 else [tiled(model, compact, sparse_inputs=s) for s in by_columns]
    unique: dict[tuple, CompressedMLP] = {}
    for candidate in candidates:
        depth = getattr(candidate, "depth", None) if batch > 1 else None  # a batch of one makes no passes
        unique.setdefault((type(candidate), tuple(candidate.layouts), candidate.fused, candidate.sparse_inputs, depth),
                          candidate)
    forms = {str(i): candidate for i, candidate in enumerate(unique.values())}
    timed = paired_seconds(forms, at, threads, seconds, rounds=7)
    return forms[min(timed, key=lambda name: statistics.median(timed[name]))]


@torch.no_grad()
def timings(model: MLP, pruned: Mapping[str, CompressedMLP], batch: int, images: Tensor, threads: int = 1,
            sample: Tensor | None = None, seconds: float = TIMING_SECONDS, rounds: int = TIMING_ROUNDS,
            ) -> dict[str, Timing]:
    """Time each compressed model of ``pruned`` (compressions of the dense ``model``, by any names) against
    the dense runtimes (:func:`dense_runtimes`), all in the same paired rounds
    (:func:`tdlib.compress.paired_seconds`), each for ``seconds`` over ``rounds`` rounds, on ``threads``
    threads, at ``batch`` inputs taken from ``images`` (N, in_features) as :func:`tdlib.compress.timing_inputs`
    takes them (at batch 1, the image with the median count of zeros).

    Each compressed model, and the control, runs in the form :func:`fastest_form` picks (a pruned model's
    candidates include the control's form: every layer dense can beat CSR at a density where the zeros are
    cheap to skip), chosen on ``sample`` (rows like the inputs, such as training images; default ``images``)
    with ``seconds * 3 / 20`` a candidate."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    sample = images if sample is None else sample
    choice = seconds * TIMING_CHOICE_SECONDS / TIMING_SECONDS
    x = timing_inputs(images, batch, model.layers[0].in_features, model.layers[0].weight)
    with eval_mode(model):
        runtimes: dict[str, Callable[[Tensor], object]] = dict(dense_runtimes(model, batch, threads, sample, choice))
        fast = {name: fastest_form(small, batch, threads, sample, choice, also=[runtimes["control"]])
                for name, small in pruned.items()}
        timed = paired_seconds({**runtimes, **{f"pruned:{name}": f for name, f in fast.items()}}, x, threads,
                               seconds, rounds)
    dense = {name: timed[name] for name in runtimes}
    return {name: Timing(batch, {**dense, "compressed": timed[f"pruned:{name}"]}, Form.of(model, f, batch))
            for name, f in fast.items()}
