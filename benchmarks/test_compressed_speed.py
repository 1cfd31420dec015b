"""What pruning buys at inference: compressed models against the dense model, in one run.

Each group holds one batch size and thread count; its baseline is the dense model. The pruned models
are the paper MLP with magnitude masks; timing does not depend on the trained values, so the masks are
taken on a freshly initialised network (its |w| ranks like a trained one's for this purpose). Each
compressed model runs in the form measured fastest for the group's batch and threads (each layer dense
or CSR, or the whole chain fused), except one row that runs every layer as a torch CSR product, for
comparison.
Targets (issue 4), read off the printed ratios, never asserted: unit-pruned speed-up >= 0.8 of the FLOP
ratio at batch 256; 99% weight pruning >= 5x faster than dense at batch 1.
"""

from __future__ import annotations

import pytest
import torch

from tdlib.compress import compress, dense_flops
from tdlib.metrics import masks_for
from tdlib.model import MLP
from tdlib.prune import install_with_torch_prune

CASES = [
    ("dense", None, 0, "dense"),
    *[(f"torch.prune-masked, weight {k}%", "masked", k, "dense") for k in (90, 99)],
    *[(f"unit {k}%", "unit", k, "fastest") for k in (50, 80, 90)],
    *[(f"weight {k:g}%", "weight", k, "fastest") for k in (90, 95, 99, 99.1)],
    ("weight 99%, CSR everywhere", "weight", 99, "csr"),
]


@pytest.fixture(scope="module")
def model() -> MLP:
    torch.manual_seed(0)
    return MLP().eval()


@pytest.mark.parametrize("threads", [1, torch.get_num_threads()], ids=lambda t: f"{t}thread")
@pytest.mark.parametrize("batch", [1, 256], ids=lambda b: f"batch{b}")
@pytest.mark.parametrize(("name", "kind", "k", "layout"), CASES, ids=[c[0] for c in CASES])
def test_inference(benchmark, model: MLP, name: str, kind: str | None, k: float, layout: str, batch: int,
                   threads: int) -> None:
    if kind is None:
        net = model
    elif kind == "masked":
        net = install_with_torch_prune(model, masks_for(model, "weight", k)).eval()
    else:
        net = compress(model, masks_for(model, kind, k), layout, batch=batch, threads=threads)
        benchmark.extra_info["layouts"] = ["fused"] if net.fused else net.layouts
    x = torch.rand(batch, 784)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    benchmark.group = f"inference, batch {batch}, {threads} thread(s)"
    benchmark.extra_info["baseline"] = kind is None
    if kind not in (None, "masked"):
        benchmark.extra_info["flop_ratio"] = dense_flops(model) / net.flops()
    try:
        with torch.no_grad():
            benchmark(net, x)
    finally:
        torch.set_num_threads(previous)
