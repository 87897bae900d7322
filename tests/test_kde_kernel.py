"""The compiled binning kernel (issue 12 §1): the same bins and moments as the ``bincount`` path
on awkward gaps (bin edges, zeros, −0.0, gaps under the floor and over ``max_gap``, negative
shifted gaps), the same kept points, certified log ρ̂ with it on and off, the fallback switches,
and the two-thread streamed pass (errors and cancellation cross the threads)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from workbench.labs.kde import binning_kernel, laplace, stream, tables
from workbench.labs.kde.tables import DistanceTable
from workbench.study import Cancelled, cancellable

pytestmark = pytest.mark.skipif(not binning_kernel.available(), reason="needs numba")

#: The lab's whole bandwidth range (the Study's hard bounds), far below h_KL included.
LAB_BANDWIDTHS = np.geomspace(1e-3, 100.0, 25)
MAX_GAP, MAX_SCALE = 300.0, 1e6


def binner(compiled: bool, rows: int) -> laplace.GapBinner:
    b = laplace.GapBinner(np, rows, MAX_GAP, MAX_SCALE)
    b.compiled = compiled
    return b


def awkward_gaps(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Gaussian-like gaps plus exact bin edges (a · (1 + k/32) for powers of two a, so the low
    mantissa bits are 0: v = −1), zeros, −0.0, gaps below the floor and above ``MAX_GAP``."""
    rng = np.random.default_rng(seed)
    gaps = rng.chisquare(20, (rows, cols)) * rng.uniform(0.1, 3, (rows, 1))
    edges = np.ldexp(1.0 + np.arange(32) / 32, np.arange(-12, 20)[:, None]).ravel()
    special = np.concatenate(
        [
            edges,
            [0.0, -0.0, 1e-300, 2.0**-70, 5e-15, MAX_GAP, 2 * MAX_GAP, 1e30, np.nextafter(1, 0)],
        ]
    )
    for i in range(rows):
        spots = rng.choice(cols, size=min(cols, special.size), replace=False)
        gaps[i, spots] = rng.permutation(special)[: spots.size]
    return gaps


def test_one_block_gives_bit_identical_bins():
    """One block of < ROW_RUN columns into a fresh accumulator: both paths add the same addends
    (same bin, same v, same left-to-right powers) in the same order, so every count and moment
    is identical, clipped and floor bins included."""
    gaps = awkward_gaps(6, 5000)
    fast, slow = binner(True, 6), binner(False, 6)
    fast.add(gaps, 0)
    slow.add(gaps, 0)
    np.testing.assert_array_equal(
        fast.acc[:, : laplace.ORDER + 1], slow.acc[:, : laplace.ORDER + 1]
    )
    assert np.all(fast.acc[:, laplace.ORDER + 1 :] == 0)  # the pad column stays 0
    first, last = fast.acc[:: fast.bins, 0], fast.acc[fast.bins - 1 :: fast.bins, 0]
    assert np.all(first >= 3) and np.all(last >= 2)  # floor bin and clipped gaps were hit


def test_many_blocks_agree_to_rounding():
    """Blocks of rows and columns in any order: counts identical, moments equal to 1e-12 of the
    bin's count (the sums differ only in the order of their additions)."""
    gaps = awkward_gaps(10, 3 * laplace.ROW_RUN + 123, seed=1)
    fast, slow = binner(True, 10), binner(False, 10)
    for b in (fast, slow):
        for r0, c0, c1 in [(0, 0, 40_000), (5, 0, 70_000), (0, 40_000, None), (5, 70_000, None)]:
            b.add(gaps[r0 : r0 + 5, c0:c1], r0)
    np.testing.assert_array_equal(fast.acc[:, 0], slow.acc[:, 0])
    gap = np.abs(fast.acc[:, 1:7] - slow.acc[:, 1:7])
    assert np.all(gap <= 1e-12 * fast.acc[:, :1]), gap.max()
    rf, rs = fast.result(), slow.result()
    np.testing.assert_array_equal(rf.count, rs.count)
    np.testing.assert_array_equal(rf.lower, rs.lower)


