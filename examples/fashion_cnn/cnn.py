"""A small convolutional network for Fashion-MNIST, registered as the model ``"small-cnn"``.

Targeted dropout and pruning treat its layers as they treat the MLP's: every convolution and ``nn.Linear``
but the classifier is prunable, a convolution's unit being a whole filter (an output channel).
"""

from __future__ import annotations

from torch import nn

from tdlib.factories import ModelFactory, register_model
from tdlib.spec import RunSpec


def small_cnn(spec: RunSpec) -> nn.Module:
    """Two 3x3 convolutions (16 and 32 filters, each followed by ReLU and 2x2 max pooling), a hidden layer of 128
    units and a 10-class classifier: inputs (batch, 784) from the data set, logits (batch, 10).

    A module-level function, so that training workers can import it by name; it draws its initial weights from
    torch's generator, which the trainer seeds with the run's seed.
    """
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),  # Fashion-MNIST rows come flattened
        nn.Conv2d(1, 16, 3, padding=1, bias=spec.bias), nn.ReLU(), nn.MaxPool2d(2),  # (16, 14, 14)
        nn.Conv2d(16, 32, 3, padding=1, bias=spec.bias), nn.ReLU(), nn.MaxPool2d(2),  # (32, 7, 7)
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128, bias=spec.bias), nn.ReLU(),
        nn.Linear(128, 10, bias=spec.bias),
    )


SMALL_CNN = register_model(ModelFactory("small-cnn", "two 3x3 conv layers (16, 32 filters, max pooling), 128 hidden "
                                        "units, 10 classes", small_cnn))
