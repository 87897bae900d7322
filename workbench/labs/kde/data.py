"""Data of the KDE lab: n = e^{αd} points and m query points from N(0, I_d), and the size caps.

**One copy of the data.** The n data points depend on (d, α, seed) only and are cached on that
key; the query points (and their exact log density) are cached separately on (d, seed, m). So a
page with a non-default query count, its density slice and its distance tables all share one
(n × d) array.

**Size caps that tell the truth.** Everything one setting of the KDE page computes (the data, the
query distance table, the slice's table, the heavy-tail panel's working blocks, one streaming
chunk) is bounded by :func:`page_bytes`, and :func:`check_size` refuses a setting whose bound is
over the fixed :data:`MEMORY_BUDGET_BYTES`: the same setting is accepted or refused on every
visit, whatever the free memory, and before any array is drawn. The message names the knobs.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from workbench.labs.kde.estimator import DEFAULT_CHUNK_BYTES, LOG_2PI, MAX_THREADS
from workbench.labs.kde.tables import WORK_BUFFER_ELEMS
from workbench.labs.kde.validation import check_dim
from workbench.study import StudyInputError

#: Memory one setting of the KDE page may use, fixed (not read from free memory at load time).
MEMORY_BUDGET_BYTES = 2**30
#: Points of the density slice (its distance table is cached: a bandwidth move redraws it).
SLICE_POINTS = 201
#: Independent datasets per point of the heavy-tail panel (the brief's 600).
HEAVY_TAIL_DATASETS = 600
#: Memory of one block of heavy-tail draws (distances, the χ² draw, the exp work array: three).
HEAVY_TAIL_BLOCK_BYTES = 64 * 2**20
#: Bound on random draws (n × datasets) of one heavy-tail curve: about 10 s on one CPU core.
HEAVY_TAIL_MAX_DRAWS = 2**28
#: Sizes from which the page warns that a data change takes tens of seconds.
SLOW_POINTS = 100_000

#: Memory that does not grow with n: heavy-tail blocks, one streaming chunk, per-thread buffers
#: (counted for the most threads the pool ever has, so the cap is the same on every machine).
FIXED_BYTES = 3 * HEAVY_TAIL_BLOCK_BYTES + DEFAULT_CHUNK_BYTES + 8 * WORK_BUFFER_ELEMS * MAX_THREADS


def n_points(dim: int, alpha: float) -> int:
    """n = round(e^{αd}), at least 1."""
    return max(1, round(math.exp(float(alpha) * int(dim))))


def page_bytes(dim: int, alpha: float, n_queries: int) -> int:
    """Upper bound on the bytes one setting of the KDE page holds at once.

    8 bytes × n × (d data coordinates + m query distances + the slice's ``SLICE_POINTS``
    distances), plus :data:`FIXED_BYTES` (three heavy-tail blocks of 64 MiB, one 64 MiB
    streaming chunk, one 8 MiB work buffer per thread). Python ints: no overflow for huge α·d.
    """
    n = n_points(dim, alpha)
    return 8 * n * (int(dim) + int(n_queries) + SLICE_POINTS) + FIXED_BYTES


def max_points(dim: int = 20, n_queries: int = 200) -> int:
    """Largest n the page accepts at ``dim`` and ``n_queries`` (deterministic).

    The largest n with :func:`page_bytes` ≤ :data:`MEMORY_BUDGET_BYTES`, and at most
    ``HEAVY_TAIL_MAX_DRAWS / HEAVY_TAIL_DATASETS`` (the heavy-tail panel's draws).

    >>> max_points(20, 200)
    219179
    """
    per_point = 8 * (int(dim) + int(n_queries) + SLICE_POINTS)
    by_memory = (MEMORY_BUDGET_BYTES - FIXED_BYTES) // per_point
    return int(max(1, min(by_memory, HEAVY_TAIL_MAX_DRAWS // HEAVY_TAIL_DATASETS)))


def people(n: int) -> str:
    """``22,026`` below a million, ``1.2 million`` or ``485 million`` up to a billion, ``1.5e+111``
    beyond.

    >>> people(22026), people(1202604), people(485165195), people(10**111)
    ('22,026', '1.2 million', '485 million', '1e+111')
    """
    if n < 10**6:
        return f"{n:,}"
    if n < 10**7:
        return f"{n / 1e6:.2g} million"
    return f"{n / 1e6:,.0f} million" if n < 10**9 else f"{float(n):.3g}"


def check_size(dim: int, alpha: float, n_queries: int) -> int:
    """n = e^{αd}, or :class:`StudyInputError` naming the knobs when over :func:`max_points`."""
    n = n_points(dim, alpha)
    cap = max_points(dim, n_queries)
    if n <= cap:
        return n
    fewer_queries = n <= max_points(dim, 8)
    advice = "lower α or d" + (" (or query points m)" if fewer_queries else "")
    raise StudyInputError(
        f"n = e^(αd) = {people(n)} points (α = (log n)/d = {float(alpha):g}, dimension d = "
        f"{int(dim)}) is over this server's cap of {cap:,} points at d = {int(dim)} with query "
        f"points m = {int(n_queries)} (a fixed {MEMORY_BUDGET_BYTES / 2**30:g} GiB budget for the "
        f"data, distance tables and heavy-tail panel): {advice}"
    )


def exact_log_density(points) -> np.ndarray:
    """log ρ(x) of the standard Gaussian N(0, I_d): −(d/2) log 2π − |x|²/2, per row (host)."""
    x = np.asarray(points, dtype=np.float64)
    return -0.5 * x.shape[-1] * LOG_2PI - 0.5 * np.einsum("...i,...i->...", x, x)


class KDEData(NamedTuple):
    """One sample of the lab: host NumPy arrays, read-only (they are shared through a cache)."""

    data: np.ndarray  # (n, d) y_i ~ N(0, I_d)
    queries: np.ndarray  # (m, d) x_j ~ N(0, I_d), independent of the data
    log_density_exact: np.ndarray  # (m,) log ρ(x_j)


def make_data(dim: int, alpha: float, seed: int = 0, n_queries: int = 200) -> KDEData:
    """n = round(e^{αd}) data points and ``n_queries`` query points from N(0, I_d).

    Data and queries come from independent child streams of ``seed`` and are cached separately
    (data per (d, α, seed), queries per (d, seed, m)): moving h never regenerates, and changing
    m keeps the very same data array. Raises :class:`StudyInputError` over :func:`max_points`.
    """
    dim = check_dim(dim)
    if not (math.isfinite(float(alpha)) and float(alpha) > 0):
        raise StudyInputError("alpha = (log n)/d must be > 0")
    if int(n_queries) < 1:
        raise StudyInputError("n_queries must be at least 1")
    check_size(dim, float(alpha), int(n_queries))
    queries, log_exact = _queries(dim, int(seed), int(n_queries))
    return KDEData(_data(dim, float(alpha), int(seed)), queries, log_exact)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    data_seed, query_seed = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(data_seed), np.random.default_rng(query_seed)


@functools.lru_cache(maxsize=2)
def _data(dim: int, alpha: float, seed: int) -> np.ndarray:
    data = _streams(seed)[0].standard_normal((n_points(dim, alpha), dim))
    data.flags.writeable = False  # shared across sessions
    return data


@functools.lru_cache(maxsize=8)
def _queries(dim: int, seed: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    queries = _streams(seed)[1].standard_normal((n_queries, dim))
    log_exact = exact_log_density(queries)
    queries.flags.writeable = log_exact.flags.writeable = False
    return queries, log_exact


def clear_caches() -> None:
    """Drop the cached samples."""
    _data.cache_clear()
    _queries.cache_clear()
