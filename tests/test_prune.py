"""Post-hoc pruning masks: exact counts, order, nesting, ties, the random controls, and agreement with
``torch.nn.utils.prune``."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune as torch_prune

from tdlib.model import MLP
from tdlib.prune import (
    Masks,
    apply_masks,
    from_torch_prune,
    install_with_torch_prune,
    notebook_masks,
    random_unit_masks,
    random_weight_masks,
    unit_masks,
    weight_masks,
)

FAST = settings(max_examples=50, deadline=None, database=None)
HIDDEN = ("layers.0", "layers.1", "layers.2")

ks = st.one_of(st.integers(0, 100), st.floats(0.0, 100.0))
seeds = st.integers(0, 2**16)


def make_mlp(seed: int) -> MLP:
    """The small test MLP, with N(0, 1) weights and biases (distinct magnitudes almost surely)."""
    g = torch.Generator().manual_seed(seed)
    model = MLP(hidden=(12, 9, 7), in_features=10, n_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def pruned(mask: torch.Tensor) -> torch.Tensor:
    """Bool tensor of the pruned entries of a keep mask."""
    return ~mask


def assert_pruned_no_larger(scores: torch.Tensor, keep: torch.Tensor) -> None:
    """No pruned entry scores above a kept one (when both kinds exist)."""
    if keep.any() and not keep.all():
        assert scores[~keep].max() <= scores[keep].min()


def assert_same_masks(a: Masks, b: Masks) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@FAST
@given(seeds, ks)
def test_layerwise_weight_masks_prune_exact_count_of_the_smallest(seed: int, k: float) -> None:
    """Each hidden layer loses exactly round(k/100 * n) weights, none larger than a kept one; the
    output layer gets no mask."""
    model = make_mlp(seed)
    masks = weight_masks(model, k)
    assert set(masks) == {f"{name}.weight" for name in HIDDEN}
    for name, layer in zip(HIDDEN, model.hidden_layers):
        mask, magnitude = masks[f"{name}.weight"], layer.weight.detach().abs()
        assert mask.dtype == torch.bool and mask.shape == layer.weight.shape
        assert int(pruned(mask).sum()) == round(k / 100 * layer.weight.numel())
        assert_pruned_no_larger(magnitude, mask)


@FAST
@given(seeds, ks)
def test_global_weight_masks_prune_exact_total_of_the_smallest_across_layers(seed: int, k: float) -> None:
    """Global scope prunes exactly round(k/100 * all hidden weights), each no larger than any kept one."""
    model = make_mlp(seed)
    masks = weight_masks(model, k, scope="global")
    assert set(masks) == {f"{name}.weight" for name in HIDDEN}
    total = sum(layer.weight.numel() for layer in model.hidden_layers)
    magnitudes = torch.cat([layer.weight.detach().abs().reshape(-1) for layer in model.hidden_layers])
    keep = torch.cat([masks[f"{name}.weight"].reshape(-1) for name in HIDDEN])
    assert int(pruned(keep).sum()) == round(k / 100 * total)
    assert_pruned_no_larger(magnitudes, keep)


@FAST
@given(seeds, ks, st.booleans())
def test_unit_masks_prune_exact_unit_count_of_lowest_norm_rows(seed: int, k: float, keep_bias: bool) -> None:
    """Each hidden layer loses exactly round(k/100 * units) whole rows, of the lowest L2 norms; the bias
    is masked alongside unless ``keep_bias``."""
    model = make_mlp(seed)
    masks = unit_masks(model, k, keep_bias=keep_bias)
    expected = {f"{name}.weight" for name in HIDDEN} | (set() if keep_bias else {f"{name}.bias" for name in HIDDEN})
    assert set(masks) == expected
    for name, layer in zip(HIDDEN, model.hidden_layers):
        weight_mask = masks[f"{name}.weight"]
        rows = weight_mask[:, 0]
        assert torch.equal(weight_mask, rows.unsqueeze(1).expand_as(weight_mask))
        assert int(pruned(rows).sum()) == round(k / 100 * layer.out_features)
        if not keep_bias:
            assert torch.equal(masks[f"{name}.bias"], rows)
        norms = layer.weight.detach().norm(dim=1)
        assert_pruned_no_larger(norms, rows)


@FAST
@given(seeds, ks)
def test_whole_unit_pruning_silences_units(seed: int, k: float) -> None:
    """With the bias pruned too, a pruned unit's activation is exactly 0 for any input."""
    model = make_mlp(seed)
    masks = unit_masks(model, k)
    x = torch.randn(16, 10, generator=torch.Generator().manual_seed(seed))
    for name, activation in zip(HIDDEN, apply_masks(model, masks).hidden_activations(x)):
        gone = pruned(masks[f"{name}.bias"])
        assert torch.equal(activation[:, gone], torch.zeros(16, int(gone.sum())))


