"""The seeded training loop: Adam and cross-entropy over in-memory tensors.

Everything random (initialisation, data order, dropout) draws from torch's global generator, seeded
from the run's seed; its state is part of a :class:`TrainState`, so a run resumed from a state ends
with the same bits as one that never stopped.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from tdlib.data import FashionMNIST
from tdlib.dropout import add_targeted_dropout, set_progress
from tdlib.model import MLP, eval_mode
from tdlib.spec import RunSpec


@dataclass
class TrainState:
    """Training after ``epoch`` epochs: the model (with its dropout), optimizer, RNG and history."""

    spec: RunSpec
    model: MLP
    optimizer: torch.optim.Adam
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    rng: Tensor = field(default_factory=torch.get_rng_state)

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "rng": self.rng,
        }

    def plain_model_state(self) -> dict[str, Tensor]:
        """The weights as a plain :class:`MLP` state dict (no dropout parametrizations)."""
        return {name: value.cpu() for name, value in plain_copy(self.model).state_dict().items()}


def build_model(spec: RunSpec) -> MLP:
    """The untrained model of ``spec``, its initialisation fixed by ``spec.seed``."""
    torch.manual_seed(spec.seed)
    model = MLP(spec.hidden, bias=spec.bias, dropout=spec.dropout)
    if spec.targeted is not None:
        for layer in model.hidden_layers:
            add_targeted_dropout(layer, spec.targeted)
    return model


def plain_copy(model: MLP) -> MLP:
    """A copy of ``model`` with no dropout of any kind: the network that is evaluated and pruned."""
    hidden = [layer.out_features for layer in model.hidden_layers]
    first, last = model.layers[0], model.layers[-1]
    plain = MLP(hidden, bias=first.bias is not None, in_features=first.in_features, n_classes=last.out_features)
    # A parametrized layer stores its trained tensor as "<layer>.parametrizations.<name>.original".
    state = {
        re.sub(r"\.parametrizations\.(\w+)\.original$", r".\1", name): value.detach().clone()
        for name, value in model.state_dict().items()
    }
    plain.load_state_dict(state)
    plain.linear_hidden = model.linear_hidden
    return plain


def initial_state(spec: RunSpec) -> TrainState:
    """The state before the first step."""
    model = build_model(spec).to(spec.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    return TrainState(spec, model, optimizer, rng=torch.get_rng_state())


def restore_state(spec: RunSpec, saved: dict) -> TrainState:
    """A :class:`TrainState` from :meth:`TrainState.state_dict` output."""
    state = initial_state(spec)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.epoch, state.history, state.rng = saved["epoch"], list(saved["history"]), saved["rng"].cpu()
    return state


@torch.no_grad()
def evaluate(model: MLP, x: Tensor, y: Tensor, batch_size: int = 10_000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``x`` (N, 784), ``y`` (N,)."""
    loss, correct = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(y), batch_size):
            logits = model(x[start : start + batch_size])
            target = y[start : start + batch_size]
            loss += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    return loss / len(y), correct / len(y)


def train(
    state: TrainState,
    data: FashionMNIST,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    progress: bool = True,
) -> TrainState:
    """Train ``state`` up to ``state.spec.epochs`` epochs; ``on_epoch_end`` sees each new epoch's state."""
    spec, model, optimizer = state.spec, state.model, state.optimizer
    x, y = data.train_x.to(spec.device), data.train_y.to(spec.device)
    test_x, test_y = data.test_x.to(spec.device), data.test_y.to(spec.device)
    steps_per_epoch = math.ceil(len(y) / spec.batch_size)
    total_steps = steps_per_epoch * spec.epochs
    torch.set_rng_state(state.rng)
    model.train()
    bar = tqdm(range(state.epoch, spec.epochs), initial=state.epoch, total=spec.epochs,
               desc=f"{spec.condition} seed {spec.seed}", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        order = torch.randperm(len(y)).to(spec.device)
        total_loss = torch.zeros((), device=spec.device)
        for step in range(steps_per_epoch):
            set_progress(model, (epoch * steps_per_epoch + step) / total_steps)
            batch = order[step * spec.batch_size : (step + 1) * spec.batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(batch)
        _, accuracy = evaluate(model, test_x, test_y)
        state.epoch = epoch + 1
        state.rng = torch.get_rng_state()
        state.history.append({
            "epoch": epoch + 1,
            "train_loss": float(total_loss) / len(y),
            "test_accuracy": accuracy,
            "seconds": time.perf_counter() - started,
        })
        bar.set_postfix(loss=f"{state.history[-1]['train_loss']:.4f}", acc=f"{accuracy:.4f}")
        if on_epoch_end is not None:
            on_epoch_end(state)
    return state
