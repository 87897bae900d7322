"""Streamed distance bins: a distance table's Laplace bins, no m × n array (issue 12 §1, §5).

A :class:`~workbench.labs.kde.tables.DistanceTable` over many data points keeps only what every
bandwidth needs: per query row the binned gaps of :mod:`.laplace` (a few hundred entries) and
the row's smallest squared distance. The distances are computed chunk by chunk of data points
(one GEMM each), folded into the bins and dropped.

**The shift without a first pass.** The bins are of gaps t_ji = D_ji − min_i D_ji, and the
minimum is known only at the end. Instead the pass bins t'_ji = D_ji − U_j with U_j the minimum
over a pilot subsample (every ⌈n / ``PILOT_POINTS``⌉-th point), U_j ≥ dmin_j. The points with
t' < ``floor`` (at most those closer than the pilot's nearest: about n / ``PILOT_POINTS`` per
row for data in no particular order) are kept exactly as (row, D). At the end dmin_j is the
smallest kept D, and every bin moves by δ_j = U_j − dmin_j ≥ 0:
e^{−s t} = e^{−s δ_j} e^{−s t'}, so a bin [a', a' + w) of t' is the bin [a' + δ_j, a' + δ_j + w)
of t with the same count and the same moments of v = 2 (t' − a')/w − 1; the Taylor certificate
of :func:`.laplace.laplace_sums` (which reads only a, r and n_b) holds as it stands. The kept
points enter as exact entries (r = 0, n_b = 1). Should more than ``NEAR_LIMIT`` points be kept
(data ordered against the pilot), a pass of exact minima comes first and the floor bin takes the
ties, certified as before (:class:`.laplace.GapBinner`).

**Points inside chosen bins (second pass).** The "points carrying 90 % of the weight" count
needs, in the bin where the cumulative weight crosses 90 %, the exact gaps of that bin;
:func:`points_in_bins` streams the distances again and keeps only the points of the requested
(row, bin) pairs (their number is known from the bin counts, so its memory is bounded before
it starts).

Memory: one (rows × ``BLOCK_POINTS``) distance block (on a device: ``chunk_bytes``), one row
group's dense bin accumulator (≤ ``laplace.ACCUMULATOR_ELEMS`` floats), the kept points, and
the entries.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.blas import single_blas_thread
from workbench.labs.kde import binning_kernel, laplace
from workbench.labs.kde.estimator import squared_distances
from workbench.study import checkpoint

#: Pilot subsample for the shift U_j, in blocks of PILOT_ROWS rows (16 MB each).
PILOT_POINTS = 2**14
PILOT_ROWS = 128
#: Most exact points kept in pass 1 before it gives up for the two-pass form.
NEAR_LIMIT = 2**21
#: The floor of streamed bins is at least this fraction of the largest U_j: above any rounding
#: difference between the pilot's and the pass's GEMM, so the pilot's nearest point is kept.
NEAR_RELATIVE = 2.0**-30
#: Most points :func:`points_in_bins` keeps in one pass (row groups beyond); a table keeps at
#: most this many for later bandwidths (32 MB).
SELECT_LIMIT = 2**22
#: Data points per distance block (rows × 2^14 floats: one bincount run a row).
BLOCK_POINTS = 2**14
#: Fewest rows per thread when :func:`_sweep` splits the rows over two threads.
MIN_THREAD_ROWS = 8


class _TooMany(Exception):
    """Raised inside a pass when more than ``NEAR_LIMIT`` points are kept."""


@dataclass
class StreamedBins:
    """The bins of a streamed table and how to find a point's bin again.

    ``binned``: entries in t = D − dmin coordinates (kept points exact, ``binned.key`` −1);
    ``dmin``, ``base``: (m,) row minima and the shift U_j the pass binned against;
    ``floor``, ``max_gap``: the accumulator geometry shared by all rows (for the second pass).
    """

    binned: laplace.BinnedGaps
    dmin: Any
    base: Any
    floor: float
    max_gap: float
    max_scale: float

    def binner(self, xp: Any, rows: int = 0) -> laplace.GapBinner:
        return laplace.GapBinner(xp, rows, self.max_gap, self.max_scale, floor=self.floor)


def _sweep(
    xp: Any,
    query: Any,
    data: Any,
    query_sq: Any,
    data_sq: Any,
    visit,
    chunk_bytes: int,
    threads: int = 1,
    clip: bool = True,
) -> None:
    """Call ``visit(dist, rows)`` for every block of squared distances D = |x − y|² of the rows
    ``rows`` of ``query`` against a block of data points, over all of ``data``.

    D comes from one GEMM of augmented rows, [x, |x|², 1] · [−2y, 1, |y|²], with no extra
    passes, clipped at 0 (``clip=False``: left to ``visit``, which saves a pass over the block
    when the compiled kernel clips as it bins). Under NumPy each thread runs its blocks with BLAS on one thread
    (:func:`workbench.blas.single_blas_thread`: a multi-threaded OpenBLAS under load busy-waits;
    the (200 × 41,943) GEMM measured 10.6 ns per distance against 3.8 on one thread), in blocks
    of ``BLOCK_POINTS`` points. ``threads`` = 2 splits the rows in two halves, one per thread
    (the caller's and one more), each with its own GEMM: worth it only when ``visit`` releases
    the GIL (the compiled binning kernel). With ``np.bincount`` binning, which holds the GIL,
    two threads took the same wall time as one (3.3 s against 3.2 s for 200 × 2^19 gaps) for
    1.7× the CPU. On a device one thread sweeps blocks of ``chunk_bytes``. Cancellation
    (:func:`checkpoint`) is checked per block in every thread.
    """
    m = query.shape[0]
    if xp is not np or threads < 2 or m < 2 * MIN_THREAD_ROWS:
        _sweep_rows(xp, query, data, query_sq, data_sq, visit, chunk_bytes, slice(0, m), clip)
        return
    half = m // 2
    stop = threading.Event()  # set when either side fails, so the other stops at its next block
    failure: list[BaseException] = []
    context = contextvars.copy_context()  # the caller's cancellation token (checkpoint)

    def other_half() -> None:
        try:
            with single_blas_thread():
                _sweep_rows(
                    xp,
                    query,
                    data,
                    query_sq,
                    data_sq,
                    visit,
                    chunk_bytes,
                    slice(half, m),
                    clip,
                    stop,
                )
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)
            stop.set()

    worker = threading.Thread(target=context.run, args=(other_half,), name="workbench-kde-sweep")
    worker.start()
    try:
        _sweep_rows(
            xp, query, data, query_sq, data_sq, visit, chunk_bytes, slice(0, half), clip, stop
        )
    except BaseException:
        stop.set()
        raise
    finally:
        worker.join()
    if failure:
        raise failure[0]


def _sweep_rows(
    xp: Any,
    query: Any,
    data: Any,
    query_sq: Any,
    data_sq: Any,
    visit,
    chunk_bytes: int,
    rows: slice,
    clip: bool = True,
    stop: threading.Event | None = None,
) -> None:
    """:func:`_sweep` for one range of rows, in the calling thread.

    Under NumPy the points block and the distance block are two buffers reused for every
    block (``visit`` must not keep views of ``dist``): a fresh 13 MB block per GEMM cost page
    faults on every block (GEMM stage 5.5 ns per distance against 3.4 at the kernel's rate)."""
    m, n, d = rows.stop - rows.start, data.shape[0], data.shape[1]
    q, q_sq = query[rows], query_sq[rows]
    augmented = xp.concatenate([q, q_sq[:, None], xp.ones((m, 1))], axis=1)
    if xp is np:
        step, blas = BLOCK_POINTS, single_blas_thread()
        point_buffer, dist_buffer = np.empty(min(n, step) * (d + 2)), np.empty(m * min(n, step))
    else:
        step = int(max(1, min(n, chunk_bytes // (8 * max(1, m)))))
        blas = contextlib.nullcontext()
    with blas:
        for start in range(0, n, step):
            checkpoint()
            if stop is not None and stop.is_set():
                return  # the other half failed; its error is raised by the caller
            end = min(start + step, n)
            size = end - start
            if xp is np:  # contiguous views of the reused buffers (the last block is shorter)
                points = point_buffer[: size * (d + 2)].reshape(size, d + 2)
                dist = dist_buffer[: m * size].reshape(m, size)
            else:
                points = xp.empty((size, d + 2))
            xp.multiply(data[start:end], -2.0, out=points[:, :d])
            points[:, d] = 1.0
            points[:, d + 1] = data_sq[start:end]
            if xp is np:
                np.matmul(augmented, points.T, out=dist)
            else:
                dist = augmented @ points.T
            if clip:
                xp.maximum(dist, 0.0, out=dist)
            visit(dist, rows)


def pass_threads(xp: Any) -> int:
    """Threads for a streamed pass: 2 under NumPy when the binning is compiled (it releases the
    GIL), else 1 (``np.bincount`` holds it: a second thread added CPU and no speed)."""
    return 2 if xp is np and binning_kernel.available() else 1


def _max_gap(xp: Any, query_sq: Any, data_sq: Any, base: Any) -> float:
    """An upper bound on every t' = D − U: D ≤ (|x| + max |y|)², with 1 % slack for rounding."""
    reach = (xp.sqrt(query_sq) + math.sqrt(float(xp.max(data_sq)))) ** 2 - base
    return 1.01 * float(xp.max(reach)) + 1e-300


def _row_step(bins: int) -> int:
    return max(1, laplace.ACCUMULATOR_ELEMS // (laplace.ACC_WIDTH * bins))


def bin_distances(
    xp: Any, query: Any, data: Any, max_scale: float, chunk_bytes: int
) -> StreamedBins:
    """Pass 1: the bins of every row of ``query`` against ``data`` (module docstring)."""
    query_sq = xp.einsum("ij,ij->i", query, query)
    data_sq = xp.einsum("ij,ij->i", data, data)
    n = data.shape[0]
    stride = max(1, -(-n // PILOT_POINTS))
    sample, sample_sq = data[::stride], data_sq[::stride]
    # BLAS on one thread here too: OpenBLAS workers left spinning after a multi-threaded pilot
    # GEMM would take a core from the two threads of the pass that follows
    blas = single_blas_thread() if xp is np else contextlib.nullcontext()
    with blas:
        base = xp.concatenate(  # rows in groups: the pilot block ≤ PILOT_ROWS × PILOT_POINTS
            [
                squared_distances(
                    query[r : r + PILOT_ROWS], sample, query_sq[r : r + PILOT_ROWS], sample_sq
                ).min(axis=1)
                for r in range(0, query.shape[0], PILOT_ROWS)
            ]
        )
    floor = max(
        laplace.floor_for(max_scale),
        2.0 ** math.ceil(math.log2(max(NEAR_RELATIVE * float(xp.max(base)), 1e-300))),
    )
    found = _pass(xp, query, data, query_sq, data_sq, base, floor, max_scale, chunk_bytes, True)
    if found is not None:
        return found
    # too many points below the pilot's minimum: exact minima first, then the floor bin
    base = xp.full(query.shape[0], np.inf)

    def minima(dist: Any, rows: slice) -> None:
        base[rows] = xp.minimum(base[rows], dist.min(axis=1))  # disjoint rows per worker

    _sweep(xp, query, data, query_sq, data_sq, minima, chunk_bytes, pass_threads(xp))
    floor = laplace.floor_for(max_scale)
    return _pass(xp, query, data, query_sq, data_sq, base, floor, max_scale, chunk_bytes, False)


def _pass(
    xp: Any,
    query: Any,
    data: Any,
    query_sq: Any,
    data_sq: Any,
    base: Any,
    floor: float,
    max_scale: float,
    chunk_bytes: int,
    keep_near: bool,
) -> StreamedBins | None:
    """One streaming pass binning D − base; ``keep_near``: points under the floor kept exactly
    (None when more than ``NEAR_LIMIT`` of them), else counted in the floor bin."""
    m = query.shape[0]
    max_gap = _max_gap(xp, query_sq, data_sq, base)
    bins = laplace.GapBinner(xp, 0, max_gap, max_scale, floor=floor).bins
    parts: list[laplace.BinnedGaps] = []
    near = _Kept()
    for g0 in range(0, m, _row_step(bins)):
        rows = slice(g0, min(g0 + _row_step(bins), m))
        binner = laplace.GapBinner(xp, rows.stop - rows.start, max_gap, max_scale, floor=floor)
        limit = base[rows] + floor if keep_near else None

        def fold(dist: Any, block: slice, binner=binner, limit=limit, g0=g0) -> None:
            _fold_rows(xp, dist, binner, base[g0:], limit, g0, near, block)
            if near.size > NEAR_LIMIT:
                raise _TooMany

        try:
            _sweep(
                xp,
                query[rows],
                data,
                query_sq[rows],
                data_sq,
                fold,
                chunk_bytes,
                pass_threads(xp),
                clip=False,  # _fold_rows clips (the compiled kernel: no pass of its own)
            )
        except _TooMany:
            return None
        parts.append(binner.result(drop_floor=keep_near))
    if not keep_near:
        binned = laplace.concatenate(parts, xp)
        return StreamedBins(binned, base, base, floor, max_gap, max_scale)
    return _merge(xp, parts, near.rows, near.values, base, floor, max_gap, max_scale, m)


class _Kept:
    """Points kept exactly by a pass: (row, value) arrays (appended under a lock: a caller may
    visit blocks from several threads)."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.values: list[Any] = []
        self.extra: list[Any] = []
        self.size = 0
        self.lock = threading.Lock()

    def add_rows(self, rows: Any, values: Any) -> None:
        with self.lock:
            self.rows.append(rows)
            self.values.append(values)
            self.size += int(values.shape[0])

    def add(self, xp: Any, row: int, values: Any, extra: Any = None) -> None:
        with self.lock:
            self.rows.append(xp.full(values.shape[0], row, dtype=xp.int64))
            self.values.append(values)
            if extra is not None:
                self.extra.append(extra)
            self.size += int(values.shape[0])


def _fold_rows(
    xp: Any,
    dist: Any,
    binner: laplace.GapBinner,
    base: Any,
    limit: Any,
    g0: int,
    near: _Kept,
    block: slice,
) -> None:
    """Bin the distances ``dist`` of the group's rows ``block`` against ``base`` (indexed from
    the group's first row); with ``limit``, keep the points under it exactly (compiled: the
    comparison, the shift and the binning in one pass, :meth:`.laplace.GapBinner.add_shifted`)."""
    kept = binner.add_shifted(
        dist, block.start, base[block], None if limit is None else limit[block], clip=True
    )
    if kept is not None and kept[0].shape[0]:
        near.add_rows(kept[0] + (g0 + block.start), kept[1])


def _merge(
    xp: Any,
    parts: list[laplace.BinnedGaps],
    near_rows: list,
    near_values: list,
    base: Any,
    floor: float,
    max_gap: float,
    max_scale: float,
    m: int,
) -> StreamedBins | None:
    """Bins (re-based by δ_j = U_j − dmin_j) and the exact points, sorted by row then t."""
    offsets = np.cumsum([0] + [p.m for p in parts])
    rows_b = xp.concatenate([p.rows + int(o) for p, o in zip(parts, offsets, strict=False)])
    lower_b = xp.concatenate([p.lower for p in parts])
    near_r = xp.concatenate(near_rows) if near_rows else xp.zeros(0, dtype=xp.int64)
    near_d = xp.concatenate(near_values) if near_values else xp.zeros(0)
    per_row = xp.bincount(near_r, minlength=m)
    if bool(xp.any(per_row == 0)):
        return None  # cannot happen (the pilot's nearest point is kept); the two-pass form can
    order = xp.lexsort(xp.stack([near_d, near_r]))
    near_r, near_d = near_r[order], near_d[order]
    first = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(per_row)[:-1]])
    dmin = near_d[first]
    shift = base - dmin  # δ_j ≥ 0
    e = int(near_r.shape[0])
    rows = xp.concatenate([rows_b, near_r])
    lower = xp.concatenate([lower_b + shift[rows_b], near_d - dmin[near_r]])
    half = xp.concatenate([xp.concatenate([p.half for p in parts]), xp.zeros(e)])
    count = xp.concatenate([xp.concatenate([p.count for p in parts]), xp.ones(e)])
    moments = xp.concatenate(
        [xp.concatenate([p.moments for p in parts], axis=1), xp.zeros((laplace.ORDER, e))],
        axis=1,
    )
    key = xp.concatenate([xp.concatenate([p.key for p in parts]), xp.full(e, -1, dtype=xp.int64)])
    order = xp.lexsort(xp.stack([lower, rows]))
    counts = xp.bincount(rows, minlength=m)
    binned = laplace.BinnedGaps(
        rows=rows[order],
        lower=lower[order],
        half=half[order],
        count=count[order],
        moments=moments[:, order],
        starts=xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(counts)[:-1]]),
        floor=xp.zeros(m),  # the nearest points are exact: no floor bin, no floor error
        m=m,
        key=key[order],
    )
    return StreamedBins(binned, dmin, base, floor, max_gap, max_scale)


def points_in_bins(
    xp: Any, bins: StreamedBins, query: Any, data: Any, entries: Any, chunk_bytes: int
) -> tuple[Any, Any, Any]:
    """Pass 2: the gaps t = D − dmin of the points in the given entries (indices into
    ``bins.binned``, each a bin with key ≥ 0), as (row, key, t) in no particular order.

    Rows go in groups whose selected points number at most ``SELECT_LIMIT`` (each group is a
    pass over the data for its rows only)."""
    binned = bins.binned
    rows_e, keys_e = binned.rows[entries], binned.key[entries]
    sizes = binned.count[entries]
    wanted_rows = np.unique(np.asarray(_host(rows_e)))
    per_row = np.zeros(binned.m)
    np.add.at(per_row, np.asarray(_host(rows_e)), np.asarray(_host(sizes)))
    query_sq = xp.einsum("ij,ij->i", query, query)
    data_sq = xp.einsum("ij,ij->i", data, data)
    template = bins.binner(xp)
    found = _Kept()
    for members in _groups(wanted_rows.tolist(), per_row):
        index_rows = xp.asarray(np.asarray(members, dtype=np.int64))
        local = {r: i for i, r in enumerate(members)}
        host_rows, host_keys = np.asarray(_host(rows_e)), np.asarray(_host(keys_e))
        inside = np.isin(host_rows, members)
        table = np.zeros((len(members), template.bins), dtype=bool)
        table[[local[r] for r in host_rows[inside].tolist()], host_keys[inside]] = True
        group = (xp.asarray(table), members, bins.base[index_rows], bins.dmin[index_rows])
        q, q_sq = query[index_rows], query_sq[index_rows]
        pick = functools.partial(_pick_rows, xp, template, group, found)
        _sweep(xp, q, data, q_sq, data_sq, pick, chunk_bytes)
    if not found.rows:
        empty = xp.zeros(0, dtype=xp.int64)
        return empty, empty, xp.zeros(0)
    rows, t = xp.concatenate(found.rows), xp.concatenate(found.values)
    return rows, xp.concatenate(found.extra), t


def _groups(rows: list[int], per_row: np.ndarray) -> list[list[int]]:
    """Consecutive rows whose selected points add up to at most ``SELECT_LIMIT`` (≥ 1 row)."""
    groups: list[list[int]] = []
    group: list[int] = []
    total = 0.0
    for r in rows:
        if group and total + per_row[r] > SELECT_LIMIT:
            groups.append(group)
            group, total = [], 0.0
        group.append(r)
        total += per_row[r]
    return groups + [group] if group else groups


def _pick_rows(
    xp: Any, template: laplace.GapBinner, group: tuple, found: _Kept, dist: Any, block: slice
) -> None:
    """Keep the points of the group's rows ``block`` that fall in a wanted bin."""
    table, members, base, dmin = group
    for i in range(dist.shape[0]):
        r = block.start + i
        row = dist[i]
        index, _ = template.index(row - base[r])
        hit = xp.nonzero(table[r][index])[0]
        if hit.shape[0]:
            found.add(xp, members[r], row[hit] - dmin[r], extra=index[hit])


def _host(array: Any) -> Any:
    return array.get() if hasattr(array, "get") else array
