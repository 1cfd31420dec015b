"""The writeup's ReLU MLP: 784-1000-1000-500-200-10, with or without biases."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise

import torch.nn.functional as F
from torch import Tensor, nn

PAPER_HIDDEN = (1000, 1000, 500, 200)


class MLP(nn.Module):
    """A fully connected ReLU network.

    ``layers[i]`` is an ``nn.Linear``; every layer but the last is a hidden layer followed by a ReLU
    (or the identity, for the layers in ``linear_hidden``) and, if ``dropout > 0``, standard dropout.
    Inputs are (batch, in_features); outputs are logits (batch, n_classes).
    """

    def __init__(
        self,
        hidden: Sequence[int] = PAPER_HIDDEN,
        bias: bool = True,
        in_features: int = 784,
        n_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be positive, got {tuple(hidden)!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        sizes = [in_features, *hidden, n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in pairwise(sizes))
        self.dropout = dropout
        self.linear_hidden: frozenset[int] = frozenset()

    @property
    def hidden_layers(self) -> list[nn.Linear]:
        """The prunable layers: every linear layer but the output layer."""
        return list(self.layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        """Logits (batch, n_classes) for inputs ``x`` (batch, in_features)."""
        return self._run(x, None)

    def hidden_activations(self, x: Tensor) -> list[Tensor]:
        """The output of each hidden layer after its activation, each (batch, width), for ``x``."""
        hidden: list[Tensor] = []
        self._run(x, hidden)
        return hidden

    def with_identity_activation(self, layer: int) -> MLP:
        """A copy in which hidden layer ``layer``'s ReLU is replaced by the identity."""
        if not 0 <= layer < len(self.layers) - 1:
            raise ValueError(f"layer must index a hidden layer in [0, {len(self.layers) - 2}], got {layer}")
        twin = copy.deepcopy(self)
        twin.linear_hidden = self.linear_hidden | {layer}
        return twin

    def _run(self, x: Tensor, hidden: list[Tensor] | None) -> Tensor:
        *body, head = self.layers
        for i, layer in enumerate(body):
            x = layer(x)
            if i not in self.linear_hidden:
                x = F.relu(x)
            if hidden is not None:
                hidden.append(x)
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        return head(x)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the duration, then back in the mode it was in (even on an error)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
