"""Sixteen (or eight) float32 lanes as one value in numba-compiled code, for a matrix-product micro-kernel.

Numba's loops are vectorised by LLVM one innermost loop at a time, and LLVM does not keep a tile of
partial sums in registers across a loop over the shared dimension: written as loops, a dense layer at a
batch of 16 ran at under half of what the same arithmetic reaches with its sums held in registers. Here a
:data:`f32x16` is an LLVM ``<16 x float>`` value, so a kernel can name each of its accumulators, as BLAS
micro-kernels do, and LLVM keeps them in registers: one 512-bit register each with AVX-512, two with AVX2,
four with SSE or NEON (the same code and results everywhere, each lane a fused multiply-add). An
:data:`f32x8` (``<8 x float>``: one 256-bit register with AVX) serves a layer's last eight outputs: where
sixteen lanes take twice the time of eight (AMD's Zen 4, whose 512-bit arithmetic runs at half the rate of
256-bit; AVX2, where they are two registers), eight lanes of work cost half of sixteen, instead of the same
as padding them to sixteen.

Every access takes a flat float32 array and an element index, unchecked (the kernels' own loops keep
them in bounds); loads and stores are unaligned, and fastest on 64-byte-aligned addresses
(:func:`aligned_empty`). :func:`fma`, :func:`add_relu` and :func:`store` take either width, and
:func:`load_as` and :func:`broadcast_as` give the width of a vector they are shown.
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


class Float32xN(types.Type):
    """The numba type of ``lanes`` float32 lanes."""

    def __init__(self, lanes: int) -> None:
        self.lanes = lanes
        super().__init__(name=f"float32x{lanes}")


f32x16, f32x8 = Float32xN(LANES), Float32xN(LANES // 2)


@register_model(Float32xN)
class _Float32xNModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), fe_type.lanes))


def _address(context, builder, array_type, array, index, vector):
    """The address of ``array[index]`` (a C-contiguous float32 array, flat index), as a ``vector*``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())


def _splat(builder, scalar, vector):
    lane0 = builder.insert_element(ir.Constant(vector, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(lane0, ir.Constant(vector, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count))


def _zeros(vector_type):
    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(vector_type), [0.0] * vector_type.lanes)
    return vector_type(), codegen


def _load(vector_type, *leading):
    """``vector_type``'s lanes from ``array[index:]``, the last two of the intrinsic's arguments."""
    def codegen(context, builder, signature, args):
        vector = context.get_value_type(vector_type)
        return builder.load(_address(context, builder, signature.args[-2], *args[-2:], vector), align=4)
    return vector_type(*leading, types.intp), codegen


def _broadcast(vector_type, *leading):
    """``array[index]`` (the last two of the intrinsic's arguments) in each of ``vector_type``'s lanes."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[-2])(context, builder, args[-2]).data
        return _splat(builder, builder.load(builder.gep(data, [args[-1]]), align=4),
                      context.get_value_type(vector_type))
    return vector_type(*leading, types.intp), codegen


@intrinsic
def zeros(typingctx):
    """Sixteen zeros."""
    return _zeros(f32x16)


@intrinsic
def zeros8(typingctx):
    """Eight zeros."""
    return _zeros(f32x8)


@intrinsic
def load(typingctx, array, index):
    """``array[index:index + 16]`` of a C-contiguous float32 array."""
    return _load(f32x16, array)


@intrinsic
def load_as(typingctx, like, array, index):
    """``array[index:index + lanes]``, as many lanes as ``like`` (a vector of either width) has."""
    return _load(like, like, array) if isinstance(like, Float32xN) else None


@intrinsic
def broadcast(typingctx, array, index):
    """``array[index]`` in each of sixteen lanes."""
    return _broadcast(f32x16, array)


@intrinsic
def broadcast_as(typingctx, like, array, index):
    """``array[index]`` in each of as many lanes as ``like`` has."""
    return _broadcast(like, like, array) if isinstance(like, Float32xN) else None


@intrinsic
def store(typingctx, array, index, value):
    """``array[index:index + lanes] = value``."""
    if not isinstance(value, Float32xN):
        return None

    def codegen(context, builder, signature, args):
        vector = context.get_value_type(signature.args[2])
        builder.store(args[2], _address(context, builder, signature.args[0], args[0], args[1], vector), align=4)
        return context.get_dummy_value()
    return types.none(array, types.intp, value), codegen


@intrinsic
def fma(typingctx, accumulator, a, b):
    """``accumulator + a * b`` lane by lane, each one rounding."""
    if not (isinstance(accumulator, Float32xN) and accumulator == a == b):
        return None

    def codegen(context, builder, signature, args):
        accumulator, a, b = args
        vector = context.get_value_type(signature.return_type)
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                                  f"llvm.fma.v{vector.count}f32")
        return builder.call(function, [a, b, accumulator])
    return accumulator(accumulator, a, b), codegen


@intrinsic
def add_relu(typingctx, value, bias, relu):
    """``value + bias``, and where ``relu`` 0 in the lanes below 0 (a NaN stays NaN, as in torch)."""
    if not (isinstance(value, Float32xN) and value == bias):
        return None

    def codegen(context, builder, signature, args):
        value, bias, relu = args
        total = builder.fadd(value, bias)
        zero = ir.Constant(total.type, [0.0] * total.type.count)
        rectified = builder.select(builder.fcmp_ordered("<", total, zero), zero, total)
        return builder.select(relu, rectified, total)
    return value(value, value, types.boolean), codegen


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
