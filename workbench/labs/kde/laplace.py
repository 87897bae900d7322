"""Binned Laplace transform of distance gaps: many bandwidths at O(bins) each, with a certificate.

For one query x with squared distances D_i to the data and gaps t_i = D_i − min_i D_i ≥ 0,

    log ρ̂_h(x) = log_normaliser(h) − s·D_min + log S(s),   S(s) = Σ_i e^{−s t_i},  s = 1/(2h²),

so every bandwidth of a sweep evaluates the Laplace transform S of the same gap distribution
(issue 12 §1). The exact path pays one exponential per (point, query, bandwidth). Here the gaps of
each query are grouped once into bins, with a few moments per bin, and each bandwidth costs
O(bins):

* **Bins from the float's bits.** For t = 2^e (1 + f), the bin index is the exponent and the top
  ``SUB_BITS`` = q bits of the mantissa (``bits(t) >> (52 − q)``): bins [a, a + w) with relative
  width w/a ≤ 2^{−q}, so bins are narrow where e^{−s t} is steep (small t) and wide in the bulk.
  The position inside the bin is the remaining mantissa bits: v = 2 (t − a)/w − 1 ∈ [−1, 1) with
  no division. Gaps below a power-of-two ``floor`` (the nearest point, t = 0, and near-ties) share
  one "floor" bin counted as t = 0.
* **Moments.** Per bin: n_b and M_p = Σ v_i^p for p = 1..P (``ORDER`` = P = 6), one pass over the
  gaps: the compiled kernel of :mod:`.binning_kernel` under NumPy with numba (one fused loop,
  GIL released), else one ``bincount`` per moment. The accumulator holds one (n_b, M_1..M_6,
  pad) row of ``ACC_WIDTH`` = 8 floats per bin.
* **Taylor in each bin.** With centre c = a + w/2 and half width r = w/2,
  e^{−s t} = e^{−s c} e^{−s r v} ≈ e^{−s c} Σ_{p≤P} (−s r)^p v^p / p!, so
  S̃(s) = n_floor + Σ_b e^{−s c_b} Σ_p (−s r_b)^p M_{p,b} / p!.

**Certificate.** Lagrange's remainder gives |e^{−x} − Σ_{p≤P} (−x)^p/p!| ≤ e^{|x|} |x|^{P+1}/(P+1)!
for |x| ≤ s r, hence per point e^{−s c} e^{s r} (s r)^{P+1}/(P+1)! = e^{−s a} (s r)^{P+1}/(P+1)!, and
for the floor bin 1 − e^{−s t} ≤ s·floor. So

    |S̃ − S| ≤ E(s) = n_floor · s · floor + Σ_b n_b e^{−s a_b} (s r_b)^{P+1}/(P+1)!,
    |log S̃ − log S| ≤ −log(1 − E/S̃)   (when E < S̃),

computed alongside S̃ at the same O(bins) cost. Every (query, bandwidth) whose bound exceeds
``TOLERANCE`` is recomputed on the exact path by the caller, so the returned log-densities are
within ``TOLERANCE`` nats of the exact ones whatever the data (up to float64 rounding of the sums).
With q = 5 and P = 6 the a-priori bound per bin is at most
n_b e^{−y} (y/64)^7/7! with y = s·a_b, below 1e-12 relative to S for the lab's sizes, so fallbacks
are rare; the floor is chosen so that s·floor ≤ 1e-12 for the largest s asked.

Works on NumPy and CuPy arrays alike (bit views, shifts and ``bincount`` exist in both); the
compiled kernels serve NumPy only (``WORKBENCH_NO_NUMBA=1`` turns them off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.labs.kde import binning_kernel

#: Mantissa bits kept in the bin index: bins of relative width ≤ 2^−q.
SUB_BITS = 5
#: Taylor order P inside each bin.
ORDER = 6
#: Gaps below ``floor`` count as 0; floor is a power of two with s_max · floor ≤ this.
FLOOR_ERROR = 1e-12
#: Largest certified error in log S (nats) before a (query, bandwidth) goes to the exact path.
TOLERANCE = 1e-8
#: Floats per bin in the accumulator: count, M_1..M_P and a pad (one 64-byte row).
ACC_WIDTH = binning_kernel.WIDTH
#: Floats of the dense accumulator of one row group (rows × bins × ``ACC_WIDTH``): 32 MB.
ACCUMULATOR_ELEMS = 4 * 2**20
#: Gaps per block of :meth:`GapBinner.add` (a few rows): temporaries stay in cache.
BLOCK_ELEMS = 2**17
#: Gaps of one row binned per ``bincount`` call (their index, v and v^p temporaries: 1 MB).
ROW_RUN = 2**15

_MANTISSA = 52
_SHIFT = _MANTISSA - SUB_BITS
_LOW_MASK = (1 << _SHIFT) - 1
_INV_FACTORIALS = np.array([1.0 / math.factorial(p) for p in range(ORDER + 1)])
_REMAINDER = 1.0 / math.factorial(ORDER + 1)


def floor_for(max_scale: float) -> float:
    """The floor bin's edge: the largest power of two with max_scale · floor ≤ FLOOR_ERROR."""
    return 2.0 ** math.floor(math.log2(FLOOR_ERROR / max(float(max_scale), 1e-300)))


