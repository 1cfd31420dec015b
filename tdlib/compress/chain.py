"""A whole chain of CSR linear layers run in one compiled call (numba; CPU, float32).

A torch CSR product costs 10-20 us per call whatever its size, more than the arithmetic of a
99%-sparse layer at batch 1, and more again on several threads. One call for the whole network pays
that once. :func:`tdlib.compress.compress` uses a :class:`Chain` where it measures faster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit
from torch import Tensor


@njit(cache=True)
def _run(h, rows, crow, crow_start, col, values, nnz_start, bias, bias_start, relu):  # pragma: no cover
    """Activations ``h`` (in, batch) float32 through each layer ``l``: CSR rows ``crow[crow_start[l]:]``
    (indices relative to ``nnz_start[l]``), bias ``bias[bias_start[l]:]``, ReLU if ``relu[l]``."""
    for layer in range(rows.shape[0]):
        batch = h.shape[1]
        out = np.empty((rows[layer], batch), np.float32)
        for r in range(rows[layer]):
            b = bias[bias_start[layer] + r]
            start = nnz_start[layer] + crow[crow_start[layer] + r]
            stop = nnz_start[layer] + crow[crow_start[layer] + r + 1]
            if batch == 1:  # a dot product: no inner loop, no stores until the end
                acc = b
                for p in range(start, stop):
                    acc += values[p] * h[col[p], 0]
                out[r, 0] = max(acc, np.float32(0.0)) if relu[layer] else acc
                continue
            for j in range(batch):
                out[r, j] = b
            for p in range(start, stop):
                v = values[p]
                c = col[p]
                for j in range(batch):  # contiguous in j: vectorised
                    out[r, j] += v * h[c, j]
            if relu[layer]:
                for j in range(batch):
                    out[r, j] = max(out[r, j], np.float32(0.0))
        h = out
    return h


def _starts(sizes: np.ndarray) -> np.ndarray:
    """Where each of consecutive blocks of ``sizes`` (layers,) begins in their concatenation: (layers,) int64."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


@dataclass(frozen=True)
class Chain:
    """The layers of a network packed into flat arrays, one entry or slice per layer."""

    inputs: int  # input features of the first layer
    rows: np.ndarray  # (layers,) int64: output units of each layer
    crow: np.ndarray  # (sum(rows) + layers,) int64: each layer's CSR row pointers, concatenated
    crow_start: np.ndarray  # (layers,) int64
    col: np.ndarray  # (nnz,) int64
    values: np.ndarray  # (nnz,) float32
    nnz_start: np.ndarray  # (layers,) int64
    bias: np.ndarray  # (sum(rows),) float32, zeros for a layer without bias
    bias_start: np.ndarray  # (layers,) int64
    relu: np.ndarray  # (layers,) bool

    @classmethod
    def pack(cls, weights: list[Tensor], biases: list[Tensor | None], relus: list[bool]) -> Chain:
        """From CSR weights (out, in) float32 on the CPU, biases (out,) or None, and ReLU flags."""
        for i, w in enumerate(weights):
            if w.layout != torch.sparse_csr or w.dtype != torch.float32 or w.device.type != "cpu":
                raise ValueError(f"layer {i}: the chain kernel runs CSR float32 weights on the CPU, got "
                                 f"{w.layout} {w.dtype} on {w.device}")
            if i and w.shape[1] != weights[i - 1].shape[0]:  # the kernel does not check its indices
                raise ValueError(f"layer {i} takes {w.shape[1]} inputs, layer {i - 1} gives {weights[i - 1].shape[0]}")
        rows = np.array([w.shape[0] for w in weights], np.int64)
        nnz = np.array([w.values().numel() for w in weights], np.int64)
        return cls(
            inputs=weights[0].shape[1],
            rows=rows,
            crow=np.concatenate([w.crow_indices().numpy().astype(np.int64) for w in weights]),
            crow_start=_starts(rows + 1),
            col=np.concatenate([w.col_indices().numpy().astype(np.int64) for w in weights]),
            values=np.concatenate([w.values().numpy() for w in weights]).astype(np.float32),
            nnz_start=_starts(nnz),
            bias=np.concatenate([
                np.zeros(w.shape[0], np.float32) if b is None else b.detach().numpy().astype(np.float32)
                for w, b in zip(weights, biases)
            ]),
            bias_start=_starts(rows),
            relu=np.array(relus, np.bool_),
        )

    def __call__(self, x: Tensor) -> Tensor:
        """Inputs (batch, in) float32 to outputs (batch, out)."""
        if x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError(f"the chain kernel takes float32 inputs on the CPU, got {x.dtype} on {x.device}")
        if x.dim() != 2 or x.shape[1] != self.inputs:  # the kernel does not check its indices
            raise ValueError(f"inputs must be (batch, {self.inputs}), got {tuple(x.shape)}")
        h = np.ascontiguousarray(x.detach().numpy().T)
        out = _run(h, self.rows, self.crow, self.crow_start, self.col, self.values, self.nnz_start, self.bias,
                   self.bias_start, self.relu)
        return torch.from_numpy(out).T
