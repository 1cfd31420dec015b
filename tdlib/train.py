"""The seeded training loop: Adam and cross-entropy over in-memory tensors.

Everything random (initialisation, data order, dropout) draws from torch's generator, seeded from the
run's seed. The loop owns that stream: it runs inside :func:`torch.random.fork_rng`, so the caller's
global generator is left as it was, and it sets the generator from :attr:`TrainState.rng` at the start
of every epoch, so nothing done between epochs (writing a checkpoint, a caller's ``on_epoch_end``) can
shift the draws of the next one. The state is part of a :class:`TrainState`, so a run resumed from any
epoch ends with the same bits as one that never stopped.

The number of torch threads changes the bits too (a matrix product splits its sums differently), so a
state also records the thread count it trains with: a run keeps the count it started with, and a run
resumed or continued in a process with another count trains on with the recorded one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from tdlib.adam import Adam
from tdlib.data import Data
from tdlib.dropout import add_targeted_dropout, set_progress
from tdlib.factories import plain_skeleton, untrained
from tdlib.metrics import evaluate
from tdlib.prune import prunable
from tdlib.spec import RunSpec


@dataclass
class TrainState:
    """Training after ``epoch`` epochs: the model (with its dropout), optimizer, RNG and history."""

    spec: RunSpec
    model: nn.Module
    optimizer: Adam
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    rng: Tensor = field(default_factory=torch.get_rng_state)  # the CPU generator's state after ``epoch``
    cuda_rng: Tensor | None = None  # the CUDA generator's, for a run on a GPU
    threads: int = field(default_factory=torch.get_num_threads)  # torch threads it trains with (they change bits)

    def state_dict(self) -> dict:
        saved = {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "rng": self.rng,
            "threads": self.threads,
        }
        if self.cuda_rng is not None:
            saved["cuda_rng"] = self.cuda_rng
        return saved

    def plain_model_state(self) -> dict[str, Tensor]:
        """The weights as the plain network's state dict (no dropout parametrizations), on the CPU."""
        return {name: value.cpu() for name, value in plain_state(self.model, self.spec).items()}


def _forked_rng(device: str) -> AbstractContextManager[None]:
    """Fork torch's generators (the CPU one, and the run's CUDA device if it trains there)."""
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    return torch.random.fork_rng(devices=devices)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Train with ``threads`` intra-op threads, then give the caller back its own count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seeded_model(spec: RunSpec) -> tuple[nn.Module, Tensor]:
    """The untrained model of ``spec`` (its registered network, with targeted dropout on every layer that
    pruning prunes, :func:`tdlib.prune.prunable`) and the generator state right after its initialisation.

    Drawn on a forked generator seeded with ``spec.seed``: the caller's global generator is untouched.
    """
    with _forked_rng("cpu"):
        torch.manual_seed(spec.seed)
        model = untrained(spec)
        if spec.targeted is not None:
            for _, layer in prunable(model):
                add_targeted_dropout(layer, spec.targeted)
        return model, torch.get_rng_state()


def build_model(spec: RunSpec) -> nn.Module:
    """The untrained model of ``spec``, its initialisation fixed by ``spec.seed``."""
    return _seeded_model(spec)[0]


def plain_state(model: nn.Module, spec: RunSpec) -> dict[str, Tensor]:
    """The weights of ``model`` (a network of ``spec`` in training) with no dropout of any kind, as the plain
    network's ``state_dict`` (a parametrized tensor's ``original``): what is evaluated, pruned and saved.

    The plain network is built on the meta device, for its names and their order alone, so nothing here
    draws a random number: taking the weights mid-training cannot disturb the run's generator.
    """
    state = {}
    for key in plain_skeleton(spec).state_dict():
        owner, _, name = key.rpartition(".")
        module = model.get_submodule(owner)
        if parametrize.is_parametrized(module, name):
            tensor = module.parametrizations[name].original
        else:
            tensor = getattr(module, name)
        state[key] = tensor.detach().clone()
    return state


def initial_state(spec: RunSpec) -> TrainState:
    """The state before the first step."""
    model, rng = _seeded_model(spec)
    model = model.to(spec.device)
    optimizer = Adam(model.parameters(), lr=spec.lr)
    return TrainState(spec, model, optimizer, rng=rng)


def restore_state(spec: RunSpec, saved: dict) -> TrainState:
    """A :class:`TrainState` from :meth:`TrainState.state_dict` output."""
    state = initial_state(spec)
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.epoch, state.history, state.rng = saved["epoch"], list(saved["history"]), saved["rng"].cpu()
    state.cuda_rng = saved["cuda_rng"].cpu() if "cuda_rng" in saved else None
    state.threads = int(saved.get("threads", state.threads))
    return state


def train(
    state: TrainState,
    data: Data,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    progress: bool = True,
) -> TrainState:
    """Train ``state`` up to ``state.spec.epochs`` epochs; ``on_epoch_end`` sees each new epoch's state."""
    spec, model = state.spec, state.model
    x, y = data.train_x.to(spec.device), data.train_y.to(spec.device)
    test_x, test_y = data.test_x.to(spec.device), data.test_y.to(spec.device)
    steps_per_epoch = math.ceil(len(y) / spec.batch_size)
    total_steps = steps_per_epoch * spec.epochs
    model.train()
    bar = tqdm(range(state.epoch, spec.epochs), initial=state.epoch, total=spec.epochs,
               desc=f"{spec.condition} seed {spec.seed}", unit="epoch", disable=not progress, leave=False)
    with _forked_rng(spec.device), _torch_threads(state.threads):
        for epoch in bar:
            _train_epoch(state, epoch, x, y, test_x, test_y, steps_per_epoch, total_steps)
            bar.set_postfix(loss=f"{state.history[-1]['train_loss']:.4f}",
                            acc=f"{state.history[-1]['test_accuracy']:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(state)
    return state


def _train_epoch(
    state: TrainState, epoch: int, x: Tensor, y: Tensor, test_x: Tensor, test_y: Tensor,
    steps_per_epoch: int, total_steps: int,
) -> None:
    """One epoch from ``state.rng``; ``state`` afterwards holds epoch ``epoch + 1``."""
    spec, model, optimizer = state.spec, state.model, state.optimizer
    torch.set_rng_state(state.rng)  # the epoch's draws depend on the state alone, never on what ran between
    if spec.device.startswith("cuda"):  # untested here (no GPU): dropout on CUDA draws from its own generator
        if state.cuda_rng is None:
            torch.cuda.manual_seed(spec.seed)
        else:
            torch.cuda.set_rng_state(state.cuda_rng, spec.device)
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
    if spec.device.startswith("cuda"):
        state.cuda_rng = torch.cuda.get_rng_state(spec.device)
    state.history.append({
        "epoch": epoch + 1,
        "train_loss": float(total_loss) / len(y),
        "test_accuracy": accuracy,
        "seconds": time.perf_counter() - started,
    })
