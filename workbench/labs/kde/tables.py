"""Cached distance tables: what makes a new bandwidth cheap in the Study and the dashboard.

A :class:`DistanceTable` answers, for m points against all n data points, log ρ̂, Y₂ and the
number of points carrying 90 % of the weight at any bandwidth, without a new distance
computation: the grid of a KL/d curve and a slider move both come from the same table (one grid
mechanism, the Study's vectorized evaluate). Two forms:

* **stored** (small tables, ``8 · m · n ≤ STORE_BYTES``, or ``store=True``): the squared
  distances shifted by each row's minimum and (optionally) sorted; the exact path
  (``summaries(h, method="exact")``) is one exponential per table entry and bandwidth;
* **streamed** (larger ones): only the binned Laplace transform of each row's gaps
  (:mod:`.laplace`, :mod:`.stream`), built in one streaming pass over the data with a bounded
  work buffer (issue 12 §5); no m × n array ever exists. The 90 % count's crossing bin is
  resolved exactly from the points of that bin, found by a second pass over the data for the
  rows that need it (kept for later bandwidths).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from workbench import backend
from workbench.labs.kde import binning_kernel, estimator, laplace, stream
from workbench.labs.kde.validation import check_points

#: The "points carrying 90 % of the weight" statistic.
WEIGHT_FRACTION = 0.9
#: Elements of one per-thread work buffer in :meth:`DistanceTable.summaries` (8 MiB of float64):
#: rows are processed a few at a time, so the passes need no second (m × n) array.
WORK_BUFFER_ELEMS = 2**20
#: The bins of a table serve every bandwidth down to the Study's lower bound h = 1e-3 (and 2s for
#: Y₂): s_max = 2 · 1/(2 · 1e-6).
TABLE_MAX_SCALE = 1e6
#: Tables of more than this many bytes of distances (8 · m · n) are streamed, not stored.
STORE_BYTES = 128 * 2**20
#: A streamed table's second pass (exact counts inside crossing bins) runs only when the rows
#: that need it cost at most this many new distances (~30 ms); else those counts interpolate.
SECOND_PASS_DISTANCES = 2**23
#: Most entries of one streamed row: the accumulator's bins from the floor (2^-60 at the
#: Study's largest scale) to gaps of 2^10, 32 a binade.
MAX_ROW_ENTRIES = 72 * 2**laplace.SUB_BITS
#: Elements of one padded (rows × points of the crossing bin) block when counting.
COUNT_BLOCK_ELEMS = 2**21


def table_bytes(m: int, n: int, sort: bool = True) -> int:
    """Upper bound on the bytes a :class:`DistanceTable` of m rows over n points holds and
    uses while it is built and asked (for a page's memory cap; Python ints, no overflow).

    Stored (8 · m · n ≤ ``STORE_BYTES``): 8 · m · n + 8 m. Streamed: |y|² (8 n); the pilot block,
    the distance blocks and the dense accumulator (each bounded by a constant, ≤ 32 MiB); the
    second pass's kept points (4 · 8 · ``stream.SELECT_LIMIT``: row, bin, gap while it runs,
    the cached gaps after; only with ``sort``, for the 90 % counts); the kept nearest points
    (16 · ``stream.NEAR_LIMIT``); and the entries, 12 floats each, at most one per accumulator
    bin of a row: ``MAX_ROW_ENTRIES`` (measured: about 310 a row at n = 1.2 · 10^6, d = 28).
    """
    m, n = int(m), int(n)
    if 8 * m * n <= STORE_BYTES:
        return 8 * m * n + 8 * m
    rows = min(m, max(1, laplace.ACCUMULATOR_ELEMS // (laplace.ACC_WIDTH * MAX_ROW_ENTRIES)))
    fixed = (
        8 * min(m, stream.PILOT_ROWS) * stream.PILOT_POINTS
        + 2 * 8 * rows * stream.BLOCK_POINTS
        + 8 * laplace.ACCUMULATOR_ELEMS
        + (4 * 8 * stream.SELECT_LIMIT if sort else 0)
        + 16 * stream.NEAR_LIMIT
    )
    return 8 * n + fixed + 12 * 8 * m * min(n, MAX_ROW_ENTRIES)


class DistanceTable:
    """log ρ̂, Y₂ and the 90 %-weight count of m points against n data points, any bandwidth.

    Stored form: Δ_ji = D_ji − min_i D_ji (sorted ascending along i when ``sort``: weights then
    come out in descending order, which gives the 90 %-weight count by a cumulative sum) and
    dmin_j; memory 8 · m · n bytes plus one work buffer of ``WORK_BUFFER_ELEMS`` floats per
    thread. Streamed form (``store=False``, the default above ``STORE_BYTES``): the bins of
    every row and dmin_j (a few hundred entries per row), the points and data it was built from
    (references, not copies), and the points of crossing bins already resolved; building it
    holds one distance block of ``chunk_bytes`` and one bin accumulator
    (``laplace.ACCUMULATOR_ELEMS`` floats). Namespaces without ``bincount`` (array-api-strict)
    always store.
    """

    def __init__(
        self,
        points: Any,
        data: Any,
        sort: bool = True,
        xp: Any = None,
        store: bool | None = None,
        chunk_bytes: int | None = None,
    ):
        q, y, xp = check_points(points, data, xp=xp)
        self.xp = xp
        self.n, self.dim = int(y.shape[0]), int(y.shape[1])
        m = int(q.shape[0])
        if not hasattr(xp, "bincount"):
            store = True
        elif store is None:
            store = 8 * m * self.n <= STORE_BYTES
        self.stored, self.sorted = bool(store), sort
        self._chunk_bytes = int(chunk_bytes or estimator._default_chunk_bytes(xp))
        self._last: tuple[tuple, dict[str, np.ndarray]] | None = None
        self._bins: laplace.BinnedGaps | None = None
        self._inside: dict[int, Any] = {}  # streamed: entry → sorted gaps of its points
        self._lock = threading.Lock()
        if self.stored:
            delta = estimator.squared_distances(q, y)
            dmin = delta.min(axis=1)
            delta -= dmin[:, None]
            if sort:
                estimator.parallel_rows(
                    xp, delta.shape[0], delta.shape[1], lambda rows: delta[rows].sort(axis=1)
                )
            self.delta, self.dmin = delta, dmin
            self.points = self.data = None
        else:
            self.points, self.data = q, y
            self._stream = stream.bin_distances(xp, q, y, TABLE_MAX_SCALE, self._chunk_bytes)
            self._bins = self._stream.binned
            self.delta, self.dmin = None, self._stream.dmin

    @property
    def nbytes(self) -> int:
        """Bytes held by the table: the (m × n) shifted distances and the row minima (stored),
        or the bins, row minima and resolved crossing-bin points (streamed; the points and data
        are the caller's arrays, not counted)."""
        if self.stored:
            return int(self.delta.nbytes + self.dmin.nbytes)
        b = self._bins
        arrays = (b.rows, b.lower, b.half, b.count, b.moments, b.starts, b.floor, b.key)
        held = sum(int(a.nbytes) for a in arrays) + int(self.dmin.nbytes)
        return held + sum(int(t.nbytes) for t in list(self._inside.values()))

    def summaries(self, bandwidths: np.ndarray, method: str = "auto") -> dict[str, np.ndarray]:
        """log ρ̂, Y₂ and (if sorted) the 90 %-weight point count, each (k, m), on the host.

        ``method="exact"``: log ρ̂ and Y₂ with one exponential per (point, row, bandwidth), from
        the stored table or, for a streamed one, by the exact streaming estimator over the data
        (the count is then still found from the bins, exactly inside the crossing bin).
        ``"auto"``: the certified binned path (1e-8 nats) for grids and for any bandwidth once
        the bins exist. The last answer is memoised (the dashboard asks for the same h from
        several panels); the arrays are read-only because that memo is shared by every session
        using the table.
        """
        if method not in ("auto", "exact"):
            raise ValueError(f"method must be 'auto' or 'exact', got {method!r}")
        key = (method, *(float(h) for h in bandwidths))
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == key:
            return last[1]
        out = self._summaries(np.asarray(key[1:], dtype=float), method)
        self._last = (key, out)
        return out

    def _summaries(self, bandwidths: np.ndarray, method: str) -> dict[str, np.ndarray]:
        # Binned (certified to 1e-8 nats) for grids, and for single bandwidths once the bins
        # exist: a slider move then costs O(bins) instead of an exponential per table entry.
        # The unsorted slice table bins on its first call (one pass, about four exact ones).
        many = len(bandwidths) >= estimator.BINNED_MIN_BANDWIDTHS
        binnable = hasattr(self.xp, "bincount")
        if method == "exact":
            out = (
                self._exact_summaries(bandwidths)
                if self.stored
                else self._streamed_exact(bandwidths)
            )
        elif binnable and (many or self._bins is not None or not self.sorted):
            out = self._binned_summaries(bandwidths)
        else:
            out = self._exact_summaries(bandwidths)
        for array in out.values():
            array.flags.writeable = False  # shared through the memo
        return out

    def _exact_summaries(self, bandwidths: np.ndarray, rows: Any = None) -> dict[str, np.ndarray]:
        """One exponential per (point, row, bandwidth); ``rows``: an index of rows (default all)."""
        xp = self.xp
        table = self.delta if rows is None else self.delta[rows]
        dmin = self.dmin if rows is None else self.dmin[rows]
        m, n = table.shape
        k = len(bandwidths)
        s, s2 = xp.zeros((k, m)), xp.zeros((k, m))
        count = xp.zeros((k, m), dtype=xp.int64)
        scales = estimator.scales_of(bandwidths)
        step = m if xp is not np else max(1, WORK_BUFFER_ELEMS // n)

        def work(rows: slice) -> None:
            buffer = xp.empty((min(step, rows.stop - rows.start), n))
            for r0 in range(rows.start, rows.stop, step):
                r = slice(r0, min(r0 + step, rows.stop))
                block, out = table[r], buffer[: r.stop - r.start]
                for j, scale in enumerate(scales):
                    xp.multiply(block, -float(scale), out=out)
                    xp.exp(out, out=out)
                    s2[j, r] = xp.einsum("ij,ij->i", out, out)
                    if self.sorted:
                        xp.cumsum(out, axis=1, out=out)
                        s[j, r] = out[:, -1]
                        threshold = WEIGHT_FRACTION * out[:, -1:]
                        count[j, r] = (out < threshold).sum(axis=1) + 1
                    else:
                        s[j, r] = out.sum(axis=1)

        estimator.parallel_rows(xp, m, n * k, work)
        return self._finish(dmin, s, s2, count, bandwidths)

    def _finish(self, dmin: Any, s: Any, s2: Any, count: Any, bandwidths: np.ndarray) -> dict:
        dmin, s, s2 = (backend.to_host(a) for a in (dmin, s, s2))
        log_rho, y2 = estimator.finish(dmin, s, s2, bandwidths, self.n, self.dim)
        out = {"log_density": log_rho, "participation_ratio": y2}
        if self.sorted and count is not None:
            out["n_points_90"] = backend.to_host(count)
        return out

    def binned(self) -> laplace.BinnedGaps:
        """The table's gaps binned once (:mod:`.laplace`), for every later grid of bandwidths."""
        if self._bins is None:
            self._bins = laplace.bin_table(self.xp, self.delta, TABLE_MAX_SCALE)
        return self._bins

    def _streamed_exact(self, bandwidths: np.ndarray, rows: Any = None) -> dict[str, np.ndarray]:
        """Streamed table, exact log ρ̂ and Y₂: the exact streaming estimator over the data."""
        xp = self.xp
        points = self.points if rows is None else self.points[rows]
        state = estimator._stream(
            xp, points, self.data, estimator.scales_of(bandwidths), self._chunk_bytes
        )
        out = self._finish(state.dmin, state.s, state.s2, None, bandwidths)
        if self.sorted and rows is None:
            count = self._counts(self.binned(), estimator.scales_of(bandwidths))
            out["n_points_90"] = backend.to_host(count)
        return out

    def _binned_summaries(self, bandwidths: np.ndarray) -> dict[str, np.ndarray]:
        """As the exact path, from the binned Laplace transform: O(bins) per bandwidth.

        Rows whose certificate exceeds ``laplace.TOLERANCE`` (at h or at h/√2, for Y₂) are
        recomputed exactly. The 90 %-weight count is found bin by bin: the bin where the
        cumulative weight crosses 90 % of the total, then exactly inside that bin from its
        points (stored: a contiguous run of the sorted row; streamed: found by a second pass),
        so it matches the exact count except where a point's cumulative weight is within the
        certificate (1e-8 relative) of the threshold.
        """
        xp = self.xp
        binned = self.binned()
        scales = estimator.scales_of(bandwidths)
        k = len(scales)
        total, error = laplace.laplace_sums(binned, np.concatenate([scales, 2.0 * scales]), xp)
        bound = laplace.log_error_bound(total, error, xp)
        s, s2 = total[:k], total[k:]
        count = self._counts(binned, scales) if self.sorted else None
        out = self._finish(self.dmin, s, s2, count, bandwidths)
        failed = backend.to_host(xp.nonzero((bound > laplace.TOLERANCE).any(axis=0))[0])
        if failed.size:  # rare: those rows on the exact path
            if self.stored:
                exact = self._exact_summaries(bandwidths, rows=failed)
            else:
                exact = self._streamed_exact(bandwidths, rows=xp.asarray(failed))
            for name in ("log_density", "participation_ratio"):
                out[name][:, failed] = exact[name]
            if self.stored and self.sorted:
                out["n_points_90"][:, failed] = exact["n_points_90"]
        return out

    def _counts(self, binned: laplace.BinnedGaps, scales: np.ndarray) -> Any:
        """Points carrying 90 % of the weight, (k, m), one row of scales s = 1/(2h²) each.

        Per scale: the entry where the cumulative (Taylor) weight crosses 90 % of the row's
        total; an entry of one point settles the count, a bin of several needs its points'
        exact weights in order (stored: a run of the sorted row; streamed: fetched once for
        every scale by :meth:`_inside_points` when that is cheap (:meth:`_fetch`), else
        interpolated, see :func:`_interpolated`).
        """
        xp = self.xp
        moments = binned.moments * laplace._INV_FACTORIALS[1:, None] if xp is np else None
        found = [_crossing(binned, float(scale), xp, moments) for scale in scales]
        inside = None
        if not self.stored:
            need = [c["entry"][c["in_bin"] > 1] for c in found]
            inside = self._fetch(backend.to_host(xp.unique(xp.concatenate(need))).tolist())
        count = xp.zeros((len(scales), binned.m), dtype=xp.int64)
        for j, (scale, c) in enumerate(zip(scales, found, strict=True)):
            count[j] = self._resolve(c, float(scale), inside)
        return count

    def _fetch(self, entries: list[int]) -> dict[int, Any]:
        """The sorted gaps of the entries that are cheap to resolve exactly: all of them when
        they hold at most ``stream.SELECT_LIMIT`` points and the rows still missing cost at
        most ``SECOND_PASS_DISTANCES`` new distances; else those already fetched."""
        with self._lock:
            cached = {e: self._inside[e] for e in entries if e in self._inside}
        missing = [e for e in entries if e not in cached]
        if not missing:
            return cached
        xp = self.xp
        index = xp.asarray(np.asarray(missing, dtype=np.int64))
        rows = int(xp.unique(self._bins.rows[index]).shape[0])
        points = float(xp.sum(self._bins.count[xp.asarray(np.asarray(entries, dtype=np.int64))]))
        if points <= stream.SELECT_LIMIT and rows * self.n <= SECOND_PASS_DISTANCES:
            return self._inside_points(entries)
        return cached

    def _resolve(self, c: dict[str, Any], scale: float, inside: dict | None) -> Any:
        """before_count + (points of the crossing entry whose cumulative weight stays under
        the remaining target) + 1, per row: exactly from the entry's points where they are at
        hand (stored table, or fetched), else interpolated (:func:`_interpolated`)."""
        xp = self.xp
        below = _interpolated(c, xp) if not self.stored else xp.zeros_like(c["in_bin"])
        several = c["in_bin"] > 1
        if inside is not None:
            known = xp.asarray([e in inside for e in backend.to_host(c["entry"]).tolist()])
            several &= known
        rows = backend.to_host(xp.nonzero(several)[0])
        width = int(xp.max(c["in_bin"][several])) if rows.size else 1
        step = max(1, COUNT_BLOCK_ELEMS // max(1, width))
        for r0 in range(0, rows.size, step):
            block = xp.asarray(rows[r0 : r0 + step])
            if self.stored:
                offsets = xp.arange(width)[None, :]
                valid = offsets < c["in_bin"][block][:, None]
                position = xp.minimum(
                    c["before_count"][block][:, None] + offsets, self.delta.shape[1] - 1
                )
                gaps = self.delta[block[:, None], position]  # a gather: no row copies
            else:
                runs = [inside[e] for e in backend.to_host(c["entry"][block]).tolist()]
                gaps, valid = _padded(xp, runs)
            weights = xp.cumsum(xp.where(valid, xp.exp(gaps * -scale), 0.0), axis=1)
            remaining = (c["target"] - c["before_weight"])[block][:, None]
            below[block] = ((weights < remaining) & valid).sum(axis=1)
        return xp.minimum(c["before_count"] + below + 1, self.n)

    def _inside_points(self, entries: list[int]) -> dict[int, Any]:
        """Sorted gaps of the points of each requested entry of a streamed table: from the
        table's cache, else one second pass over the data for the rows that miss (the cache is
        emptied first when it would pass ``stream.SELECT_LIMIT`` points)."""
        xp = self.xp
        with self._lock:
            missing = [e for e in entries if e not in self._inside]
            if missing:
                held = sum(int(t.shape[0]) for t in self._inside.values())
                wanted = float(backend.to_host(self._bins.count[xp.asarray(missing)]).sum())
                if held + wanted > stream.SELECT_LIMIT:
                    self._inside.clear()
                    missing = entries
                found = stream.points_in_bins(
                    xp, self._stream, self.points, self.data, xp.asarray(missing), self._chunk_bytes
                )
                self._inside.update(_split_runs(xp, self._stream, self._bins, missing, found))
            return {e: self._inside[e] for e in entries}


def _interpolated(c: dict[str, Any], xp: Any) -> Any:
    """Points of the crossing bin below the remaining target R, taking its K points' weights
    as equal to their mean w̄ (the bin's Taylor weight / K): ⌈R/w̄⌉ − 1, clipped to [0, K − 1].

    The bin's weights lie in [e^{−s (a + w)}, e^{−s a}], so both this and the exact count lie
    between R e^{s a} and R e^{s (a + w)}: the error is at most K (e^{s w} − 1) + 1 points, w the
    bin width (≤ 2^−5 of the gap); used where the second pass would cost too much
    (:meth:`DistanceTable._fetch`: at n ≈ 10^6 every row's, i.e. the central-limit end, where the
    count is in the hundreds of thousands and the bins hold tens of thousands of points)."""
    k = c["in_bin"]
    mean = c["weight"] / xp.maximum(k, 1)
    remaining = c["target"] - c["before_weight"]
    estimate = xp.ceil(remaining / xp.where(mean > 0, mean, 1.0)) - 1
    return xp.clip(estimate, 0, xp.maximum(k - 1, 0)).astype(xp.int64)


def _crossing(
    binned: laplace.BinnedGaps, scale: float, xp: Any, moments: Any = None
) -> dict[str, Any]:
    """Per row, the entry where the cumulative weight at scale s first reaches 90 % of the
    row's total, with the weight and the point count before it (compiled under NumPy with
    numba: one loop per row, :func:`.binning_kernel.crossing`; ``moments``: the M_p/p! of a
    caller that asks for many scales)."""
    if xp is np and binning_kernel.available():
        if moments is None:
            moments = binned.moments * laplace._INV_FACTORIALS[1:, None]
        f, i = binning_kernel.crossing(
            binned.lower,
            binned.half,
            binned.count,
            moments,
            binned.starts,
            scale,
            laplace.CUTOFF,
            WEIGHT_FRACTION,
        )
        keys = ("target", "before_weight", "weight", "before_count", "in_bin")
        return {"entry": binned.starts + i[0], **dict(zip(keys, [*f, *i[1:]], strict=True))}
    weights = laplace.row_matrix(binned, laplace.entry_weights(binned, scale, xp), xp)
    counts = laplace.row_matrix(binned, binned.count.astype(xp.int64), xp)
    cum_weight = xp.cumsum(weights, axis=1)
    target = WEIGHT_FRACTION * cum_weight[:, -1]
    star = (cum_weight < target[:, None]).sum(axis=1)  # first entry reaching the target
    rows = xp.arange(binned.m)
    return {
        "entry": binned.starts + star,
        "target": target,
        "before_weight": xp.where(star > 0, cum_weight[rows, xp.maximum(star - 1, 0)], 0.0),
        "before_count": (xp.cumsum(counts, axis=1) - counts)[rows, star],
        "in_bin": counts[rows, star],
        "weight": weights[rows, star],
    }


def _padded(xp: Any, runs: list[Any]) -> tuple[Any, Any]:
    """Runs of different lengths as a zero-padded (len(runs), longest) matrix and its mask."""
    lengths = [int(r.shape[0]) for r in runs]
    width = max(lengths) if lengths else 1
    out = xp.zeros((len(runs), width))
    valid = xp.zeros((len(runs), width), dtype=bool)
    for i, (run, length) in enumerate(zip(runs, lengths, strict=True)):
        out[i, :length] = run
        valid[i, :length] = True
    return out, valid


def _split_runs(
    xp: Any, bins: stream.StreamedBins, binned: laplace.BinnedGaps, entries: list[int], found
) -> dict[int, Any]:
    """The second pass's (row, key, t) cut into one sorted run of gaps per entry (grouped by
    an integer sort on row · bins + key, then each run sorted on its own: cheaper than one
    lexicographic sort of all points)."""
    rows, keys, t = found
    width = bins.binner(xp).bins
    composite = rows * width + keys
    order = xp.argsort(composite)
    composite, t = backend.to_host(composite[order]), t[order]
    index = xp.asarray(np.asarray(entries, dtype=np.int64))
    wanted = backend.to_host(binned.rows[index] * width + binned.key[index])
    lo = np.searchsorted(composite, wanted, side="left")
    hi = np.searchsorted(composite, wanted, side="right")
    return {e: xp.sort(t[int(a) : int(b)]) for e, a, b in zip(entries, lo, hi, strict=True)}
