"""numba definitions of the fused binning kernel (imported only by :mod:`.binning_kernel`, on
first use: importing this module imports numba). Formulas and their checks: that module's
docstring."""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from workbench.labs.kde.laplace import _LOW_MASK, _SHIFT

#: Accumulator columns (count, six moments, one pad): must match ``binning_kernel.WIDTH``.
WIDTH = 8
_F64 = ir.DoubleType()
_VEC = ir.VectorType(_F64, 4)
_I32, _I64 = ir.IntType(32), ir.IntType(64)
_SCALE = 2.0 ** (1 - _SHIFT)


def _lanes(*picks: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, 4), list(picks))


@intrinsic
def _bits(typingctx, value):
    """The IEEE-754 bits of a float64 as an int64 (``x.view(np.int64)`` of one value)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _I64)

    return sig, codegen


@intrinsic
def _add_powers(typingctx, acc, row, v):
    """acc[row, 0:8] += (1, v, v², v³, v⁴, v⁵, v⁶, 0) as two 4-wide adds. The powers are the
    left-to-right products v·v, (v·v)·v, … of the NumPy path (lanes that do not need a factor
    multiply by 1.0, which is exact)."""
    if not (
        isinstance(acc, types.Array)
        and acc.ndim == 2
        and acc.layout == "C"
        and acc.dtype == types.float64
    ):
        return None
    sig = types.void(acc, types.int64, types.float64)

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        start = builder.gep(array.data, [builder.mul(args[1], ir.Constant(_I64, WIDTH))])
        low = builder.bitcast(start, _VEC.as_pointer())
        high = builder.gep(low, [ir.Constant(_I64, 1)])
        one = ir.Constant(_VEC, [1.0] * 4)
        v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), args[2], ir.Constant(_I32, 0))
        v = builder.shuffle_vector(v, v, _lanes(0, 0, 0, 0))
        m1 = builder.shuffle_vector(one, v, _lanes(0, 5, 6, 7))  # 1, v, v, v
        m2 = builder.shuffle_vector(one, v, _lanes(0, 1, 6, 7))  # 1, 1, v, v
        m3 = builder.shuffle_vector(one, v, _lanes(0, 1, 2, 7))  # 1, 1, 1, v
        powers = builder.fmul(builder.fmul(m1, m2), m3)  # 1, v, v², v³
        v4 = builder.fmul(builder.shuffle_vector(powers, powers, _lanes(3, 3, 3, 3)), v)
        upper = builder.fmul(builder.fmul(v4, m1), m2)  # v⁴, v⁵, v⁶, v⁷
        upper = builder.shuffle_vector(upper, ir.Constant(_VEC, [0.0] * 4), _lanes(0, 1, 2, 4))
        builder.store(builder.fadd(builder.load(low, align=8), powers), low, align=8)
        builder.store(builder.fadd(builder.load(high, align=8), upper), high, align=8)
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True, fastmath=False)
def kernel(block, shift, limit, acc, row0, first, bins, kept_values, kept_rows):
    """Bin block[i, j] − shift[i] into the accumulator rows of row row0 + i; count (and record
    while the buffer lasts) the values under limit[i] when ``limit`` is not empty."""
    keep = limit.shape[0] > 0
    hits = 0
    offset = first - 1
    top = bins - 1
    for i in range(block.shape[0]):
        base = (row0 + i) * bins
        s = shift[i]
        bound = limit[i] if keep else 0.0
        for j in range(block.shape[1]):
            x = block[i, j]
            if keep and x < bound:
                if hits < kept_values.shape[0]:
                    kept_values[hits] = x
                    kept_rows[hits] = i
                hits += 1
            bits = _bits(x - s)
            index = (bits >> _SHIFT) - offset
            index = min(max(index, 0), top)  # below the floor: bin 0; past max_gap: the last
            _add_powers(acc, base + index, (bits & _LOW_MASK) * _SCALE - 1.0)
    return hits
