"""The Gaussian KDE, exact and streamed: squared distances by one GEMM per chunk of data, and a
log-sum-exp folded over the chunks for every bandwidth at once.

ρ̂_h(x) = (1/(n h^d)) Σ_i K((x − y_i)/h), K(z) = (2π)^{−d/2} e^{−|z|²/2} (Biroli & Mézard,
arXiv 2408.05807; lab brief, "The idea"). Computation notes of the brief: log ρ̂ via log-sum-exp
over a_i = −|x − y_i|²/(2h²), distances |x|² + |y|² − 2 x·y computed once and reused for every h,
chunked over the data so memory stays O(m · c).

Compute runs on the namespace of its inputs (NumPy, or CuPy for device arrays; see
:mod:`workbench.backend`). Under NumPy the per-bandwidth passes run on a small thread pool
(NumPy's ufuncs release the GIL); the pool is created once under a lock and shut down at exit.

The exact path (:func:`squared_distances`, the streamed log-sum-exp) is written against the
array API standard and runs on any conforming namespace (CuPy, ``array_api_strict`` in the
tests): no ``einsum``, no ``out=``, new arrays placed on the inputs' device. NumPy keeps an
in-place fast path where a measurement showed it matters (see the comments there). The binned
path needs ``bincount`` and ``sort`` in place (:mod:`.laplace`): NumPy and CuPy only, and
``method="binned"`` on another namespace is refused with a TypeError.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench import backend
from workbench.labs.kde import laplace
from workbench.labs.kde.validation import check_bandwidths, check_points
from workbench.study import StudyInputError, checkpoint

LOG_2PI = math.log(2.0 * math.pi)
#: Default memory budget of one data chunk in the streaming pass ((m × c) float64 block).
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: Elements per cache block in the per-bandwidth loop: the block stays in L2 across bandwidths.
CACHE_BLOCK_ELEMS = 2**16
#: Most threads of the per-bandwidth passes, whatever the CPU count.
MAX_THREADS = 8
#: ``method="auto"`` takes the binned Laplace path from this many bandwidths on (one bandwidth is
#: cheaper exactly: the binning costs about as much as a few exponential passes).
BINNED_MIN_BANDWIDTHS = 4
METHODS = ("auto", "exact", "binned")


# --- distances ---------------------------------------------------------------------------------
def squared_distances(query: Any, data: Any, query_sq: Any = None, data_sq: Any = None) -> Any:
    """|x − y|² for every pair, by |x|² + |y|² − 2 x·y (one GEMM), clipped at 0.

    Parameters
    ----------
    query, data
        (m, d) and (c, d) arrays of one namespace (NumPy or CuPy).
    query_sq, data_sq
        Precomputed row norms |x|², |y|² (saves a pass when the caller streams chunks).

    Returns
    -------
    (m, c) array of the inputs' namespace. Rounding can make the expansion slightly negative for
    coincident points, hence the clip. Any array-API namespace (module docstring).
    """
    xp = backend.get_namespace(query, data)
    if query_sq is None:
        query_sq = row_sq_norms(query)
    if data_sq is None:
        data_sq = row_sq_norms(data)
    dist = query @ data.T
    if xp is not np:
        return xp.maximum((dist * -2.0 + query_sq[:, None]) + data_sq[None, :], 0.0)
    # NumPy fast path, the same numbers in place: on a 512 × 16384 block (64 MiB, one BLAS
    # thread) the out-of-place form took 123-137 ms, this one 69-80 ms (three fewer 64 MiB
    # temporaries to allocate and fault in).
    dist *= -2.0
    dist += query_sq[:, None]
    dist += data_sq[None, :]
    np.maximum(dist, 0.0, out=dist)
    return dist


def row_sq_norms(points: Any) -> Any:
    """|x_j|² for every row of an (m, d) array, in its namespace.

    NumPy keeps ``einsum`` (its summation order, so results stay bit-for-bit those of earlier
    releases); other namespaces Σ_i x_ji² by ``sum(x * x, axis=1)`` (no ``einsum`` in the array
    API).
    """
    xp = backend.get_namespace(points)
    if xp is np:
        return np.einsum("ij,ij->i", points, points)
    return xp.sum(points * points, axis=1)


# --- the thread pool (NumPy only) --------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def n_threads() -> int:
    """Threads of the per-bandwidth passes: the CPU count, at most :data:`MAX_THREADS`."""
    return max(1, min(os.cpu_count() or 1, MAX_THREADS))


def thread_pool() -> ThreadPoolExecutor:
    """The lab's pool, created on first use under a lock (two sessions arriving together must
    not create two pools and leak one)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=n_threads(), thread_name_prefix="workbench-kde")
        return _POOL