@pytest.mark.parametrize("buffer", [binning_kernel.KEPT_BUFFER, 7])
def test_shifted_blocks_keep_the_same_points(monkeypatch, buffer):
    """add_shifted: the comparison (value < limit), the shift (value − base, negative gaps to
    the floor bin) and the bins as the NumPy path, also when the kept points overflow the
    kernel's buffer and are collected again."""
    monkeypatch.setattr(binning_kernel, "KEPT_BUFFER", buffer)
    rng = np.random.default_rng(2)
    dist = rng.chisquare(12, (9, 4000))
    base = np.quantile(dist, 0.01, axis=1)
    limit = base + 2.0**-3
    fast, slow = binner(True, 12), binner(False, 12)
    kept_fast = fast.add_shifted(dist, 3, base, limit)
    kept_slow = slow.add_shifted(dist, 3, base, limit)
    assert kept_fast[0].size > 7  # enough kept points to overflow the small buffer
    for a, b in zip(kept_fast, kept_slow, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fast.acc[:, :7], slow.acc[:, :7])
    assert fast.add_shifted(dist, 3, base) is None  # no limit: nothing kept


def test_certified_log_density_with_the_kernel_on_and_off(monkeypatch):
    """The streamed table (kernel on: two threads) within TOLERANCE of the exact path over the
    lab's bandwidth range, and within 1e-12 of the NumPy bins (kernel off: one thread)."""
    rng = np.random.default_rng(3)
    query, data = rng.standard_normal((40, 8)), rng.standard_normal((7000, 8))
    exact = DistanceTable(query, data, store=True).summaries(LAB_BANDWIDTHS, method="exact")
    on = DistanceTable(query, data, store=False).summaries(LAB_BANDWIDTHS)
    monkeypatch.setenv(binning_kernel.DISABLE_ENV, "1")
    off_table = DistanceTable(query, data, store=False)
    assert not off_table._stream.binner(np).compiled
    off = off_table.summaries(LAB_BANDWIDTHS)
    assert np.abs(on["log_density"] - exact["log_density"]).max() <= laplace.TOLERANCE
    np.testing.assert_allclose(on["log_density"], off["log_density"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(on["n_points_90"], off["n_points_90"])


def test_the_fallback_switches(monkeypatch):
    """WORKBENCH_NO_NUMBA=1 and a missing numba both select the bincount path."""
    assert laplace.GapBinner(np, 2, 10.0, 1.0).compiled
    assert stream.pass_threads(np) == 2
    monkeypatch.setenv(binning_kernel.DISABLE_ENV, "1")
    assert not binning_kernel.available() and binning_kernel.warm() == 0.0
    assert not laplace.GapBinner(np, 2, 10.0, 1.0).compiled
    assert stream.pass_threads(np) == 1
    monkeypatch.delenv(binning_kernel.DISABLE_ENV)

    def missing():
        raise ImportError("No module named 'numba'")

    monkeypatch.setattr(binning_kernel, "_kernel", None)
    monkeypatch.setattr(binning_kernel, "_build", missing)
    assert not binning_kernel.available()
    assert not laplace.GapBinner(np, 2, 10.0, 1.0).compiled


def test_warm_loads_the_kernel():
    assert binning_kernel.warm() >= 0.0
    assert binning_kernel._kernel not in (None, False)


def sweep_inputs(m: int = 40, n: int = 3 * 2**10):
    rng = np.random.default_rng(4)
    query, data = rng.standard_normal((m, 5)), rng.standard_normal((n, 5))
    return query, data, np.einsum("ij,ij->i", query, query), np.einsum("ij,ij->i", data, data)


def test_two_thread_sweep_visits_every_row_and_point_once(monkeypatch):
    """Two threads, one half of the rows each: every (row, point) distance visited once, in
    block order, equal to the direct |x − y|²."""
    monkeypatch.setattr(stream, "BLOCK_POINTS", 2**10)
    query, data, q_sq, d_sq = sweep_inputs()
    truth = ((query[:, None, :] - data[None, :, :]) ** 2).sum(axis=2)
    done = np.zeros(len(query), dtype=int)  # points visited so far, per row
    owner = {}

    def visit(dist, rows):
        c0 = done[rows.start]
        np.testing.assert_allclose(dist, truth[rows, c0 : c0 + dist.shape[1]], atol=1e-12)
        done[rows] += dist.shape[1]
        owner.setdefault(threading.get_ident(), set()).update(range(rows.start, rows.stop))

    stream._sweep(np, query, data, q_sq, d_sq, visit, 0, threads=2)
    assert np.all(done == len(data))
    halves = sorted(owner.values(), key=min)
    assert len(halves) == 2 and halves[0] == set(range(20)) and halves[1] == set(range(20, 40))


def test_errors_and_cancellation_cross_the_threads(monkeypatch):
    """A failure in the worker's half is raised in the caller; a cancelled computation stops in
    both halves (the worker runs in the caller's context)."""
    monkeypatch.setattr(stream, "BLOCK_POINTS", 2**10)
    query, data, q_sq, d_sq = sweep_inputs()

    def fail_in_second_half(dist, rows):
        if rows.start > 0:
            raise RuntimeError("worker failed")

    with pytest.raises(RuntimeError, match="worker failed"):
        stream._sweep(np, query, data, q_sq, d_sq, fail_in_second_half, 0, threads=2)
    event = threading.Event()
    calls = []

    def cancel_after_first(dist, rows):
        calls.append(rows.start)
        event.set()

    with pytest.raises(Cancelled), cancellable(event):
        stream._sweep(np, query, data, q_sq, d_sq, cancel_after_first, 0, threads=2)
    assert len(calls) <= 2  # each half stopped at its next block


def test_compiled_laplace_sums_match_the_numpy_form(monkeypatch):
    """The compiled per-scale loop against the NumPy form (sorted prefixes and bincounts) on
    a table with a floor bin and gaps over 20 decades, at scales from 5e-5 to 5e5: the same
    terms summed in another order, so equal to 1e-13 relative (S̃ and E)."""
    rng = np.random.default_rng(5)
    gaps = np.concatenate(
        [np.zeros((4, 1)), 10.0 ** rng.uniform(-12, 8, (4, 3000)), rng.exponential(1, (4, 500))],
        axis=1,
    )
    scales = np.geomspace(5e-5, 5e5, 40)
    binned = laplace.bin_table(np, gaps, scales.max())
    fast = laplace.laplace_sums(binned, scales)
    monkeypatch.setenv(binning_kernel.DISABLE_ENV, "1")
    slow = laplace.laplace_sums(binned, scales)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0)
    assert np.all(fast[1] > 0) and np.all(fast[0] >= 1)  # the nearest point always counts


def test_compiled_crossing_matches_the_numpy_form(monkeypatch):
    """The 90 %-weight crossing per row (entry, target, weights and points before it) from the
    compiled loop and from the padded NumPy matrices agree: entries and counts identical."""
    rng = np.random.default_rng(6)
    query, data = rng.standard_normal((30, 6)), rng.standard_normal((5000, 6))
    binned = DistanceTable(query, data, store=False).binned()
    for scale in np.geomspace(0.05, 5e3, 9):
        fast = tables._crossing(binned, float(scale), np)
        monkeypatch.setenv(binning_kernel.DISABLE_ENV, "1")
        slow = tables._crossing(binned, float(scale), np)
        monkeypatch.delenv(binning_kernel.DISABLE_ENV)
        for key in ("entry", "before_count", "in_bin"):
            np.testing.assert_array_equal(fast[key], slow[key])
        for key in ("target", "before_weight", "weight"):
            np.testing.assert_allclose(fast[key], slow[key], rtol=1e-13, atol=0)
        assert np.all(fast["in_bin"] >= 1)  # the crossing entry holds points


def test_laplace_sums_on_two_threads_equal_one(monkeypatch):
    """Splitting the scales over two threads changes nothing (each (scale, row) is one loop)."""
    rng = np.random.default_rng(7)
    gaps = rng.chisquare(8, (12, 2000))
    binned = laplace.bin_table(np, gaps - gaps.min(axis=1)[:, None], 1e4)
    scales = np.geomspace(1e-3, 1e4, 33)
    monkeypatch.setattr(binning_kernel, "SUMS_THREAD_WORK", 1)
    split = laplace.laplace_sums(binned, scales)
    monkeypatch.setattr(binning_kernel, "SUMS_THREAD_WORK", 2**62)
    single = laplace.laplace_sums(binned, scales)
    for a, b in zip(split, single, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(split[0])) and np.all(split[0] >= 1)
