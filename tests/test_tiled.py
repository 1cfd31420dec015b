"""Batches by rows through the register-tiled kernel compute what torch computes, on one thread or two, and
the tiled model is an ordinary compressed model otherwise."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tdlib.compress import CompressedMLP, TiledMLP, compress, csr_batch, fastest_tiled, load, save, tiled
from tdlib.compress.chain import VALUES, Chain
from tdlib.compress.csr_batch import BLOCK, LANES, WIDE
from tdlib.compress.tiled import DEPTH, HALF, PANEL, QUARTER, THREAD_WORK, TILE, TiledChain, _kept_features, _run_rows
from tdlib.fused import NUMBA_THREADS, kernel_threads
from tdlib.metrics import masks_for
from tdlib.model import MLP

WIDTHS = [1, QUARTER, QUARTER + 1, 15, 16, 17, PANEL - 1, PANEL, PANEL + 1, PANEL + QUARTER, PANEL + 16, PANEL + 17,
          3 * PANEL + 5, DEPTH + 3]


def weight(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, cols) normal weights scaled by 1/sqrt(cols), so that activations keep their size from layer to
    layer and float32 rounding stays far below the tolerance (unscaled, four layers of 259 grew to ~10^3)."""
    return torch.randn(rows, cols, generator=generator) / max(cols, 1) ** 0.5


def csr(rows: int, cols: int, density: float, generator: torch.Generator) -> torch.Tensor:
    dense = weight(rows, cols, generator) * (torch.rand(rows, cols, generator=generator) < density)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CSR support is in beta"
        return dense.to_sparse_csr()


def tiled_chain(weights: list[torch.Tensor], biases: list[torch.Tensor | None], relus: list[bool],
                thread_work: int = 0) -> TiledChain:
    """The layers as a tiled chain, by default each on as many threads as torch has, however little its work
    (a tiled model runs its small layers on one)."""
    return TiledChain.of(Chain.pack(weights, biases, relus), thread_work=thread_work)


def reference(x: torch.Tensor, weights, biases, relus) -> torch.Tensor:
    for w, b, relu in zip(weights, biases, relus):
        x = (w @ x.T).T + (0 if b is None else b)
        x = x.relu() if relu else x
    return x


@settings(max_examples=40, deadline=None, database=None)
@given(widths=st.lists(st.sampled_from(WIDTHS), min_size=2, max_size=4),
       batch=st.sampled_from([1, 2, TILE - 1, TILE, TILE + 1, 2 * TILE + 3, WIDE, WIDE + 2 * LANES + 5]),
       csr_every=st.sampled_from([0, 1, 2, 3]),
       seed=st.integers(0, 2**16))
def test_a_batch_by_rows_equals_torch(widths: list[int], batch: int, csr_every: int, seed: int) -> None:
    """Every edge of the tiles: output widths around a panel, half and a quarter of one, inputs past one pass of
    DEPTH features, batches around a tile of TILE rows (and of one, which runs by features), CSR layers
    (every layer, or between dense ones) over batches of a vector of lanes or less, of WIDE lanes, and of both
    and a remainder, layers with and without a bias or a ReLU."""
    generator = torch.Generator().manual_seed(seed)
    shapes = list(zip(widths[1:], widths[:-1]))
    weights = [csr(rows, cols, 0.3, generator) if csr_every and i % csr_every == 1 % csr_every else
               weight(rows, cols, generator) for i, (rows, cols) in enumerate(shapes)]
    biases = [torch.randn(rows, generator=generator) if i % 2 == 0 else None for i, (rows, _) in enumerate(shapes)]
    relus = [i % 3 != 1 for i in range(len(shapes))]
    x = torch.randn(batch, widths[0], generator=generator).relu()  # half of them 0, as after a ReLU
    out = tiled_chain(weights, biases, relus)(x)
    expected = reference(x, weights, biases, relus)
    assert out.shape == expected.shape and out.is_contiguous()
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rows", [0, 1, BLOCK // 2 - 1, BLOCK // 2, BLOCK - 1, BLOCK, BLOCK + 1, BLOCK + BLOCK // 2,
                                  2 * BLOCK - 1, 2 * BLOCK + 5, 3 * BLOCK + BLOCK // 2 + 3])
