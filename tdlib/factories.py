"""Registered factories: what the ``model`` and ``dataset`` names of a run description build.

A :class:`~tdlib.spec.RunSpec` names its network and its data by name, so that its key, its cache entry and
its archive say what was trained, and any process that knows the name (a local worker, a Slurm job, a later
session, ``python -m tdlib verify``) builds the same thing again. This study's MLP and Fashion-MNIST are
registered as ``"mlp"`` and ``"fashion-mnist"``, the defaults; a project registers its own beside its
claims::

    def small_cnn(spec: RunSpec) -> nn.Module:          # a module-level function (workers import it by name)
        return nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 16, 3, padding=1), ...)

    register_model(ModelFactory("small-cnn", "two conv layers and a classifier", small_cnn))

``build(spec)`` makes the untrained network; the trainer calls it with torch's generator seeded from the
run's seed, so it must draw its initial weights from that generator and from nothing else (no numpy, no
clock). Targeted dropout goes on the layers that pruning prunes (:func:`tdlib.prune.prunable`: every
``nn.Linear`` and convolution but the last ``nn.Linear``, the classifier). ``build`` also runs on torch's
``meta`` device, where a trained run's weights are loaded into the network it returns, so it must not
compute tensors' values (a plain ``nn.Module`` constructor never does). A data set's ``load(root)`` returns
a :class:`~tdlib.data.Data`; ``root`` is the run cache's data directory (None: the loader's own default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from tdlib.data import Data, load_fashion_mnist, locate
from tdlib.model import MLP
from tdlib.registry import Registry
from tdlib.spec import DEFAULT_DATASET, DEFAULT_MODEL, RunSpec


@dataclass(frozen=True)
class ModelFactory:
    """A named network: ``build(spec)`` returns the untrained ``nn.Module`` of a run (see the module)."""

    name: str
    description: str
    build: Callable[[RunSpec], nn.Module]


@dataclass(frozen=True)
class DataFactory:
    """A named data set: ``load(root)`` returns it whole (a run's :class:`~tdlib.spec.DataSpec` may take a
    subset); ``check(root)``, if given, raises :class:`~tdlib.data.DataError` in one line when the data
    cannot be had, and is called before any training starts."""

    name: str
    description: str
    load: Callable[[str | None], Data]
    check: Callable[[str | None], object] | None = None


MODELS: Registry[ModelFactory] = Registry("model", "model")
DATASETS: Registry[DataFactory] = Registry("data set", "dataset")


def register_model(factory: ModelFactory, replace: bool = False) -> ModelFactory:
    """Add ``factory`` to :data:`MODELS` (a second, different one of the same name is refused unless ``replace``)."""
    return MODELS.register(factory, replace)


def register_dataset(factory: DataFactory, replace: bool = False) -> DataFactory:
    """Add ``factory`` to :data:`DATASETS` (a second, different one of the same name is refused unless ``replace``)."""
    return DATASETS.register(factory, replace)


def mlp(spec: RunSpec) -> MLP:
    """The writeup's ReLU MLP, of ``spec.hidden`` widths, with biases if ``spec.bias``, and standard dropout of
    ``spec.dropout`` on its hidden units."""
    return MLP(spec.hidden, bias=spec.bias, dropout=spec.dropout)


register_model(ModelFactory(DEFAULT_MODEL, "ReLU MLP, 784 inputs, the run's hidden widths, 10 classes", mlp))
register_dataset(DataFactory(DEFAULT_DATASET, "Fashion-MNIST: 60,000 training and 10,000 test images, 28x28 "
                             "grey, flattened to 784 values in [0, 1]", load_fashion_mnist, locate))


def data_of(spec: RunSpec, root: str | None = None) -> Data:
    """The images ``spec`` trains and is tested on: its data set, or the subset its ``data`` names."""
    full = DATASETS.named(spec.dataset).load(root)
    d = spec.data
    return full if d.n_train is None and d.n_test is None else full.subset(d.n_train, d.n_test, d.seed)


def check_data(specs: list[RunSpec], root: str | None = None) -> None:
    """Raise :class:`~tdlib.data.DataError` (or ``ValueError`` for an unregistered name) before any training if
    a data set the runs ``specs`` need cannot be had."""
    for name in dict.fromkeys(spec.dataset for spec in specs):
        factory = DATASETS.named(name)
        if factory.check is not None:
            factory.check(root)


def check_names(spec: RunSpec) -> None:
    """``ValueError`` naming the registered ones unless ``spec``'s model and data set are registered."""
    MODELS.named(spec.model), DATASETS.named(spec.dataset)


def untrained(spec: RunSpec) -> nn.Module:
    """The untrained network of ``spec`` from its registered model, drawn from torch's global generator (the
    caller seeds it); ``ValueError`` naming the registered models for an unknown one."""
    return MODELS.named(spec.model).build(spec)


def plain_skeleton(spec: RunSpec) -> nn.Module:
    """The network of ``spec`` without dropout of any kind, on the meta device: its names, shapes and order,
    no values, and no random number drawn."""
    with torch.device("meta"):
        return MODELS.named(spec.model).build(replace(spec, dropout=0.0, targeted=None))


def plain_network(spec: RunSpec, state: dict[str, torch.Tensor]) -> nn.Module:
    """The network of ``spec`` without dropout of any kind, holding the tensors of ``state`` (its
    ``state_dict``), in eval mode (:func:`plain_skeleton` given them)."""
    model = plain_skeleton(spec)
    model.load_state_dict(state, assign=True)
    return model.eval()
