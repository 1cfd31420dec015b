"""Sixteen float32 lanes as one value in numba-compiled code, for a matrix-product micro-kernel.

Numba's loops are vectorised by LLVM one innermost loop at a time, and LLVM does not keep a tile of
partial sums in registers across a loop over the shared dimension: written as loops, a dense layer at a
batch of 16 ran at under half of what the same arithmetic reaches with its sums held in registers. Here a
:data:`f32x16` is an LLVM ``<16 x float>`` value, so a kernel can name each of its accumulators, as BLAS
micro-kernels do, and LLVM keeps them in registers: one 512-bit register each with AVX-512, two with AVX2,
four with SSE or NEON (the same code and results everywhere, each lane a fused multiply-add).

Every access takes a flat float32 array and an element index, unchecked (the kernels' own loops keep
them in bounds); loads and stores are unaligned, and fastest on 64-byte-aligned addresses
(:func:`aligned_empty`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16
VECTOR = ir.VectorType(ir.FloatType(), LANES)


class Float32x16(types.Type):
    """The numba type of sixteen float32 lanes."""

    def __init__(self) -> None:
        super().__init__(name="float32x16")


f32x16 = Float32x16()


@register_model(Float32x16)
class _Float32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, VECTOR)


def _address(context, builder, array_type, array, index):
    """The address of ``array[index]`` (a C-contiguous float32 array, flat index), as a ``<16 x float>*``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), VECTOR.as_pointer())


def _splat(builder, scalar):
    lane0 = builder.insert_element(ir.Constant(VECTOR, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(lane0, ir.Constant(VECTOR, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _call(builder, name: str, arguments):
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(VECTOR, [VECTOR] * len(arguments)),
                                              name)
    return builder.call(function, arguments)


@intrinsic
def zeros(typingctx):
    """Sixteen zeros."""
    def codegen(context, builder, signature, args):
        return ir.Constant(VECTOR, [0.0] * LANES)
    return f32x16(), codegen


@intrinsic
def load(typingctx, array, index):
    """``array[index:index + 16]`` of a C-contiguous float32 array."""
    def codegen(context, builder, signature, args):
        return builder.load(_address(context, builder, signature.args[0], *args), align=4)
    return f32x16(array, types.intp), codegen


@intrinsic
def store(typingctx, array, index, value):
    """``array[index:index + 16] = value``."""
    def codegen(context, builder, signature, args):
        builder.store(args[2], _address(context, builder, signature.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()
    return types.none(array, types.intp, f32x16), codegen


@intrinsic
def broadcast(typingctx, array, index):
    """``array[index]`` in every lane."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return _splat(builder, builder.load(builder.gep(data, [args[1]]), align=4))
    return f32x16(array, types.intp), codegen


@intrinsic
def fma(typingctx, accumulator, a, b):
    """``accumulator + a * b`` lane by lane, each one rounding."""
    def codegen(context, builder, signature, args):
        accumulator, a, b = args
        return _call(builder, "llvm.fma.v16f32", [a, b, accumulator])
    return f32x16(f32x16, f32x16, f32x16), codegen


@intrinsic
def add_relu(typingctx, value, bias, relu):
    """``value + bias``, and where ``relu`` 0 in the lanes below 0 (a NaN stays NaN, as in torch)."""
    def codegen(context, builder, signature, args):
        value, bias, relu = args
        total = builder.fadd(value, bias)
        zero = ir.Constant(VECTOR, [0.0] * LANES)
        rectified = builder.select(builder.fcmp_ordered("<", total, zero), zero, total)
        return builder.select(relu, rectified, total)
    return f32x16(f32x16, f32x16, types.boolean), codegen


@njit(cache=True)
def aligned_empty(size):  # pragma: no cover - compiled
    """An uninitialised (size,) float32 array whose first element is on a 64-byte boundary."""
    raw = np.empty(size + LANES, np.float32)
    offset = (LANES - raw.ctypes.data // 4 % LANES) % LANES
    return raw[offset:offset + size]


def cache_depends_on(dispatchers: Iterable[Any], *modules: ModuleType) -> None:
    """Make numba's on-disk cache of each of ``dispatchers`` (kernels compiled with ``cache=True``) valid only
    for the present source of ``modules`` too.

    Before reusing a compiled kernel, numba checks the source of the file that defines it, not of the files
    whose constants and intrinsics (such as this module's) were compiled into it: after a change to one of
    those, it would run the code compiled before, with old offsets into arrays laid out anew. Each cache's
    stamp of its own file is therefore mixed with the modules' sources, so that a change to any of them
    compiles the kernels again."""
    sources = hashlib.sha256(b"".join(Path(module.__file__).read_bytes() for module in modules)).digest()
    for dispatcher in dispatchers:
        cache_file = dispatcher._cache._cache_file  # numba's: the stamp its index is saved and checked with
        own = cache_file._source_stamp
        cache_file._source_stamp = hashlib.sha256(repr(own).encode() + sources).digest()
