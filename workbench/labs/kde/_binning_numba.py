"""numba definitions of the fused binning and Laplace-sum kernels (imported only by :mod:`.binning_kernel`, on
first use: importing this module imports numba). Formulas and their checks: that module's
docstring."""

from __future__ import annotations

import math

import numpy as np
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
def kernel(block, clip, shift, limit, acc, row0, first, bins, kept_values, kept_rows):
    """Bin x − shift[i], x = block[i, j] (with ``clip``: max(x, 0) first, as ``np.maximum``),
    into the accumulator rows of row row0 + i; count (and record while the buffer lasts) the
    values x under limit[i] when ``limit`` is not empty."""
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
            if clip and x < 0.0:  # −0.0 and NaN pass unchanged, as through np.maximum(x, 0)
                x = 0.0
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


@njit(nogil=True, cache=True, fastmath=False, inline="always")
def _taylor(moments, count, e, x):
    """n_e + Σ_{p=1..P} x^p M_{p,e}/p! by Horner (``moments`` already divided by p!), in the
    same order as the NumPy path (``laplace.laplace_sums``)."""
    order = moments.shape[0]
    poly = moments[order - 1, e] * x
    for p in range(order - 2, -1, -1):
        poly += moments[p, e]
        poly *= x
    return poly + count[e]


@njit(nogil=True, cache=True, fastmath=False)
def sums_kernel(lower, half, count, moments, starts, ends, scales, cutoff, total, error):
    """For every scale s and row: Σ over the row's entries with s · a ≤ ``cutoff`` of the
    Taylor weight e^{−s c} (n + Σ_p (−s r)^p M_p/p!) into total[k, row], and of
    n e^{−s c} (s r)^{P+1} into error[k, row] (the caller scales it and adds the floor and tail
    terms). ``moments``: (P, e), already divided by p!. Same Horner order as the NumPy path."""
    for k in range(scales.shape[0]):
        s = scales[k]
        for row in range(starts.shape[0]):
            acc = 0.0
            err = 0.0
            for e in range(starts[row], ends[row]):
                if lower[e] > cutoff / s:
                    continue
                x = half[e] * -s
                poly = _taylor(moments, count, e, x)
                decay = math.exp((lower[e] + half[e]) * -s)
                acc += poly * decay
                x *= x  # (s r)²
                x7 = x * x
                x7 *= x  # (s r)⁶
                x7 *= half[e] * s
                x7 *= decay
                err += x7 * count[e]
            total[k, row] = acc
            error[k, row] = err


@njit(nogil=True, cache=True, fastmath=False)
def crossing_kernel(
    lower, half, count, moments, starts, ends, scale, cutoff, fraction, out_f, out_i
):
    """Per row, the first entry where the cumulative Taylor weight at ``scale`` reaches
    ``fraction`` of the row's total (weights as ``laplace.entry_weights``: 0 where
    a · s > cutoff). out_f[:, row] = (target, weight before it, its weight); out_i[:, row] =
    (its position in the row, points before it, its points)."""
    s = scale
    longest = 0
    for row in range(starts.shape[0]):
        longest = max(longest, ends[row] - starts[row])
    weights = np.empty(longest)
    for row in range(starts.shape[0]):
        a, b = starts[row], ends[row]
        total = 0.0
        for e in range(a, b):
            poly = _taylor(moments, count, e, half[e] * -s)
            poly *= math.exp((lower[e] + half[e]) * -s)
            w = poly if lower[e] * s <= cutoff else 0.0
            weights[e - a] = w
            total += w
        target = fraction * total
        star, cum, before, points = 0, 0.0, 0.0, 0
        for e in range(a, b):  # cum < target only before the crossing (weights are positive)
            cum += weights[e - a]
            if cum < target:
                star += 1
                before = cum
                points += np.int64(count[e])
        out_f[0, row] = target
        out_f[1, row] = before
        out_f[2, row] = weights[star] if star < b - a else 0.0
        out_i[0, row] = star
        out_i[1, row] = points
        out_i[2, row] = np.int64(count[a + star]) if star < b - a else 0