@FAST
@given(seeds, ks)
def test_weights_only_unit_pruning_leaves_relu_of_bias(seed: int, k: float) -> None:
    """With ``keep_bias=True`` the bias is unmasked and a pruned unit outputs exactly relu(bias)."""
    model = make_mlp(seed)
    masks = unit_masks(model, k, keep_bias=True)
    x = torch.randn(16, 10, generator=torch.Generator().manual_seed(seed))
    pruned_model = apply_masks(model, masks)
    for name, layer, activation in zip(HIDDEN, pruned_model.hidden_layers, pruned_model.hidden_activations(x)):
        gone = pruned(masks[f"{name}.weight"][:, 0])
        assert torch.equal(layer.bias, dict(model.named_parameters())[f"{name}.bias"])
        assert torch.equal(activation[:, gone], torch.relu(layer.bias[gone]).expand(16, -1))


MASKERS: dict[str, Callable[[MLP, float], Masks]] = {
    "weight-layer": weight_masks,
    "weight-global": lambda model, k: weight_masks(model, k, scope="global"),
    "unit": unit_masks,
    "unit-keep-bias": lambda model, k: unit_masks(model, k, keep_bias=True),
}


@pytest.mark.parametrize("kind", list(MASKERS))
@FAST
@given(seed=seeds, k1=ks, k2=ks)
def test_pruning_is_nested_in_k(kind: str, seed: int, k1: float, k2: float) -> None:
    """Whatever is pruned at k is pruned at every larger k."""
    model = make_mlp(seed)
    low, high = sorted((k1, k2))
    small, large = MASKERS[kind](model, low), MASKERS[kind](model, high)
    assert small.keys() == large.keys()
    for name in small:
        assert not (pruned(small[name]) & large[name]).any(), name


@pytest.mark.parametrize("kind", list(MASKERS))
@FAST
@given(seed=seeds, k=ks)
def test_pruning_is_idempotent(kind: str, seed: int, k: float) -> None:
    """Masks recomputed on the pruned copy at the same k are the same, and pruning twice == once."""
    model = make_mlp(seed)
    masks = MASKERS[kind](model, k)
    once = apply_masks(model, masks)
    assert_same_masks(MASKERS[kind](once, k), masks)
    twice = apply_masks(once, masks)
    for (name, a), b in zip(once.state_dict().items(), twice.state_dict().values()):
        assert torch.equal(a, b), name