def test_activations_turn_between_rows_and_features_value_for_value(rows: int) -> None:
    """The transposition between a chain's layers by rows and by features, for counts of rows around its
    blocks (whole blocks, half a block, what they leave): every value in its place, the padding 0, the
    result on a 64-byte boundary."""
    columns, stride = 37, 41
    h = np.random.default_rng(rows).standard_normal(rows * stride + 1).astype(np.float32)
    width = csr_batch.padded_batch(rows) + LANES
    out = csr_batch.transposed(h, stride, rows, columns, width)
    expected = np.zeros((columns, width), np.float32)
    expected[:, :rows] = h[:rows * stride].reshape(rows, stride)[:, :columns].T
    assert np.array_equal(out.reshape(columns, width), expected) and out.ctypes.data % 64 == 0


@settings(max_examples=25, deadline=None, database=None)
@given(n=st.sampled_from([1, 15, 17, DEPTH - 1, DEPTH + 3, 2 * DEPTH + 1]),
       depth=st.sampled_from([1, 7, 16, 100, DEPTH]), batch=st.sampled_from([2, TILE + 1, 2 * TILE + 3]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_passes_of_any_depth_give_the_bits_of_one_pass(n: int, depth: int, batch: int, threads: int, seed: int) -> None:
    """Each sum adds its products feature by feature whatever the passes (a pass stores its sums, the next
    loads them), so the depth a machine's caches prefer changes no bit, on one thread or two."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(PANEL + HALF + 3, n), (HALF, PANEL + HALF + 3)]
    weights = [weight(rows, cols, generator) for rows, cols in shapes]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    packed = Chain.pack(weights, biases, [True, False])
    x = torch.randn(batch, n, generator=generator)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        one_pass, passes = TiledChain.of(packed, 0, thread_work=0)(x), TiledChain.of(packed, depth, thread_work=0)(x)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(passes, one_pass)
    assert torch.allclose(one_pass, reference(x, weights, biases, [True, False]), atol=1e-4, rtol=1e-4)


@settings(max_examples=25, deadline=None, database=None)
@given(zero=st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), dead=st.sampled_from([0.0, 0.3, 1.0]),
       depth=st.sampled_from([0, 7, DEPTH]), batch=st.sampled_from([2, TILE, 2 * TILE + 3, 5 * TILE]),
       threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16))
def test_inputs_that_are_0_in_a_whole_tile_are_skipped_with_the_same_bits(zero: float, dead: float, depth: int,
                                                                          batch: int, threads: int,
                                                                          seed: int) -> None:
    """A tile leaves out the features that are 0 or -0 in all of its rows, the first layer's (columns of
    the inputs that are 0, some of them with a subnormal, an infinite or a NaN input in one row) and the
    hidden layers' (units that a ReLU has left at 0, here a share of them dead for every input): a product
    by 0 adds nothing, so the bits are those of every feature added, at any depth, on any thread count, in
    panels of 32, 16 and 8 outputs."""
    generator = torch.Generator().manual_seed(seed)
    n = DEPTH + 3
    shapes = [(3 * PANEL + HALF + 3, n), (PANEL + QUARTER, 3 * PANEL + HALF + 3), (5, PANEL + QUARTER)]
    weights = [weight(rows, cols, generator) for rows, cols in shapes]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    biases[0][torch.rand(shapes[0][0], generator=generator) < dead] = -1e3  # dead units: 0 after the ReLU
    chain = TiledChain.of(Chain.pack(weights, biases, [True, True, False]), depth)
    x = torch.randn(batch, n, generator=generator)
    x[:, torch.rand(n, generator=generator) < zero] = -0.0
    x[:, torch.rand(n, generator=generator) < zero / 2] = 0.0
    odd = torch.randint(0, n, (3,), generator=generator)
    x[-1, odd] = torch.tensor([1e-40, float("inf"), float("nan")])  # in columns otherwise 0, perhaps
    panels, at, bias = chain.panels
    every = at.copy()
    every[2] = 0  # as for a weight that is not finite: every feature added
    h = np.ascontiguousarray(x.numpy())
    with kernel_threads():
        skipping = _run_rows(h, *chain._arrays, panels, at, bias, threads, depth, 0)
        every_feature = _run_rows(h, *chain._arrays, panels, every, bias, 1, depth, 0)
    assert np.array_equal(skipping.view(np.int32), every_feature.view(np.int32))
    fine = ~torch.from_numpy(skipping).isnan().any(1)  # rows without the NaN, which spreads
    assert torch.allclose(torch.from_numpy(skipping)[fine], reference(x, weights, biases, [True, True, False])[fine],
                          atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_feature_0_in_a_whole_tile_is_not_read_at_all(threads: int) -> None:
    """The features left out are really not read: with an infinite weight on an input that is 0 in every row
    (which the kernel never meets in a real network: it adds every feature of such a layer) told to skip
    anyway, the outputs are those of a finite weight there, to the bit, where adding every feature gives
    NaN."""
    generator = torch.Generator().manual_seed(3)
    n, batch = 64, 3 * TILE + 5
    finite = [weight(PANEL + HALF + QUARTER, n, generator), weight(4, PANEL + HALF + QUARTER, generator)]
    infinite = [finite[0].clone(), finite[1]]
    infinite[0][:, 10] = float("inf")
    biases = [torch.randn(PANEL + HALF + QUARTER, generator=generator), torch.randn(4, generator=generator)]
    x = torch.randn(batch, n, generator=generator)
    x[:, :32] = 0.0  # half of the features 0 in every row, column 10 among them
    h = np.ascontiguousarray(x.numpy())
    with kernel_threads():
        results = []
        for weights, skip in ((finite, 0), (infinite, 1), (infinite, 0)):
            chain = TiledChain.of(Chain.pack(weights, biases, [True, False]), 0)
            panels, at, bias = chain.panels
            at = at.copy()
            at[2] = skip
            results.append(_run_rows(h, *chain._arrays, panels, at, bias, threads, 0, 0))
    assert np.array_equal(results[1].view(np.int32), results[0].view(np.int32))
    assert np.isnan(results[2]).all()


def test_a_tile_lists_the_features_not_0_in_its_rows_where_enough_of_them_are_0() -> None:
    """Of a tile's rows, the features 0 or -0 in every row (the last tile's missing rows repeat the batch's
    last; a subnormal is not 0, nor is NaN) are left out where they are more than 1/16 + 6/width of them;
    each pass's features begin where its first kept one is; where the first tile has too few, no tile lists
    them (-1: every feature), whether its first row says so or the others do."""
    n, batch, step, width = 40, TILE + 3, 16, 96  # listed where more than 1/16 + 6/96 (5 of 40) are 0
    x = np.ones((batch, n), np.float32)
    x[:TILE, :10] = -0.0  # the first tile: 10 features 0 in all of its rows
    x[0, 3] = np.nan  # NaN is not 0
    x[TILE - 1, 4] = 1e-40  # nor is a subnormal
    x[TILE:, 20:24] = 0  # the last tile: only 4 of 40
    x[TILE:, 30:36] = 0  # and 6 more, 10 in all
    x[TILE + 1, 30] = 1.0
    kept, starts, size = np.empty(2 * n, np.int32), np.empty(2 * 4, np.int64), np.empty(n, np.uint32)  # flat
    _kept_features(x.ravel(), n, n, batch, step, width, True, kept, starts, size, 0, 2)
    first = [3, 4, *range(10, n)]
    assert starts[:4].tolist() == [0, 8, 24, len(first)] and kept[:len(first)].tolist() == first
    last = [c for c in range(n) if not (20 <= c < 24 or 31 <= c < 36)]
    assert starts[4:].tolist() == [0, 16, 27, len(last)] and kept[n:n + len(last)].tolist() == last
    starts[:] = 0
    _kept_features(x.ravel(), n, n, batch, step, width, True, kept, starts, size, 1, 2)  # the last tile alone
    assert starts.tolist() == [0, 0, 0, 0, 0, 16, 27, len(last)]
    x[:TILE, 6:10] = 1  # the first tile now has 5 of 40 features 0: not enough, and no tile is looked at
    _kept_features(x.ravel(), n, n, batch, step, width, True, kept, starts, size, 0, 2)
    assert starts[[3, 7]].tolist() == [-1, -1]
    x[1:TILE, 6:10] = 1
    x[0, 6:10] = 0  # its first row has 9 of 40 0 again, but only 5 are 0 in every row
    _kept_features(x.ravel(), n, n, batch, step, width, True, kept, starts, size, 0, 2)
    assert starts[[3, 7]].tolist() == [-1, -1]
    x[:TILE, 6:10] = 0
    _kept_features(x.ravel(), n, n, batch, step, width, False, kept, starts, size, 0, 2)  # not to skip
    assert starts[[3, 7]].tolist() == [-1, -1]


@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
def test_a_weight_that_is_not_finite_times_an_input_of_0_is_nan_as_in_torch(bad: float) -> None:
    """A weight that is infinite or NaN makes its product by 0 NaN, which skipping the 0 would lose: such a
    layer adds every feature."""
    weights = [torch.ones(PANEL, 50), torch.ones(3, PANEL)]
    weights[0][4, 7] = bad
    biases = [torch.zeros(PANEL), torch.zeros(3)]
    x = torch.ones(TILE, 50)
    x[:, :25] = 0  # half of the first layer's features are 0 in the tile, feature 7 among them
    chain = TiledChain.of(Chain.pack(weights, biases, [True, False]), 0)
    out = chain(x)
    expected = reference(x, weights, biases, [True, False])
    assert expected.isnan().all()  # output 4 is NaN (bad * 0), and every output reads it
    assert out.isnan().all()
    assert chain.panels[1][2].tolist() == [0, 1]


@pytest.mark.parametrize("forms", ["DDDD", "CCCC", "CDCD", "DCDC"])
def test_layers_with_no_units_or_no_inputs_left(forms: str) -> None:
    """Dense (D) or CSR (C) layers of no outputs, then of no inputs, and a CSR layer whose rows hold nothing:
    the bias alone."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (0, 7), (4, 0), (3, 4), (6, 3)]
    weights = [csr(rows, cols, 0.0 if i == 4 else 0.6, generator) if (forms + "C")[i] == "C" else
               weight(rows, cols, generator) for i, (rows, cols) in enumerate(shapes)]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    relus = [True, True, False, True, False]
    x = torch.randn(9, 5, generator=generator)
    out = tiled_chain(weights, biases, relus)(x)
    assert torch.allclose(out, reference(x, weights, biases, relus), atol=1e-5)
    assert torch.equal(out, biases[-1].expand(9, 6))


