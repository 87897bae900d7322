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
from workbench.labs.kde import estimator
from workbench.labs.kde.validation import check_points

#: The "points carrying 90 % of the weight" statistic.
WEIGHT_FRACTION = 0.9
#: Elements of one per-thread work buffer in :meth:`DistanceTable.summaries` (8 MiB of float64):
#: rows are processed a few at a time, so the passes need no second (m × n) array.
WORK_BUFFER_ELEMS = 2**20


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
        xp = self.xp
        m, n = self.delta.shape
        k = len(bandwidths)
        s, s2 = xp.zeros((k, m)), xp.zeros((k, m))
        count = xp.zeros((k, m), dtype=xp.int64)
        scales = estimator.scales_of(bandwidths)
        step = m if xp is not np else max(1, WORK_BUFFER_ELEMS // n)

        def work(rows: slice) -> None:
            buffer = xp.empty((min(step, rows.stop - rows.start), n))
            for r0 in range(rows.start, rows.stop, step):
                r = slice(r0, min(r0 + step, rows.stop))
                block, out = self.delta[r], buffer[: r.stop - r.start]
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
        dmin, s, s2 = (backend.to_host(a) for a in (self.dmin, s, s2))
        log_rho, y2 = estimator.finish(dmin, s, s2, bandwidths, self.n, self.dim)
        out = {"log_density": log_rho, "participation_ratio": y2}
        if self.sorted:
            out["n_points_90"] = backend.to_host(count)
        for array in out.values():
            array.flags.writeable = False  # shared through the memo
        return out
