"""Uniform affine quantization (Gholami et al., arXiv 2103.13630, §3) and its SQNR theory.

A b-bit quantizer maps a range [α, β] onto the 2^b integers 0..2^b − 1 with the scale
S = (β − α)/(2^b − 1): q = clip(round((x − α)/S), 0, 2^b − 1), x̂ = α + S q. Both ends of the
range are levels ("min–max with 2^b levels including both ends"), so on Uniform(−1, 1) with
α = −1, β = 1 the error is uniform on ±S/2 and SQNR = 20 log10(2^b − 1) dB (9.54 dB at 2 bits,
23.52 at 4, 48.13 at 8). The other textbook convention, 2^b equal cells with mid-point
reconstruction, gives 20 log10(2^b) = 6.02 b dB (:func:`quantize_cells`).

Options (all vectorised over a 1-D sequence of bit-widths, which becomes a leading axis):

* ``axis``/``group_size`` (granularity): which elements share one (S, α);
* ``clip``: ``"minmax"``, ``"percentile"`` (range from the p-th percentiles) or ``"mse"`` (the
  shrink of the min–max range that minimises each group's squared error, searched on a grid);
* ``symmetric``: range [−a, a] with a = max|x| (or its clipped value);
* ``rounding``: ``"nearest"`` or ``"stochastic"`` (q = ⌊t + u⌋, u ~ U[0, 1): unbiased, error
  variance S²/6 instead of S²/12, i.e. 10 log10 2 = 3.01 dB worse);
* ``zero_point``: ``"float"`` (this lab's default: the offset α is stored as a float, so any
  range is represented) or ``"integer"`` (CSKV's code: z = round(−α/S) clamped to [0, 2^b − 1],
  which clips groups that do not contain 0; on U(0.5, 1.5) this costs far more than S/2).

:func:`quantize`, :func:`quantize_cells` and :func:`sqnr_db` compute in the namespace of their
array input (NumPy, CuPy, any array-API namespace such as ``array_api_strict`` in the tests),
on its device: host-made arrays (levels, stochastic-rounding noise) cross the named boundary
:func:`workbench.backend.from_host`. Percentile clipping uses the namespace's ``quantile``
where it has one (NumPy, CuPy) and a sort-based one with NumPy's "linear" rule elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from workbench import backend
from workbench.study import StudyInputError

CLIPS = ("minmax", "percentile", "mse")
ROUNDINGS = ("nearest", "stochastic")
ZERO_POINTS = ("float", "integer")
#: Shrink factors of the min–max half-range tried by the MSE-optimal clip (Banner et al.'s
#: "ACIQ"-style search, done numerically per group instead of assuming a distribution).
MSE_SHRINKS = np.linspace(0.3, 1.0, 36)


def _namespace(x: Any, xp: Any = None):
    """``xp``, else the namespace of array ``x``; NumPy for lists and scalars (never the
    process default: host data stays on the host)."""
    return backend.namespace_or_numpy(x, xp=xp)


def _concat(xp: Any, arrays: list, axis: int) -> Any:
    """``concat`` of the array API (NumPy ≥ 2, array_api_strict), ``concatenate`` in CuPy."""
    join = getattr(xp, "concat", None) or xp.concatenate
    return join(arrays, axis=axis)


def _quantile(xp: Any, a: Any, q: float) -> Any:
    """The q-quantile over the last axis, kept as a length-1 axis, NumPy's "linear" rule.

    The array API has no ``quantile``: elsewhere the last axis is sorted and the order
    statistics around the virtual index i = q (n − 1) are interpolated as NumPy's ``_lerp``
    does (a + (b − a) t for t < ½, b − (b − a)(1 − t) above), so the values agree to rounding.
    """
    if hasattr(xp, "quantile"):
        return xp.quantile(a, q, axis=-1, keepdims=True)
    n = a.shape[-1]
    ordered = xp.sort(a, axis=-1)
    index = q * (n - 1)
    lo = int(np.floor(index))
    hi = min(lo + 1, n - 1)
    t = index - lo
    a_lo, a_hi = ordered[..., lo : lo + 1], ordered[..., hi : hi + 1]
    diff = a_hi - a_lo
    return a_lo + diff * t if t < 0.5 else a_hi - diff * (1.0 - t)


def check_bits(bits: Any) -> tuple[np.ndarray, bool]:
    """Bit-widths as a 1-D int array in 1..16, and whether a scalar was given."""
    b = np.asarray(bits)
    scalar = b.ndim == 0
    b = np.atleast_1d(b)
    if b.ndim != 1 or b.size == 0:
        raise StudyInputError(f"bits must be a whole number or a 1-D list, got shape {b.shape}")
    if not np.issubdtype(b.dtype, np.number) or np.any(b != np.round(b)):
        raise StudyInputError(f"bits must be whole numbers, got {bits!r}")
    if np.any((b < 1) | (b > 16)):
        raise StudyInputError(f"bits must be between 1 and 16, got {bits!r}")
    return b.astype(np.int64), scalar


def _groups(x, axis: int | None, group_size: int | None, xp):
    """View ``x`` as (..., n_groups, g): statistics are taken over the last axis.

    ``axis=None`` flattens the tensor; otherwise ``axis`` is moved last. A last group shorter
    than ``g`` is padded by repeating its final element, which leaves its min and max unchanged.
    """
    if axis is None:
        moved = xp.reshape(x, (1, -1))
    else:
        if not -x.ndim <= axis < x.ndim:
            raise StudyInputError(f"axis {axis} is out of range for a {x.ndim}-D array")
        moved = xp.moveaxis(x, axis, -1)
    n = moved.shape[-1]
    g = n if group_size is None else int(group_size)
    if g < 1:
        raise StudyInputError(f"group size must be at least 1, got {group_size}")
    g = min(g, n)
    n_groups = -(-n // g)
    pad = n_groups * g - n
    if pad:
        moved = _concat(xp, [moved, xp.repeat(moved[..., -1:], pad, axis=-1)], axis=-1)
    return xp.reshape(moved, (*moved.shape[:-1], n_groups, g)), n


def _ungroup(y, shape_moved_n: int, x_shape, axis, xp, lead: int):
    """Inverse of :func:`_groups` for a result with ``lead`` extra leading axes (bits)."""
    y = xp.reshape(y, (*y.shape[:-2], y.shape[-2] * y.shape[-1]))[..., :shape_moved_n]
    if axis is None:
        return xp.reshape(y, (*y.shape[:lead], *x_shape))
    return xp.moveaxis(y, -1, axis + lead if axis >= 0 else axis)


def _apply(xg, lo, hi, levels, rounding: str, zero_point: str, noise, xp):
    """Quantize-dequantize ``xg`` with the range [lo, hi] (broadcast) and ``levels`` = 2^b − 1."""
    span = hi - lo
    scale = xp.where(span > 0, span / levels, 1.0)  # a constant group is represented exactly
    if zero_point == "integer":
        z = xp.clip(xp.round(-lo / scale), 0, levels)
        t = xg / scale
        q = xp.round(t) if noise is None else xp.floor(t + noise)
        q = xp.clip(q + z, 0, levels)
        return scale * (q - z)
    t = (xg - lo) / scale
    q = xp.round(t) if noise is None else xp.floor(t + noise)
    return lo + scale * xp.clip(q, 0, levels)


def quantize(
    x: Any,
    bits: int | Sequence[int],
    axis: int | None = None,
    group_size: int | None = None,
    symmetric: bool = False,
    clip: str = "minmax",
    rounding: str = "nearest",
    seed: int | None = None,
    *,
    percentile: float = 99.0,
    zero_point: str = "float",
    xp: Any = None,
):
    """Quantize ``x`` to ``bits`` and return the dequantized values (same dtype float64).

    Parameters
    ----------
    x
        Any array (NumPy, or CuPy: computed on its device).
    bits
        1..16, or a 1-D sequence of bit-widths: the result then has a leading axis over them,
        computed in one pass (shared statistics and noise).
    axis
        ``None``: one scale and offset for the whole tensor. Otherwise the axis whose elements
        share a scale: every index of the other axes gets its own (S, α). For a
        (token, channel) cache, ``axis=0`` is per-channel quantization (a channel shares one
        scale over tokens) and ``axis=1`` is per-token.
    group_size
        Splits the shared axis (or the flattened tensor when ``axis=None``) into consecutive
        groups of this many elements, each with its own scale; the last group may be shorter.
        KIVI's keys: ``axis=0, group_size=32`` (per channel, 32 tokens a group).
    symmetric
        Range [−a, a] (a = max|x| or its clipped value) instead of [min, max].
    clip
        ``"minmax"``, ``"percentile"`` (``percentile`` and 100 − ``percentile`` of each group;
        of |x| when symmetric) or ``"mse"`` (best shrink in :data:`MSE_SHRINKS` per group).
    rounding
        ``"nearest"`` (ties to even) or ``"stochastic"`` (seeded by ``seed``).
    zero_point
        ``"float"`` offset (default) or CSKV's clamped ``"integer"`` zero point.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([-1.0, -0.4, 0.3, 1.0])
    >>> quantize(x, 1).tolist()
    [-1.0, -1.0, 1.0, 1.0]
    >>> quantize(x, [2, 8]).shape
    (2, 4)
    """
    xp = _namespace(x, xp)
    b, scalar = check_bits(bits)
    if clip not in CLIPS:
        raise StudyInputError(f"clip must be one of {', '.join(CLIPS)}, got {clip!r}")
    if rounding not in ROUNDINGS:
        raise StudyInputError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if zero_point not in ZERO_POINTS:
        raise StudyInputError(f"zero point must be one of {', '.join(ZERO_POINTS)}")
    if not 50.0 < float(percentile) <= 100.0:
        raise StudyInputError(f"percentile must be in (50, 100], got {percentile}")
    try:
        x = xp.asarray(x, dtype=xp.float64)
    except (TypeError, ValueError) as exc:
        raise StudyInputError(f"x must be a numeric array: {exc}") from exc
    if x.size == 0:
        raise StudyInputError("x is empty")
    if not bool(xp.all(xp.isfinite(x))):
        raise StudyInputError("x contains NaN or infinite values")
    xg, n = _groups(x, axis, group_size, xp)
    levels = backend.from_host((2.0**b - 1.0).reshape((-1,) + (1,) * xg.ndim), like=x)

    if symmetric:
        mag = xp.abs(xg)
        a = (
            xp.max(mag, axis=-1, keepdims=True)
            if clip != "percentile"
            else _quantile(xp, mag, percentile / 100.0)
        )
        lo, hi = -a, a
    elif clip == "percentile":
        lo = _quantile(xp, xg, 1.0 - percentile / 100.0)
        hi = _quantile(xp, xg, percentile / 100.0)
    else:
        lo, hi = xp.min(xg, axis=-1, keepdims=True), xp.max(xg, axis=-1, keepdims=True)
    if not symmetric and clip == "percentile":
        xg_in = xp.clip(xg, lo, hi)  # values beyond the clipped range saturate
    else:
        xg_in = xg

    noise = None
    if rounding == "stochastic":
        noise = backend.from_host(np.random.default_rng(seed).random(xg.shape), like=x)

    if clip == "mse":
        centre, half = (hi + lo) / 2.0, (hi - lo) / 2.0
        best = best_err = None
        for c in MSE_SHRINKS.tolist():  # Python floats: a NumPy scalar would pull x to the host
            lo_c, hi_c = centre - c * half, centre + c * half
            y = _apply(xp.clip(xg, lo_c, hi_c), lo_c, hi_c, levels, rounding, zero_point, noise, xp)
            err = xp.sum((y - xg) ** 2, axis=-1, keepdims=True)
            if best is None:
                best, best_err = y, err
            else:
                better = err < best_err
                best = xp.where(better, y, best)
                best_err = xp.where(better, err, best_err)
        y = best
    else:
        y = _apply(xg_in, lo, hi, levels, rounding, zero_point, noise, xp)
    out = _ungroup(y, n, x.shape, axis, xp, lead=1)
    return out[0, ...] if scalar else out


def quantize_cells(x: Any, bits: int | Sequence[int], lo: float = -1.0, hi: float = 1.0, xp=None):
    """The other convention: 2^b equal cells on [lo, hi], reconstruction at cell mid-points.

    Δ = (hi − lo)/2^b; error uniform on ±Δ/2 for uniform data, SQNR = 6.02 b dB on U(lo, hi).
    """
    xp = _namespace(x, xp)
    b, scalar = check_bits(bits)
    x = xp.asarray(x, dtype=xp.float64)
    cells = backend.from_host((2.0**b).reshape((-1,) + (1,) * x.ndim), like=x)
    step = (hi - lo) / cells
    k = xp.clip(xp.floor((x - lo) / step), 0, cells - 1)
    out = lo + step * (k + 0.5)
    return out[0, ...] if scalar else out


def sqnr_db(x: Any, x_hat: Any):
    """Signal-to-quantization-noise ratio 10 log10(Σ x² / Σ (x − x̂)²) in dB.

    ``x_hat`` may carry extra leading axes (e.g. one per bit-width): then an array of SQNRs over
    those axes is returned (on the host). Exact reconstruction gives +inf. ``x`` and ``x_hat``
    must share a namespace (TypeError otherwise; lists are taken into ``x_hat``'s).
    """
    xp = _namespace(x_hat)
    if hasattr(x, "__array_namespace__"):
        backend.get_namespace(x, x_hat)  # TypeError when the two live in different namespaces
    x = xp.asarray(x, dtype=xp.float64)
    x_hat = xp.asarray(x_hat, dtype=xp.float64)
    axes = tuple(range(x_hat.ndim - x.ndim, x_hat.ndim))
    signal = float(xp.sum(x * x))
    noise = xp.sum((x_hat - x) ** 2, axis=axes)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(signal / backend.to_host(noise))
    return float(out) if np.ndim(out) == 0 else out


def sqnr_theory(bits: Any, convention: str = "minmax") -> np.ndarray:
    """SQNR of a b-bit quantizer on uniform data: ``"minmax"`` 20 log10(2^b − 1) (2^b levels
    including both ends), ``"cells"`` 20 log10(2^b) = 6.02 b (2^b cells, mid-point levels)."""
    b = np.asarray(bits, dtype=float)
    if convention == "minmax":
        return 20.0 * np.log10(2.0**b - 1.0)
    if convention == "cells":
        return 20.0 * np.log10(2.0**b)
    raise StudyInputError(f"convention must be 'minmax' or 'cells', got {convention!r}")


#: Stochastic rounding's cost: error variance S²/6 instead of S²/12 (for a value uniformly placed
#: in its cell, E[f(1 − f)] = 1/6 with f its fractional part): 10 log10 2 dB.
STOCHASTIC_PENALTY_DB = 10.0 * np.log10(2.0)


def sqnr_curve(bits: Sequence[int] = tuple(range(1, 9)), samples: int = 2**18, seed: int = 0):
    """Measured SQNR on Uniform(−1, 1) of both conventions and stochastic rounding, with theory.

    One draw of ``samples`` values; every bit-width in one vectorised pass per convention.
    """
    b, _ = check_bits(bits)
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, int(samples))
    measured = {
        "sqnr_minmax": sqnr_db(x, quantize(x, b)),
        "sqnr_cells": sqnr_db(x, quantize_cells(x, b)),
        "sqnr_stochastic": sqnr_db(x, quantize(x, b, rounding="stochastic", seed=seed + 1)),
    }
    theory = {
        "theory_minmax": sqnr_theory(b, "minmax"),
        "theory_cells": sqnr_theory(b, "cells"),
        "theory_stochastic": sqnr_theory(b, "minmax") - STOCHASTIC_PENALTY_DB,
    }
    long_names = {
        "sqnr_minmax": "measured, min-max, 2^b levels incl. both ends",
        "sqnr_cells": "measured, 2^b cells, mid-point levels",
        "sqnr_stochastic": "measured, min-max with stochastic rounding",
        "theory_minmax": "20 log10(2^b - 1)",
        "theory_cells": "20 log10(2^b) = 6.02 b",
        "theory_stochastic": "20 log10(2^b - 1) - 10 log10 2",
    }
    ds = xr.Dataset(
        {k: (("bits",), np.asarray(v, dtype=float)) for k, v in {**measured, **theory}.items()},
        coords={"bits": b},
        attrs={"data": "Uniform(-1, 1)", "samples": int(samples), "seed": int(seed)},
    )
    for name in ds.data_vars:
        ds[name].attrs.update(units="dB", long_name=long_names[name])
    ds["bits"].attrs.update(units="bit", long_name="bit-width b")
    return ds
