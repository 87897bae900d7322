"""Compiled kernels of the binned KDE path (numba): the fused binning pass and the Laplace sums.

:class:`~workbench.labs.kde.laplace.GapBinner` needs, per gap t ≥ 0 of a row, its bin (the
exponent and top ``SUB_BITS`` mantissa bits of t, ``bits(t) >> (52 − q)``, minus the floor bin's
index, clipped to 0 .. bins − 1) and the position v = 2 (t − a)/w − 1 = low_bits(t) · 2^{1−(52−q)} − 1
inside it, then adds (1, v, v², …, v⁶) to that bin's row of the accumulator. The NumPy path
(``np.bincount`` per moment) makes seven passes and six temporaries per run of gaps and holds the
GIL (~22 ns a gap on this machine); this kernel does the same arithmetic per gap in one pass and
releases the GIL, so the streamed distance pass (:mod:`.stream`) can run its GEMM and binning on
two threads.

**Same numbers as the NumPy path.** The bin index, the clip and v use the same integer and float
operations; the powers are the same left-to-right products (v·v, (v·v)·v, …: the vector form
below multiplies by 1.0 in the lanes it does not need, which is exact), so every (bin, moment)
receives the same addends. Only the order of the additions differs (one running sum per bin here,
per-run partial sums there): counts are identical, moments agree to rounding
(tests/test_kde_kernel.py).

**One vector add per gap.** The accumulator is (rows · bins, 8) float64, a bin's count and six
moments in one 64-byte row (the 8th column is padding), so a gap's update is two 4-wide loads,
adds and stores; (1, v, v², v³) and (v⁴, v⁵, v⁶, 0) are built in registers from blends of v and
1.0 (:func:`_add_powers`). numba's SLP vectorizer is off by default, so this is an LLVM
intrinsic; seven scalar read-modify-writes measured ~1.4× slower.

**Kept points.** With a ``limit`` per row (the stream's points closer than its pilot minimum),
the kernel also records the gaps' source values under the limit (same comparison as
``row < limit``), up to the buffer's size, and returns how many there were; the caller redoes the
collection in NumPy when the buffer was too small (binning is not repeated).

**Laplace sums.** :func:`laplace_sums` is the per-bandwidth evaluation of
:func:`.laplace.laplace_sums` (Horner in (−s r), e^{−s c}, the per-row sum and the certificate's
remainder term) as one loop over each row's entries per scale; the NumPy form makes ~20 array
passes and a ``bincount`` per scale over a globally sorted copy of the entries.

Compiled on first use with ``cache=True`` (a few seconds once, then loaded from numba's cache in
well under a second; :func:`warm` does it ahead of time). ``WORKBENCH_NO_NUMBA=1`` or a missing
numba selects the NumPy path (:func:`available`).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

#: Accumulator columns: count, Σ v^p for p = 1..6, one pad (a 64-byte row per bin).
WIDTH = 8
#: Environment switch that forces the NumPy (bincount) path.
DISABLE_ENV = "WORKBENCH_NO_NUMBA"
#: Kept-point buffer of one :func:`fold` call (values and rows), grown when a block needs more.
KEPT_BUFFER = 4096

#: Entry-scale pairs above which :func:`laplace_sums` splits its scales over two threads.
SUMS_THREAD_WORK = 2**20

_lock = threading.Lock()
_kernel: Any = None  # the compiled dispatcher, None before the first use, False when unavailable


def available() -> bool:
    """True when the compiled kernel can be used (numba imports, not disabled by the env)."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return False
    return _load() is not False


def _load() -> Any:
    global _kernel
    with _lock:
        if _kernel is None:
            try:
                _kernel = _build()
            except ImportError:
                _kernel = False
        return _kernel


def warm() -> float:
    """Compile (or load from cache) the kernel now; returns the seconds it took (0 when the
    kernel is unavailable). The server calls it at start so no visitor waits for it."""
    start = time.perf_counter()
    if not available():
        return 0.0
    acc = np.zeros((4, WIDTH))
    fold(acc, np.array([[0.0, 1.0, 2.0]]), 0, first=0, bins=4, shift=np.zeros(1))
    one = np.ones(1)
    laplace_sums(one, one, one, np.ones((6, 1)), np.zeros(1, dtype=np.int64), one, 64.0)
    crossing(one, one, one, np.ones((6, 1)), np.zeros(1, dtype=np.int64), 1.0, 64.0, 0.9)
    return time.perf_counter() - start


