"""A software prefetch for compiled code: ask the CPU to bring an array element's cache line in
and go on at once (LLVM's llvm.prefetch; on x86 `prefetcht0`). numba has no such call of its own.

The exact search runs several samples in turn in one thread (ngram/depth_first.py): each prefetches
the table entries its next move will read, then yields to the next sample, so that their cache
misses overlap instead of each stalling the thread in turn.
"""

from __future__ import annotations

from typing import Any, cast

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _prefetch(typingctx, array, index):
    """prefetch(array, i) in compiled code: a hint for the line of array[i] (of array[i, 0, …]
    for an array of more dimensions). A hint never faults, so i may lie out of bounds."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        array_type = sig.args[0]
        ary = context.make_array(array_type)(context, builder, args[0])
        first = context.cast(builder, args[1], sig.args[1], types.intp)
        at = [first] + [ir.Constant(first.type, 0)] * (array_type.ndim - 1)
        shape, strides = (
            cgutils.unpack_tuple(builder, ary.shape),
            cgutils.unpack_tuple(builder, ary.strides),
        )
        pointer = cgutils.get_item_pointer2(
            context, builder, ary.data, shape, strides, array_type.layout, at, wraparound=False
        )
        i32, byte_pointer = ir.IntType(32), ir.IntType(8).as_pointer()
        hint = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        function = cgutils.get_or_insert_function(builder.module, hint, "llvm.prefetch.p0")
        # (address, 0: for a read, 3: keep in every cache level, 1: data, not instructions)
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


prefetch = cast(Any, _prefetch)  # called as prefetch(array, i): numba supplies typingctx