def test_any_count_of_threads_gives_the_bits_of_one() -> None:
    """The kernels share out a CSR layer's outputs (by equal shares of its non-zeros) and a dense layer's tiles
    among as many parts as threads asked for, also more parts than outputs or than numba has threads (which
    then run the parts in turn, as on a machine of one core): the bits of one thread."""
    generator = torch.Generator().manual_seed(5)
    shapes = [(PANEL + 3, 37), (5, PANEL + 3), (HALF + 1, 5), (3, HALF + 1)]
    weights = [csr(rows, cols, 0.3, generator) if i != 2 else weight(rows, cols, generator)
               for i, (rows, cols) in enumerate(shapes)]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    chain = tiled_chain(weights, biases, [True, True, True, False])
    x = np.ascontiguousarray(torch.randn(WIDE + 3, 37, generator=generator).numpy())
    with kernel_threads():  # numba's pool, started here, leaves torch's count as it was
        one = _run_rows(x, *chain._arrays, *chain.panels, 1, DEPTH, 0)
        for threads in (2, 3, 7, 50):
            assert np.array_equal(_run_rows(x, *chain._arrays, *chain.panels, threads, DEPTH, 0), one), threads


@pytest.mark.skipif(NUMBA_THREADS < 2, reason="numba starts one thread on this machine")
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("batch", [2, 2 * TILE + 3, 5 * TILE, WIDE + LANES])
def test_two_threads_give_the_bits_of_one(batch: int, sparse: bool) -> None:
    """On more than one torch thread, dense layers of a batch run on numba's threads, by runs of the batch's
    tiles, or, for fewer tiles than threads (a batch of 2), by panels, with what whole panels leave (16,
    24 and 8 outputs here) in the last; CSR layers (the first two, where ``sparse``) by runs of their
    outputs: each output is summed in the same order, so the bits are those of one thread, whichever layers
    run on one thread for their little work (THREAD_WORK); torch's count is left alone."""
    generator = torch.Generator().manual_seed(2)
    shapes = [(3 * PANEL + HALF, DEPTH + 5), (PANEL + HALF + QUARTER - 2, 3 * PANEL + HALF),
              (QUARTER, PANEL + HALF + QUARTER - 2), (3, QUARTER)]
    weights = [csr(rows, cols, 0.3, generator) if sparse and i < 2 else weight(rows, cols, generator)
               for i, (rows, cols) in enumerate(shapes)]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    relus = [True, True, True, False]
    chain, small_alone = tiled_chain(weights, biases, relus), tiled_chain(weights, biases, relus, THREAD_WORK)
    x = torch.randn(batch, DEPTH + 5, generator=generator)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # first: a later call could find the memory of an earlier one's result
        two, some_on_two = chain(x), small_alone(x)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one = chain(x)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(one, two) and torch.equal(one, some_on_two)
    assert torch.allclose(two, reference(x, weights, biases, relus), atol=1e-4, rtol=1e-4)