def _bin_of(value: float) -> int:
    """The bin index of a non-negative float (exponent and top mantissa bits)."""
    return int(np.array(value, dtype=np.float64).view(np.int64)) >> _SHIFT


def _zeros_aligned(xp: Any, bins: int) -> Any:
    """A zeroed (bins, ``WIDTH``) float64 accumulator; under NumPy each bin's row starts on a
    64-byte cache line (one line per update in the compiled kernel)."""
    width = ACC_WIDTH
    if xp is not np:
        return xp.zeros((bins, width))
    raw = np.zeros(bins * width + width)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip : skip + bins * width].reshape(bins, width)


def _edge(index: Any) -> Any:
    """Lower edge a of the bins with the given indices (the inverse of :func:`_bin_of`)."""
    return (index << _SHIFT).view(np.float64)


@dataclass
class BinnedGaps:
    """Occupied bins of every row, in row order and increasing t inside a row.

    ``rows``, ``lower``, ``half``, ``count``: (e,) per occupied bin (query row, a, r, n_b);
    ``moments``: (P, e) the M_p for p = 1..P; ``starts``: (m,) first entry of each row (every row
    has at least one entry: the floor bin is stored as an entry with r = 0); ``floor``: (m,)
    the floor used for each row (rows binned in different groups may differ).
    """

    rows: Any
    lower: Any
    half: Any
    count: Any
    moments: Any
    starts: Any
    floor: Any
    m: int
    #: (e,) accumulator bin of each entry (0: the floor bin; −1: a point kept exactly), or None
    key: Any = None

    @property
    def entries(self) -> int:
        return int(self.rows.shape[0])


