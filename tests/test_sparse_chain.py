"""The compiled chain (each layer dense or CSR) computes what torch computes layer by layer, and refuses what
it cannot run."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tdlib.compress.chain import COLUMNS, DENSE, Chain


def csr(rows: int, cols: int, density: float, generator: torch.Generator) -> torch.Tensor:
    dense = torch.randn(rows, cols, generator=generator) * (torch.rand(rows, cols, generator=generator) < density)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CSR support is in beta"
        return dense.to_sparse_csr()


@pytest.mark.parametrize("forms", ["csr", "dense", "mixed"])
@pytest.mark.parametrize("batch", [1, 3, 64])
def test_the_chain_equals_torch_layer_by_layer(batch: int, forms: str) -> None:
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
    chain = Chain.pack(weights, biases, relus)
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
