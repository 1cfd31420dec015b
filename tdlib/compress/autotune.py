"""Choosing how a compressed model runs, by measuring: layer by layer through torch or as one compiled
chain, each layer dense or CSR, and in the chain a dense first layer by rows or by columns.

Which wins depends on the layer's shape and density, the batch size and the thread count (a 10x200 layer
at 1% density runs faster dense at batch 1 and as CSR at batch 256), and on the inputs: at batch 1 a
layer held by columns skips the inputs that are 0, as half of a ReLU's outputs and half the pixels of a
Fashion-MNIST image are. So it is measured, on a sample of real inputs where one is given, rather than
guessed from the density.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from tdlib.compress.chain import Chain, inputs_often_zero
from tdlib.compress.module import LAYOUTS, CompressedMLP, Layout, Step

Seconds = Callable[[Callable[[Tensor], Tensor], Tensor, int | None], float]


def median_seconds(fn: Callable[[Tensor], Tensor], x: Tensor, threads: int | None = None,
                   min_run_time: float = 0.05) -> float:
    """Median wall time of one ``fn(x)`` without autograd on ``threads`` threads (default: torch's current
    count), by ``torch.utils.benchmark`` (blocks of calls for at least ``min_run_time`` seconds; CUDA
    work is synchronised, so the work is timed, not its launch). The caller's thread count is kept."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    timer = _benchmark().Timer(stmt="fn(x); sync()", globals={"fn": fn, "x": x, "sync": sync},
                               num_threads=threads or torch.get_num_threads())
    with torch.no_grad():
        return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def paired_seconds(runtimes: Mapping[str, Callable[[Tensor], object]], x: Tensor, threads: int | None = None,
                   seconds: float = 1.0, rounds: int = 21, seed: int = 0) -> dict[str, tuple[float, ...]]:
    """Per-call wall times of each of ``runtimes`` on the CPU inputs ``x``, without autograd, on ``threads``
    threads (default: torch's current count; the caller's count is kept): one time per round, by name.

    After a first round that warms every runtime up, each of ``rounds`` rounds runs a block of back-to-back
    calls of each runtime, in an order shuffled anew each round (from ``seed``), so that no runtime always
    follows the same one (whose traces in the caches it would always meet); a runtime's blocks take about
    ``seconds / rounds`` each, and at least one call (its number of calls is set once, from its fastest of
    three warm calls). Timed in the same rounds, the runtimes share each round's state of the machine, so
    the ratio of two of them in one round cancels whatever drifts more slowly than a round (another process,
    the clock's frequency), and the spread of those ratios over rounds shows how far a figure can be
    trusted. The inputs are the same in every call: these are warm-cache timings, as of a model serving
    requests back to back.
    """
    if rounds < 1 or seconds <= 0:
        raise ValueError(f"rounds must be at least 1 and seconds positive, got {rounds} and {seconds}")
    names = list(runtimes)
    order = random.Random(seed)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        with torch.no_grad():
            calls = {name: max(1, round(seconds / rounds / max(_fastest_call(runtimes[name], x), 1e-7)))
                     for name in names}
            for r in range(-1, rounds):  # round -1 warms up, untimed
                for name in order.sample(names, len(names)):
                    fn, n = runtimes[name], calls[name]
                    started = time.perf_counter()
                    for _ in range(n):
                        fn(x)
                    if r >= 0:
                        times[name].append((time.perf_counter() - started) / n)
    finally:
        torch.set_num_threads(before)
    return {name: tuple(t) for name, t in times.items()}


def _fastest_call(fn: Callable[[Tensor], object], x: Tensor) -> float:
    """The shortest of three calls ``fn(x)`` after a first, untimed one, in seconds."""
    fn(x)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - started)
    return best


def _quick_seconds(fn: Callable[[Tensor], Tensor], x: Tensor, threads: int | None) -> float:
    return median_seconds(fn, x, threads, min_run_time=0.02)  # enough to tell layouts apart where it matters


def _layer_step(linear: nn.Linear, relu: bool, layout: Layout, fused: bool, often_zero: bool
                ) -> Callable[[Tensor], Tensor]:
    """One layer run in ``layout``: a torch step, or if ``fused`` the layer alone as a compiled chain
    (held by columns if dense and its inputs are ``often_zero``, as in the whole chain)."""
    step = Step.of(linear, relu, layout)
    return Chain.pack([step.weight], [step.bias], [relu], often_zero) if fused else step