def shutdown_pool() -> None:
    """Shut the pool down (registered with :mod:`atexit`); a later call creates a new one."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_pool)


def parallel_rows(xp: Any, m: int, elems_per_row: int, work: Callable[[slice], None]) -> None:
    """Run ``work(rows)`` over contiguous row blocks of an (m × ·) array, in threads under NumPy.

    On a device namespace the device is already parallel and one call covers all rows; small
    jobs (under 2^16 elements) also run inline.
    """
    threads = n_threads()
    if xp is not np or threads == 1 or m < 2 or m * elems_per_row < 2**16:
        work(slice(0, m))
        return
    edges = np.linspace(0, m, min(threads, m) + 1).astype(int)
    blocks = [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    pool = thread_pool()
    for future in [pool.submit(work, rows) for rows in blocks]:
        future.result()  # re-raises a worker's exception here


# --- the streaming log-sum-exp -----------------------------------------------------------------
def _cache_blocks(xp: Any, rows: slice, columns: int):
    """(row block, column block) pairs of about ``CACHE_BLOCK_ELEMS`` elements under NumPy."""
    if xp is not np:
        yield rows, slice(0, columns)
        return
    col_step = min(columns, CACHE_BLOCK_ELEMS)
    row_step = max(1, CACHE_BLOCK_ELEMS // col_step)
    for r0 in range(rows.start, rows.stop, row_step):
        for c0 in range(0, columns, col_step):
            yield slice(r0, min(r0 + row_step, rows.stop)), slice(c0, min(c0 + col_step, columns))


def _add_exp_sums(xp: Any, delta: Any, scales: np.ndarray, s: Any, s2: Any, rows: slice) -> None:
    """s[k] += Σ_c e^{−scale_k Δ}, s2[k] += Σ_c e^{−2 scale_k Δ} for the given rows of Δ ≥ 0.

    Each cache block of Δ is loaded once and reused for every bandwidth, so the cost of an extra
    bandwidth is a multiply, an exp and two reductions over data already in cache. NumPy only
    (``out=`` buffers; the cache blocking is what makes an extra bandwidth cost ~0.18 of a
    call, README/bench_kde.py); other namespaces use :func:`_add_exp_sums_generic`.
    """
    buffer = np.empty(min(delta.shape[0] * delta.shape[1], CACHE_BLOCK_ELEMS * 2), np.float64)
    for r, c in _cache_blocks(xp, rows, delta.shape[1]):
        block = delta[r, c]
        work = buffer[: block.size].reshape(block.shape)
        for k, scale in enumerate(scales):
            xp.multiply(block, -float(scale), out=work)
            xp.exp(work, out=work)
            s[k, r] += work.sum(axis=1)
            s2[k, r] += xp.einsum("ij,ij->i", work, work)


def _add_exp_sums_generic(xp: Any, delta: Any, scales: np.ndarray, s: Any, s2: Any, rows) -> None:
    """:func:`_add_exp_sums` in the array API (CuPy, ``array_api_strict``): whole rows at once,
    no ``out=`` (a device is already parallel; CuPy's memory pool recycles the temporaries)."""
    for k, scale in enumerate(scales):
        work = xp.exp(delta * -float(scale))
        s[k, rows] += xp.sum(work, axis=1)
        s2[k, rows] += xp.sum(work * work, axis=1)


@dataclass
class _StreamState:
    """Running per-query state of the streaming log-sum-exp (arrays of the compute namespace).

    For bandwidth k and query j, with a_i = −|x_j − y_i|²/(2h_k²):
    LSE_i(a_i) = −scale_k dmin_j + log s[k, j] and LSE_i(2a_i) = −2 scale_k dmin_j + log s2[k, j].
    """

    dmin: Any  # (m,) smallest squared distance seen so far
    s: Any  # (k, m) Σ e^{−scale (D − dmin)}
    s2: Any  # (k, m) Σ e^{−2 scale (D − dmin)}


def _fold_chunk(xp: Any, state: _StreamState, dist: Any, scales: np.ndarray, rows: slice) -> None:
    """Fold one (m × c) block of squared distances into the running state (rows only).

    The shift is the running minimum distance, shared by all bandwidths (max_i a_i =
    −scale · min_i D_i), so no per-bandwidth max pass is needed; older sums are rescaled by
    e^{−scale (old min − new min)} when a chunk brings a closer point.
    """
    if xp is not np:
        # Array API: no reliance on views (``dist[rows]`` may be a copy), so the shifted block
        # is passed on instead of written back into ``dist``.
        block = dist[rows, :]
        new_min = xp.minimum(state.dmin[rows], xp.min(block, axis=1))
        drop = state.dmin[rows] - new_min  # +inf on the first chunk: the zero sums stay zero
        factor = xp.exp(-backend.from_host(scales, like=block)[:, None] * drop[None, :])
        state.s[:, rows] *= factor
        state.s2[:, rows] *= factor * factor
        state.dmin[rows] = new_min
        _add_exp_sums_generic(xp, block - new_min[:, None], scales, state.s, state.s2, rows)
        return
    block = dist[rows]
    new_min = xp.minimum(state.dmin[rows], block.min(axis=1))
    drop = state.dmin[rows] - new_min  # +inf on the first chunk: the zero sums stay zero
    factor = xp.exp(-xp.asarray(scales)[:, None] * drop[None, :])
    state.s[:, rows] *= factor
    state.s2[:, rows] *= factor * factor
    block -= new_min[:, None]
    state.dmin[rows] = new_min
    _add_exp_sums(xp, dist, scales, state.s, state.s2, rows)


def _stream(xp: Any, query: Any, data: Any, scales: np.ndarray, chunk_bytes: int) -> _StreamState:
    """One pass over chunks of ``data``: distances once per chunk, all bandwidths folded in.

    Peak extra memory: one (m × c) float64 distance block with 8 · m · c ≤ ``chunk_bytes``
    (c ≥ 1), per-thread cache buffers of 2 · ``CACHE_BLOCK_ELEMS`` floats, and O(k · m) sums.
    Between chunks it checks for cancellation (:func:`workbench.study.checkpoint`).
    """
    m, n = query.shape[0], data.shape[0]
    k = len(scales)
    on = backend.device_kwargs(query)
    state = _StreamState(
        dmin=xp.full(m, math.inf, dtype=xp.float64, **on),
        s=xp.zeros((k, m), dtype=xp.float64, **on),
        s2=xp.zeros((k, m), dtype=xp.float64, **on),
    )
    query_sq = row_sq_norms(query)
    step = int(max(1, min(n, chunk_bytes // (8 * m))))
    for start in range(0, n, step):
        checkpoint()
        dist = squared_distances(query, data[start : min(start + step, n), :], query_sq=query_sq)
        parallel_rows(
            xp,
            m,
            dist.shape[1] * k,
            lambda rows, d=dist: _fold_chunk(xp, state, d, scales, rows),
        )
    return state


def _binned(
    xp: Any, query: Any, data: Any, scales: np.ndarray, chunk_bytes: int
) -> tuple[Any, Any, Any]:
    """(dmin, S̃(s), S̃(2s)) by the binned Laplace transform (:mod:`.laplace`), rows whose
    certificate exceeds ``laplace.TOLERANCE`` recomputed exactly.

    Query rows go in groups; within a group the distances are computed once when the (group ×
    n) block fits ``chunk_bytes``, else in data chunks twice (the first pass finds each row's
    minimum, which the bins are relative to). Memory: one distance block of ≤ chunk_bytes, the
    group's bin accumulator (≤ ``laplace.ACCUMULATOR_ELEMS`` floats) and the occupied bins.
    """
    m, n = query.shape[0], data.shape[0]
    both = np.concatenate([scales, 2.0 * scales])
    query_sq = row_sq_norms(query)
    group = int(max(1, min(m, chunk_bytes // (8 * n))))
    parts, dmins = [], []
    for g0 in range(0, m, group):
        rows = slice(g0, min(g0 + group, m))
        checkpoint()
        part, dmin = _bin_group(xp, query[rows], data, query_sq[rows], both, chunk_bytes)
        parts.append(part)
        dmins.append(dmin)
    binned = laplace.concatenate(parts, xp)
    dmin = xp.concatenate(dmins)
    total, error = laplace.laplace_sums(binned, both, xp)
    bound = laplace.log_error_bound(total, error, xp)
    k = len(scales)
    s, s2 = total[:k], total[k:]
    failed = backend.to_host(xp.nonzero((bound > laplace.TOLERANCE).any(axis=0))[0])
    if failed.size:  # rare: recompute those rows on the exact path
        exact = _stream(xp, query[failed], data, scales, chunk_bytes)
        s[:, failed], s2[:, failed] = exact.s, exact.s2
    return dmin, s, s2


def _bin_group(
    xp: Any, query: Any, data: Any, query_sq: Any, scales: np.ndarray, chunk_bytes: int
) -> tuple[laplace.BinnedGaps, Any]:
    """Bin the gaps of one group of query rows; returns the bins and the rows' minima."""
    g, n = query.shape[0], data.shape[0]
    step = int(max(1, min(n, chunk_bytes // (8 * g))))
    if step >= n:
        dist = squared_distances(query, data, query_sq=query_sq)
        dmin = dist.min(axis=1)
        dist -= dmin[:, None]
        chunks = [(0, dist)]
        max_gap = float(xp.max(dist))
    else:  # first pass: minima and largest gaps, chunk by chunk
        dmin, dmax = xp.full(g, np.inf), xp.zeros(g)
        for start in range(0, n, step):
            checkpoint()
            dist = squared_distances(query, data[start : start + step], query_sq=query_sq)
            dmin = xp.minimum(dmin, dist.min(axis=1))
            dmax = xp.maximum(dmax, dist.max(axis=1))
        max_gap = float(xp.max(dmax - dmin))
        chunks = None
    binner = laplace.GapBinner(xp, g, max_gap, float(np.max(scales)))

    def fold(dist: Any) -> None:
        block = max(1, laplace.BLOCK_ELEMS // dist.shape[1])

        def work(rows: slice) -> None:
            for r0 in range(rows.start, rows.stop, block):
                binner.add(dist[r0 : min(r0 + block, rows.stop)], r0)

        parallel_rows(xp, g, dist.shape[1], work)

    if chunks is not None:
        fold(chunks[0][1])
    else:
        for start in range(0, n, step):
            checkpoint()
            dist = squared_distances(query, data[start : start + step], query_sq=query_sq)
            dist -= dmin[:, None]
            xp.maximum(dist, 0.0, out=dist)
            fold(dist)
    return binner.result(), dmin


def scales_of(bandwidths: np.ndarray) -> np.ndarray:
    """scale_k = 1/(2 h_k²): a_i = −scale_k |x − y_i|²."""
    return 0.5 / bandwidths**2


def log_normaliser(bandwidths: np.ndarray, n: int, dim: int) -> np.ndarray:
    """log of 1/(n h^d (2π)^{d/2}): the prefactor of the Gaussian KDE, per bandwidth."""
    return -0.5 * dim * LOG_2PI - dim * np.log(bandwidths) - math.log(n)


def finish(
    dmin: np.ndarray, s: np.ndarray, s2: np.ndarray, bandwidths: np.ndarray, n: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(log ρ̂, Y₂), each (k, m), from the streamed sums (host arrays).

    log ρ̂ = log_normaliser + LSE_i(a_i) with LSE = log s − scale · dmin (s ≥ 1: the nearest term
    is e^0); Y₂ = exp(LSE(2a) − 2 LSE(a)) = s2/s² (the shifts cancel).
    """
    scales = scales_of(bandwidths)[:, None]
    log_sum = np.log(s) - scales * dmin[None, :]
    log_rho = log_normaliser(bandwidths, n, dim)[:, None] + log_sum
    return log_rho, s2 / s**2


def _default_chunk_bytes(xp: Any) -> int:
    """64 MiB on the CPU (cache blocks do the rest); on a device larger chunks amortise kernel
    launches: 1/16 of free device memory, at most 2 GiB."""
    if xp is not np:
        return int(min(2 * 2**30, max(DEFAULT_CHUNK_BYTES, backend.free_memory_bytes() // 16)))
    return DEFAULT_CHUNK_BYTES


# --- the public estimator ----------------------------------------------------------------------
def kde_summary(
    query: Any,
    data: Any,
    bandwidth: Any,
    *,
    chunk_bytes: int | None = None,
    xp: Any = None,
    method: str = "auto",
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
    xp : array namespace, optional
        Where to compute; default the namespace of ``query`` and ``data``.
    method : {"auto", "exact", "binned"}
        ``"exact"``: one exponential per (point, query, bandwidth). ``"binned"``: the binned
        Laplace transform (:mod:`workbench.labs.kde.laplace`): the gaps are binned once and each
        bandwidth costs O(bins); a certificate bounds the error of every (query, bandwidth) and
        rows over ``laplace.TOLERANCE`` (1e-8 nats) are recomputed exactly, so log ρ̂ agrees
        with the exact path to 1e-8 nats (Y₂ to 3e-8 relative) plus rounding. ``"auto"`` (default):
        binned from ``BINNED_MIN_BANDWIDTHS`` bandwidths on, on NumPy and CuPy (namespaces
        without ``bincount``, e.g. ``array_api_strict``, take the exact path; asking them for
        ``"binned"`` raises TypeError).

    Returns
    -------
    dict with ``log_density``, ``participation_ratio`` (shape (m,) for a scalar bandwidth,
    (k, m) otherwise) and ``nearest_sq_distance`` (m,), NumPy arrays on the host.

    Notes
    -----
    log ρ̂_h(x) = −(d/2) log 2π − d log h − log n + LSE_i(a_i), a_i = −|x − y_i|²/(2h²) (brief).
    Y₂ = Σ_i w_i², w_i = e^{a_i}/Σ_j e^{a_j} (brief, REM order parameter) = e^{LSE(2a) − 2 LSE(a)}.
    Both LSEs are streamed with the running minimum distance as the shift (exact up to rounding).
    """
    h, scalar = check_bandwidths(bandwidth)
    q, y, xp = check_points(query, data, xp=xp)
    if chunk_bytes is None:
        chunk_bytes = _default_chunk_bytes(xp)
    if chunk_bytes < 8:
        raise StudyInputError("chunk_bytes must be at least 8")
    if method not in METHODS:
        raise StudyInputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "binned" and not hasattr(xp, "bincount"):
        raise TypeError(
            f"kde_summary(method='binned') needs bincount (NumPy or CuPy); {xp.__name__} has "
            "none: use method='exact'"
        )
    binned = method == "binned" or (
        method == "auto" and len(h) >= BINNED_MIN_BANDWIDTHS and hasattr(xp, "bincount")
    )
    if binned:
        sums = _binned(xp, q, y, scales_of(h), int(chunk_bytes))
    else:
        state = _stream(xp, q, y, scales_of(h), int(chunk_bytes))
        sums = (state.dmin, state.s, state.s2)
    dmin, s, s2 = (backend.to_host(a) for a in sums)
    log_rho, y2 = finish(dmin, s, s2, h, y.shape[0], y.shape[1])
    if scalar:
        log_rho, y2 = log_rho[0], y2[0]
    return {"log_density": log_rho, "participation_ratio": y2, "nearest_sq_distance": dmin}


def log_density(
    query: Any,
    data: Any,
    bandwidth: Any,
    *,
    chunk_bytes: int | None = None,
    xp: Any = None,
    method: str = "auto",
) -> np.ndarray:
    """log ρ̂_h(x) of the isotropic Gaussian KDE at each query row (streamed; certified binned
    path for many bandwidths).

    ρ̂_h(x) = (1/(n h^d)) Σ_i (2π)^{−d/2} exp(−|x − y_i|²/(2h²))  (brief, "The idea").

    Parameters
    ----------
    query : (m, d) array
        Points where the estimate is evaluated (NumPy, or CuPy to compute on the device).
    data : (n, d) array
        The sample y_1..y_n.
    bandwidth : float or 1-D array of k floats
        h > 0. All bandwidths share one distance computation.
    chunk_bytes : int, optional
        Memory bound: one distance block of 8 · m · c ≤ chunk_bytes bytes (c data rows) at a
        time, plus O(k · m) running sums (default 64 MiB on CPU, min(2 GiB, free/16) on GPU).
    xp : array namespace, optional
        Default: the namespace of the inputs.
    method : {"auto", "exact", "binned"}
        See :func:`kde_summary`: with many bandwidths the default takes the certified binned
        path (within 1e-8 nats of the exact one); ``method="exact"`` forces the exact path.

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
    summary = kde_summary(query, data, bandwidth, chunk_bytes=chunk_bytes, xp=xp, method=method)
    return summary["log_density"]


def participation_ratio(
    query: Any,
    data: Any,
    bandwidth: Any,
    *,
    chunk_bytes: int | None = None,
    xp: Any = None,
    method: str = "auto",
) -> np.ndarray:
    """Participation ratio Y₂ = Σ_i w_i², w_i = K_i/Σ_j K_j, at each query row.

    Y₂ = exp(LSE(2a) − 2 LSE(a)), a_i = −|x − y_i|²/(2h²) (brief, "Formulas"): 1 when one point
    carries the estimate, ≈ 1/n when all contribute equally. Same arguments, shapes, memory bound
    and errors as :func:`log_density`; one streaming pass.
    """
    summary = kde_summary(query, data, bandwidth, chunk_bytes=chunk_bytes, xp=xp, method=method)
    return summary["participation_ratio"]
