"""Choosing how a compressed model runs, by measuring: layer by layer through torch or as one compiled
chain, and each layer dense or CSR.

Which wins depends on the layer's shape and density, the batch size and the thread count (a 10x200 layer
at 1% density runs faster dense at batch 1 and as CSR at batch 256), so it is measured rather than
guessed from the density.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils import benchmark

from tdlib.compress.chain import Chain
from tdlib.compress.module import LAYOUTS, CompressedMLP, Layout, Step

Seconds = Callable[[Callable[[Tensor], Tensor], Tensor, int | None], float]


def median_seconds(fn: Callable[[Tensor], Tensor], x: Tensor, threads: int | None = None,
                   min_run_time: float = 0.05) -> float:
    """Median wall time of one ``fn(x)`` without autograd on ``threads`` threads (default: torch's current
    count), by ``torch.utils.benchmark`` (blocks of calls for at least ``min_run_time`` seconds; CUDA
    work is synchronised, so the work is timed, not its launch). The caller's thread count is kept."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    timer = benchmark.Timer(stmt="fn(x); sync()", globals={"fn": fn, "x": x, "sync": sync},
                            num_threads=threads or torch.get_num_threads())
    with torch.no_grad():
        return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def _quick_seconds(fn: Callable[[Tensor], Tensor], x: Tensor, threads: int | None) -> float:
    return median_seconds(fn, x, threads, min_run_time=0.02)  # enough to tell layouts apart where it matters


def _layer_step(linear: nn.Linear, relu: bool, layout: Layout, fused: bool, after_relu: bool
                ) -> Callable[[Tensor], Tensor]:
    """One layer run in ``layout``: a torch step, or if ``fused`` the layer alone as a compiled chain."""
    step = Step.of(linear, relu, layout)
    return Chain.pack([step.weight], [step.bias], [relu], after_relu) if fused else step


def fastest_layouts(model: CompressedMLP, batch: int, threads: int | None = None,
                    seconds: Seconds = _quick_seconds, fused: bool = False) -> list[Layout]:
    """Per layer, the layout whose step ``seconds`` measures fastest on ``batch`` inputs of the layer's
    dtype: a torch step on (in, ``batch``) activations (for the first layer, the transposed view the
    model's forward gives it), or, if ``fused``, the layer alone as a compiled chain (CPU, float32)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    chosen: list[Layout] = []
    for i, (linear, relu) in enumerate(zip(model.linears, model.relus)):
        weight = linear.weight
        if fused:
            h = torch.rand(batch, weight.shape[1])
        else:
            shape = (batch, weight.shape[1]) if i == 0 else (weight.shape[1], batch)
            h = torch.rand(shape, dtype=weight.dtype, device=weight.device)
            h = h.T if i == 0 else h
        after_relu = i > 0 and model.relus[i - 1]
        steps = {layout: _layer_step(linear, relu, layout, fused, after_relu) for layout in LAYOUTS}
        chosen.append(min(LAYOUTS, key=lambda layout: seconds(steps[layout], h, threads)))
    return chosen


def fastest(model: CompressedMLP, batch: int, threads: int | None = None,
            seconds: Seconds = _quick_seconds) -> CompressedMLP:
    """``model``'s layers run in the form ``seconds`` measures fastest at ``batch`` inputs on ``threads``
    threads: layer by layer through torch, or as one compiled chain where it can run (CPU, float32), each
    layer's layout chosen by :func:`fastest_layouts`."""
    layered = model.with_layouts(fastest_layouts(model, batch, threads, seconds))
    weight = model.linears[0].weight
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        return layered
    fused = model.fuse(fastest_layouts(model, batch, threads, seconds, fused=True))
    x = torch.rand(batch, model.shapes[0][1])
    return min((layered, fused), key=lambda candidate: seconds(candidate, x, threads))