def timing_inputs(sample: Tensor | None, batch: int, in_features: int, like: Tensor) -> Tensor:
    """The (``batch``, in_features) inputs a model is timed on, with ``like``'s dtype and device: uniform
    random numbers without a ``sample``; else, at batch 1, the sample's row with the median count of
    zeros (a typical one, where the time depends on how many inputs are 0), and at larger batches its
    first ``batch`` rows, cycled if it has fewer. A sample of one input may be (in_features,)."""
    if sample is None:
        return torch.rand(batch, in_features, dtype=like.dtype, device=like.device)
    if sample.dim() == 1:
        sample = sample.unsqueeze(0)
    if sample.dim() != 2 or sample.shape[1] != in_features or not len(sample):
        raise ValueError(f"the sample must be at least one input, (rows, {in_features}), got {tuple(sample.shape)}")
    if batch == 1:
        rows = (sample == 0).sum(1).argsort(stable=True)[len(sample) // 2].reshape(1)
    else:
        rows = torch.arange(batch, device=sample.device) % len(sample)
    return sample[rows].to(dtype=like.dtype, device=like.device)


def fastest_layouts(model: CompressedMLP, batch: int, threads: int | None = None,
                    seconds: Seconds = _quick_seconds, fused: bool = False, sample: Tensor | None = None,
                    sparse_inputs: bool = False) -> list[Layout]:
    """Per layer, the layout whose step ``seconds`` measures fastest at ``batch`` inputs: a torch step on
    (in, ``batch``) activations (for the first layer, the transposed view the model's forward gives it),
    or, if ``fused``, the layer alone as a compiled chain (CPU, float32), held as the whole chain would
    hold it (by columns where dense after a ReLU, and in the first layer if ``sparse_inputs``).

    Each layer is timed on the activations the layers before it make of the :func:`timing_inputs` (so a
    layer after a ReLU sees its zeros): of ``sample`` if given, else of uniform random numbers.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    first = model.linears[0].weight
    x = timing_inputs(sample, batch, first.shape[1], first)  # (batch, in)
    often_zero = inputs_often_zero(model.relus, sparse_inputs)
    chosen: list[Layout] = []
    with torch.no_grad():
        for i, (linear, relu) in enumerate(zip(model.linears, model.relus)):
            h = x if fused else x.T if i == 0 else x.T.contiguous()  # the backend's own (in, batch) activations
            steps = {layout: _layer_step(linear, relu, layout, fused, often_zero[i]) for layout in LAYOUTS}
            chosen.append(min(LAYOUTS, key=lambda layout: seconds(steps[layout], h, threads)))
            if i + 1 < len(model.linears):  # the next layer's inputs
                x = linear(x).relu_() if relu else linear(x)
    return chosen


def fastest(model: CompressedMLP, batch: int, threads: int | None = None,
            seconds: Seconds = _quick_seconds, sample: Tensor | None = None) -> CompressedMLP:
    """``model``'s layers run in the form ``seconds`` measures fastest at ``batch`` inputs on ``threads``
    threads: layer by layer through torch, or as one compiled chain where it can run (CPU, float32), each
    layer's layout chosen by :func:`fastest_layouts`.

    ``sample``: (rows, in_features) inputs like those the model will run on, such as a few hundred
    training images. Everything is then timed on them (see :func:`timing_inputs`), and the chain may
    hold a dense first layer by columns to skip the inputs that are 0 (about half the pixels of a
    Fashion-MNIST image), if that measures faster. Without one, on uniform random numbers, none of
    which is 0.
    """
    layered = model.with_layouts(fastest_layouts(model, batch, threads, seconds, sample=sample))
    weight = model.linears[0].weight
    if not Chain.runs(weight):
        return layered
    by_rows = fastest_layouts(model, batch, threads, seconds, fused=True, sample=sample)
    candidates = [layered, model.fuse(by_rows)]
    if sample is not None:  # the first layer alone decides whether holding it by columns pays
        first = CompressedMLP(model.linears[:1], model.relus[:1])
        by_columns = fastest_layouts(first, batch, threads, seconds, fused=True, sample=sample, sparse_inputs=True)
        if by_columns[0] == "dense":  # a CSR layer is never held by columns
            candidates.append(model.fuse(by_columns + by_rows[1:], sparse_inputs=True))
    x = timing_inputs(sample, batch, model.shapes[0][1], weight)
    return min(candidates, key=lambda candidate: seconds(candidate, x, threads))


def _benchmark():  # -> the module torch.utils.benchmark
    """``torch.utils.benchmark``, imported on first use without its one warning: it imports torch's C++
    extension builder, which warns about CUDA_HOME on every machine without a CUDA runtime, although
    nothing here builds an extension."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)
    return benchmark
