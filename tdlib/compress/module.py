"""The compressed model: an ordinary ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``, with optional
inference backends that run the same weights faster.

As a module it is what any torch code expects: its ``state_dict()`` holds the weights, ``.to()`` moves
and casts it, it trains, and ``torch.compile`` and ``torch.onnx.export`` see plain linear layers.

For inference (no autograd), it runs through a *backend* when one is chosen, built from the current
weights:

- ``layouts``: each layer dense or CSR, activations flowing transposed, (features, batch), so that every
  layer is one ``addmm`` whose sparse operand comes first, the form torch's CSR kernels are fast in;
- ``fused``: the whole chain as CSR in one compiled call (:mod:`tdlib.compress.chain`; CPU, float32).

A backend is rebuilt when the weights change in place (an optimizer step, ``load_state_dict``) and
dropped when the module is moved or cast; while compiling, tracing or exporting, and whenever autograd
records, the module runs as the plain ``nn.Sequential`` it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from tdlib.compress.chain import Chain

Layout = Literal["dense", "csr"]
LAYOUTS: tuple[Layout, ...] = ("dense", "csr")


@contextmanager
def csr_quietly() -> Iterator[None]:
    """Torch warns that CSR support is beta on every CSR tensor it makes; CSR is what we want here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


@dataclass(frozen=True)
class Step:
    """One layer of the transposed backend: (in, batch) activations to (out, batch)."""

    weight: Tensor  # (out, in), strided or sparse CSR
    bias: Tensor | None  # (out,)
    relu: bool

    @property
    def layout(self) -> Layout:
        return "csr" if self.weight.layout == torch.sparse_csr else "dense"

    @property
    def stored(self) -> int:
        """Numbers the weight holds: its non-zeros when CSR, every entry when dense."""
        return self.weight.values().numel() if self.layout == "csr" else self.weight.numel()

    @classmethod
    def of(cls, linear: nn.Linear, relu: bool, layout: Layout) -> Step:
        weight = linear.weight.detach()
        if layout == "csr":
            with csr_quietly():
                weight = weight.to_sparse_csr()
        return cls(weight, None if linear.bias is None else linear.bias.detach(), relu)

    def __call__(self, h: Tensor) -> Tensor:
        out = self.weight @ h if self.bias is None else torch.addmm(self.bias.unsqueeze(1), self.weight, h)
        return out.relu_() if self.relu else out


class CompressedMLP(nn.Sequential):
    """``nn.Linear`` layers, each but the last followed by ``nn.ReLU`` unless it is linear; inputs
    (batch, in_features) or (in_features,), logits (batch, classes) or (classes,).

    ``layouts`` (one per linear layer) and ``fused`` choose the inference backend (see the module doc);
    all-dense and unfused is the plain module.
    """

    def __init__(self, linears: Sequence[nn.Linear], relus: Sequence[bool],
                 layouts: Sequence[Layout] | None = None, fused: bool = False) -> None:
        if len(linears) != len(relus) or not linears:
            raise ValueError(f"{len(linears)} linear layers and {len(relus)} ReLU flags: one flag per layer")
        modules: list[nn.Module] = []
        for linear, relu in zip(linears, relus):
            modules += [linear, nn.ReLU()] if relu else [linear]
        super().__init__(*modules)
        layouts = tuple(layouts) if layouts is not None else ("dense",) * len(linears)
        if isinstance(layouts, str) or len(layouts) != len(linears) or not set(layouts) <= set(LAYOUTS):
            raise ValueError(f"layouts must give one of {LAYOUTS} for each of the {len(linears)} layers, "
                             f"got {layouts!r}")
        if fused:
            weight = linears[0].weight
            if weight.dtype != torch.float32 or weight.device.type != "cpu":
                raise ValueError(f"the fused chain runs float32 weights on the CPU, got {weight.dtype} on "
                                 f"{weight.device}")
        self._relus = tuple(bool(r) for r in relus)
        self._layouts: tuple[Layout, ...] = ("csr",) * len(linears) if fused else layouts
        self._fused = fused
        self._backend: object | None = None
        self._built_for: tuple = ()
        self.eval()  # made for inference; .train() for fine-tuning

    # ---------------------------------------------------------------- what it is

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    @property
    def relus(self) -> tuple[bool, ...]:
        return self._relus

    @property
    def fused(self) -> bool:
        return self._fused

    @property
    def layouts(self) -> list[Layout]:
        return list(self._layouts)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(linear.weight.shape) for linear in self.linears]  # type: ignore[misc]

    def parameter_count(self) -> int:
        """Parameters left, whatever the backend: the weights' non-zeros and every bias entry."""
        return sum(int(torch.count_nonzero(linear.weight)) + (0 if linear.bias is None else linear.bias.numel())
                   for linear in self.linears)

    def flops(self) -> int:
        """Multiply-adds per input as run: the non-zeros of CSR layers, every entry of dense ones."""
        return sum(int(torch.count_nonzero(linear.weight)) if layout == "csr" else linear.weight.numel()
                   for linear, layout in zip(self.linears, self._layouts))

    def with_layouts(self, layouts: Sequence[Layout]) -> CompressedMLP:
        """The same layers (shared, not copied) run with layer ``i`` in ``layouts[i]``, layer by layer."""
        return CompressedMLP(self.linears, self._relus, layouts)

    def fuse(self) -> CompressedMLP:
        """The same layers (shared) run as one compiled CSR chain (CPU, float32 only)."""
        return CompressedMLP(self.linears, self._relus, fused=True)

    # ---------------------------------------------------------------- running

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .double(), ...: the backend's tensors are stale
        self._backend, self._built_for = None, ()
        return super()._apply(fn, recurse)

    def _state(self) -> tuple:
        """What the backend was built from: each weight's identity and in-place version."""
        return tuple((id(p), p._version) for linear in self.linears for p in (linear.weight, linear.bias)
                     if p is not None)

    def _ensure_backend(self) -> object | None:
        if not self._fused and set(self._layouts) == {"dense"}:
            return None
        state = self._state()
        if self._backend is None or state != self._built_for:
            steps = [Step.of(linear, relu, layout) for linear, relu, layout
                     in zip(self.linears, self._relus, self._layouts)]
            if self._fused:
                self._backend = Chain.pack([s.weight for s in steps], [s.bias for s in steps], list(self._relus))
            else:
                self._backend = steps
            self._built_for = state
        return self._backend

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 1:
            return self(x.unsqueeze(0)).squeeze(0)
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return super().forward(x)
        backend = self._ensure_backend()
        if backend is None:
            return super().forward(x)
        if isinstance(backend, Chain):
            return backend(x).contiguous()
        h = x.T  # a view: dense kernels read it transposed in place
        for step in backend:  # type: ignore[attr-defined]
            h = step(h)
        return h.T.contiguous()
