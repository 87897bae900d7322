"""Kernel density estimation in large dimensions: the compute core of the KDE lab.

With n = e^{αd} Gaussian data points in d dimensions, lowering the bandwidth h takes the Gaussian
KDE through three regimes (Biroli & Mézard, "Kernel Density Estimators in Large Dimensions",
arXiv 2408.05807; lab brief ``shared/science/kde.md``): central-limit (h > h_CLT), heavy-tailed
α-stable (h_G < h < h_CLT), and condensed / extreme-value (h < h_G), where a few nearest points
carry the estimate. The KL-optimal bandwidth h_KL lies in the condensed regime.

Layout of this module
---------------------
* Estimator (exact, any backend): :func:`log_density`, :func:`participation_ratio` and
  :func:`kde_summary`. One streaming pass over chunks of the data computes the squared distances
  once (one GEMM per chunk) and reuses them for every bandwidth (streaming log-sum-exp).
* Theory (d → ∞ and finite-d): :func:`regime_thresholds`, :func:`stable_index`,
  :func:`kl_per_dim`, :func:`participation_theory`.
* Data: :func:`make_data` (cached, size-capped by :func:`max_points`).
* Heavy tails by the brief's exact O(n) shortcut: :func:`heavy_tail_ratios`.
* :class:`KDEStudy`, the lab's Study, with cached distance tables so that a new bandwidth costs
  a few passes over an (n_queries × n) matrix and no distance computation.

Examples
--------
>>> import numpy as np
>>> from workbench.labs import kde
>>> rng = np.random.default_rng(0)
>>> data, query = rng.standard_normal((500, 3)), rng.standard_normal((4, 3))
>>> kde.log_density(query, data, [0.5, 1.0]).shape
(2, 4)
>>> round(kde.regime_thresholds(0.5)["h_kl"], 4)
0.6224
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import param
import scipy.stats
import xarray as xr

from workbench import backend
from workbench.study import Study, StudyInputError

LOG_2PI = math.log(2.0 * math.pi)

#: Default memory budget of one data chunk in the streaming pass (two (m × c) float64 blocks).
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: Elements per cache block in the per-bandwidth loop: the block stays in L2 across bandwidths.
_CACHE_BLOCK_ELEMS = 2**16
#: Hard caps on n (data points) per backend, whatever the free memory says.
HARD_CAP_CPU = 2**22
HARD_CAP_GPU = 2**24
#: Fraction of free memory one lab workload may claim.
MEMORY_FRACTION = 0.25
#: The "points carrying 90 % of the weight" statistic.
WEIGHT_FRACTION = 0.9
#: Bound on random draws (n × datasets) of one heavy-tail curve: about 10 s on one CPU core.
HEAVY_TAIL_MAX_DRAWS = 2**28

PROVENANCE = (
    "Biroli & Mezard, Kernel Density Estimators in Large Dimensions, arXiv 2408.05807; "
    "formulas and finite-d theory from the lab brief shared/science/kde.md"
)


# ================================================================================================
# Validation
# ================================================================================================
def _finite_array(name: str, value: Any, ndim: int | None = None) -> np.ndarray:
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


def _check_points(query: Any, data: Any) -> tuple[Any, Any]:
    """Validate (m, d) queries and (n, d) data; return them on the active backend."""
    xp = backend.get_namespace()
    arrays = []
    for name, value in (("query", query), ("data", data)):
        if isinstance(value, np.ndarray) or not hasattr(value, "__cuda_array_interface__"):
            host = _finite_array(name, value, ndim=2)
            arrays.append(xp.asarray(host))
        else:  # already on the device: validate there instead of copying to the host
            array = xp.asarray(value, dtype=xp.float64)
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
    return q, y


def _check_bandwidths(bandwidth: Any) -> tuple[np.ndarray, bool]:
    """1-D array of positive finite bandwidths, and whether the input was a scalar."""
    h = _finite_array("bandwidth", bandwidth)
    scalar = h.ndim == 0
    if h.ndim > 1:
        raise StudyInputError(f"bandwidth must be a scalar or a 1-D array, got shape {h.shape}")
    h = np.atleast_1d(h)
    if h.size == 0:
        raise StudyInputError("bandwidth: give at least one value")
    if np.any(h <= 0):
        raise StudyInputError(f"bandwidth must be > 0, got {h[h <= 0][0]:g}")
    return h, scalar


def _check_alpha(alpha: Any) -> np.ndarray:
    a = _finite_array("alpha", alpha)
    if np.any(a <= 0):
        raise StudyInputError("alpha = (log n)/d must be > 0")
    return a


# ================================================================================================
# Distances and the streaming log-sum-exp
# ================================================================================================
def squared_distances(query: Any, data: Any, query_sq: Any = None, data_sq: Any = None) -> Any:
    """|x − y|² for every pair, by |x|² + |y|² − 2 x·y (one GEMM), clipped at 0.

    Parameters
    ----------
    query, data
        (m, d) and (c, d) arrays on the active backend.
    query_sq, data_sq
        Precomputed row norms |x|², |y|² (saves a pass when the caller streams chunks).

    Returns
    -------
    (m, c) array on the active backend. Rounding can make the expansion slightly negative for
    coincident points, hence the clip.
    """
    xp = backend.get_namespace()
    if query_sq is None:
        query_sq = xp.einsum("ij,ij->i", query, query)
    if data_sq is None:
        data_sq = xp.einsum("ij,ij->i", data, data)
    dist = query @ data.T
    dist *= -2.0
    dist += query_sq[:, None]
    dist += data_sq[None, :]
    xp.maximum(dist, 0.0, out=dist)
    return dist


_POOL: ThreadPoolExecutor | None = None


def _n_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _parallel_rows(m: int, elems_per_row: int, work: Callable[[slice], None]) -> None:
    """Run ``work(rows)`` over contiguous row blocks, in threads under NumPy.

    NumPy ufuncs release the GIL, so the per-bandwidth passes (exp, sums) use every core; on
    CuPy the device is already parallel and one call covers all rows.
    """
    global _POOL
    threads = _n_threads()
    if backend.is_gpu() or threads == 1 or m < 2 or m * elems_per_row < 2**16:
        work(slice(0, m))
        return
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="workbench-kde")
    edges = np.linspace(0, m, min(threads, m) + 1).astype(int)
    blocks = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for future in [_POOL.submit(work, rows) for rows in blocks]:
        future.result()  # re-raises a worker's exception here


def _cache_blocks(rows: slice, columns: int):
    """(row block, column block) pairs of about ``_CACHE_BLOCK_ELEMS`` elements under NumPy."""
    if backend.is_gpu():
        yield rows, slice(0, columns)
        return
    col_step = min(columns, _CACHE_BLOCK_ELEMS)
    row_step = max(1, _CACHE_BLOCK_ELEMS // col_step)
    for r0 in range(rows.start, rows.stop, row_step):
        for c0 in range(0, columns, col_step):
            yield slice(r0, min(r0 + row_step, rows.stop)), slice(c0, min(c0 + col_step, columns))


def _add_exp_sums(delta: Any, scales: np.ndarray, s: Any, s2: Any, rows: slice) -> None:
    """s[k] += Σ_c e^{−scale_k Δ}, s2[k] += Σ_c e^{−2 scale_k Δ} for the given rows of Δ ≥ 0.

    Each cache block of Δ is loaded once and reused for every bandwidth, so the cost of an extra
    bandwidth is a multiply, an exp and two reductions over data already in cache.
    """
    xp = backend.get_namespace()
    buffer = xp.empty(min(delta.shape[0] * delta.shape[1], _CACHE_BLOCK_ELEMS * 2), np.float64)
    if backend.is_gpu():
        buffer = xp.empty(delta[rows].size, np.float64)
    for r, c in _cache_blocks(rows, delta.shape[1]):
        block = delta[r, c]
        work = buffer[: block.size].reshape(block.shape)
        for k, scale in enumerate(scales):
            xp.multiply(block, -float(scale), out=work)
            xp.exp(work, out=work)
            s[k, r] += work.sum(axis=1)
            s2[k, r] += xp.einsum("ij,ij->i", work, work)


@dataclass
class _StreamState:
    """Running per-query state of the streaming log-sum-exp (arrays on the backend).

    For bandwidth k and query j, with a_i = −|x_j − y_i|²/(2h_k²):
    LSE_i(a_i) = −scale_k dmin_j + log s[k, j] and LSE_i(2a_i) = −2 scale_k dmin_j + log s2[k, j].
    """

    dmin: Any  # (m,) smallest squared distance seen so far
    s: Any  # (k, m) Σ e^{−scale (D − dmin)}
    s2: Any  # (k, m) Σ e^{−2 scale (D − dmin)}
    n: int = 0


def _fold_chunk(state: _StreamState, dist: Any, scales: np.ndarray, rows: slice) -> None:
    """Fold one (m × c) block of squared distances into the running state (rows only).

    The shift is the running minimum distance, shared by all bandwidths (max_i a_i =
    −scale · min_i D_i), so no per-bandwidth max pass is needed; older sums are rescaled by
    e^{−scale (old min − new min)} when a chunk brings a closer point.
    """
    xp = backend.get_namespace()
    block = dist[rows]
    new_min = xp.minimum(state.dmin[rows], block.min(axis=1))
    drop = state.dmin[rows] - new_min  # +inf on the first chunk: the zero sums stay zero
    factor = xp.exp(-xp.asarray(scales)[:, None] * drop[None, :])
    state.s[:, rows] *= factor
    state.s2[:, rows] *= factor * factor
    block -= new_min[:, None]
    state.dmin[rows] = new_min
    _add_exp_sums(dist, scales, state.s, state.s2, rows)


def _stream(query: Any, data: Any, scales: np.ndarray, chunk_bytes: int) -> _StreamState:
    """One pass over chunks of ``data``: distances once per chunk, all bandwidths folded in.

    Peak extra memory: one (m × c) float64 distance block with 8 · m · c ≤ ``chunk_bytes``
    (c ≥ 1), per-thread cache buffers of 2 · ``_CACHE_BLOCK_ELEMS`` floats, and O(k · m) sums.
    """
    xp = backend.get_namespace()
    m, n = query.shape[0], data.shape[0]
    state = _StreamState(
        dmin=xp.full(m, np.inf), s=xp.zeros((len(scales), m)), s2=xp.zeros((len(scales), m)), n=n
    )
    query_sq = xp.einsum("ij,ij->i", query, query)
    step = int(max(1, min(n, chunk_bytes // (8 * m))))
    for start in range(0, n, step):
        chunk = data[start : start + step]
        dist = squared_distances(query, chunk, query_sq=query_sq)
        _parallel_rows(
            m, dist.shape[1] * len(scales), lambda rows, d=dist: _fold_chunk(state, d, scales, rows)
        )
    return state


def _scales(bandwidths: np.ndarray) -> np.ndarray:
    """scale_k = 1/(2 h_k²): a_i = −scale_k |x − y_i|²."""
    return 0.5 / bandwidths**2


def _log_normaliser(bandwidths: np.ndarray, n: int, dim: int) -> np.ndarray:
    """log of 1/(n h^d (2π)^{d/2}): the prefactor of the Gaussian KDE, per bandwidth."""
    return -0.5 * dim * LOG_2PI - dim * np.log(bandwidths) - math.log(n)


def _finish(
    dmin: np.ndarray, s: np.ndarray, s2: np.ndarray, bandwidths: np.ndarray, n: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(log ρ̂, Y₂), each (k, m), from the streamed sums (host arrays)."""
    scales = _scales(bandwidths)[:, None]
    log_sum = np.log(s) - scales * dmin[None, :]  # LSE_i a_i; s ≥ 1 (the nearest term is e^0)
    log_rho = _log_normaliser(bandwidths, n, dim)[:, None] + log_sum
    # Y₂ = exp(LSE(2a) − 2 LSE(a)) = s2 / s² (the shifts cancel)
    return log_rho, s2 / s**2