@settings(max_examples=10, deadline=None, database=None)
@given(seed=st.integers(0, 2**16))
def test_an_input_gives_the_same_bits_in_any_batch_above_one(seed: int) -> None:
    """Each output adds its products in one order whatever the batch: a dense layer's by features in any tile,
    a CSR layer's by its row's entries in blocks of WIDE lanes or of LANES, four rows side by side. So an input's
    outputs do not depend on the batch it comes in (of two or more; one runs through the chain's own kernel)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(PANEL + 5, 37), (HALF + 3, PANEL + 5), (PANEL + HALF, HALF + 3), (3, PANEL + HALF)]
    weights = [csr(rows, cols, 0.3, generator) if i < 3 else weight(rows, cols, generator)
               for i, (rows, cols) in enumerate(shapes)]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    chain = tiled_chain(weights, biases, [True, True, True, False])
    x = torch.randn(WIDE + 2 * LANES + 5, 37, generator=generator).relu()
    whole = chain(x)
    for batch in (2, LANES - 1, LANES + 1, WIDE, WIDE + LANES):
        assert torch.equal(chain(x[-batch:]), whole[-batch:]), batch


def test_a_tiled_model_is_an_ordinary_compressed_model(tmp_path) -> None:
    """It equals the masked model's compression, pickles, follows cast and in-place changes, saves and loads
    as the fused chain it is; bad inputs are named as the chain names them."""
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    plain = compress(model, masks_for(model, "unit", 50), "dense")
    small = tiled(plain, ["dense", "dense", "dense"])
    assert isinstance(small, CompressedMLP)
    assert small.form == "fused, layers dense/dense/dense, aligned, batches by rows, tiled"
    x = torch.randn(5, 30)
    with torch.no_grad():
        before = small(x)
        assert torch.allclose(before, plain(x), atol=1e-5) and isinstance(small._backend, TiledChain)
        pickled = io.BytesIO()
        torch.save(small, pickled)
        pickled.seek(0)
        assert torch.equal(torch.load(pickled, weights_only=False)(x), before)
        assert torch.allclose(small.double()(x.double()).float(), before, atol=1e-5)  # layer by layer in float64
        small.float()
        small(x)  # built again, in float32
        small[0].weight.mul_(2.0)  # in place: the arrays and panels are laid out again
        assert torch.allclose(small(x), torch.nn.Sequential(*small)(x), atol=1e-5)
        small[2].bias.add_(1.0)
        assert torch.allclose(small(x[:1]), torch.nn.Sequential(*small)(x[:1]), atol=1e-5)  # a batch of one too
    save(small, tmp_path / "m.safetensors")
    again = load(tmp_path / "m.safetensors")
    assert type(again) is CompressedMLP and again.fused and again.layouts == small.layouts
    with torch.no_grad(), pytest.raises(ValueError, match=r"inputs must be \(batch, 30\), got \(5, 29\)"):
        small(torch.randn(5, 29))
    one_pass = tiled(plain, ["dense", "dense", "dense"], depth=0)
    assert one_pass.form == "fused, layers dense/dense/dense, aligned, batches by rows, tiled, in one pass"
    with torch.no_grad():
        assert torch.equal(one_pass(x), tiled(plain, ["dense"] * 3)(x)) and one_pass._backend.depth == 0
        pickled = io.BytesIO()
        torch.save(one_pass, pickled)
        pickled.seek(0)
        assert torch.load(pickled, weights_only=False)._ensure_backend().depth == 0
    with pytest.raises(ValueError, match="depth must be 0"):
        tiled(plain, depth=-1)


def test_a_batch_of_one_runs_the_chains_kernel_on_aligned_arrays() -> None:
    """A tiled model runs a batch of one through the chain's own kernel, bit for bit as the fused chain
    does, on a copy of the arrays with each layer's weights from a 64-byte boundary, also after pickling
    (numpy places what it unpickles wherever it likes)."""
    generator = torch.Generator().manual_seed(3)
    shapes = [(PANEL + 3, 37), (HALF + 1, PANEL + 3), (5, HALF + 1), (3, 5)]
    weights = [csr(rows, cols, 0.4, generator) if i == 2 else weight(rows, cols, generator)
               for i, (rows, cols) in enumerate(shapes)]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    relus = [True, True, True, False]
    for sparse_inputs in (False, True):
        packed = Chain.pack(weights, biases, relus, sparse_inputs)
        chain = TiledChain.of(packed)
        x = torch.randn(1, 37, generator=generator).relu()
        assert torch.equal(chain(x), packed(x))
        pickled = io.BytesIO()
        torch.save(chain, pickled)
        pickled.seek(0)
        again = torch.load(pickled, weights_only=False)
        assert "_aligned" not in again.__dict__  # laid out anew, not unpickled wherever numpy put it
        for each in (chain, again):
            layout, _, _, values, _, _ = each._aligned
            assert all(values[start:].ctypes.data % 64 == 0 for start in layout[VALUES, :-1])
            assert torch.equal(each(x), packed(x))


def test_panels_start_each_layer_on_64_bytes_and_pad_outputs_to_a_quarter_panel() -> None:
    """Each dense layer's outputs are padded to a multiple of QUARTER (not of a panel or half of one: 8
    lanes of work, not 16, where 8 are left) and its weights and bias start on a 64-byte boundary though
    an odd count of inputs times such a width is not a multiple of 16 floats."""
    generator = torch.Generator().manual_seed(4)
    shapes = [(PANEL + QUARTER - 3, 37), (HALF + QUARTER, PANEL + QUARTER - 3), (3, HALF + QUARTER), (PANEL + 1, 3)]
    weights = [weight(rows, cols, generator) for rows, cols in shapes]
    biases = [torch.randn(rows, generator=generator) for rows, _ in shapes]
    chain = TiledChain.of(Chain.pack(weights, biases, [True, True, True, False]))
    panels, at, bias = chain.panels
    widths = [-(-rows // QUARTER) * QUARTER for rows, _ in shapes]
    assert [int(size) for size in np.diff([*at[0], panels.size])] == [-(-w * n // 16) * 16 for w, (_, n) in
                                                                      zip(widths, shapes)]
    assert [int(size) for size in np.diff([*at[1], bias.size])] == [-(-w // 16) * 16 for w in widths]
    assert all(panels[start:].ctypes.data % 64 == 0 for start in at[0])
    assert all(bias[start:].ctypes.data % 64 == 0 for start in at[1])
    x = torch.randn(TILE + 3, 37, generator=generator)
    assert torch.allclose(chain(x), reference(x, weights, biases, [True, True, True, False]), atol=1e-4, rtol=1e-4)


def test_fastest_tiled_takes_the_tiled_model_only_where_it_measures_faster() -> None:
    torch.manual_seed(0)
    model = MLP((60, 40), in_features=30, n_classes=4).eval()
    plain = compress(model, masks_for(model, "unit", 50), "dense")

    def tiled_faster(fn, x, threads) -> float:
        return 0.5 if isinstance(fn, TiledMLP) and fn.layouts == ["dense"] * 3 else 1.0

    assert isinstance(fastest_tiled(plain, 16, seconds=tiled_faster), TiledMLP)
    one_pass = fastest_tiled(plain, 16, seconds=lambda fn, x, t: 0.5 if getattr(fn, "depth", None) == 0 else 1.0)
    assert isinstance(one_pass, TiledMLP) and one_pass.depth == 0  # the depth is measured too
    # A batch of one: the form fastest picks, as it is and as a tiled model (the same chain, aligned)
    fused_fastest = partial(fastest_tiled, plain, 1, sample=torch.rand(4, 30).relu_())
    one = fused_fastest(seconds=lambda fn, x, t: 0.5 if isinstance(fn, TiledMLP) else
                        1.0 if getattr(fn, "sparse_inputs", False) else 2.0)
    assert isinstance(one, TiledMLP) and one.layouts == ["dense"] * 3 and one.sparse_inputs
    slower = fused_fastest(seconds=lambda fn, x, t: 2.0 if isinstance(fn, TiledMLP) else
                           1.0 if getattr(fn, "sparse_inputs", False) else 1.5)
    assert type(slower) is CompressedMLP and slower.fused and slower.sparse_inputs  # the tiled one measured slower
    layered = fused_fastest(seconds=lambda fn, x, t: 1.0 if getattr(fn, "fused", False) else 0.5)
    assert type(layered) is CompressedMLP and not layered.fused  # no chain to align
    assert not isinstance(fastest_tiled(plain, 16, seconds=lambda fn, x, t: 2.0 if isinstance(fn, TiledMLP)
                                        else 1.0), TiledMLP)
    in_double = compress(model.double(), masks_for(model, "unit", 50), "dense")
    assert not isinstance(fastest_tiled(in_double, 16, seconds=tiled_faster), TiledMLP)
    x = torch.randn(16, 30)
    with torch.no_grad():
        assert torch.allclose(fastest_tiled(plain, 16)(x), plain(x), atol=1e-5)  # really timed


def test_a_cached_kernel_is_compiled_again_when_a_module_it_depends_on_changes(tmp_path: Path) -> None:
    """numba checks only the source of the file defining a kernel before reusing its cache; a kernel holding
    another module's constant must see that module's change too (tiled.py holds chain.py's and simd.py's)."""
    (tmp_path / "dep.py").write_text("K = 1\n")
    (tmp_path / "kern.py").write_text(
        "from numba import njit\nimport dep\nfrom tdlib.compress import simd\n\n\n"
        "@njit(cache=True)\ndef k():\n    return dep.K\n\n\nsimd.cache_depends_on((k,), dep)\n")
    run = [sys.executable, "-c", "import kern; print(kern.k())"]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    assert subprocess.run(run, cwd=tmp_path, env=environment, capture_output=True, text=True).stdout == "1\n"
    assert list((tmp_path / "__pycache__").glob("kern.k-*.nbi"))  # cached
    (tmp_path / "dep.py").write_text("K = 22\n")
    assert subprocess.run(run, cwd=tmp_path, env=environment, capture_output=True, text=True).stdout == "22\n"


def test_a_first_call_on_one_thread_leaves_torch_on_one_thread() -> None:
    """The first tiled call in a process starts numba's OpenMP pool, which sets the thread count torch reads
    to every core: a model asked to run on one thread then ran, and left torch, on all of them. In a fresh
    process (the pool not started), on one torch thread, the count stays one, call after call."""
    script = ("import torch\nfrom tdlib.compress import compress, tiled\nfrom tdlib.model import MLP\n"
              "torch.set_num_threads(1)\nmodel = tiled(compress(MLP((40,), in_features=30).eval(), {}, 'dense'))\n"
              "with torch.no_grad():\n    counts = [(model(torch.rand(9, 30)), torch.get_num_threads())[1]"
              " for _ in range(3)]\nprint(counts)")
    environment = {**os.environ, "NUMBA_NUM_THREADS": "2"}  # a pool of two, even on a machine of one core
    ran = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300)
    assert ran.stdout == "[1, 1, 1]\n", ran.stderr[-2000:]
