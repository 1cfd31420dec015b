"""The compressed model: an ordinary ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``, with optional
inference backends that run the same weights faster.

As a module it is what any torch code expects: its ``state_dict()`` holds the weights, ``.to()`` moves
and casts it, it trains, and ``torch.compile`` and ``torch.onnx.export`` see plain linear layers.

For inference (no autograd), it runs through a *backend* when one is chosen, built from the current
weights:

- ``layouts``: each layer dense or CSR, activations flowing transposed, (features, batch), so that every
  layer is one ``addmm`` whose sparse operand comes first, the form torch's CSR kernels are fast in;
- ``fused``: the whole chain in one compiled call, each layer dense or CSR as ``layouts`` says
  (:mod:`tdlib.compress.chain`; float32 on the CPU, and layer by layer otherwise, after a cast or a
  move); with ``sparse_inputs``, a dense first layer is held by columns and skips the inputs that are 0
  (faster on images with a blank background, slower on others).

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


def csr_is_smaller(weight: Tensor) -> bool:
    """Whether ``weight`` (out, in) takes fewer bytes as CSR with int32 indices (a value and a column
    index per non-zero, a pointer per row, plus one) than dense."""
    rows, cols = weight.shape
    nonzero = int(torch.count_nonzero(weight))
    return nonzero * (weight.element_size() + 4) + (rows + 1) * 4 < rows * cols * weight.element_size()


def compact_layouts(linears: Sequence[nn.Linear]) -> tuple[Layout, ...]:
    """Per layer, the smaller form (:func:`csr_is_smaller`): ``"csr"`` or ``"dense"``."""
    return tuple("csr" if csr_is_smaller(linear.weight) else "dense" for linear in linears)


class CompressedMLP(nn.Sequential):
    """``nn.Linear`` layers, each but the last followed by ``nn.ReLU`` unless it is linear; inputs
    (batch, in_features) or (in_features,), logits (batch, classes) or (classes,).

    ``layouts`` (one per linear layer), ``fused`` and ``sparse_inputs`` (fused only) choose the inference
    backend (see the module doc); all-dense and unfused is the plain module. Fused without ``layouts``,
    each layer is held in the form that takes fewer bytes (:func:`compact_layouts`).
    """

    def __init__(self, linears: Sequence[nn.Linear], relus: Sequence[bool],
                 layouts: Sequence[Layout] | None = None, fused: bool = False, sparse_inputs: bool = False) -> None:
        if len(linears) != len(relus) or not linears:
            raise ValueError(f"{len(linears)} linear layers and {len(relus)} ReLU flags: one flag per layer")
        modules: list[nn.Module] = []
        for linear, relu in zip(linears, relus):
            modules += [linear, nn.ReLU()] if relu else [linear]
        super().__init__(*modules)
        if layouts is None:
            layouts = compact_layouts(linears) if fused else ("dense",) * len(linears)
        layouts = tuple(layouts)
        if isinstance(layouts, str) or len(layouts) != len(linears) or not set(layouts) <= set(LAYOUTS):
            raise ValueError(f"layouts must give one of {LAYOUTS} for each of the {len(linears)} layers, "
                             f"got {layouts!r}")
        if sparse_inputs and (not fused or layouts[0] != "dense"):
            raise ValueError("sparse_inputs is a form of the fused chain's dense first layer; it needs fused=True "
                             f"and a dense first layer, got fused={fused} and layouts {list(layouts)}")
        if fused:
            weight = linears[0].weight
            if not Chain.runs(weight):
                raise ValueError(f"the fused chain runs float32 weights on the CPU, got {weight.dtype} on "
                                 f"{weight.device}")
        self._relus = tuple(bool(r) for r in relus)
        self._layouts: tuple[Layout, ...] = layouts
        self._fused = fused
        self._sparse_inputs = bool(sparse_inputs)
        self._plain = not fused and set(layouts) == {"dense"}  # no backend: the nn.Sequential itself
        self._backend: object | None = None
        self._built_for: tuple[tuple[nn.Module, ...], tuple[tuple[dict, str, Tensor | None, int], ...]] = ((), ())
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
    def sparse_inputs(self) -> bool:
        """Whether the fused chain's dense first layer is held by columns, to skip inputs that are 0."""
        return self._sparse_inputs

    @property
    def layouts(self) -> list[Layout]:
        return list(self._layouts)

    @property
    def form(self) -> str:
        """How it runs, in words: each layer's layout, fused or not, the first layer by columns or not."""
        layers = "/".join(self._layouts)
        if not self._fused:
            return f"layers {layers}"
        return f"fused, layers {layers}" + (", the first by columns" if self._sparse_inputs else "")

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [tuple(linear.weight.shape) for linear in self.linears]  # type: ignore[misc]

    def parameter_count(self) -> int:
        """Parameters left, whatever the backend: the weights' non-zeros and every bias entry."""
        return sum(int(torch.count_nonzero(linear.weight)) + (0 if linear.bias is None else linear.bias.numel())
                   for linear in self.linears)

    def flops(self) -> int:
        """Multiply-adds per input as run: the non-zeros of CSR layers, every entry of dense ones (at
        batch 1 a layer the chain holds by columns skips its inputs that are 0, and does fewer)."""
        return sum(int(torch.count_nonzero(linear.weight)) if layout == "csr" else linear.weight.numel()
                   for linear, layout in zip(self.linears, self._layouts))

    def with_layouts(self, layouts: Sequence[Layout]) -> CompressedMLP:
        """The same layers (shared, not copied) run layer by layer, layer ``i`` in ``layouts[i]``, whatever
        form this model runs in (:meth:`fuse` for the chain)."""
        return CompressedMLP(self.linears, self._relus, layouts)

    def fuse(self, layouts: Sequence[Layout] | None = None, sparse_inputs: bool = False) -> CompressedMLP:
        """The same layers (shared) run as one compiled chain (CPU, float32 only), layer ``i`` in
        ``layouts[i]``, by default the form that stores fewer numbers; a dense first layer by columns if
        ``sparse_inputs``."""
        return CompressedMLP(self.linears, self._relus, layouts, fused=True, sparse_inputs=sparse_inputs)

    # ---------------------------------------------------------------- running

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .double(), ...: the backend's tensors are stale
        self._backend = None
        return super()._apply(fn, recurse)

    def _watch(self) -> tuple[tuple[nn.Module, ...], tuple[tuple[dict, str, Tensor | None, int], ...]]:
        """What a backend is built from: the modules, in order, and each of their parameters (in their
        module's dictionary) with its in-place version (-1 for a parameter that is None, a missing bias)."""
        modules = tuple(self._modules.values())
        parameters = tuple((module._parameters, name, p, -1 if p is None else p._version) for module in modules
                           for name, p in module._parameters.items())
        return modules, parameters

    def _stale(self) -> bool:
        """Whether a module or parameter was replaced or changed in place since the backend was built.
        It runs at every call, so it is kept to one tuple and a loop over the parameters (a microsecond at
        batch 1 is a tenth of the time)."""
        modules, parameters = self._built_for
        if tuple(self._modules.values()) != modules:  # by identity: modules do not define __eq__
            return True
        for dictionary, name, p, version in parameters:
            if dictionary.get(name) is not p or (version >= 0 and p._version != version):
                return True
        return False

    def _ensure_backend(self) -> object | None:
        if self._plain:
            return None
        if self._backend is None or self._stale():
            steps = [Step.of(linear, relu, layout) for linear, relu, layout
                     in zip(self.linears, self._relus, self._layouts)]
            weight = steps[0].weight
            if self._fused and Chain.runs(weight):
                self._backend = Chain.pack([s.weight for s in steps], [s.bias for s in steps], list(self._relus),
                                           self._sparse_inputs)
            else:
                self._backend = steps
            self._built_for = self._watch()
        return self._backend

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 1:
            return self(x.unsqueeze(0)).squeeze(0)
        if self._plain or torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return super().forward(x)
        backend = self._ensure_backend()
        if isinstance(backend, Chain):
            return backend(x)
        h = x.T  # a view: dense kernels read it transposed in place
        for step in backend:  # type: ignore[attr-defined]
            h = step(h)
        return h.T.contiguous()