class GapBinner:
    """Accumulates bin moments of the gaps t ≥ 0 of ``m`` rows, block by block.

    The caller knows the largest gap ``max_gap`` of each row group and the largest scale s it
    will ask for (which fixes the floor); blocks of rows × columns may arrive in any order and
    any split of the columns (data chunks of a streamed pass).
    """

    def __init__(
        self, xp: Any, rows: int, max_gap: float, max_scale: float, floor: float | None = None
    ):
        self.xp = xp
        # a caller that keeps the gaps below the floor exactly (:mod:`.stream`) may raise it
        self.floor = floor_for(max_scale) if floor is None else float(floor)
        self.first = _bin_of(self.floor)  # bin index of the floor edge (a power of two)
        # index 0 is the floor bin; bins 1.. cover [floor, max_gap]
        self.bins = max(1, _bin_of(max(float(max_gap), self.floor)) - self.first + 2)
        self.rows = rows
        # one 64-byte row per bin: count, M_1..M_6, a pad (binning_kernel.WIDTH)
        self.compiled = xp is np and binning_kernel.available()
        self.acc = _zeros_aligned(xp, rows * self.bins)

    def index(self, gaps: Any) -> tuple[Any, Any]:
        """(bin index in 0 .. bins − 1, raw bits) of a block of gaps; below the floor: bin 0."""
        xp = self.xp
        bits = xp.ascontiguousarray(gaps, dtype=xp.float64).view(xp.int64)
        index = bits >> _SHIFT
        index -= self.first - 1
        xp.maximum(index, 0, out=index)
        xp.minimum(index, self.bins - 1, out=index)  # a gap over max_gap must not spill
        return index, bits

    def add(self, gaps: Any, row0: int) -> None:
        """Fold a (r × c) block of gaps of rows row0 .. row0 + r − 1 (float64, ≥ 0).

        Compiled (NumPy, numba present: :mod:`.binning_kernel`): one fused pass, the GIL
        released. Else one ``bincount`` per row, moment and run of ``ROW_RUN`` gaps: the row's
        accumulator stays in cache and the run's temporaries in L2 (~22 ns per gap on this
        machine, against ~33 ns for one bincount over a block of 8 rows and ~44 ns for
        whole-row runs of 2^17 gaps). Blocks of disjoint rows may be added from different
        threads.
        """
        if self.compiled:
            zero = np.zeros(gaps.shape[0])
            binning_kernel.fold(self.acc, gaps, row0, self.first, self.bins, zero)
            return
        for i in range(gaps.shape[0]):
            self._add_row(gaps[i], row0 + i)

    def add_shifted(
        self, block: Any, row0: int, shift: Any, limit: Any = None, clip: bool = False
    ) -> tuple[Any, Any] | None:
        """Fold the gaps x − shift[i], x = block[i, j] (``clip``: max(block[i, j], 0), in
        place), of rows row0 + i; with ``limit``, first keep the values x < limit[i] and return
        them as (local row i, value), row by row.

        The streamed pass's step (:mod:`.stream`): compiled, one pass over the block for the
        clip, the comparison, the shift and the binning; else the same operations in NumPy."""
        if self.compiled:
            return binning_kernel.fold(
                self.acc, block, row0, self.first, self.bins, shift, limit=limit, clip=clip
            )
        xp = self.xp
        if clip:
            xp.maximum(block, 0.0, out=block)
        rows, values = [], []
        for i in range(block.shape[0]):
            row = block[i]
            if limit is not None:
                hit = xp.nonzero(row < limit[i])[0]
                if hit.shape[0]:
                    rows.append(xp.full(hit.shape[0], i, dtype=xp.int64))
                    values.append(row[hit])
            self._add_row(row - shift[i], row0 + i)
        if limit is None:
            return None
        if not rows:
            return xp.zeros(0, dtype=xp.int64), xp.zeros(0)
        return xp.concatenate(rows), xp.concatenate(values)

    def _add_row(self, row: Any, r: int) -> None:
        """The NumPy path for one row: a ``bincount`` per moment and run of ``ROW_RUN`` gaps."""
        xp = self.xp
        bins = self.bins
        acc = self.acc[r * bins : (r + 1) * bins]
        for c0 in range(0, row.shape[0], ROW_RUN):
            index, bits = self.index(row[c0 : c0 + ROW_RUN])
            acc[:, 0] += xp.bincount(index, minlength=bins)
            v = (bits & _LOW_MASK).astype(xp.float64)
            v *= 2.0 ** (1 - _SHIFT)
            v -= 1.0  # v = 2 (t − a)/w − 1 ∈ [−1, 1)
            power = v.copy()
            for p in range(1, ORDER + 1):
                if p > 1:
                    power *= v
                acc[:, p] += xp.bincount(index, weights=power, minlength=bins)

    def result(self, drop_floor: bool = False) -> BinnedGaps:
        """The occupied bins (count > 0), compacted, with their edges and half widths.

        ``drop_floor``: leave the floor bin out (the caller keeps those gaps exactly); rows may
        then have no entry, and ``starts`` is not meaningful until the exact points are merged
        in (:func:`workbench.labs.kde.stream.merge`)."""
        xp = self.xp
        counts = self.acc[:, 0]
        if drop_floor:
            counts = counts.reshape(self.rows, self.bins).copy()
            counts[:, 0] = 0
            counts = counts.ravel()
        occupied = xp.nonzero(counts)[0]
        rows = occupied // self.bins
        local = occupied % self.bins
        lower = _edge(local + (self.first - 1))
        upper = _edge(local + self.first)
        half = 0.5 * (upper - lower)
        floor_entry = local == 0
        lower = xp.where(floor_entry, 0.0, lower)
        half = xp.where(floor_entry, 0.0, half)
        moments = self.acc[occupied, 1 : ORDER + 1].T.copy()
        moments[:, floor_entry] = 0.0  # the floor bin counts as t = 0: no Taylor terms
        per_row = xp.bincount(rows, minlength=self.rows)
        starts = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(per_row)[:-1]])
        return BinnedGaps(
            rows=rows,
            lower=lower,
            half=half,
            count=counts[occupied],
            moments=moments,
            starts=starts,
            floor=xp.full(self.rows, self.floor),
            m=self.rows,
            key=local,
        )


