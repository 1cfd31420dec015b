"""Compressed models on disk: a safetensors file (readable by any safetensors tool), compact, checked.

Each weight is stored in whichever form is smaller, dense (``{i}.weight``) or CSR with int32 indices
(``{i}.crow``, ``{i}.col``, ``{i}.values``); biases as ``{i}.bias``. The metadata holds the format and
version, the shapes, layouts, ReLU flags, whether the model runs fused (and its first layer by columns,
to skip inputs that are 0), and a SHA-256 over all of it and
every tensor's name, dtype, shape and bytes. :func:`load` checks every one of these and names the first
that fails, and never trusts a file's CSR indices.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from tdlib.compress.module import LAYOUTS, CompressedMLP, csr_is_smaller, csr_quietly
from tdlib.compress.surgery import linear
from tdlib.files import atomic_write

FILE_FORMAT = "tdlib-compressed-mlp"
FILE_VERSION = 4  # 4: sparse_inputs; 3: safetensors; 2: a torch pickle whose header says whether it runs fused
FIELDS = ("shapes", "layouts", "relus", "fused", "sparse_inputs", "stored")
READABLE = {"3": {"sparse_inputs": "false"}, str(FILE_VERSION): {}}  # versions read, and what older ones imply


class CompressedFileError(ValueError):
    """A compressed-model file is not one, or does not match its own metadata."""


def digest(metadata: dict[str, str], tensors: dict[str, Tensor]) -> str:
    """SHA-256 of the metadata (but its own checksum) and each tensor's name, dtype, shape and bytes."""
    sha = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        value = tensors[name]
        sha.update(f"{name}{value.dtype}{tuple(value.shape)}".encode())
        sha.update(value.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def save(model: CompressedMLP, path: str | Path) -> None:
    """Write ``model`` compactly (see the module doc); :func:`load` restores its layouts and backend."""
    tensors: dict[str, Tensor] = {}
    stored = []
    for i, layer in enumerate(model.linears):
        weight = layer.weight.detach().cpu()
        if csr_is_smaller(weight):
            with csr_quietly():
                csr = weight.to_sparse_csr()
            tensors |= {f"{i}.crow": csr.crow_indices().to(torch.int32), f"{i}.col": csr.col_indices().to(torch.int32),
                        f"{i}.values": csr.values().contiguous()}
            stored.append("csr")
        else:
            tensors[f"{i}.weight"] = weight.contiguous()
            stored.append("dense")
        if layer.bias is not None:
            tensors[f"{i}.bias"] = layer.bias.detach().cpu().contiguous()
    metadata = {"format": FILE_FORMAT, "version": str(FILE_VERSION), "shapes": json.dumps(model.shapes),
                "layouts": json.dumps(model.layouts), "relus": json.dumps(list(model.relus)),
                "fused": json.dumps(model.fused), "sparse_inputs": json.dumps(model.sparse_inputs),
                "stored": json.dumps(stored)}
    metadata["sha256"] = digest(metadata, tensors)
    # Through bytes: safetensors' own save_file writes 0600 whatever the umask, and not atomically.
    atomic_write(Path(path), safetensors_bytes(tensors, metadata=metadata))


def load(path: str | Path) -> CompressedMLP:
    """Read a file written by :func:`save`; raise :class:`CompressedFileError` naming what does not match."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # any unreadable file is reported the same way
        raise CompressedFileError(f"{path}: not a compressed tdlib model ({error!r})") from error
    version = (metadata.get("format"), metadata.get("version"))
    if version[0] != FILE_FORMAT or version[1] not in READABLE:
        raise CompressedFileError(f"{path}: format {version[0]!r} v{version[1]}, expected {FILE_FORMAT!r} "
                                  f"v{' or v'.join(sorted(READABLE))}")
    if metadata.get("sha256") != digest(metadata, tensors):
        raise CompressedFileError(f"{path}: the file does not match its checksum; it is damaged")
    try:
        given = {**READABLE[version[1]], **metadata}  # an older version's implied fields, then the file's own
        fields = {name: json.loads(given[name]) for name in FIELDS}
        return _model(fields, tensors)
    except KeyError as error:
        raise CompressedFileError(f"{path}: the field {error} is missing") from error
    except (TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise CompressedFileError(f"{path}: {error}") from error


def _model(fields: dict, tensors: dict[str, Tensor]) -> CompressedMLP:
    """The model a file's fields and tensors describe, each layer checked: a ValueError names the first
    mismatch."""
    shapes, stored = fields["shapes"], fields["stored"]
    if not shapes or not len(shapes) == len(stored) == len(fields["layouts"]) == len(fields["relus"]):
        raise ValueError(f"{len(shapes)} shapes, {len(stored)} stored forms, {len(fields['layouts'])} layouts and "
                         f"{len(fields['relus'])} ReLU flags: one of each per layer")
    def values_of(i: int, form: str) -> Tensor:
        if form not in LAYOUTS:
            raise ValueError(f"layer {i} is stored as {form!r}, not one of {LAYOUTS}")
        return tensors[f"{i}.values"] if form == "csr" else tensors[f"{i}.weight"]

    for i, shape in enumerate(shapes):
        if not (isinstance(shape, list) and len(shape) == 2 and all(type(n) is int and n >= 0 for n in shape)):
            raise ValueError(f"layer {i}'s shape {shape!r} is not [outputs, inputs], two whole numbers")
    first = values_of(0, stored[0])
    linears = []
    for i, (shape, form) in enumerate(zip(shapes, stored)):
        values = values_of(i, form)
        if not values.is_floating_point() or values.dtype != first.dtype:
            raise ValueError(f"layer {i} holds {values.dtype} weights, layer 0 {first.dtype}: one floating-point "
                             "dtype is expected")
        if form == "csr":
            try:
                with csr_quietly():
                    weight = torch.sparse_csr_tensor(  # checked: a file's indices are never trusted
                        tensors[f"{i}.crow"].long(), tensors[f"{i}.col"].long(), values, size=shape,
                        check_invariants=True,
                    ).to_dense()
            except RuntimeError as error:
                raise ValueError(f"layer {i} does not fit its shape (the file says {shape}): {error}") from error
        else:
            weight = values
        if list(weight.shape) != list(shape) or (i and shape[1] != shapes[i - 1][0]):
            raise ValueError(f"layer {i} has shape {list(weight.shape)}, the file says {shape}")
        bias = tensors.get(f"{i}.bias")
        if bias is not None and tuple(bias.shape) != (shape[0],):
            raise ValueError(f"layer {i} has a bias of shape {tuple(bias.shape)} for {shape[0]} units")
        linears.append(linear(weight, bias))
    flags = [("fused", fields["fused"]), ("sparse_inputs", fields["sparse_inputs"]),
             *((f"relus[{i}]", r) for i, r in enumerate(fields["relus"]))]
    for name, value in flags:
        if not isinstance(value, bool):  # json.loads gives a bool for true and false, and only for them
            raise ValueError(f"{name} is {value!r}, not true or false")
    return CompressedMLP(linears, fields["relus"], fields["layouts"], fields["fused"], fields["sparse_inputs"])
