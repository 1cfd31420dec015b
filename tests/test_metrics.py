"""Accuracy, pruning sweeps, activation and weight statistics on networks whose answers are known."""

from __future__ import annotations

import pytest
import torch

from tdlib.metrics import (
    PRUNE_KINDS,
    accuracy,
    activation_stats,
    masks_for,
    pruned_accuracy,
    pruning_sweep,
    small_weight_fraction,
    weight_stats,
)
from tdlib.model import MLP
from tdlib.prune import apply_masks, sparsity


def crafted() -> MLP:
    """Hidden layer 0: unit 0 dead (w = 0, b = -1), unit 1 always on (w = 0, b = 1), unit 2 = relu(x0)."""
    torch.manual_seed(0)
    model = MLP((3, 2), in_features=2, n_classes=2)
    with torch.no_grad():
        first = model.layers[0]
        first.weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))
        first.bias.copy_(torch.tensor([-1.0, 1.0, 0.0]))
    return model


def test_activation_stats_count_dead_always_active_and_zeros() -> None:
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 5.0], [-3.0, 1.0]])
    first = activation_stats(crafted(), x, batch_size=3)[0]  # two batches, to test the accumulation
    assert (first.units, first.dead_units, first.always_active_units) == (3, 1, 1)
    assert first.dead.tolist() == [True, False, False]
    assert first.zero_fraction == pytest.approx((4 + 0 + 2) / 12)
    assert first.dead_fraction == pytest.approx(1 / 3)


def test_weight_stats_and_small_fraction() -> None:
    model = crafted()
    stats = weight_stats(model, eps=1e-3)
    assert stats[0].small_fraction == pytest.approx(5 / 6)
    assert torch.allclose(stats[0].row_norms, torch.tensor([0.0, 0.0, 1.0]))
    layer1 = model.layers[1].weight.detach().abs()
    expected = (5 + int((layer1 < 1e-3).sum())) / (6 + layer1.numel())
    assert small_weight_fraction(model) == pytest.approx(expected)


def test_accuracy_counts_correct_argmax() -> None:
    model = MLP((4,), in_features=2, n_classes=2)
    x = torch.randn(20, 2)
    predictions = model(x).argmax(1)
    labels = predictions.clone()
    labels[:5] = 1 - labels[:5]
    assert accuracy(model, x, labels) == pytest.approx(0.75)


@pytest.mark.parametrize("kind", PRUNE_KINDS)
def test_sweep_prunes_the_asked_fraction_and_leaves_the_model_alone(kind: str) -> None:
    torch.manual_seed(0)
    model = MLP((40, 30), in_features=8, n_classes=3)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = pruning_sweep(model, kind, x, y, ks=(0, 50, 100))
    assert sweep[0] == accuracy(model, x, y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sparsity(masks_for(model, kind, 50)) == pytest.approx(0.5, abs=0.02)
    # With every hidden weight gone the output no longer depends on the input: one class for all.
    assert sweep[100] in {float((y == c).float().mean()) for c in range(3)}


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        masks_for(MLP((4,), in_features=2, n_classes=2), "magic", 50)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", PRUNE_KINDS)
def test_a_sweep_from_one_ranking_equals_pruning_at_each_k(kind: str) -> None:
    torch.manual_seed(1)
    model = MLP((40, 30), in_features=8, n_classes=3)
    x, y = torch.randn(200, 8), torch.randint(0, 3, (200,))
    ks = (0, 10, 33.3, 50, 90, 99.1, 100)
    sweep = pruning_sweep(model, kind, x, y, ks=ks, seed=5)
    assert sweep == {k: pruned_accuracy(model, kind, k, x, y, seed=5) for k in ks}
    copied = apply_masks(model, masks_for(model, kind, 50, seed=5))
    assert pruned_accuracy(model, kind, 50, x, y, seed=5) == accuracy(copied, x, y)


def test_a_pruning_kind_of_ones_own_is_one_registration() -> None:
    """The largest |w| first: registered once, then measured like any standard kind; names are guarded."""
    from tdlib.prune import PRUNINGS, Pruning, Ranking, prunable, register_pruning
    from tdlib.selection import ranks

    largest_first = Pruning("largest_weight", "the largest |w| of each hidden layer first", lambda m, g: Ranking(
        {name: ranks(-layer.weight.detach().abs()) for name, layer in prunable(m)}, units=False))
    register_pruning(largest_first)
    try:
        torch.manual_seed(0)
        model = MLP((20,), in_features=6, n_classes=3)
        masks = masks_for(model, "largest_weight", 25)
        weight = model.layers[0].weight.detach().abs()
        assert float(weight[~masks["layers.0.weight"]].min()) >= float(weight[masks["layers.0.weight"]].max())
        assert sparsity(masks) == pytest.approx(0.25)
        with pytest.raises(ValueError, match="'largest_weight' is already registered"):
            register_pruning(Pruning("largest_weight", "another", rule=lambda m, k: {}))
    finally:
        PRUNINGS.pop("largest_weight")
    with pytest.raises(ValueError, match=r"kind must be one of \('weight',.*got 'largest_weight'"):
        masks_for(model, "largest_weight", 25)
    with pytest.raises(ValueError, match="needs a ranking or a rule"):
        Pruning("both", "x")
