"""Fashion-MNIST loading: sources, checksums, errors, subsets."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from tdlib import data
from tdlib.data import FILES, DataError, load_fashion_mnist


@pytest.fixture(scope="module")
def full() -> data.FashionMNIST:
    return load_fashion_mnist()


@pytest.fixture()
def no_default_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide the Debian directory and the user cache, and make the download fail as it does offline."""
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)

    def offline(target: Path) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download", offline)
    return tmp_path


def copy_raw(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (target / name).write_bytes(gzip.decompress((source / f"{name}.gz").read_bytes()))


def test_real_data_shapes_and_ranges(full: data.FashionMNIST) -> None:
    assert full.train_x.shape == (60_000, 784) and full.test_x.shape == (10_000, 784)
    assert full.train_x.dtype == torch.float32
    assert float(full.train_x.min()) == 0.0 and float(full.train_x.max()) == 1.0
    assert torch.equal(torch.bincount(full.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(full.test_y), torch.full((10,), 1000))


def test_named_directory_of_raw_files_gives_the_same_tensors(
    full: data.FashionMNIST, tmp_path: Path, no_default_sources: Path
) -> None:
    copy_raw(Path(full.source), tmp_path / "raw")
    again = load_fashion_mnist(str(tmp_path / "raw"))
    assert again.source == str(tmp_path / "raw")
    assert torch.equal(again.train_x, full.train_x) and torch.equal(again.test_y, full.test_y)


def test_environment_variable_names_the_directory(
    full: data.FashionMNIST, tmp_path: Path, no_default_sources: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_raw(Path(full.source), tmp_path / "env")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data.candidate_dirs()[0] == tmp_path / "env"
    assert data._locate(None)[0] == tmp_path / "env"


def test_corrupt_file_names_file_and_both_checksums(
    full: data.FashionMNIST, tmp_path: Path, no_default_sources: Path
) -> None:
    copy_raw(Path(full.source), tmp_path / "bad")
    victim = tmp_path / "bad" / "t10k-labels-idx1-ubyte"
    content = bytearray(victim.read_bytes())
    content[100] ^= 0xFF
    victim.write_bytes(bytes(content))
    with pytest.raises(DataError) as error:
        load_fashion_mnist(str(tmp_path / "bad"))
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert FILES["t10k-labels-idx1-ubyte"][0] in message  # expected
    assert data.hashlib.md5(bytes(content)).hexdigest() in message  # actual


def test_truncated_gz_is_named(full: data.FashionMNIST, tmp_path: Path, no_default_sources: Path) -> None:
    target = tmp_path / "trunc"
    target.mkdir()
    for name in FILES:
        source = (Path(full.source) / f"{name}.gz").read_bytes()
        (target / f"{name}.gz").write_bytes(source[: len(source) // 2] if name.startswith("train-images") else source)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(str(target))


def test_named_directory_missing_a_file_says_which(
    full: data.FashionMNIST, tmp_path: Path, no_default_sources: Path
) -> None:
    copy_raw(Path(full.source), tmp_path / "part")
    (tmp_path / "part" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte"):
        load_fashion_mnist(str(tmp_path / "part"))


@pytest.mark.parametrize("state", ["missing", "incomplete"])
def test_a_named_environment_directory_is_used_or_refused_never_skipped(
    full: data.FashionMNIST, tmp_path: Path, no_default_sources: Path, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:
    copy_raw(Path(full.source), tmp_path / "fallback")
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "fallback")  # a complete copy it must not fall back to
    named = tmp_path / "env"
    if state == "incomplete":
        copy_raw(Path(full.source), named)
        (named / "t10k-images-idx3-ubyte").unlink()
    monkeypatch.setenv(data.ENV_VAR, str(named))
    with pytest.raises(DataError, match=r"TDLIB_DATA_DIR=.*(no such directory|lacks t10k-images-idx3-ubyte)"):
        load_fashion_mnist()


def test_every_single_bit_flip_of_a_gz_is_a_named_data_error(
    full: data.FashionMNIST, tmp_path: Path
) -> None:
    """Sampled bit flips over a small .gz, each an error naming the file (once a bare zlib.error escaped)."""
    import gzip
    import random

    name = "t10k-labels-idx1-ubyte"
    source = gzip.compress((Path(full.source) / name).read_bytes() if (Path(full.source) / name).exists()
                           else gzip.decompress((Path(full.source) / f"{name}.gz").read_bytes()))
    path = tmp_path / f"{name}.gz"
    rng = random.Random(0)
    for bit in rng.sample(range(8 * len(source)), 300):
        damaged = bytearray(source)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        try:
            data.read_verified(path, name)
        except DataError as error:
            assert name in str(error)


def test_nothing_anywhere_and_offline_says_how_to_get_it(no_default_sources: Path) -> None:
    with pytest.raises(DataError) as error:
        data._locate(None)
    assert "network is unreachable" in str(error.value)
    assert "apt-get install dataset-fashion-mnist" in str(error.value)


def test_subset_is_balanced_deterministic_and_seeded(full: data.FashionMNIST) -> None:
    a = full.subset(1000, 205, seed=3)
    b = full.subset(1000, 205, seed=3)
    c = full.subset(1000, 205, seed=4)
    assert a.train_x.shape == (1000, 784) and a.test_x.shape == (205, 784)
    assert torch.equal(torch.bincount(a.train_y), torch.full((10,), 100))
    assert sorted(torch.bincount(a.test_y).tolist()) == [20] * 5 + [21] * 5
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x)
    with pytest.raises(ValueError, match="n_train"):
        full.subset(0)


def test_the_download_keeps_a_file_only_when_its_md5_is_the_mirrors(
        full: data.FashionMNIST, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror is a local directory here (file:// URLs go through the same urllib path): first with
    Debian's recompressed .gz files, which differ from the mirror's, so nothing may be kept; then with the
    MD5s those files have, as if they were the mirror's."""
    import hashlib

    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "MIRROR", f"{Path(full.source).as_uri()}/")
    with pytest.raises(DataError, match="checksum mismatch: expected MD5"):
        data._load(None, "refused")
    assert not list((tmp_path / "cache").rglob("*.gz"))
    debian = {name: (raw, hashlib.md5((Path(full.source) / f"{name}.gz").read_bytes()).hexdigest())
              for name, (raw, _) in FILES.items()}
    monkeypatch.setattr(data, "FILES", debian)
    fetched = data._load(None, "fetched")
    assert fetched.source == str(data.cache_dir()) and len(list(data.cache_dir().glob("*.gz"))) == 4
    assert torch.equal(fetched.train_x, full.train_x) and torch.equal(fetched.test_y, full.test_y)