def constant_mlp() -> MLP:
    """The test MLP with every parameter equal to 0.5: every ranking is one big tie."""
    model = MLP(hidden=(12, 9, 7), in_features=10, n_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    return model


@pytest.mark.parametrize("k", [0, 10, 33.3, 50, 99, 100])
def test_all_equal_weights_prune_the_lowest_indices_deterministically(k: float) -> None:
    """With all weights equal, exactly the count is pruned, lowest flat index (or row, or layer) first,
    and repeated calls agree."""
    model = constant_mlp()
    layerwise, global_, units = weight_masks(model, k), weight_masks(model, k, scope="global"), unit_masks(model, k)
    assert_same_masks(weight_masks(model, k), layerwise)
    assert_same_masks(weight_masks(model, k, scope="global"), global_)
    assert_same_masks(unit_masks(model, k), units)
    for name, layer in zip(HIDDEN, model.hidden_layers):
        count = round(k / 100 * layer.weight.numel())
        flat = pruned(layerwise[f"{name}.weight"]).reshape(-1)
        assert flat[:count].all() and not flat[count:].any()
        rows = pruned(units[f"{name}.bias"])
        unit_count = round(k / 100 * layer.out_features)
        assert rows[:unit_count].all() and not rows[unit_count:].any()
    total = sum(layer.weight.numel() for layer in model.hidden_layers)
    flat = torch.cat([pruned(global_[f"{name}.weight"]).reshape(-1) for name in HIDDEN])
    count = round(k / 100 * total)
    assert flat[:count].all() and not flat[count:].any()


@FAST
@given(seeds, ks, st.booleans())
def test_random_controls_match_magnitude_counts_and_seeds(seed: int, k: float, keep_bias: bool) -> None:
    """The random controls prune the magnitude versions' count per layer, reproducibly per seed."""
    model = make_mlp(seed)

    def controls(generator_seed: int) -> tuple[Masks, Masks]:
        g = torch.Generator().manual_seed(generator_seed)
        return random_weight_masks(model, k, g), random_unit_masks(model, k, g, keep_bias=keep_bias)

    weights, units = controls(seed)
    for random_masks, reference in ((weights, weight_masks(model, k)), (units, unit_masks(model, k, keep_bias))):
        assert random_masks.keys() == reference.keys()
        for name in reference:
            assert int(pruned(random_masks[name]).sum()) == int(pruned(reference[name]).sum()), name
    again = controls(seed)
    assert_same_masks(again[0], weights)
    assert_same_masks(again[1], units)


@pytest.mark.parametrize("seed", range(10))
def test_random_controls_differ_between_seeds(seed: int) -> None:
    """Different seeds choose different sets (at k = 50 a collision has probability < 1e-9)."""
    model = make_mlp(0)
    a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1000)
    first, second = random_weight_masks(model, 50, a), random_weight_masks(model, 50, b)
    assert any(not torch.equal(first[name], second[name]) for name in first)
    first, second = random_unit_masks(model, 50, a), random_unit_masks(model, 50, b)
    assert any(not torch.equal(first[name], second[name]) for name in first)


@FAST
@given(seeds, ks)
def test_apply_masks_leaves_the_model_untouched(seed: int, k: float) -> None:
    """``apply_masks`` returns a new model and leaves the original's parameters as they were."""
    model = make_mlp(seed)
    before = copy.deepcopy(model.state_dict())
    masks = unit_masks(model, k)
    result = apply_masks(model, masks)
    assert result is not model
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for name, param in result.named_parameters():
        expected = before[name] * masks[name] if name in masks else before[name]
        assert torch.equal(param, expected), name


@pytest.mark.parametrize(
    ("name", "mask", "message"),
    [
        ("layers.0.weight", torch.ones(10, 12, dtype=torch.bool), "shape"),
        ("layers.0.weight", torch.ones(12, 10), "bool"),
        ("layers.0.bias", torch.ones(12, dtype=torch.uint8), "bool"),
        ("layers.9.weight", torch.ones(12, 10, dtype=torch.bool), "no such parameter"),
        ("layers.0", torch.ones(12, 10, dtype=torch.bool), "no such parameter"),
    ],
)
def test_apply_masks_rejects_bad_masks(name: str, mask: torch.Tensor, message: str) -> None:
    """A mask of the wrong shape or dtype, or for an unknown parameter, raises ValueError."""
    with pytest.raises(ValueError, match=message):
        apply_masks(make_mlp(0), {name: mask})


@pytest.mark.parametrize("k", [-1, -1e-9, 100.5, math.nan, math.inf, True, False, "50", None])
@pytest.mark.parametrize(
    "masker",
    [
        weight_masks,
        unit_masks,
        lambda model, k: random_weight_masks(model, k, torch.Generator()),
        lambda model, k: random_unit_masks(model, k, torch.Generator()),
    ],
)
def test_bad_k_raises(k: object, masker: Callable[[MLP, object], Masks]) -> None:
    """k outside [0, 100], NaN, infinities, bools and non-numbers raise ValueError mentioning k."""
    with pytest.raises(ValueError, match="k must"):
        masker(make_mlp(0), k)