def _default_chunk_bytes() -> int:
    """64 MiB on the CPU (cache blocks do the rest); on a GPU larger chunks amortise kernel
    launches: 1/16 of free device memory, at most 2 GiB."""
    if backend.is_gpu():
        return int(min(2 * 2**30, max(DEFAULT_CHUNK_BYTES, backend.free_memory_bytes() // 16)))
    return DEFAULT_CHUNK_BYTES


def kde_summary(
    query: Any, data: Any, bandwidth: Any, *, chunk_bytes: int | None = None
) -> dict[str, np.ndarray]:
    """log ρ̂ and the participation ratio Y₂ at every query point for every bandwidth, one pass.

    Parameters
    ----------
    query : (m, d) array
    data : (n, d) array
    bandwidth : float or 1-D array of k floats, all > 0
    chunk_bytes : int, optional
        Memory budget of one distance block: data are processed c rows at a time with
        8 · m · c ≤ chunk_bytes (at least one row), so memory stays O(m · c + k · m + n · d).
        Default 64 MiB on the CPU, min(2 GiB, free/16) on a GPU.

    Returns
    -------
    dict with ``log_density``, ``participation_ratio`` (shape (m,) for a scalar bandwidth,
    (k, m) otherwise) and ``nearest_sq_distance`` (m,), NumPy arrays on the host.

    Notes
    -----
    ρ̂_h(x) = (1/(n h^d)) Σ_i K((x − y_i)/h), K(z) = (2π)^{−d/2} e^{−|z|²/2} (brief, "The idea"), so
    log ρ̂_h(x) = −(d/2) log 2π − d log h − log n + LSE_i(a_i), a_i = −|x − y_i|²/(2h²).
    Y₂ = Σ_i w_i², w_i = e^{a_i}/Σ_j e^{a_j} (brief, REM order parameter) = e^{LSE(2a) − 2 LSE(a)}.
    Both LSEs are streamed with the running minimum distance as the shift (exact up to rounding).
    """
    h, scalar = _check_bandwidths(bandwidth)
    q, y = _check_points(query, data)
    if chunk_bytes is None:
        chunk_bytes = _default_chunk_bytes()
    if chunk_bytes < 8:
        raise StudyInputError("chunk_bytes must be at least 8")
    state = _stream(q, y, _scales(h), int(chunk_bytes))
    dmin, s, s2 = (backend.to_host(a) for a in (state.dmin, state.s, state.s2))
    log_rho, y2 = _finish(dmin, s, s2, h, y.shape[0], y.shape[1])
    if scalar:
        log_rho, y2 = log_rho[0], y2[0]
    return {"log_density": log_rho, "participation_ratio": y2, "nearest_sq_distance": dmin}


def log_density(
    query: Any, data: Any, bandwidth: Any, *, chunk_bytes: int | None = None
) -> np.ndarray:
    """log ρ̂_h(x) of the isotropic Gaussian KDE at each query row (exact, streamed).

    ρ̂_h(x) = (1/(n h^d)) Σ_i (2π)^{−d/2} exp(−|x − y_i|²/(2h²))  (brief, "The idea").

    Parameters
    ----------
    query : (m, d) array
        Points where the estimate is evaluated (NumPy or the active backend's arrays).
    data : (n, d) array
        The sample y_1..y_n.
    bandwidth : float or 1-D array of k floats
        h > 0. All bandwidths share one distance computation.
    chunk_bytes : int, optional
        Memory bound: one distance block of 8 · m · c ≤ chunk_bytes bytes (c data rows) at a
        time, plus O(k · m) running sums (default 64 MiB on CPU, min(2 GiB, free/16) on GPU).

    Returns
    -------
    numpy.ndarray
        Shape (m,) for a scalar bandwidth, (k, m) for k bandwidths.

    Raises
    ------
    StudyInputError
        h ≤ 0, NaN/inf anywhere, or query and data of different dimension.

    Examples
    --------
    >>> import numpy as np
    >>> log_density(np.zeros((1, 2)), np.zeros((1, 2)), 1.0).round(6)  # = −log 2π
    array([-1.837877])
    """
    return kde_summary(query, data, bandwidth, chunk_bytes=chunk_bytes)["log_density"]


def participation_ratio(
    query: Any, data: Any, bandwidth: Any, *, chunk_bytes: int | None = None
) -> np.ndarray:
    """Participation ratio Y₂ = Σ_i w_i², w_i = K_i/Σ_j K_j, at each query row.

    Y₂ = exp(LSE(2a) − 2 LSE(a)), a_i = −|x − y_i|²/(2h²) (brief, "Formulas"): 1 when one point
    carries the estimate, ≈ 1/n when all contribute equally. Same arguments, shapes, memory bound
    and errors as :func:`log_density`; one streaming pass.
    """
    return kde_summary(query, data, bandwidth, chunk_bytes=chunk_bytes)["participation_ratio"]


# ================================================================================================
# Theory (brief, "Formulas for Gaussian data" and "Finite-d theory")
# ================================================================================================
def _rate(s: np.ndarray) -> np.ndarray:
    """Large-deviation rate I(s) = (s² − s − log s)/2 of the scaled distance u = s + s²."""
    return 0.5 * (s * s - s - np.log(s))


def _solve_s(alpha: np.ndarray) -> np.ndarray:
    """s* ∈ (0, 1) with I(s*) = α, vectorised bisection in log s.

    I decreases on (0, 1) from +∞ to 0, and I(s) ≥ α at log s = −2α − 1, so the root lies in
    [−2α − 1, 0]; 200 halvings reach full double precision for any α in the lab's range.
    """
    lo = -2.0 * alpha - 1.0
    hi = np.zeros_like(alpha)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = _rate(np.exp(mid)) > alpha  # still too far from s = 1: move right
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.exp(0.5 * (lo + hi))


def effective_min_distance(alpha: Any, dim: int) -> np.ndarray:
    """u_eff = F⁻¹(1/n)/d, F the CDF of the non-central χ²(d, nc = d), n = e^{αd}.

    The typical smallest scaled squared distance among n Gaussian points at finite d (brief,
    "Finite-d theory"); it exceeds the d → ∞ value u* by about [½ log(2πd) + O(1)]/d.
    """
    a = _check_alpha(alpha)
    return scipy.stats.ncx2.ppf(np.exp(-a * dim), dim, dim) / dim


def _thresholds_from_s(s: np.ndarray, u: np.ndarray) -> dict[str, np.ndarray]:
    """h_CLT² = 2s/(1 − s), h_G² = s/(1 − s), h_KL² = u (brief). NaN where s ≥ 1 (no condensation)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(s < 1, s / (1 - s), np.nan)
    return {
        "h_clt": np.sqrt(2 * ratio),
        "h_g": np.sqrt(ratio),
        "h_kl": np.sqrt(u),
        "s_star": s,
        "u_star": u,
    }


def _as_output(values: dict[str, np.ndarray], scalar: bool) -> dict[str, Any]:
    return {k: float(v) if scalar else v for k, v in values.items()}


def regime_thresholds(alpha: Any, dim: int | None = None) -> dict[str, Any]:
    """Regime thresholds h_CLT > h_G and the KL-optimal bandwidth h_KL at α = (log n)/d.

    Parameters
    ----------
    alpha : float or array
        α > 0.
    dim : int, optional
        None: the d → ∞ values. Given: the finite-d effective values (brief, "Finite-d theory").

    Returns
    -------
    dict
        ``h_clt``, ``h_g``, ``h_kl``, ``s_star``, ``u_star`` (floats for a scalar α, arrays
        otherwise). d → ∞: s* ∈ (0, 1) solves (s² − s − log s)/2 = α and u* = s*(1 + s*).
        Finite d: u_eff = ncx2.ppf(1/n, d, d)/d with n = e^{αd}, s_eff solves s(1 + s) = u_eff.
        Then h_CLT² = 2s/(1 − s), h_G² = s/(1 − s), h_KL² = u. Where s_eff ≥ 1 (fewer than about
        one point: no extreme-value regime) the h's are NaN.

    Examples
    --------
    >>> t = regime_thresholds(0.1)
    >>> round(t["h_clt"], 4), round(t["h_g"], 4), round(t["h_kl"], 4)
    (1.9386, 1.3708, 1.0386)
    """
    a = _check_alpha(alpha)
    scalar = a.ndim == 0
    if dim is None:
        s = _solve_s(np.atleast_1d(a))
        u = s * (1 + s)
    else:
        dim = _check_dim(dim)
        u = np.atleast_1d(effective_min_distance(a, dim))
        s = 0.5 * (np.sqrt(1 + 4 * u) - 1)  # positive root of s² + s − u = 0
    out = _thresholds_from_s(s, u)
    if scalar:
        out = {k: v[0] for k, v in out.items()}
    return _as_output(out, scalar)


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not float(dim).is_integer() or int(dim) < 1:
        raise StudyInputError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def stable_index(bandwidth: Any, alpha: Any, dim: int | None = None) -> Any:
    """Stable index μ(h, α) = h² (1 − s*)/s* = h²/h_G² (brief), broadcasting.

    μ > 2: CLT; 1 < μ < 2: α-stable (heavy-tailed); μ < 1: extreme-value / condensed. With
    ``dim``, s_eff replaces s* (finite-d theory).
    """
    h, _ = _broadcast_bandwidth(bandwidth)
    t = regime_thresholds(alpha, dim)
    return _shape_like(h**2 / np.asarray(t["h_g"]) ** 2, bandwidth, alpha)


def _broadcast_bandwidth(bandwidth: Any) -> tuple[np.ndarray, bool]:
    h = _finite_array("bandwidth", bandwidth)
    if np.any(h <= 0):
        raise StudyInputError("bandwidth must be > 0")
    return h, h.ndim == 0


def _shape_like(values: np.ndarray, *inputs: Any) -> Any:
    """A Python float when every input was a scalar, else the array."""
    if all(np.ndim(x) == 0 for x in inputs):
        return float(values)
    return values


def kl_per_dim(bandwidth: Any, alpha: Any, dim: int | None = None) -> Any:
    """Theory KL(ρ‖ρ̂_h)/d for Gaussian data (brief, "Formulas for Gaussian data").

    h ≥ h_G: ½[log(1 + h²) + 1/(1 + h²) − 1] (ρ̂ behaves as the smoothed density ρ ∗ K_h);
    h < h_G: α − ½ + ½ log h² + u*/(2h²) (the nearest point at scaled distance u* dominates).
    Continuous at h_G and minimal at h_KL = √u* as d → ∞. With ``dim`` the same formulas with
    u_eff and h_G,eff ("finite-d theory"): then the condensed branch is minimal at h_KL,eff and
    the curve jumps by α − I(s_eff) > 0 at h_G,eff, the price of the single-nearest-point
    approximation. Broadcasts over ``bandwidth`` and ``alpha``.
    """
    h, _ = _broadcast_bandwidth(bandwidth)
    a = _check_alpha(alpha)
    t = regime_thresholds(a, dim)
    h_g, u = np.asarray(t["h_g"]), np.asarray(t["u_star"])
    h2 = h * h
    smooth = 0.5 * (np.log1p(h2) + 1.0 / (1.0 + h2) - 1.0)
    condensed = a - 0.5 + 0.5 * np.log(h2) + u / (2.0 * h2)
    return _shape_like(np.where(h < h_g, condensed, smooth), bandwidth, alpha)


def participation_theory(bandwidth: Any, alpha: Any, dim: int | None = None) -> Any:
    """Random-energy-model participation ratio E[Y₂] = max(0, 1 − μ), μ = h²/h_G² (brief).

    d → ∞ by default; with ``dim`` the effective h_G,eff (brief: ⟨Y₂⟩ ≈ 1 − h²/h_G,eff², rounded
    near h_G at finite d).
    """
    mu = np.asarray(stable_index(bandwidth, alpha, dim))
    return _shape_like(np.clip(1.0 - mu, 0.0, None), bandwidth, alpha)


# ================================================================================================
# Data: n = e^{αd} Gaussian points, query points with their exact log density, size caps
# ================================================================================================
def n_points(dim: int, alpha: float) -> int:
    """n = round(e^{αd}), at least 1."""
    return max(1, round(math.exp(float(alpha) * int(dim))))


def max_points(dim: int = 20, n_queries: int = 200) -> int:
    """Largest n this machine holds for the lab at ``dim`` and ``n_queries``.

    The data (n · d floats) plus the cached distance table and its sort buffer (2 · n · m floats)
    must fit in ``MEMORY_FRACTION`` of :func:`workbench.backend.free_memory_bytes`, and n stays
    below a hard cap (2^22 on CPU, 2^24 on GPU).
    """
    hard = HARD_CAP_GPU if backend.is_gpu() else HARD_CAP_CPU
    per_point = 8 * (int(dim) + 2 * int(n_queries))
    by_memory = int(MEMORY_FRACTION * backend.free_memory_bytes()) // per_point
    return int(max(1, min(hard, by_memory)))


def _people(n: int) -> str:
    """``22,026`` below a million, ``1.2 million`` up to a billion, ``1.5e+111`` beyond."""
    if n < 10**6:
        return f"{n:,}"
    return f"{n / 1e6:.2g} million" if n < 10**9 else f"{float(n):.3g}"


def _readable(n: int) -> str:
    """``22,026`` for sizes people can read, ``1.5e+111`` for the absurd ones."""
    return f"{n:,}" if n < 10**9 else f"{float(n):.3g}"


def _check_size(dim: int, alpha: float, n_queries: int) -> int:
    n = n_points(dim, alpha)
    cap = max_points(dim, n_queries)
    if n > cap:
        raise StudyInputError(
            f"α·d = {alpha * dim:.3g} gives n = e^(αd) = {_readable(n)} data points; this machine can hold "
            f"at most {cap:,} (d = {dim}, {n_queries} query points): lower α or d"
        )
    return n


def exact_log_density(points: Any) -> np.ndarray:
    """log ρ(x) of the standard Gaussian N(0, I_d): −(d/2) log 2π − |x|²/2, per row (host)."""
    x = np.asarray(backend.to_host(points), dtype=np.float64)
    return -0.5 * x.shape[-1] * LOG_2PI - 0.5 * np.einsum("...i,...i->...", x, x)


class KDEData(NamedTuple):
    """One sample of the lab: host NumPy arrays, read-only (they are shared through a cache)."""

    data: np.ndarray  # (n, d) y_i ~ N(0, I_d)
    queries: np.ndarray  # (m, d) x_j ~ N(0, I_d), independent of the data
    log_density_exact: np.ndarray  # (m,) log ρ(x_j)


def make_data(dim: int, alpha: float, seed: int = 0, n_queries: int = 200) -> KDEData:
    """n = round(e^{αd}) data points and ``n_queries`` query points from N(0, I_d).

    Cached (LRU of 4) per (dim, alpha, seed, n_queries): moving h never regenerates. Data and
    queries come from independent child streams of ``seed``, so changing ``n_queries`` keeps the
    data. Raises :class:`StudyInputError` when n exceeds :func:`max_points`.
    """
    dim = _check_dim(dim)
    if not (math.isfinite(float(alpha)) and float(alpha) > 0):
        raise StudyInputError("alpha = (log n)/d must be > 0")
    if int(n_queries) < 1:
        raise StudyInputError("n_queries must be at least 1")
    _check_size(dim, float(alpha), int(n_queries))
    return _make_data_cached(dim, float(alpha), int(seed), int(n_queries))


@functools.lru_cache(maxsize=4)
def _make_data_cached(dim: int, alpha: float, seed: int, n_queries: int) -> KDEData:
    data_seed, query_seed = np.random.SeedSequence(seed).spawn(2)
    data = np.random.default_rng(data_seed).standard_normal((n_points(dim, alpha), dim))
    queries = np.random.default_rng(query_seed).standard_normal((n_queries, dim))
    log_exact = exact_log_density(queries)
    for array in (data, queries, log_exact):
        array.flags.writeable = False
    return KDEData(data, queries, log_exact)


# ================================================================================================
# Cached distance tables (what makes a new bandwidth cheap in the Study)
# ================================================================================================
class DistanceTable:
    """Squared distances from m points to all n data points, shifted and sorted per row.

    Stores Δ_ji = D_ji − min_i D_ji sorted ascending along i (weights then come out in descending
    order, which gives the number of points carrying 90 % of the weight by a cumulative sum), and
    dmin_j. Memory: 8 · m · n bytes on the backend. Every bandwidth afterwards costs a few
    passes over Δ, never a distance computation.
    """

    def __init__(self, points: Any, data: Any, sort: bool = True):
        q, y = _check_points(points, data)
        self.n, self.dim = int(y.shape[0]), int(y.shape[1])
        xp = backend.get_namespace()
        delta = squared_distances(q, y)
        dmin = delta.min(axis=1)
        delta -= dmin[:, None]
        if sort:
            _parallel_rows(delta.shape[0], delta.shape[1], lambda rows: delta[rows].sort(axis=1))
        self.delta, self.dmin, self.sorted = delta, xp.asarray(dmin), sort
        self._last: tuple[tuple[float, ...], dict[str, np.ndarray]] | None = None

    def summaries(self, bandwidths: np.ndarray) -> dict[str, np.ndarray]:
        """log ρ̂, Y₂ and (if sorted) the 90 %-weight point count, each (k, m), on the host.

        The last answer is memoised: the dashboard asks for the same h from several panels.
        """
        key = tuple(float(h) for h in bandwidths)
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == key:
            return last[1]
        out = self._summaries(np.asarray(key))
        self._last = (key, out)
        return out

    def _summaries(self, bandwidths: np.ndarray) -> dict[str, np.ndarray]:
        xp = backend.get_namespace()
        m, n = self.delta.shape
        k = len(bandwidths)
        s, s2 = xp.zeros((k, m)), xp.zeros((k, m))
        count = xp.zeros((k, m), dtype=xp.int64)
        scales = _scales(bandwidths)

        def work(rows: slice) -> None:
            block = self.delta[rows]
            buffer = xp.empty_like(block)
            for j, scale in enumerate(scales):
                xp.multiply(block, -float(scale), out=buffer)
                xp.exp(buffer, out=buffer)
                s2[j, rows] = xp.einsum("ij,ij->i", buffer, buffer)
                if self.sorted:
                    xp.cumsum(buffer, axis=1, out=buffer)
                    s[j, rows] = buffer[:, -1]
                    threshold = WEIGHT_FRACTION * buffer[:, -1:]
                    count[j, rows] = (buffer < threshold).sum(axis=1) + 1
                else:
                    s[j, rows] = buffer.sum(axis=1)

        _parallel_rows(m, n * k, work)
        dmin, s, s2 = (backend.to_host(a) for a in (self.dmin, s, s2))
        log_rho, y2 = _finish(dmin, s, s2, bandwidths, self.n, self.dim)
        out = {"log_density": log_rho, "participation_ratio": y2}
        if self.sorted:
            out["n_points_90"] = backend.to_host(count)
        for array in out.values():
            array.flags.writeable = False  # shared through the memo
        return out


@functools.lru_cache(maxsize=2)
def _query_table(dim: int, alpha: float, seed: int, n_queries: int, backend_name: str):
    """Distance table of the study's query points (LRU of 2: each is 8 · m · n bytes)."""
    sample = make_data(dim, alpha, seed, n_queries)
    return DistanceTable(sample.queries, sample.data, sort=True)


@functools.lru_cache(maxsize=2)
def _slice_line(dim: int, alpha: float, seed: int, points: int, backend_name: str):
    """Points x(t) = y1 + t (y2 − y1), y1, y2 the data points nearest the first query point."""
    sample = make_data(dim, alpha, seed)
    xp = backend.get_namespace()
    d0 = backend.to_host(squared_distances(xp.asarray(sample.queries[:1]), xp.asarray(sample.data)))
    nearest = np.argsort(d0[0], kind="stable")[:2]
    y1 = sample.data[nearest[0]]
    y2 = sample.data[nearest[-1]]
    t = np.linspace(-0.5, 1.5, points)
    line = y1[None, :] + t[:, None] * (y2 - y1)[None, :]
    t.flags.writeable = line.flags.writeable = False  # shared across sessions by the cache
    # Cache the table only while it is small; otherwise each call streams (bounded memory).
    table = (
        DistanceTable(line, sample.data, sort=False)
        if 8 * points * len(sample.data) <= 2**28
        else None
    )
    return t, line, table, float(np.linalg.norm(y2 - y1))


def clear_caches() -> None:
    """Drop every cached sample, distance table and heavy-tail curve (tests; memory pressure)."""
    for cached in (_make_data_cached, _query_table, _slice_line, _heavy_tail_cached):
        cached.cache_clear()


# ================================================================================================
# Heavy tails by the exact O(n) shortcut (brief, "Finite-d theory")
# ================================================================================================
def heavy_tail_ratios(
    dim: int,
    alpha: float,
    bandwidths: Any,
    n_datasets: int = 600,
    seed: int = 0,
    radius: float | None = None,
    block_bytes: int = 64 * 2**20,
) -> np.ndarray:
    """Z = ρ̂_h(x)/E[ρ̂_h(x) | x] over ``n_datasets`` independent datasets at one fixed x.

    For |x| = r the n squared distances are i.i.d. (r − g)² + χ²_{d−1}, g ~ N(0, 1) (exact), and
    E[ρ̂_h | x] = (2π(1 + h²))^{−d/2} exp(−r²/(2(1 + h²))) (brief). Hence
    log Z = −log n − d log h + LSE_i(−D_i/(2h²)) + (d/2) log(1 + h²) + r²/(2(1 + h²)).

    Parameters
    ----------
    radius : float, optional
        |x|; default √d, the typical radius.
    block_bytes : int
        Datasets are drawn in blocks of b with 8 · n · b ≤ block_bytes (at least one).

    Returns
    -------
    (k, n_datasets) NumPy array of Z (host NumPy: this is a theory panel, O(n) per dataset).
    """
    h, _ = _check_bandwidths(bandwidths)
    n = n_points(dim, alpha)
    if n * int(n_datasets) > HEAVY_TAIL_MAX_DRAWS:
        raise StudyInputError(
            f"heavy-tail curve: n × datasets = {n:,} × {n_datasets} exceeds {HEAVY_TAIL_MAX_DRAWS:,} "
            "draws; use fewer datasets or a smaller α·d"
        )
    r = math.sqrt(dim) if radius is None else float(radius)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2408_05807]))
    scales = _scales(h)
    log_sums = np.empty((len(h), int(n_datasets)))
    step = max(1, min(int(n_datasets), block_bytes // (8 * n)))
    for start in range(0, int(n_datasets), step):
        b = min(step, int(n_datasets) - start)
        dist = (r - rng.standard_normal((b, n))) ** 2
        if dim > 1:
            dist += 2.0 * rng.standard_gamma(0.5 * (dim - 1), (b, n))  # χ²_{d−1}
        dmin = dist.min(axis=1)
        dist -= dmin[:, None]
        for k, scale in enumerate(scales):
            log_sums[k, start : start + b] = (
                np.log(np.exp(-scale * dist).sum(axis=1)) - scale * dmin
            )
    log_mean = -0.5 * dim * np.log1p(h**2) - r * r / (2.0 * (1.0 + h**2))  # + (d/2) log 2π cancels
    log_z = -math.log(n) - dim * np.log(h)[:, None] + log_sums - log_mean[:, None]
    return np.exp(log_z)


@functools.lru_cache(maxsize=4)
def _heavy_tail_cached(dim, alpha, seed, n_datasets, bandwidths: tuple[float, ...]) -> xr.Dataset:
    h = np.asarray(bandwidths)
    z = heavy_tail_ratios(dim, alpha, h, n_datasets, seed)
    h_g_eff = _effective_h_g(dim, alpha)
    return _read_only(
        xr.Dataset(
            {
                "z_skew": (("bandwidth",), scipy.stats.skew(z, axis=1)),
                "z_median": (("bandwidth",), np.median(z, axis=1)),
                "z_mean": (("bandwidth",), z.mean(axis=1)),
                "z_q90": (("bandwidth",), np.quantile(z, 0.9, axis=1)),
                "bandwidth_ratio": (("bandwidth",), h / h_g_eff),
            },
            coords={"bandwidth": h},
            attrs={
                "description": "Z = rho_hat(x)/E[rho_hat(x)|x] over independent datasets at |x| = sqrt(d)",
                "n": n_points(dim, alpha),
                "dim": int(dim),
                "alpha": float(alpha),
                "n_datasets": int(n_datasets),
                "h_g_eff": h_g_eff,
                "method": "exact shortcut: squared distances (r - g)^2 + chi2_{d-1}",
                "provenance": PROVENANCE,
            },
        )
    )


def _read_only(ds: xr.Dataset) -> xr.Dataset:
    """Freeze a Dataset shared across sessions through a cache: no session can edit another's."""
    for var in ds.variables.values():
        var.values.flags.writeable = False
    return ds


def _effective_h_g(dim: int, alpha: float) -> float:
    """h_G,eff, falling back to the d → ∞ h_G where the finite-d value is undefined."""
    h_g = regime_thresholds(alpha, dim)["h_g"]
    return h_g if math.isfinite(h_g) else regime_thresholds(alpha)["h_g"]


def _control_variate_mean(values: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over queries (last axis) of ``values`` with the control variate c = |x|² − d.

    E[c] = 0 exactly for x ~ N(0, I_d), so mean(v − β c) is unbiased for E[v] for any fixed β;
    β = cov(v, c)/var(c) (least squares over the queries, O(1/m) bias) minimises the variance.
    Returns (estimate, standard error), each of shape values.shape[:-1].
    """
    m = values.shape[-1]
    c = np.einsum("ij,ij->i", queries, queries) - queries.shape[1]
    c_centered = c - c.mean()
    v_centered = values - values.mean(axis=-1, keepdims=True)
    beta = (v_centered @ c_centered) / (c_centered @ c_centered)
    adjusted = values - beta[..., None] * c
    return adjusted.mean(axis=-1), adjusted.std(axis=-1, ddof=2) / math.sqrt(m)


# ================================================================================================
# The Study
# ================================================================================================
#: units and long_name of every data variable :meth:`KDEStudy.evaluate` returns.
_EVALUATE_ATTRS = {
    "kl_per_dim": ("nats per dimension", "KL(rho || rho_hat)/d, mean over query points"),
    "kl_per_dim_stderr": ("nats per dimension", "standard error of kl_per_dim"),
    "kl_per_dim_cv": ("nats per dimension", "KL/d with the control variate |x|^2 - d"),
    "kl_per_dim_cv_stderr": ("nats per dimension", "standard error of kl_per_dim_cv"),
    "kl_per_dim_theory": ("nats per dimension", "KL/d theory, d -> infinity"),
    "kl_per_dim_finite": ("nats per dimension", "KL/d theory at finite d (u_eff)"),
    "participation_ratio": ("1", "participation ratio Y2, mean over query points"),
    "participation_theory": ("1", "REM Y2 = max(0, 1 - h^2/h_G,eff^2)"),
    "participation_theory_inf": ("1", "REM Y2 = max(0, 1 - h^2/h_G^2), d -> infinity"),
    "n_points_90": ("points", "points carrying 90 % of the weight (median over queries)"),
    "effective_points": ("points", "effective number of points 1/Y2 (median over queries)"),
    "log_density_mean": ("nats", "mean of log rho_hat over query points"),
    "log_density_std": ("nats", "standard deviation of log rho_hat over query points"),
    "log_density_exact_mean": ("nats", "mean of the exact log rho over query points"),
    "stable_index": ("1", "stable index mu = h^2 (1 - s*)/s*, d -> infinity"),
    "stable_index_finite": ("1", "stable index mu = h^2/h_G,eff^2 at finite d"),
    "bandwidth_ratio": ("1", "h / h_G,eff"),
}


class KDEStudy(Study):
    """Gaussian KDE on n = e^{αd} points from N(0, I_d): KL/d, Y₂ and regimes versus bandwidth.

    ``evaluate(bandwidth=[...])`` reuses one cached distance table per (dim, alpha, seed,
    n_queries): the first call computes and sorts the (n_queries × n) squared distances, every
    later bandwidth costs a few passes over them (tens of ms at the default sizes).
    """

    lab = "kde"
    title = "Kernel density estimation in large dimensions"
    paper = "Biroli & Mézard, Kernel Density Estimators in Large Dimensions (2024)"
    paper_url = "https://arxiv.org/abs/2408.05807"
    summary = (
        "With n = e^(αd) Gaussian points in d dimensions, lowering the bandwidth h takes the "
        "estimator from the central-limit regime through a heavy-tailed (α-stable) regime into "
        "a condensed regime where a few nearest points dominate. Sweep h and watch KL/d, the "
        "participation ratio and the distribution of log ρ̂ change; the KL-optimal bandwidth "
        "sits below the CLT threshold, outside classical bandwidth theory."
    )
    vectorized = ("bandwidth",)

    dim = param.Integer(
        20, bounds=(2, 128), label="dimension d", doc="Dimension d of the data and query points."
    )
    alpha = param.Number(
        0.5,
        bounds=(0.02, 3.0),
        label="α = (log n)/d",
        doc="α = (log n)/d: the sample size is n = round(e^(αd)).",
    )
    n_queries = param.Integer(
        200,
        bounds=(8, 4096),
        label="query points m",
        doc="Query points x ~ N(0, I_d) averaged over (KL/d, ⟨Y₂⟩).",
    )
    seed = param.Integer(
        0, bounds=(0, None), label="seed", doc="Seed of the data and the query points."
    )
    bandwidth = param.Number(
        1.0,
        bounds=(1e-3, 100.0),
        label="bandwidth h",
        doc="Kernel bandwidth h of the isotropic Gaussian kernel (standard deviation).",
    )

    #: Size caps checked by :meth:`validate` before any work; fixed (not read from free memory
    #: at load time), so the same setting is accepted or refused on every visit. At the cap a
    #: default view needs about 1 GB and tens of seconds: n · d data floats, the (m × n)
    #: distance table and its sort, and the heavy-tail panel's n × 600 draws (≤ 2^28).
    MAX_POINTS = 2**18
    MAX_TABLE_BYTES = 2**29

    def validate(self) -> None:
        """Refuse sizes over the server's caps before any data is drawn (messages name knobs)."""
        n = n_points(self.dim, self.alpha)
        if n > self.MAX_POINTS:
            raise StudyInputError(
                f"α = (log n)/d = {self.alpha:g} and dimension d = {self.dim} give "
                f"n = e^(αd) = {_people(n)} points, over this server's cap of "
                f"{self.MAX_POINTS:,} points: lower α or d"
            )
        table = 8 * n * int(self.n_queries)
        if table > self.MAX_TABLE_BYTES:
            raise StudyInputError(
                f"query points m = {self.n_queries} × n = {n:,} data points need a "
                f"{table / 2**20:,.0f} MiB distance table, over this server's cap of "
                f"{self.MAX_TABLE_BYTES / 2**20:,.0f} MiB: lower query points m, α or d"
            )

    # --- shared pieces --------------------------------------------------------------------------
    def sample(self) -> KDEData:
        """The cached data and query points (raises StudyInputError beyond the size cap)."""
        return make_data(self.dim, self.alpha, self.seed, self.n_queries)

    def _table(self) -> DistanceTable:
        self.sample()  # size check with the user-facing message before any allocation
        return _query_table(
            self.dim, float(self.alpha), self.seed, self.n_queries, backend.backend_name()
        )

    def thresholds(self) -> dict[str, float]:
        """d → ∞ thresholds and the finite-d ones (suffix ``_eff``) at the study's (α, d)."""
        inf = regime_thresholds(self.alpha)
        eff = regime_thresholds(self.alpha, self.dim)
        return {**inf, **{f"{k}_eff": v for k, v in eff.items()}}

    def _bandwidths(self, bandwidth: Any) -> tuple[np.ndarray, bool]:
        return _check_bandwidths(self.bandwidth if bandwidth is None else bandwidth)

    # --- the main result ------------------------------------------------------------------------
    def evaluate(self, bandwidth: Any = None) -> xr.Dataset:
        """Measurements and theory over ``bandwidth`` (default: the ``bandwidth`` knob).

        Returns
        -------
        xarray.Dataset with dim ``bandwidth`` (always, even for one value) and variables

        * ``kl_per_dim``: mean over queries of log ρ(x) − log ρ̂(x), divided by d (measured),
          with ``kl_per_dim_stderr`` its standard error;
        * ``kl_per_dim_cv`` (and ``_stderr``): the same mean with the control variate |x|² − d,
          whose exact mean is 0; it removes the query-to-query spread of |x|² that dominates the
          plain mean's error (about 6 % at the default sizes, 0.6 % with the control variate);
        * ``kl_per_dim_theory`` (d → ∞) and ``kl_per_dim_finite`` (finite-d theory);
        * ``participation_ratio``: mean Y₂ over queries; ``participation_theory``: REM
          1 − h²/h_G,eff² at this d; ``participation_theory_inf``: with the d → ∞ h_G;
        * ``n_points_90``: median over queries of the number of points carrying 90 % of the
          weight; ``effective_points``: median of 1/Y₂;
        * ``log_density_mean``/``log_density_std``: mean/std of log ρ̂ across queries, and
          ``log_density_exact_mean``;
        * ``stable_index`` (d → ∞) and ``stable_index_finite``; ``bandwidth_ratio`` = h/h_G,eff.
        """
        h, _ = self._bandwidths(bandwidth)
        table = self._table()
        summary = table.summaries(h)
        exact = self.sample().log_density_exact
        d, m = self.dim, self.n_queries
        gap = exact[None, :] - summary["log_density"]  # log ρ − log ρ̂ per (h, query)
        thr = self.thresholds()
        h_g_eff = thr["h_g_eff"] if math.isfinite(thr["h_g_eff"]) else thr["h_g"]
        kl_cv, kl_cv_err = _control_variate_mean(gap, self.sample().queries)
        variables = {
            "kl_per_dim": gap.mean(axis=1) / d,
            "kl_per_dim_stderr": gap.std(axis=1, ddof=1) / math.sqrt(m) / d,
            "kl_per_dim_cv": kl_cv / d,
            "kl_per_dim_cv_stderr": kl_cv_err / d,
            "kl_per_dim_theory": np.atleast_1d(kl_per_dim(h, self.alpha)),
            "kl_per_dim_finite": np.atleast_1d(kl_per_dim(h, self.alpha, d)),
            "participation_ratio": summary["participation_ratio"].mean(axis=1),
            "participation_theory": np.clip(1.0 - h**2 / h_g_eff**2, 0.0, None),
            "participation_theory_inf": np.atleast_1d(participation_theory(h, self.alpha)),
            "n_points_90": np.median(summary["n_points_90"], axis=1),
            "effective_points": np.median(1.0 / summary["participation_ratio"], axis=1),
            "log_density_mean": summary["log_density"].mean(axis=1),
            "log_density_std": summary["log_density"].std(axis=1, ddof=1),
            "log_density_exact_mean": np.full(len(h), exact.mean()),
            "stable_index": np.atleast_1d(stable_index(h, self.alpha)),
            "stable_index_finite": h**2 / h_g_eff**2,
            "bandwidth_ratio": h / h_g_eff,
        }
        ds = xr.Dataset(
            {name: (("bandwidth",), np.asarray(v, dtype=float)) for name, v in variables.items()},
            coords={"bandwidth": h},
            attrs=self._attrs(thr, table.n),
        )
        ds["bandwidth"].attrs["units"] = "same units as the data (N(0, I) scale)"
        for name, (units, long_name) in _EVALUATE_ATTRS.items():
            ds[name].attrs.update(units=units, long_name=long_name)
        return ds

    def _attrs(self, thresholds: dict[str, float], n: int) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "lab": self.lab,
            "n": int(n),
            "dim": int(self.dim),
            "alpha": float(self.alpha),
            "n_queries": int(self.n_queries),
            "seed": int(self.seed),
            "backend": backend.backend_name(),
            "units": "bandwidth in data units; KL and log densities in nats",
            "provenance": PROVENANCE,
            "data": "y_i, x_j ~ N(0, I_d) i.i.d.; n = round(e^(alpha d))",
        }
        attrs.update({k: float(v) for k, v in thresholds.items()})
        return attrs

    # --- dashboard helpers ----------------------------------------------------------------------
    def log_density_samples(self, bandwidth: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(log ρ̂(x_j), log ρ(x_j)) over the query points, from the cached distance table.

        log ρ̂ has shape (m,) for a scalar bandwidth, (k, m) for k bandwidths; log ρ is (m,).
        """
        h, scalar = self._bandwidths(bandwidth)
        log_hat = self._table().summaries(h)["log_density"]
        exact = np.array(self.sample().log_density_exact)
        return (log_hat[0] if scalar else log_hat), exact

    def heavy_tail_curve(self, bandwidths: Any = None, n_datasets: int = 600) -> xr.Dataset:
        """Skew, median and mean of Z = ρ̂(x)/E[ρ̂(x)|x] over independent datasets, per h.

        Uses the exact O(n) shortcut (:func:`heavy_tail_ratios`) at |x| = √d. Default grid:
        17 bandwidths with h/h_G,eff from 0.6 to 2.2 (log-spaced). Cached (LRU of 4). Memory: one
        block of 64 MiB of distances at a time.
        """
        if bandwidths is None:
            bandwidths = np.geomspace(0.6, 2.2, 17) * _effective_h_g(self.dim, self.alpha)
        h, _ = _check_bandwidths(bandwidths)
        if int(n_datasets) < 3:
            raise StudyInputError("heavy-tail curve: n_datasets must be at least 3")
        _check_size(self.dim, self.alpha, 1)
        key = tuple(float(v) for v in h)
        return _heavy_tail_cached(self.dim, float(self.alpha), self.seed, int(n_datasets), key)

    def density_slice(self, bandwidth: Any = None, points: int = 201) -> xr.Dataset:
        """log ρ̂ and the true log ρ along x(t) = y1 + t (y2 − y1), t ∈ [−0.5, 1.5].

        y1, y2 are the two data points nearest the first query point: at large h the slice is
        smooth, at small h it shows two peaks at t = 0 and t = 1 (the estimate sits on the data).
        Data variables, in order: ``log_density`` then ``log_density_exact``; dims ``(t,)`` for a
        scalar bandwidth, ``(bandwidth, t)`` otherwise. The line's distance table is cached.
        """
        h, scalar = self._bandwidths(bandwidth)
        if int(points) < 2:
            raise StudyInputError("density_slice: points must be at least 2")
        self.sample()
        t, line, table, gap = _slice_line(
            self.dim, float(self.alpha), self.seed, int(points), backend.backend_name()
        )
        if table is not None:
            log_hat = table.summaries(h)["log_density"]
        else:
            log_hat = np.atleast_2d(log_density(line, self.sample().data, h))
        exact = exact_log_density(line)
        dims: tuple[str, ...] = ("bandwidth", "t")
        if scalar:
            log_hat, dims = log_hat[0], ("t",)
        coords = {"t": t, "bandwidth": h[0] if scalar else h}
        return xr.Dataset(
            {"log_density": (dims, log_hat), "log_density_exact": (("t",), exact)},
            coords=coords,
            attrs={"distance_y1_y2": gap, "line": "x(t) = y1 + t (y2 - y1)", "dim": self.dim},
        )

    def regime_map(self, alphas: Any = None) -> xr.Dataset:
        """h_CLT, h_G, h_KL over α: d → ∞ and effective at the study's d (suffix ``_eff``)."""
        a = np.atleast_1d(_check_alpha(np.linspace(0.05, 2.0, 60) if alphas is None else alphas))
        inf = regime_thresholds(a)
        eff = regime_thresholds(a, self.dim)
        names = ("h_clt", "h_g", "h_kl", "s_star", "u_star")
        variables = {k: (("alpha",), inf[k]) for k in names}
        variables.update({f"{k}_eff": (("alpha",), eff[k]) for k in names})
        return xr.Dataset(
            variables,
            coords={"alpha": a},
            attrs={"dim": int(self.dim), "provenance": PROVENANCE},
        )
