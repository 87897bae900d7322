"""Input checks of the KDE lab: every refusal is a :class:`~workbench.study.StudyInputError`
whose message a student can read (the quantity, the bound, the value).

Arrays stay on the namespace they came in (NumPy, CuPy, ...): device arrays are checked on the
device instead of being copied to the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench import backend
from workbench.study import StudyInputError


def finite_array(name: str, value: Any, ndim: int | None = None) -> np.ndarray:
    """``value`` as a float64 host array, or :class:`StudyInputError` naming the problem."""
    try:
        array = np.asarray(backend.to_host(value), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StudyInputError(f"{name} must be numeric: {exc}") from exc
    if ndim is not None and array.ndim != ndim:
        raise StudyInputError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise StudyInputError(f"{name} contains NaN or infinite values")
    return array


def check_points(query: Any, data: Any, xp: Any = None) -> tuple[Any, Any, Any]:
    """Validate (m, d) queries and (n, d) data; return them as float64 arrays of ``xp``.

    ``xp`` defaults to the namespace of the inputs (:func:`workbench.backend.get_namespace`):
    NumPy arrays are computed on with NumPy, CuPy arrays on their device. Returns
    ``(query, data, xp)``.
    """
    xp = backend.get_namespace(query, data, xp=xp)
    arrays = []
    for name, value in (("query", query), ("data", data)):
        if xp is np or isinstance(value, list | tuple | float | int):
            arrays.append(xp.asarray(finite_array(name, value, ndim=2)))
            continue
        array = xp.asarray(value, dtype=xp.float64)  # on the device: check it there
        if array.ndim != 2:
            raise StudyInputError(f"{name} must be a 2-D array, got shape {array.shape}")
        if not bool(xp.all(xp.isfinite(array))):
            raise StudyInputError(f"{name} contains NaN or infinite values")
        arrays.append(array)
    q, y = arrays
    if q.shape[0] == 0 or y.shape[0] == 0:
        raise StudyInputError("query and data need at least one point each")
    if q.shape[1] != y.shape[1]:
        raise StudyInputError(
            f"query points have d = {q.shape[1]} but data points have d = {y.shape[1]}"
        )
    return q, y, xp


def check_bandwidths(bandwidth: Any) -> tuple[np.ndarray, bool]:
    """1-D host array of positive finite bandwidths, and whether the input was a scalar."""
    h = finite_array("bandwidth", bandwidth)
    scalar = h.ndim == 0
    if h.ndim > 1:
        raise StudyInputError(f"bandwidth must be a scalar or a 1-D array, got shape {h.shape}")
    h = np.atleast_1d(h)
    if h.size == 0:
        raise StudyInputError("bandwidth: give at least one value")
    if np.any(h <= 0):
        raise StudyInputError(f"bandwidth must be > 0, got {h[h <= 0][0]:g}")
    return h, scalar


def positive_bandwidths(bandwidth: Any) -> tuple[np.ndarray, bool]:
    """Bandwidths of any shape (theory broadcasts), all > 0; and whether it was a scalar."""
    h = finite_array("bandwidth", bandwidth)
    if np.any(h <= 0):
        raise StudyInputError("bandwidth must be > 0")
    return h, h.ndim == 0


def check_alpha(alpha: Any) -> np.ndarray:
    """α = (log n)/d, any shape, all > 0 and finite."""
    a = finite_array("alpha", alpha)
    if np.any(a <= 0):
        raise StudyInputError("alpha = (log n)/d must be > 0")
    return a


def check_dim(dim: Any) -> int:
    """A positive integer dimension d."""
    if isinstance(dim, bool) or not float(dim).is_integer() or int(dim) < 1:
        raise StudyInputError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)
