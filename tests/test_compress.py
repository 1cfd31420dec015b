"""Compressed models compute what the masked models compute, in fewer numbers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from tdlib.compress import (
    CompressedFileError,
    compress,
    dense_flops,
    export_onnx,
    fastest,
    fastest_layouts,
    load,
    median_seconds,
    save,
)
from tdlib.compress.chain import COLUMNS, CSR, INPUTS, Chain
from tdlib.compress.fileformat import digest
from tdlib.compress.module import CompressedMLP, compact_layouts, csr_is_smaller
from tdlib.metrics import masks_for
from tdlib.model import MLP
from tdlib.prune import apply_masks, random_unit_masks, random_weight_masks

FAST = settings(max_examples=60, deadline=None, database=None)


@FAST
@given(
    st.integers(0, 2**16),
    st.lists(st.integers(1, 12), min_size=1, max_size=3),
    st.floats(0.0, 1.0),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["dense", "csr", "mixed", "fused"]),
    st.sampled_from([1, 17]),
    st.booleans(),
)
def test_compressed_equals_masked(
    seed: int, hidden: list[int], density: float, bias: bool, units: bool, keep_bias: bool, layout: str, batch: int,
    linear_first: bool,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(hidden, bias=bias, in_features=6, n_classes=3).eval()
    with torch.no_grad():  # biases of both signs, so that relu(b) folding matters
        for layer in model.layers:
            if layer.bias is not None:
                layer.bias.uniform_(-1, 1)
    if linear_first:  # a constant linear unit folds b, not relu(b)
        model = model.with_identity_activation(0)
    k = 100 * (1 - density)
    masks = random_unit_masks(model, k, generator, keep_bias) if units else random_weight_masks(model, k, generator)
    x = torch.randn(batch, 6, generator=generator)  # batch 1 takes the kernels' matrix-vector paths
    expected = apply_masks(model, masks)(x)
    layouts = [("dense", "csr")[i % 2] for i in range(len(hidden) + 1)] if layout == "mixed" else layout
    small = compress(model, masks, layouts)
    n = len(small.shapes)
    expected_layouts = {"mixed": layouts, "fused": list(compact_layouts(small.linears))}.get(layout, [layout] * n)
    assert (small.layouts, small.fused) == (expected_layouts, layout == "fused")
    with torch.no_grad():  # the inference backend
        assert torch.allclose(small(x), expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(small(x), expected, atol=1e-5, rtol=1e-5)  # the plain modules, with autograd
    assert small.flops() <= dense_flops(model)


def test_unit_pruning_shrinks_the_layers_and_flops() -> None:
    torch.manual_seed(0)
    model = MLP((40, 30), in_features=8, n_classes=3).eval()
    small = compress(model, masks_for(model, "unit", 50))
    assert small.shapes == [(20, 8), (15, 20), (3, 15)]
    assert small.flops() == 20 * 8 + 15 * 20 + 3 * 15
    assert small.parameter_count() == small.flops() + 20 + 15 + 3
    x = torch.randn(5, 8)
    assert torch.allclose(small(x), apply_masks(model, masks_for(model, "unit", 50))(x), atol=1e-6)


def test_weights_only_unit_pruning_folds_relu_of_bias_into_the_next_layer() -> None:
    torch.manual_seed(0)
    model = MLP((4,), in_features=3, n_classes=2).eval()
    with torch.no_grad():
        model.layers[0].bias.copy_(torch.tensor([2.0, -1.0, 0.5, 3.0]))
    masks = masks_for(model, "unit_weights_only", 50)
    small = compress(model, masks)
    assert small.shapes == [(2, 3), (2, 2)]
    x = torch.randn(9, 3)
    assert torch.allclose(small(x), apply_masks(model, masks)(x), atol=1e-6)


def test_sparse_weight_pruning_stores_only_the_kept_weights() -> None:
    torch.manual_seed(0)
    model = MLP((50, 40), in_features=20, n_classes=3).eval()
    masks = masks_for(model, "weight", 90)
    small = compress(model, masks, layout="csr")
    kept = sum(int(m.sum()) for m in masks.values())
    assert small.flops() <= kept + model.layers[-1].weight.numel()
    biases = sum(layer.bias.numel() for layer in model.layers)
    assert small.parameter_count() <= kept + model.layers[-1].weight.numel() + biases
    assert small.with_layouts(["dense"] * 3).parameter_count() == small.parameter_count()
    x = torch.randn(4, 20)
    assert torch.allclose(small(x), apply_masks(model, masks)(x), atol=1e-5)


def test_training_mode_with_dropout_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        compress(MLP((4,), in_features=3, n_classes=2, dropout=0.5).train(), {})


def test_a_network_other_than_the_mlp_is_refused_in_one_line() -> None:
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"compress takes tdlib's MLP .*, got Sequential: .*not compressed$"):
        compress(cnn, {})  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", ["dense", "csr", ["csr", "dense", "csr"], "fused", "fused, mixed",
                                    "fused, sparse inputs"])
def test_save_and_load_round_trip_compactly(tmp_path: Path, layout: str | list[str]) -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    masks = masks_for(model, "weight", 99)
    if layout == "fused, mixed":
        small = compress(model, masks, "dense").fuse(["csr", "dense", "csr"])
    elif layout == "fused, sparse inputs":
        small = compress(model, masks, "dense").fuse(["dense", "csr", "csr"], sparse_inputs=True)
    else:
        small = compress(model, masks, layout)
    save(small, tmp_path / "m.pt")
    again = load(tmp_path / "m.pt")
    x = torch.randn(7, 30)
    with torch.no_grad():
        assert torch.equal(again(x), small(x))
    assert (again.shapes, again.layouts, again.fused, again.sparse_inputs) == (
        small.shapes, small.layouts, small.fused, layout == "fused, sparse inputs")
    # A sparse layer is written sparse even when it runs dense.
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    assert (tmp_path / "m.pt").stat().st_size < (tmp_path / "dense.pt").stat().st_size / 3


@pytest.mark.parametrize("nonzero, smaller", [(3, True), (4, False)])
def test_csr_is_chosen_by_bytes_with_int32_indices(nonzero: int, smaller: bool) -> None:
    # 3 x 4 float32: 48 bytes dense; CSR 8 bytes a non-zero and 4 row pointers of 4 bytes: 3 -> 40, 4 -> 48,
    # a tie, which stays dense
    weight = torch.zeros(12)
    weight[:nonzero] = 1.0
    linear = torch.nn.Linear(4, 3)
    linear.weight.data = weight.view(3, 4)
    assert csr_is_smaller(linear.weight) is smaller
    assert compact_layouts([linear]) == ("csr" if smaller else "dense",)


def test_a_dense_layer_is_written_dense(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    save(compress(model, {}, "csr"), tmp_path / "m.pt")
    with safe_open(str(tmp_path / "m.pt"), "pt") as file:
        assert json.loads(file.metadata()["stored"]) == ["dense"] * 3
    assert load(tmp_path / "m.pt").layouts == ["csr"] * 3


def test_fastest_layouts_takes_the_faster_measurement_per_layer_at_the_batch_asked() -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    small = compress(model, masks_for(model, "weight", 90), "dense")
    batches = []

    def seconds(layer, h: torch.Tensor, threads: int | None) -> float:  # a CSR product costing 3x per non-zero
        batches.append(h.shape[1])
        return layer.stored * (3 if layer.layout == "csr" else 1)

    # 90% of each hidden layer is pruned (so CSR wins there); the output layer is untouched.
    assert fastest_layouts(small, 17, seconds=seconds) == ["csr", "csr", "dense"]
    assert set(batches) == {17}
    with pytest.raises(ValueError, match="batch must be at least 1, got 0"):
        fastest_layouts(small, 0, seconds=seconds)


def test_fastest_runs_fused_only_where_it_measures_faster_and_can_run() -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    small = compress(model, masks_for(model, "weight", 90), "dense")

    def fused_is_faster(fn, x: torch.Tensor, threads: int | None) -> float:
        return 1.0 if getattr(fn, "fused", False) else 2.0

    def fused_is_slower(fn, x: torch.Tensor, threads: int | None) -> float:
        return 3.0 if getattr(fn, "fused", False) else 2.0

    assert fastest(small, 4, seconds=fused_is_faster).fused
    assert not fastest(small, 4, seconds=fused_is_slower).fused

    def chain_prefers_dense_first(fn, x: torch.Tensor, threads: int | None) -> float:
        if isinstance(fn, Chain):  # one layer alone, timed for the chain's layout
            return 1.0 if (fn.forms[0] != CSR) == (fn.layout[INPUTS, 0] == 30) else 2.0
        return fused_is_faster(fn, x, threads)

    chosen = fastest(small, 4, seconds=chain_prefers_dense_first)
    assert chosen.fused and chosen.layouts == ["dense", "csr", "csr"]
    with pytest.raises(ValueError, match="sparse_inputs is a form of the fused chain"):
        CompressedMLP(small.linears, small.relus, sparse_inputs=True)
    in_double = compress(model.double(), masks_for(model, "weight", 90), "dense")
    assert not fastest(in_double, 4, seconds=fused_is_faster).fused  # the chain kernel is float32 only
    with pytest.raises(ValueError, match=r"the fused chain runs float32 weights on the CPU, got torch\.float64"):
        in_double.fuse()


def sample_with_zeros(zero_counts: list[int], features: int = 30) -> torch.Tensor:
    """Inputs (len(zero_counts), features), row ``i`` with exactly ``zero_counts[i]`` zeros, the rest in
    [0.1, 1.1): images on a blank background, roughly."""
    rows = torch.rand(len(zero_counts), features) + 0.1
    for row, zeros in zip(rows, zero_counts):
        row[torch.randperm(features)[:zeros]] = 0.0
    return rows


@pytest.mark.parametrize("columns_faster", [False, True])
def test_with_a_sample_everything_is_timed_on_it_and_a_first_layer_by_columns_is_tried(columns_faster: bool) -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    small = compress(model, masks_for(model, "unit", 50), "dense")
    sample = sample_with_zeros([3, 30, 12, 0, 20, 15, 25, 9, 17])  # the median count, 15, is row 5's
    seen: dict[str, list[torch.Tensor]] = {"layer": [], "model": []}

    def seconds(fn, x: torch.Tensor, threads: int | None) -> float:
        if isinstance(fn, Chain):
            seen["layer"].append(x)
            return 1.0 if (fn.forms[0] == COLUMNS) == columns_faster else 2.0
        if not isinstance(fn, CompressedMLP):  # a torch step, for the layered backend
            return 1.0
        seen["model"].append(x)
        return (1.0 if fn.sparse_inputs == columns_faster else 2.0) if fn.fused else 3.0

    chosen = fastest(small, 1, seconds=seconds, sample=sample)
    assert chosen.fused and chosen.sparse_inputs == columns_faster
    # Layers after a ReLU are timed by columns where dense, so the fake makes CSR win them unless columns win.
    layers = "dense/dense/dense, the first by columns" if columns_faster else "dense/csr/csr"
    assert chosen.form == f"fused, layers {layers}"
    assert torch.equal(seen["model"][-1], sample[5:6])
    # Each layer saw the activations that row gives it: after a ReLU, with zeros.
    hidden = torch.relu(small.linears[0](sample[5:6]))
    assert bool((hidden == 0).any()) and any(torch.allclose(x, hidden, atol=1e-6) for x in seen["layer"])
    assert not fastest(small, 1, seconds=seconds).sparse_inputs  # without a sample, nothing is tried by columns
    inputs: list[torch.Tensor] = []
    at_4 = fastest_layouts(small, 4, seconds=lambda fn, x, threads: inputs.append(x) or 1.0, sample=sample)
    into_last = torch.relu(small.linears[1](torch.relu(small.linears[0](sample[:4]))))
    assert len(at_4) == 3 and [x.shape for x in inputs] == [(30, 4)] * 2 + [(30, 4)] * 2 + [(20, 4)] * 2
    assert torch.equal(inputs[0].T, sample[:4]) and torch.allclose(inputs[4].T, into_last, atol=1e-6)  # as run
    cycled: list[torch.Tensor] = []
    fastest_layouts(small, 4, seconds=lambda fn, x, threads: cycled.append(x) or 1.0, sample=sample[:3])
    assert torch.equal(cycled[0].T, sample[[0, 1, 2, 0]])  # fewer rows than the batch: cycled
    for wrong, shape in [(sample[:, 1:], r"\(9, 29\)"), (sample[:0], r"\(0, 30\)")]:
        with pytest.raises(ValueError, match=r"the sample must be at least one input, \(rows, 30\), got " + shape):
            fastest(small, 1, seconds=seconds, sample=wrong)
    assert fastest(small, 1, seconds=seconds, sample=sample[5]).sparse_inputs == columns_faster  # one, (in,)


def test_a_csr_first_layer_is_never_said_to_be_held_by_columns() -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    small = compress(model, masks_for(model, "weight", 95), "dense")

    def csr_and_columns_fastest(fn, x: torch.Tensor, threads: int | None) -> float:
        if isinstance(fn, Chain):
            return 1.0 if fn.forms[0] == CSR else 2.0
        return (1.0 if fn.sparse_inputs else 2.0) if isinstance(fn, CompressedMLP) and fn.fused else 3.0

    chosen = fastest(small, 1, seconds=csr_and_columns_fastest, sample=sample_with_zeros([10, 20, 5]))
    assert chosen.fused and chosen.layouts[0] == "csr" and not chosen.sparse_inputs
    with pytest.raises(ValueError, match=r"needs fused=True and a dense first layer, got fused=True and layouts"):
        small.fuse(["csr", "dense", "dense"], sparse_inputs=True)
    with pytest.raises(ValueError, match="a sample is what layout='fastest' is timed on; layout 'fused' takes none"):
        compress(model, masks_for(model, "weight", 95), "fused", sample=sample_with_zeros([1]))


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("with_sample", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fastest_compression_equals_the_masked_model(dtype: torch.dtype, with_sample: bool, batch: int) -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).to(dtype).eval()
    model.linear_hidden = frozenset({1})  # a hidden layer without its ReLU, as the linear claims make
    masks = masks_for(model, "weight", 95)
    sample = sample_with_zeros(list(range(0, 30, 3))).to(dtype) if with_sample else None
    small = compress(model, masks, "fastest", batch=batch, sample=sample)  # really timed, in the model's dtype
    x = sample_with_zeros([12] * batch).to(dtype)
    assert torch.allclose(small(x), apply_masks(model, masks)(x), atol=1e-5)
    assert not (dtype == torch.float64 and small.fused)


def test_units_nothing_reads_are_removed() -> None:
    torch.manual_seed(0)
    model = MLP((4, 3), in_features=5, n_classes=2).eval()
    masks = {"layers.1.weight": torch.ones(3, 4, dtype=torch.bool)}
    masks["layers.1.weight"][:, 0] = False  # unit 0 of the first hidden layer feeds nothing
    small = compress(model, masks, "dense")
    assert small.shapes == [(3, 5), (3, 3), (2, 3)]
    x = torch.randn(6, 5)
    assert torch.allclose(small(x), apply_masks(model, masks)(x), atol=1e-6)


@pytest.mark.parametrize("layout", ["dense", "fused"])
def test_a_single_input_and_contiguous_outputs(layout: str) -> None:
    torch.manual_seed(0)
    model = MLP((8,), in_features=5, n_classes=3).eval()
    small = compress(model, masks_for(model, "weight", 50), layout)
    x = torch.randn(5)
    assert torch.allclose(small(x), apply_masks(model, masks_for(model, "weight", 50))(x), atol=1e-6)
    assert small(x.unsqueeze(0)).is_contiguous()


@pytest.mark.parametrize("layout", ["sparse", ["dense"], ["dense", "coo", "dense"]])
def test_unknown_layouts_are_named(layout: str | list[str]) -> None:
    model = MLP((10, 10), in_features=5, n_classes=2).eval()
    with pytest.raises(ValueError, match=r"layouts? must .*got"):
        compress(model, {}, layout)


def test_a_version_3_file_loads_with_its_first_layer_by_rows(tmp_path: Path) -> None:
    """Version 3 files, written before a fused first layer could be held by columns, still load."""
    torch.manual_seed(0)
    model = MLP((10,), in_features=5, n_classes=2).eval()
    small = compress(model, masks_for(model, "weight", 50), "dense").fuse()
    save(small, tmp_path / "v4.safetensors")
    with safe_open(str(tmp_path / "v4.safetensors"), "pt") as file:
        metadata = dict(file.metadata())
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    del metadata["sparse_inputs"]
    metadata["version"] = "3"
    metadata["sha256"] = digest(metadata, tensors)
    save_file(tensors, str(tmp_path / "v3.safetensors"), metadata=metadata)
    old = load(tmp_path / "v3.safetensors")
    assert old.fused and not old.sparse_inputs and old.layouts == small.layouts
    with pytest.raises(CompressedFileError, match="v2, expected 'tdlib-compressed-mlp' v3 or v4"):
        metadata["version"] = "2"
        metadata["sha256"] = digest(metadata, tensors)
        save_file(tensors, str(tmp_path / "v2.safetensors"), metadata=metadata)
        load(tmp_path / "v2.safetensors")


def test_damaged_or_foreign_files_are_named(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MLP((10,), in_features=5, n_classes=2).eval()
    path = tmp_path / "m.safetensors"
    save(compress(model, masks_for(model, "weight", 90), layout="csr"), path)  # layer 0 stored CSR, 1 dense

    def rewritten(name: str, change, fix_checksum: bool = True) -> Path:
        with safe_open(str(path), "pt") as file:
            metadata = dict(file.metadata())
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
        change(metadata, tensors)
        if fix_checksum:  # consistent, yet wrong: only the checks behind the checksum can tell
            metadata["sha256"] = digest(metadata, tensors)
        save_file(tensors, str(tmp_path / name), metadata=metadata)
        return tmp_path / name

    def reshaped(metadata, tensors, change):  # layer 1's weight and the shape the file gives it, changed alike
        tensors["1.weight"] = change(tensors["1.weight"])
        metadata["shapes"] = json.dumps([json.loads(metadata["shapes"])[0], list(tensors["1.weight"].shape)])

    def values_plus_one(metadata, tensors):
        tensors["0.values"][0] += 1.0

    with pytest.raises(CompressedFileError, match="checksum"):
        load(rewritten("damaged", values_plus_one, fix_checksum=False))
    with pytest.raises(CompressedFileError, match="checksum"):  # the checksum covers the metadata too
        load(rewritten("relu", lambda m, t: m.update(relus="[false, false]"), fix_checksum=False))
    for change, match in [
        (lambda m, t: m.update(shapes="[[11, 5], [2, 10]]"), r"the file says \[11, 5\]"),
        (lambda m, t: m.update(version="99"), "v99"),
        (lambda m, t: t.update({"0.bias": torch.zeros(3)}), r"layer 0 has a bias of shape \(3,\) for 4 units"),
        (lambda m, t: m.pop("stored"), r"the field 'stored' is missing"),
        (lambda m, t: m.update(stored='["coo", "csr"]'), r"layer 0 is stored as 'coo'"),
        (lambda m, t: t.update({"1.weight": t["1.weight"].double()}), r"layer 1 holds torch\.float64 weights, layer 0"),
        (lambda m, t: t.update({"0.values": t["0.values"].long()}), r"layer 0 holds torch\.int64"),
        (lambda m, t: m.update(shapes="[]", stored="[]", layouts="[]", relus="[]"), r"0 shapes"),
        (lambda m, t: t.update({"0.col": t["0.col"] + 100}), r"layer 0 does not fit its shape"),
        (lambda m, t: m.update(fused='"false"'), r"fused is 'false', not true or false"),
        (lambda m, t: m.update(relus="[1, false]"), r"relus\[0\] is 1, not true or false"),
        (lambda m, t: reshaped(m, t, lambda w: w[..., None]), r"layer 1's shape \[2, \d+, 1\] is not \[outputs, "
                                                              r"inputs\]"),
        (lambda m, t: reshaped(m, t, torch.flatten), r"layer 1's shape \[\d+\] is not \[outputs, inputs\]"),
        (lambda m, t: reshaped(m, t, lambda w: w[0, 0]), r"layer 1's shape \[\] is not \[outputs, inputs\]"),
        (lambda m, t: m.update(shapes=m["shapes"].replace("[2, ", "[2.0, ")), r"layer 1's shape \[2.0, \d+\] is not"),
        (lambda m, t: m.update(shapes=f'[{json.loads(m["shapes"])[0]}, "ab"]'), r"layer 1's shape 'ab' is not"),
        (lambda m, t: m.update(fused="true", sparse_inputs="true"), r"a dense first layer, got fused=True and "
                                                                    r"layouts \['csr', 'csr'\]"),
    ]:
        with pytest.raises(CompressedFileError, match=match):
            load(rewritten("bad", change))
    (tmp_path / "junk").write_bytes(b"not a model")
    with pytest.raises(CompressedFileError, match=r"junk: not a compressed tdlib model"):
        load(tmp_path / "junk")


FORMS = {
    "layers": lambda net: net.with_layouts(["csr", "dense", "csr"]),
    "fused": lambda net: net.fuse(["csr", "dense", "csr"]),
    "fused, the first by columns": lambda net: net.fuse(["dense", "dense", "csr"], sparse_inputs=True),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_compressed_model_is_an_ordinary_module(tmp_path: Path, form: str) -> None:
    """state_dict round-trips, .to() casts (and the backend follows: a fused model runs layer by layer
    where the chain cannot), fine-tuning changes what it computes."""
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    masks = masks_for(model, "unit", 50)
    small = FORMS[form](compress(model, masks, "dense"))
    assert isinstance(small, torch.nn.Sequential)
    assert [type(m).__name__ for m in small] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    x = torch.randn(5, 30)
    with torch.no_grad():
        before = small(x)
    state = small.state_dict()
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    other = FORMS[form](compress(MLP((60, 40), in_features=30, n_classes=4).eval(), masks, "dense"))
    other.load_state_dict(state)  # in place: the backend is rebuilt from the new weights
    with torch.no_grad():
        assert torch.allclose(other(x), before, atol=1e-6)
        in_double = small.double()(x.double())  # cast: the backend's copies follow
        assert in_double.dtype == torch.float64 and torch.allclose(in_double.float(), before, atol=1e-5)
    small.float()
    with torch.no_grad():
        assert torch.allclose(small(x), before, atol=1e-6)  # the backend, built again in float32
    optimizer = torch.optim.SGD(small.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(small(x), torch.tensor([0, 1, 2, 3, 0])).backward()
    optimizer.step()  # an in-place update: the inference backend must not run the old weights
    with torch.no_grad():
        assert not torch.allclose(small(x), before, atol=1e-4)
        assert torch.allclose(small(x), torch.nn.Sequential(*small)(x), atol=1e-5)


@pytest.mark.parametrize("layout", ["csr", "fused"])
def test_the_backend_follows_replaced_parameters_and_layers(layout: str) -> None:
    """A parameter or a layer replaced (not changed in place) is seen at the next call, fused or not."""
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    small = compress(model, masks_for(model, "weight", 50), layout)
    x = torch.randn(1, 30)
    with torch.no_grad():
        small(x)  # builds the backend
        small[4].bias = torch.nn.Parameter(small[4].bias + 1.0)
        assert torch.allclose(small(x), torch.nn.Sequential(*small)(x), atol=1e-5)
        small[4] = torch.nn.Linear(40, 4)
        assert torch.allclose(small(x), torch.nn.Sequential(*small)(x), atol=1e-5)


def test_torch_compile_and_onnx_export_see_plain_linear_layers(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    masks = masks_for(model, "unit", 50)
    small = compress(model, masks, "fused")
    x = torch.randn(5, 30)
    expected = apply_masks(model, masks)(x).detach()
    compiled = torch.compile(small)
    with torch.no_grad():
        assert torch.allclose(compiled(x), expected, atol=1e-5)
    session = onnxruntime.InferenceSession(str(export_onnx(small, tmp_path / "m.onnx")),
                                           providers=["CPUExecutionProvider"])
    many = torch.randn(1000, 30)
    for batch in (x[:1], x, many):  # the batch is free, as ONNX Runtime meets it
        (logits,) = session.run(None, {"x": batch.numpy()})
        assert torch.allclose(torch.from_numpy(logits), apply_masks(model, masks)(batch).detach(), atol=1e-5)


def test_masks_of_the_wrong_shape_are_refused() -> None:
    model = MLP((10,), in_features=5, n_classes=2).eval()
    with pytest.raises(ValueError, match=r"layers.0.weight.*shape \(10, 5\)"):
        compress(model, {"layers.0.weight": torch.ones(5, 10, dtype=torch.bool)})


def test_median_seconds_times_one_call_and_restores_the_thread_count() -> None:
    calls = []

    def slow(x: torch.Tensor) -> torch.Tensor:  # 0.2 ms a call: timed in blocks of about 5 calls
        calls.append(torch.get_num_threads())
        time.sleep(0.0002)
        return x

    before = torch.get_num_threads()
    seconds = median_seconds(slow, torch.zeros(1), threads=1, min_run_time=0.02)
    assert 0.0002 <= seconds < 0.0009  # one call: sleep bounds it below, a whole block would exceed 1 ms
    assert set(calls) == {1}
    assert torch.get_num_threads() == before
