"""Real Fashion-MNIST as in-memory tensors, from verified files.

Where the files are looked for, in order:

1. a directory the caller names (``root=``), else the ``TDLIB_DATA_DIR`` environment variable; a named
   directory is used or refused (a :class:`DataError` saying what it lacks), never skipped;
2. the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
3. the user cache (``$XDG_CACHE_HOME/tdlib/fashion-mnist``, by default ``~/.cache/...``);
4. a download from the data set's own mirror into that cache, for machines that are online.

A directory is used if it holds all four files, raw or ``.gz``. Every file is checked before use: the
decompressed bytes against the published raw MD5 (Debian recompressed its ``.gz`` files, so only the
content is comparable), and a downloaded ``.gz`` against the mirror's published MD5 before it is kept. A mismatch raises
:class:`DataError` naming the file and both checksums; nothing is ever trained on unverified data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Zalando's mirror of the four files (the one torchvision and the data set's README name).
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
ENV_VAR = "TDLIB_DATA_DIR"

# name -> (MD5 of the decompressed file, MD5 of the mirror's .gz)
FILES: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", "bef4ecab320f06d8554ea6380940ec79"),
    "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", "bb300cfdad3c16e7a12a480ee83cd310"),
}

HOW_TO_GET = (
    "Get Fashion-MNIST in one of these ways: on Debian, `apt-get install dataset-fashion-mnist`; or put the "
    f"four files (raw or .gz) in a directory and set {ENV_VAR} to it; or run once on a machine that can "
    "reach the Fashion-MNIST mirror, which downloads them to the user cache."
)


class DataError(RuntimeError):
    """Fashion-MNIST could not be found, read or verified."""


@dataclass(frozen=True)
class Data:
    """A labelled data set as in-memory tensors: inputs (N, ...) float32 and labels (N,) int64 class indices, a
    training and a test split, and where it came from. Fashion-MNIST's inputs are (N, 784) in [0, 1]."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Data:
        """A deterministic, class-balanced subset: ``n_train`` training and ``n_test`` test images.

        ``None`` keeps a split whole. The same (sizes, seed) always gives the same images, in the
        original order.
        """
        return Data(
            *_balanced(self.train_x, self.train_y, n_train, seed, "n_train"),
            *_balanced(self.test_x, self.test_y, n_test, seed + 1, "n_test"),
            source=f"{self.source} (subset n_train={n_train}, n_test={n_test}, seed={seed})",
        )


FashionMNIST = Data  # what load_fashion_mnist returns


def _balanced(x: Tensor, y: Tensor, n: int | None, seed: int, name: str) -> tuple[Tensor, Tensor]:
    if n is None:
        return x, y
    if not 1 <= n <= len(y):
        raise ValueError(f"{name} must lie in [1, {len(y)}], got {n}")
    classes = torch.unique(y)
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for i, c in enumerate(classes.tolist()):
        members = torch.nonzero(y == c).squeeze(1)
        quota = n // len(classes) + (1 if i < n % len(classes) else 0)
        picked.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    index = torch.sort(torch.cat(picked)).values
    return x[index], y[index]


def candidate_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The directories searched, in order (see the module docstring)."""
    named = root if root is not None else os.environ.get(ENV_VAR)
    dirs = [Path(named)] if named else []
    return [*dirs, DEBIAN_DIR, cache_dir()]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tdlib" / "fashion-mnist"


def _find(directory: Path, name: str) -> Path | None:
    for path in (directory / name, directory / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_verified(path: Path, name: str) -> bytes:
    """The decompressed bytes of ``path`` (file ``name``), after checking them against the raw MD5."""
    raw_md5 = FILES[name][0]
    try:
        data = path.read_bytes()
        content = gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path}: cannot read {name} ({error}); it is truncated or corrupt. {HOW_TO_GET}") from error
    actual = hashlib.md5(content).hexdigest()
    if actual != raw_md5:
        raise DataError(
            f"{path}: checksum mismatch for {name}: expected raw MD5 {raw_md5}, got {actual}. "
            f"The file is truncated or corrupt; delete it. {HOW_TO_GET}"
        )
    return content


def _parse_idx(content: bytes) -> np.ndarray:
    dims = content[3]
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _download(target: Path) -> None:
    """Fetch the missing ``.gz`` files from :data:`MIRROR`; each is kept only once its MD5 matches."""
    import urllib.request

    from tdlib.files import atomic_write

    target.mkdir(parents=True, exist_ok=True)
    for name, (_, gz_md5) in FILES.items():
        if _find(target, name) is not None:
            continue
        url = f"{MIRROR}{name}.gz"
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
        if (actual := hashlib.md5(data).hexdigest()) != gz_md5:
            raise DataError(f"{url}: checksum mismatch: expected MD5 {gz_md5}, got {actual}; nothing was kept")
        atomic_write(target / f"{name}.gz", data)


def _locate(root: str | os.PathLike[str] | None) -> tuple[Path, dict[str, Path]]:
    searched = candidate_dirs(root)
    named = root if root is not None else os.environ.get(ENV_VAR)
    if named:
        how = "root=" if root is not None else f"{ENV_VAR}="
        directory = Path(named)
        if not directory.is_dir():
            raise DataError(f"{how}{named}: no such directory. {HOW_TO_GET}")
        found = {name: _find(directory, name) for name in FILES}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise DataError(f"{how}{named}: the directory lacks {', '.join(missing)} (raw or .gz). {HOW_TO_GET}")
        return directory, found  # type: ignore[return-value]
    for directory in searched:
        found = {name: _find(directory, name) for name in FILES}
        if all(found.values()):
            return directory, found  # type: ignore[return-value]
    target = cache_dir()
    try:
        _download(target)
    except Exception as error:  # any failure of the network path ends in the same advice
        places = ", ".join(str(d) for d in searched)
        raise DataError(
            f"Fashion-MNIST not found in {places}, and downloading it failed ({error}). {HOW_TO_GET}"
        ) from error
    return target, {name: _find(target, name) for name in FILES}  # type: ignore[misc]


def locate(root: str | os.PathLike[str] | None = None) -> Path:
    """The directory Fashion-MNIST will be read from (downloading it there first if it is nowhere), or a
    :class:`DataError` saying why there is none: cheap, for commands to check before they start any work."""
    return _locate(root)[0]


def load_fashion_mnist(root: str | None = None) -> FashionMNIST:
    """All of Fashion-MNIST, verified: 60,000 training and 10,000 test images (see module docstring)."""
    return _load(root, os.environ.get(ENV_VAR))


@lru_cache(maxsize=4)
def _load(root: str | None, env: str | None) -> FashionMNIST:  # ``env`` only keys the cache
    directory, paths = _locate(root)
    arrays = {name: _parse_idx(read_verified(path, name)) for name, path in paths.items()}

    def images(name: str) -> Tensor:
        return torch.from_numpy(arrays[name].reshape(len(arrays[name]), -1).astype(np.float32) / 255.0)

    def labels(name: str) -> Tensor:
        return torch.from_numpy(arrays[name].astype(np.int64))

    return FashionMNIST(
        images("train-images-idx3-ubyte"),
        labels("train-labels-idx1-ubyte"),
        images("t10k-images-idx3-ubyte"),
        labels("t10k-labels-idx1-ubyte"),
        source=str(directory),
    )