def test_bad_scope_raises() -> None:
    with pytest.raises(ValueError, match="scope"):
        weight_masks(make_mlp(0), 50, scope="model")  # type: ignore[arg-type]


@FAST
@given(seeds, ks)
def test_agrees_with_torch_prune(seed: int, k: float) -> None:
    """On tie-free weights, torch's l1_unstructured, global_unstructured and ln_structured(n=2, dim=0)
    choose exactly the layerwise, global and weights-only unit masks."""
    model = make_mlp(seed)
    amount = k / 100

    local = copy.deepcopy(model)
    for layer in local.hidden_layers:
        torch_prune.l1_unstructured(layer, "weight", amount=amount)
    assert_same_masks(from_torch_prune(local), weight_masks(model, k))

    global_ = copy.deepcopy(model)
    params = [(layer, "weight") for layer in global_.hidden_layers]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
    assert_same_masks(from_torch_prune(global_), weight_masks(model, k, scope="global"))

    structured = copy.deepcopy(model)
    for layer in structured.hidden_layers:
        torch_prune.ln_structured(layer, "weight", amount=amount, n=2, dim=0)
    assert_same_masks(from_torch_prune(structured), unit_masks(model, k, keep_bias=True))


@pytest.mark.parametrize("kind", list(MASKERS))
@FAST
@given(seed=seeds, k=ks)
def test_install_with_torch_prune_round_trips(kind: str, seed: int, k: float) -> None:
    """Masks installed through torch.nn.utils.prune give the same forward as ``apply_masks``, and
    ``from_torch_prune`` reads the same masks back."""
    model = make_mlp(seed)
    masks = MASKERS[kind](model, k)
    installed = install_with_torch_prune(model, masks)
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(installed(x), apply_masks(model, masks)(x))
    assert_same_masks(from_torch_prune(installed), masks)
    assert not from_torch_prune(model)  # the original got no pruning buffers


def test_unit_masks_norm_1_ranks_by_l1() -> None:
    """Row 0 = (3, 0, 0, 0) has L1 3 < 4 but L2 3 > 2 against row 1 = (1, 1, 1, 1), so the norm
    decides which of the two units goes."""
    model = MLP(hidden=(2,), in_features=4, n_classes=3)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[3.0, 0, 0, 0], [1.0, 1, 1, 1]]))
    assert unit_masks(model, 50, norm=1)["layers.0.bias"].tolist() == [False, True]
    assert unit_masks(model, 50, norm=2)["layers.0.bias"].tolist() == [True, False]
    assert unit_masks(model, 50)["layers.0.bias"].tolist() == [True, False]


def test_notebook_criterion_prunes_the_most_negative_weights_per_row() -> None:
    """The notebook thresholds the signed weights at their k-th percentile and removes ``w <= t``."""
    model = MLP((2,), in_features=5, n_classes=2)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[-3.0, -1.0, 0.0, 2.0, 5.0], [0.1, 0.2, 0.3, 0.4, 0.5]]))
    keep = notebook_masks(model, 40)["layers.0.weight"]
    # Row 0: the 40th percentile of (-3, -1, 0, 2, 5) is -0.4, so -3 and -1 go; the large 5 stays.
    assert keep[0].tolist() == [False, False, True, True, True]
    assert keep[1].tolist() == [False, False, True, True, True]
    assert bool(notebook_masks(model, 0)["layers.0.weight"].all())
    assert not bool(notebook_masks(model, 100)["layers.0.weight"].any())


def test_apply_masks_refuses_masks_that_are_not_bool_tensors_beside_their_parameters() -> None:
    model = MLP((4,), in_features=3, n_classes=2)
    shape = model.layers[0].weight.shape
    with pytest.raises(TypeError, match=r"mask for 'layers\.0\.weight' must be a bool tensor, got list"):
        apply_masks(model, {"layers.0.weight": [[True] * 3] * 4})
    with pytest.raises(ValueError, match=r"is on meta, the parameter on cpu"):
        apply_masks(model, {"layers.0.weight": torch.ones(shape, dtype=torch.bool, device="meta")})


