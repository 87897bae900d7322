"""Cached distance tables: what makes a new bandwidth cheap in the Study and the dashboard.

A :class:`DistanceTable` holds the squared distances from m points to all n data points, shifted
by each row's minimum and (optionally) sorted. Every bandwidth afterwards is a few passes over it
(exp, sums, a cumulative sum), never a distance computation: the grid of a KL/d curve and a
slider move both come from the same table (one grid mechanism, the Study's vectorized evaluate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench import backend
from workbench.labs.kde import estimator, laplace
from workbench.labs.kde.validation import check_points

#: The "points carrying 90 % of the weight" statistic.
WEIGHT_FRACTION = 0.9
#: Elements of one per-thread work buffer in :meth:`DistanceTable.summaries` (8 MiB of float64):
#: rows are processed a few at a time, so the passes need no second (m × n) array.
WORK_BUFFER_ELEMS = 2**20
#: The bins of a table serve every bandwidth down to the Study's lower bound h = 1e-3 (and 2s for
#: Y₂): s_max = 2 · 1/(2 · 1e-6).
TABLE_MAX_SCALE = 1e6


class DistanceTable:
    """Squared distances from m points to all n data points, shifted and sorted per row.

    Stores Δ_ji = D_ji − min_i D_ji (sorted ascending along i when ``sort``: weights then come
    out in descending order, which gives the number of points carrying 90 % of the weight by a
    cumulative sum) and dmin_j. Memory: 8 · m · n bytes in the inputs' namespace, plus one work
    buffer of at most ``WORK_BUFFER_ELEMS`` floats per thread while summarising.
    """

    def __init__(self, points: Any, data: Any, sort: bool = True, xp: Any = None):
        q, y, xp = check_points(points, data, xp=xp)
        self.xp = xp
        self.n, self.dim = int(y.shape[0]), int(y.shape[1])
        delta = estimator.squared_distances(q, y)
        dmin = delta.min(axis=1)
        delta -= dmin[:, None]
        if sort:
            estimator.parallel_rows(
                xp, delta.shape[0], delta.shape[1], lambda rows: delta[rows].sort(axis=1)
            )
        self.delta, self.dmin, self.sorted = delta, dmin, sort
        self._last: tuple[tuple[float, ...], dict[str, np.ndarray]] | None = None
        self._bins: laplace.BinnedGaps | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the table (the (m × n) shifted distances and the row minima)."""
        return int(self.delta.nbytes + self.dmin.nbytes)

    def summaries(self, bandwidths: np.ndarray) -> dict[str, np.ndarray]:
        """log ρ̂, Y₂ and (if sorted) the 90 %-weight point count, each (k, m), on the host.

        The last answer is memoised (the dashboard asks for the same h from several panels);
        the arrays are read-only because that memo is shared by every session using the table.
        """
        key = tuple(float(h) for h in bandwidths)
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] == key:
            return last[1]
        out = self._summaries(np.asarray(key))
        self._last = (key, out)
        return out

    def _summaries(self, bandwidths: np.ndarray) -> dict[str, np.ndarray]:
        # Binned (certified to 1e-8 nats) for grids, and for single bandwidths once the bins
        # exist: a slider move then costs O(bins) instead of an exponential per table entry.
        # The unsorted slice table bins on its first call (one pass, about four exact ones).
        many = len(bandwidths) >= estimator.BINNED_MIN_BANDWIDTHS
        if hasattr(self.xp, "bincount") and (many or self._bins is not None or not self.sorted):
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
        if self.sorted:
            out["n_points_90"] = backend.to_host(count)
        return out

    def binned(self) -> laplace.BinnedGaps:
        """The table's gaps binned once (:mod:`.laplace`), for every later grid of bandwidths."""
        if self._bins is None:
            self._bins = laplace.bin_table(self.xp, self.delta, TABLE_MAX_SCALE)
        return self._bins

    def _binned_summaries(self, bandwidths: np.ndarray) -> dict[str, np.ndarray]:
        """As the exact path, from the binned Laplace transform: O(bins) per bandwidth.

        Rows whose certificate exceeds ``laplace.TOLERANCE`` (at h or at h/√2, for Y₂) are
        recomputed exactly. The 90 %-weight count is found bin by bin: the bin where the
        cumulative weight crosses 90 % of the total, then exactly inside that bin (sorted rows:
        a bin is a contiguous run of the row), so it matches the exact count except where a
        point's cumulative weight is within the certificate (1e-8 relative) of the threshold.
        """
        xp = self.xp
        binned = self.binned()
        scales = estimator.scales_of(bandwidths)
        k = len(scales)
        total, error = laplace.laplace_sums(binned, np.concatenate([scales, 2.0 * scales]), xp)
        bound = laplace.log_error_bound(total, error, xp)
        s, s2 = total[:k], total[k:]
        count = xp.zeros((k, binned.m), dtype=xp.int64)
        if self.sorted:
            for j, scale in enumerate(scales):
                count[j] = self._count_90(binned, float(scale))
        out = self._finish(self.dmin, s, s2, count, bandwidths)
        failed = backend.to_host(xp.nonzero((bound > laplace.TOLERANCE).any(axis=0))[0])
        if failed.size:  # rare: those rows on the exact path
            exact = self._exact_summaries(bandwidths, rows=failed)
            for name, values in exact.items():
                out[name][:, failed] = values
        return out

    def _count_90(self, binned: laplace.BinnedGaps, scale: float) -> Any:
        """Points carrying 90 % of the weight, per row, at one scale s = 1/(2h²)."""
        xp = self.xp
        weights = laplace.row_matrix(binned, laplace.entry_weights(binned, scale, xp), xp)
        counts = laplace.row_matrix(binned, binned.count.astype(xp.int64), xp)
        cum_weight = xp.cumsum(weights, axis=1)
        target = WEIGHT_FRACTION * cum_weight[:, -1]
        star = (cum_weight < target[:, None]).sum(axis=1)  # first bin reaching the target
        rows = xp.arange(binned.m)
        before_weight = xp.where(star > 0, cum_weight[rows, xp.maximum(star - 1, 0)], 0.0)
        before_count = (xp.cumsum(counts, axis=1) - counts)[rows, star]
        in_bin = counts[rows, star]
        width = int(xp.max(in_bin))
        offsets = xp.arange(width)[None, :]
        valid = offsets < in_bin[:, None]
        position = xp.minimum(before_count[:, None] + offsets, self.delta.shape[1] - 1)
        inside = xp.exp(xp.take_along_axis(self.delta, position, axis=1) * -scale)
        inside = xp.cumsum(xp.where(valid, inside, 0.0), axis=1)
        below = ((inside < (target - before_weight)[:, None]) & valid).sum(axis=1)
        return xp.minimum(before_count + below + 1, self.delta.shape[1])
