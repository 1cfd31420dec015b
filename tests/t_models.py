"""A network and a data set that are not this study's, registered for the tests of any model and any data.

Module-level, so that local worker processes import them by name (as they import a user's)."""

from __future__ import annotations

import torch
from torch import nn

from tdlib.data import Data
from tdlib.factories import DataFactory, ModelFactory, register_dataset, register_model
from tdlib.spec import RunSpec


def tiny_cnn(spec: RunSpec) -> nn.Module:
    """Inputs (batch, 64) as 8x8 images: a conv of 6 filters, a conv of 8, a classifier of 4 classes."""
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 6, 3, padding=1, bias=spec.bias), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, padding=1, bias=spec.bias), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 4, bias=spec.bias))


def stripes(root: str | None) -> Data:
    """Four classes of noisy 8x8 images, each a bright horizontal band in one quarter (fixed by seed 0)."""
    generator = torch.Generator().manual_seed(0)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 4
        x = 0.3 * torch.rand(n, 8, 8, generator=generator)
        for c in range(4):
            x[y == c, 2 * c: 2 * c + 2] += 0.7
        return x.reshape(n, 64), y

    return Data(*split(400), *split(200), source="stripes (tests/t_models.py)")


TINY_CNN = register_model(ModelFactory("tiny-cnn", "two convs on 8x8 images, 4 classes", tiny_cnn))
STRIPES = register_dataset(DataFactory("stripes", "four classes of 8x8 bands", stripes))