def fold(
    acc: np.ndarray,
    block: np.ndarray,
    row0: int,
    first: int,
    bins: int,
    shift: np.ndarray,
    limit: np.ndarray | None = None,
    clip: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Add the gaps t = x − shift[i], x = block[i, j], of rows row0 + i into ``acc`` (one pass).

    ``acc``: (rows · bins, ``WIDTH``) C-contiguous float64; ``first``: the bin index (bits >> 47)
    of the floor edge; ``bins``: bins per row. ``clip``: x = max(block[i, j], 0) (a GEMM's
    squared distances, without a pass of ``np.maximum``). With ``limit`` ((r,) floats), also
    returns the kept points x < limit[i] as (local row i, value) in row then column order.
    """
    block = np.ascontiguousarray(block, dtype=np.float64)
    shift = np.ascontiguousarray(shift, dtype=np.float64)
    if acc.shape[1] != WIDTH or not acc.flags.c_contiguous or acc.dtype != np.float64:
        raise ValueError("the accumulator must be a C-contiguous (rows * bins, 8) float64 array")
    if (row0 + block.shape[0]) * bins > acc.shape[0] or shift.shape[0] != block.shape[0]:
        raise ValueError("block rows outside the accumulator")
    keep = limit is not None
    limits = np.ascontiguousarray(limit, dtype=np.float64) if keep else np.zeros(0)
    values = np.empty(KEPT_BUFFER if keep else 0)
    rows = np.empty(KEPT_BUFFER if keep else 0, dtype=np.int64)
    kernel = _load()
    hits = kernel(block, clip, shift, limits, acc, int(row0), int(first), int(bins), values, rows)
    if not keep:
        return None
    if hits > KEPT_BUFFER:  # rare: collect again in NumPy (the bins are already done)
        if clip:
            block = np.maximum(block, 0.0)
        found = [np.nonzero(block[i] < limits[i])[0] for i in range(block.shape[0])]
        rows = np.concatenate([np.full(f.shape[0], i, dtype=np.int64) for i, f in enumerate(found)])
        values = np.concatenate([block[i, f] for i, f in enumerate(found)])
        return rows, values
    return rows[:hits], values[:hits]


def laplace_sums(
    lower: np.ndarray,
    half: np.ndarray,
    count: np.ndarray,
    moments: np.ndarray,
    starts: np.ndarray,
    scales: np.ndarray,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The compiled loop of :func:`.laplace.laplace_sums`: per (scale, row), the Taylor sum
    S̃(s) and the unscaled remainder Σ n_b e^{−s c_b} (s r_b)^{P+1} over the row's entries with
    s · a_b ≤ ``cutoff``, in one pass over the entries per scale (no temporaries, no sort).

    Entries in row order (``starts``: each row's first entry); ``moments``: (P, e) divided by p!.
    """
    m, e = starts.shape[0], lower.shape[0]
    ends = np.append(starts[1:], e).astype(np.int64)
    scales = np.ascontiguousarray(scales, dtype=np.float64)
    k = scales.shape[0]
    total, error = np.empty((k, m)), np.empty((k, m))
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (lower, half, count, moments)]
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    kernel = _load_sums()

    def run(part: slice) -> None:
        kernel(*arrays, starts, ends, scales[part], float(cutoff), total[part], error[part])

    if k < 2 or k * e < SUMS_THREAD_WORK:
        run(slice(0, k))
        return total, error
    # two threads, half of the scales each (the kernel releases the GIL): 1024 rows x 150
    # entries x 128 scales measured 0.58 s on one thread
    failure: list[BaseException] = []

    def second_half() -> None:
        try:
            run(slice(k // 2, k))
        except BaseException as error:  # noqa: BLE001 - re-raised below, in the caller
            failure.append(error)

    other = threading.Thread(target=second_half, name="workbench-kde-sums")
    other.start()
    try:
        run(slice(0, k // 2))
    finally:
        other.join()
    if failure:
        raise failure[0]
    return total, error


def crossing(
    lower: np.ndarray,
    half: np.ndarray,
    count: np.ndarray,
    moments: np.ndarray,
    starts: np.ndarray,
    scale: float,
    cutoff: float,
    fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The compiled form of the 90 %-weight crossing (``tables._crossing``): per row, the
    entry where the cumulative weight first reaches ``fraction`` of the row's total. Returns
    (3, m) floats (target, weight before, the entry's weight) and (3, m) ints (position in the
    row, points before, the entry's points)."""
    m, e = starts.shape[0], lower.shape[0]
    ends = np.append(starts[1:], e).astype(np.int64)
    out_f, out_i = np.empty((3, m)), np.empty((3, m), dtype=np.int64)
    _numba_module().crossing_kernel(
        np.ascontiguousarray(lower, dtype=np.float64),
        np.ascontiguousarray(half, dtype=np.float64),
        np.ascontiguousarray(count, dtype=np.float64),
        np.ascontiguousarray(moments, dtype=np.float64),
        np.ascontiguousarray(starts, dtype=np.int64),
        ends,
        float(scale),
        float(cutoff),
        float(fraction),
        out_f,
        out_i,
    )
    return out_f, out_i


def _load_sums() -> Any:
    return _numba_module().sums_kernel


def _numba_module() -> Any:
    _load()
    from workbench.labs.kde import _binning_numba  # noqa: PLC0415 - loaded by _load already

    return _binning_numba


def _build() -> Any:
    """The compiled kernel (ImportError when numba is missing): numba is imported only here,
    so ``import workbench`` does not pay for it, and the kernel lives at module level in
    :mod:`._binning_numba` so numba's on-disk cache finds it again in a new process."""
    from workbench.labs.kde import _binning_numba  # noqa: PLC0415 - lazy: numba is heavy

    return _binning_numba.kernel