def concatenate(parts: list[BinnedGaps], xp: Any) -> BinnedGaps:
    """Join row groups binned separately (rows renumbered in order)."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [p.m for p in parts])
    entry_offsets = np.cumsum([0] + [p.entries for p in parts])
    return BinnedGaps(
        rows=xp.concatenate([p.rows + int(o) for p, o in zip(parts, offsets, strict=False)]),
        lower=xp.concatenate([p.lower for p in parts]),
        half=xp.concatenate([p.half for p in parts]),
        count=xp.concatenate([p.count for p in parts]),
        moments=xp.concatenate([p.moments for p in parts], axis=1),
        starts=xp.concatenate(
            [p.starts + int(o) for p, o in zip(parts, entry_offsets, strict=False)]
        ),
        floor=xp.concatenate([p.floor for p in parts]),
        m=int(offsets[-1]),
        key=None if any(p.key is None for p in parts) else xp.concatenate([p.key for p in parts]),
    )


def bin_table(
    xp: Any, gaps: Any, max_scale: float, rows_per_block: int | None = None
) -> BinnedGaps:
    """Bin an (m × n) table of gaps (each row's minimum 0), in row groups of bounded memory."""
    m, n = gaps.shape
    block = rows_per_block or max(1, BLOCK_ELEMS // max(1, n))
    parts = []
    for start, stop in row_groups(m, float(xp.max(gaps)) if gaps.size else 0.0, max_scale):
        binner = GapBinner(xp, stop - start, float(xp.max(gaps[start:stop])), max_scale)
        for r0 in range(start, stop, block):
            binner.add(gaps[r0 : min(r0 + block, stop)], r0 - start)
        parts.append(binner.result())
    return concatenate(parts, xp)


def row_groups(m: int, max_gap: float, max_scale: float) -> list[tuple[int, int]]:
    """Row ranges whose dense accumulators stay under ``ACCUMULATOR_ELEMS`` floats."""
    floor = floor_for(max_scale)
    bins = max(1, _bin_of(max(max_gap, floor)) - _bin_of(floor) + 2)
    step = max(1, ACCUMULATOR_ELEMS // (ACC_WIDTH * bins))
    return [(r, min(r + step, m)) for r in range(0, m, step)]


#: Entries with s · a_b above this are left out of S̃(s): together they weigh at most
#: n e^{−64} ≈ 1.6e-28 n, counted in the certificate; inside it s · r_b ≤ s · a_b/64 ≤ 1.
CUTOFF = 64.0


def laplace_sums(binned: BinnedGaps, scales: Any, xp: Any = np) -> tuple[Any, Any]:
    """S̃(s) and its certified bound E(s) for every scale and row: two (k, m) arrays.

    S̃(s) = Σ_b e^{−s c_b} Σ_{p≤P} (−s r_b)^p M_{p,b}/p! over the bins with s · a_b ≤ ``CUTOFF``
    (floor entries: r = c = 0, so n_b). The bound adds, per kept bin,
    n_b e^{−s a_b} (s r_b)^{P+1}/(P+1)! ≤ n_b e^{−s c_b} · e · (s r_b)^{P+1}/(P+1)! (s r_b ≤ 1 there),
    n e^{−CUTOFF} for the bins left out and n_floor · s · floor for the floor bin.

    Bins are visited in increasing a, so each scale touches only the prefix it needs: small
    bandwidths (large s) cost a few bins per row, the widest all of them. Under NumPy with numba
    the same sums are one compiled loop over each row's entries per scale
    (:func:`.binning_kernel.laplace_sums`; ``WORKBENCH_NO_NUMBA=1`` keeps this code).
    """
    if xp is np and binning_kernel.available():
        return _compiled_sums(binned, scales)
    order = xp.argsort(binned.lower)
    lower = binned.lower[order]
    centre = lower + binned.half[order]
    half = binned.half[order]
    rows = binned.rows[order]
    count = binned.count[order]
    moments = binned.moments[:, order] * xp.asarray(_INV_FACTORIALS[1:])[:, None]
    n_total = backend_sum(xp, binned.count)
    floor_count = binned.count[binned.starts] * (binned.half[binned.starts] == 0)
    host_scales = np.asarray(scales, dtype=np.float64).ravel()
    ends = backend_searchsorted(xp, lower, CUTOFF / host_scales)
    total = xp.empty((len(host_scales), binned.m))
    error = xp.empty((len(host_scales), binned.m))
    for j, (s, end) in enumerate(zip(host_scales, ends, strict=True)):
        x = half[:end] * -s
        poly = moments[ORDER - 1, :end] * x
        for p in range(ORDER - 2, -1, -1):  # Horner: Σ_{p≥1} x^p M_p / p!, then + n_b
            poly += moments[p, :end]
            poly *= x
        poly += count[:end]
        decay = xp.exp(centre[:end] * -s)
        poly *= decay
        total[j] = xp.bincount(rows[:end], weights=poly, minlength=binned.m)
        x *= x  # (s r)^2
        x7 = x * x
        x7 *= x  # (s r)^6
        x7 *= half[:end] * s
        x7 *= decay
        x7 *= count[:end]
        error[j] = xp.bincount(rows[:end], weights=x7, minlength=binned.m) * (math.e * _REMAINDER)
        error[j] += floor_count * (s * binned.floor) + n_total * math.exp(-CUTOFF)
    return total, error


def _compiled_sums(binned: BinnedGaps, scales: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`laplace_sums` through the compiled kernel: the same terms, entries in row order."""
    host_scales = np.asarray(scales, dtype=np.float64).ravel()
    moments = binned.moments * _INV_FACTORIALS[1:, None]
    total, error = binning_kernel.laplace_sums(
        binned.lower, binned.half, binned.count, moments, binned.starts, host_scales, CUTOFF
    )
    floor_count = binned.count[binned.starts] * (binned.half[binned.starts] == 0)
    n_total = backend_sum(np, binned.count)
    error *= math.e * _REMAINDER
    error += floor_count * (host_scales[:, None] * binned.floor) + n_total * math.exp(-CUTOFF)
    return total, error


def backend_sum(xp: Any, values: Any) -> float:
    """A host float of the sum of a device or host array."""
    return float(xp.sum(values))


def backend_searchsorted(xp: Any, sorted_values: Any, targets: np.ndarray) -> list[int]:
    """Host ints: for each target, the number of sorted values ≤ target."""
    found = xp.searchsorted(sorted_values, xp.asarray(targets), side="right")
    return [int(v) for v in np.asarray(found.get() if hasattr(found, "get") else found)]


def log_error_bound(total: Any, error: Any, xp: Any = np) -> Any:
    """−log(1 − E/S̃): the certified bound on |log S̃ − log S| (inf where E ≥ S̃/2)."""
    ratio = error / total
    return xp.where(ratio < 0.5, -xp.log1p(-xp.minimum(ratio, 0.5)), xp.inf)


def entry_weights(binned: BinnedGaps, scale: float, xp: Any = np) -> Any:
    """Each bin's share Σ_{i∈b} e^{−s t_i} (Taylor, as in :func:`laplace_sums`), in row order;
    bins past the cutoff weigh 0."""
    x = binned.half * -float(scale)
    moments = binned.moments * xp.asarray(_INV_FACTORIALS[1:])[:, None]
    poly = moments[ORDER - 1] * x
    for p in range(ORDER - 2, -1, -1):
        poly += moments[p]
        poly *= x
    poly += binned.count
    poly *= xp.exp((binned.lower + binned.half) * -float(scale))
    return xp.where(binned.lower * float(scale) <= CUTOFF, poly, 0.0)


def row_matrix(binned: BinnedGaps, values: Any, xp: Any = np) -> Any:
    """Per-entry values laid out as an (m, longest row) matrix, zero-padded, rows in order."""
    position = xp.arange(binned.entries) - binned.starts[binned.rows]
    width = int(xp.max(position)) + 1 if binned.entries else 1
    out = xp.zeros((binned.m, width), dtype=values.dtype)
    out[binned.rows, position] = values
    return out
