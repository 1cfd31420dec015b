"""The compiled chain (each layer dense or CSR) computes what torch computes layer by layer, and refuses what
it cannot run."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tdlib.compress.chain import COLUMNS, DENSE, DEPTH, HALF, PANEL, TILE, Chain


def csr(rows: int, cols: int, density: float, generator: torch.Generator) -> torch.Tensor:
    dense = torch.randn(rows, cols, generator=generator) * (torch.rand(rows, cols, generator=generator) < density)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CSR support is in beta"
        return dense.to_sparse_csr()


@pytest.mark.parametrize("tiled", [False, True], ids=["by features", "by rows, tiled"])
@pytest.mark.parametrize("forms", ["csr", "dense", "mixed"])
@pytest.mark.parametrize("batch", [1, 3, 17, 64])
def test_the_chain_equals_torch_layer_by_layer(batch: int, forms: str, tiled: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (0, 7), (4, 0), (3, 4), (6, 3), (2, 6)]  # a layer with no units left, and one with no inputs
    weights = [csr(rows, cols, 0.5, generator) for rows, cols in shapes]
    if forms != "csr":
        weights = [w.to_dense() if forms == "dense" or i % 2 else w for i, w in enumerate(weights)]
    biases = [torch.randn(7, generator=generator), None, torch.randn(4, generator=generator), None,
              torch.randn(6, generator=generator), torch.randn(2, generator=generator)]
    relus = [True, True, False, False, True, False]
    x = torch.randn(batch, 5, generator=generator)
    x[0, 1] = 0.0  # an input the matrix-vector kernel skips
    expected = x
    for w, b, relu in zip(weights, biases, relus):
        expected = (w @ expected.T).T + (0 if b is None else b)
        expected = expected.relu() if relu else expected
    chain = Chain.pack(weights, biases, relus, tiled=tiled)
    out = chain(x)
    assert out.shape == (batch, 2)
    assert torch.allclose(out, expected, atol=1e-5)
    strided = torch.stack([x, x], dim=2)[..., 0]  # the same inputs, every other float
    assert not strided.is_contiguous() and torch.allclose(chain(strided), expected, atol=1e-5)


@pytest.mark.parametrize("sparse_inputs", [False, True])
@pytest.mark.parametrize("batch", [1, 5])
def test_wide_dense_layers_after_relus_equal_torch(batch: int, sparse_inputs: bool) -> None:
    """Dense layers after a ReLU, and the first if its inputs are said to be sparse, are held by columns;
    at batch 1 their kernel skips inputs that are 0 and takes the others four at a time (and a
    remainder): the result is torch's all the same."""
    generator = torch.Generator().manual_seed(1)
    shapes = [(41, 23), (37, 41), (13, 37), (3, 13)]
    weights = [torch.randn(rows, cols, generator=generator) for rows, cols in shapes]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    relus = [True, True, True, False]
    chain = Chain.pack(weights, biases, relus, sparse_inputs)
    assert chain.forms == [COLUMNS if sparse_inputs else DENSE, COLUMNS, COLUMNS, COLUMNS]
    for trial in range(20):
        x = torch.randn(batch, 23, generator=generator) * (torch.rand(batch, 23, generator=generator) < trial / 20)
        expected = x
        for w, b, relu in zip(weights, biases, relus):
            expected = F.linear(expected, w, b)
            expected = expected.relu() if relu else expected
        assert torch.allclose(chain(x), expected, atol=1e-4, rtol=1e-5)


WIDTHS = [1, 15, 16, 17, PANEL - 1, PANEL, PANEL + 1, PANEL + 16, PANEL + 17, 3 * PANEL + 5, DEPTH + 3]


@settings(max_examples=40, deadline=None, database=None)
@given(widths=st.lists(st.sampled_from(WIDTHS), min_size=2, max_size=4),
       batch=st.sampled_from([1, 2, TILE - 1, TILE, TILE + 1, 2 * TILE + 3, 64]), csr_every=st.sampled_from([0, 2, 3]),
       seed=st.integers(0, 2**16))
def test_a_batch_by_rows_through_the_tiled_kernel_equals_torch(widths: list[int], batch: int, csr_every: int,
                                                                seed: int) -> None:
    """Every edge of the tiles: output widths around a panel and half a panel, inputs past one pass of
    DEPTH features, batches around a tile of TILE rows (and of one, which runs by features), CSR layers
    between dense ones, layers with and without a bias or a ReLU."""
    generator = torch.Generator().manual_seed(seed)
    shapes = list(zip(widths[1:], widths[:-1]))
    weights = [csr(rows, cols, 0.3, generator) if csr_every and i % csr_every == 1 else
               torch.randn(rows, cols, generator=generator) for i, (rows, cols) in enumerate(shapes)]
    biases = [torch.randn(rows, generator=generator) if i % 2 == 0 else None for i, (rows, _) in enumerate(shapes)]
    relus = [i % 3 != 1 for i in range(len(shapes))]
    x = torch.randn(batch, widths[0], generator=generator).relu()  # half of them 0, as after a ReLU
    expected = x
    for w, b, relu in zip(weights, biases, relus):
        expected = (w @ expected.T).T + (0 if b is None else b)
        expected = expected.relu() if relu else expected
    out = Chain.pack(weights, biases, relus, tiled=True)(x)
    assert out.shape == expected.shape and out.is_contiguous()
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_what_the_kernel_cannot_run_is_named() -> None:
    weight = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"layer 0: the chain kernel runs dense or CSR float32 weights on the CPU, "
                                         r"got torch\.strided torch\.float64"):
        Chain.pack([weight], [None], [False])
    square = csr(3, 3, 1.0, torch.Generator())
    with pytest.raises(ValueError, match="layer 1 takes 4 inputs, layer 0 gives 3"):
        Chain.pack([square, csr(2, 4, 1.0, torch.Generator())], [None, None], [False, False])
    chain = Chain.pack([square], [None], [False])
    with pytest.raises(ValueError, match=r"float32 inputs on the CPU, got torch\.float64"):
        chain(torch.ones(2, 3, dtype=torch.float64))
    for wrong in (torch.ones(2, 2), torch.ones(2, 4), torch.ones(3)):  # the kernel would read out of bounds
        with pytest.raises(ValueError, match=r"inputs must be \(batch, 3\)"):
            chain(wrong)


def test_the_tiled_kernel_gives_the_same_bits_on_two_threads() -> None:
    """On more than one torch thread, dense layers of a batch run on numba's threads, panel by panel: each
    output is summed in the same order, so the bits are those of one thread; torch's count is left alone."""
    generator = torch.Generator().manual_seed(2)
    shapes = [(3 * PANEL + HALF, DEPTH + 5), (PANEL, 3 * PANEL + HALF), (3, PANEL)]
    weights = [torch.randn(rows, cols, generator=generator) for rows, cols in shapes]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    chain = Chain.pack(weights, biases, [True, True, False], tiled=True)
    x = torch.randn(2 * TILE + 3, DEPTH + 5, generator=generator)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = chain(x)
        torch.set_num_threads(2)
        two = chain(x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, two)
    expected = x
    for w, b, relu in zip(weights, biases, [True, True, False]):
        expected = F.linear(expected, w, b)
        expected = expected.relu() if relu else expected
    assert torch.allclose(two, expected, atol=1e-4, rtol=1e-4)
