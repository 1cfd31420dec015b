"""The compiled CSR chain computes what torch computes layer by layer, and refuses what it cannot run."""

from __future__ import annotations

import warnings

import pytest
import torch

from tdlib.compress.chain import Chain


def csr(rows: int, cols: int, density: float, generator: torch.Generator) -> torch.Tensor:
    dense = torch.randn(rows, cols, generator=generator) * (torch.rand(rows, cols, generator=generator) < density)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CSR support is in beta"
        return dense.to_sparse_csr()


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_the_chain_equals_torch_layer_by_layer(batch: int) -> None:
    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (0, 7), (4, 0), (3, 4)]  # a layer with no units left, and one with no inputs
    weights = [csr(rows, cols, 0.5, generator) for rows, cols in shapes]
    biases = [torch.randn(7, generator=generator), None, torch.randn(4, generator=generator), None]
    relus = [True, True, False, False]
    x = torch.randn(batch, 5, generator=generator)
    expected = x
    for w, b, relu in zip(weights, biases, relus):
        expected = (w @ expected.T).T + (0 if b is None else b)
        expected = expected.relu() if relu else expected
    assert torch.allclose(Chain.pack(weights, biases, relus)(x), expected, atol=1e-5)


def test_what_the_kernel_cannot_run_is_named() -> None:
    weight = torch.eye(3)
    with pytest.raises(ValueError, match=r"layer 0: the chain kernel runs CSR float32 weights .* got torch\.strided"):
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
