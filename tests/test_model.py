"""The MLP: shapes, biases, hidden activations, the identity swap."""

from __future__ import annotations

import pytest
import torch

from tdlib.model import MLP, PAPER_HIDDEN, eval_mode


def test_paper_architecture() -> None:
    model = MLP()
    shapes = [tuple(layer.weight.shape) for layer in model.layers]
    assert shapes == [(1000, 784), (1000, 1000), (500, 1000), (200, 500), (10, 200)]
    assert PAPER_HIDDEN == (1000, 1000, 500, 200)
    assert all(layer.bias is not None for layer in model.layers)
    assert all(layer.bias is None for layer in MLP(bias=False).layers)


def test_hidden_activations_are_post_relu_and_feed_the_logits() -> None:
    torch.manual_seed(0)
    model = MLP((16, 8), in_features=5, n_classes=3)
    x = torch.randn(7, 5)
    hidden = model.hidden_activations(x)
    assert [h.shape for h in hidden] == [(7, 16), (7, 8)]
    assert all(bool((h >= 0).all()) for h in hidden)
    assert torch.allclose(model.layers[-1](hidden[-1]), model(x))


def test_identity_activation_replaces_one_relu_in_a_copy() -> None:
    torch.manual_seed(0)
    model = MLP((16, 8), in_features=5, n_classes=3)
    x = torch.randn(50, 5)
    linear = model.with_identity_activation(0)
    assert model.linear_hidden == frozenset()
    pre = model.layers[0](x)
    assert torch.equal(linear.hidden_activations(x)[0], pre)
    assert bool((pre < 0).any())
    assert not torch.allclose(linear(x), model(x))
    with pytest.raises(ValueError, match="hidden layer"):
        model.with_identity_activation(2)


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="hidden"):
        MLP(())
    with pytest.raises(ValueError, match="dropout"):
        MLP(dropout=1.0)


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_mode_even_after_an_error(training: bool) -> None:
    model = MLP([4], in_features=3, n_classes=2, dropout=0.5).train(training)
    with eval_mode(model) as inside:
        assert inside is model and not model.training
    assert model.training is training
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("interrupted")
    assert model.training is training