class SmallCNN(torch.nn.Module):
    """Two convolutions, a hidden linear layer and a classifier: what any-model pruning must handle."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3), torch.nn.ReLU(), torch.nn.Conv1d(6, 5, 2))
        self.hidden = torch.nn.Linear(5, 7)
        self.fc = torch.nn.Linear(7, 3)


def make_cnn(seed: int) -> SmallCNN:
    """The small test CNN, with N(0, 1) weights and biases (distinct magnitudes almost surely)."""
    g = torch.Generator().manual_seed(seed)
    model = SmallCNN()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g))
    return model


CNN_PRUNABLE = ("features.0", "features.2", "hidden")


@FAST
@given(seeds, ks)
def test_a_convolutional_network_prunes_as_torch_prune_does(seed: int, k: float) -> None:
    """Every convolution and linear layer but the classifier is pruned; torch's l1_unstructured,
    global_unstructured and ln_structured(n=2, dim=0) choose exactly the layerwise, global and weights-only
    unit (whole-filter) masks."""
    model = make_cnn(seed)
    amount = k / 100
    layers = [m.weight for m in (model.features[0], model.features[2], model.hidden)]
    assert list(weight_masks(model, k)) == [f"{name}.weight" for name in CNN_PRUNABLE]

    local = copy.deepcopy(model)
    for name in CNN_PRUNABLE:
        torch_prune.l1_unstructured(local.get_submodule(name), "weight", amount=amount)
    assert_same_masks(from_torch_prune(local), weight_masks(model, k))

    global_ = copy.deepcopy(model)
    params = [(global_.get_submodule(name), "weight") for name in CNN_PRUNABLE]
    torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)
    assert_same_masks(from_torch_prune(global_), weight_masks(model, k, scope="global"))

    structured = copy.deepcopy(model)
    for name in CNN_PRUNABLE:
        torch_prune.ln_structured(structured.get_submodule(name), "weight", amount=amount, n=2, dim=0)
    assert_same_masks(from_torch_prune(structured), unit_masks(model, k, keep_bias=True))

    whole = unit_masks(model, k)  # a removed filter takes its bias too: its channel outputs 0 everywhere
    for name, weight in zip(CNN_PRUNABLE, layers):
        gone = ~whole[f"{name}.bias"]
        assert int(gone.sum()) == round(amount * weight.shape[0])
        assert not whole[f"{name}.weight"][gone].any() and whole[f"{name}.weight"][~gone].all()
        norms = weight.detach().flatten(1).norm(dim=1)
        if gone.any() and (~gone).any():
            assert norms[gone].max() <= norms[~gone].min()


@pytest.mark.parametrize(("masker", "units"), [
    (lambda m, k: random_weight_masks(m, k, torch.Generator().manual_seed(0)), False),
    (lambda m, k: random_unit_masks(m, k, torch.Generator().manual_seed(0)), True),
])
def test_the_random_controls_prune_a_convolutional_network_by_the_same_counts(masker: Callable, units: bool) -> None:
    """As many weights (or whole filters) per layer as the magnitude kinds remove, and apply_masks zeroes
    exactly them."""
    model = make_cnn(1)
    masks = {n: m for n, m in masker(model, 40).items() if n.endswith(".weight")}
    assert [name.rpartition(".")[0] for name in masks] == list(CNN_PRUNABLE)
    pruned = apply_masks(model, masks)
    for name, mask in masks.items():
        weight = model.get_parameter(name)
        n = weight.shape[0] if units else weight.numel()
        removed = mask.flatten(1).logical_not().all(1) if units else ~mask
        assert int(removed.sum()) == round(0.4 * n)
        assert torch.equal(pruned.get_parameter(name), weight.detach() * mask)


def test_a_model_without_a_prunable_layer_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"no nn\.Linear or convolution to prune"):
        weight_masks(torch.nn.Sequential(torch.nn.Linear(4, 2)), 50)
