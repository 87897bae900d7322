"""Streamed distance tables (issue 12 §1, §5): the bins of every query row built in one pass over
the data, with no m × n array; re-based bins, the kept nearest points, the 90 %-weight count and
the memory bound, each against the stored table's exact path."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from workbench import backend
from workbench.labs.kde import estimator, laplace, stream, tables
from workbench.labs.kde.study import KDEStudy, clear_caches
from workbench.labs.kde.tables import DistanceTable

#: The lab's whole bandwidth range (the Study's hard bounds), far below h_KL included.
LAB_BANDWIDTHS = np.geomspace(1e-3, 100.0, 25)


def gaussian(m: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, d)), rng.standard_normal((n, d))


def exact(query: np.ndarray, data: np.ndarray, h: np.ndarray) -> dict[str, np.ndarray]:
    """The stored, sorted table's exact path: one exponential per (point, row, bandwidth)."""
    return DistanceTable(query, data, store=True).summaries(h, method="exact")


def test_streamed_table_matches_the_exact_path_counts_included():
    query, data = gaussian(30, 6000, 8, seed=1)
    table = DistanceTable(query, data, store=False)
    assert not table.stored and table.delta is None  # no m × n array kept
    fast, slow = table.summaries(LAB_BANDWIDTHS), exact(query, data, LAB_BANDWIDTHS)
    assert np.abs(fast["log_density"] - slow["log_density"]).max() <= laplace.TOLERANCE
    np.testing.assert_allclose(
        fast["participation_ratio"], slow["participation_ratio"], rtol=3 * laplace.TOLERANCE
    )
    np.testing.assert_array_equal(fast["n_points_90"], slow["n_points_90"])
    assert table._inside  # some crossing bins held several points: resolved from their points
    # a single bandwidth afterwards (a slider move) reuses the bins and the fetched points
    one = table.summaries([0.77])
    ref = exact(query, data, np.array([0.77]))
    assert np.abs(one["log_density"] - ref["log_density"]).max() <= laplace.TOLERANCE
    np.testing.assert_array_equal(one["n_points_90"], ref["n_points_90"])


def test_blocks_do_not_change_the_answer(monkeypatch):
    """Chunked == unchunked: the moments add across data blocks (one block of all points vs
    blocks of 777), to 1e-12 in log ρ̂ and Y₂, counts identical."""
    query, data = gaussian(24, 9000, 6, seed=2)
    h = np.geomspace(0.05, 5, 17)
    monkeypatch.setattr(stream, "BLOCK_POINTS", 2**20)
    whole = DistanceTable(query, data, store=False).summaries(h)
    monkeypatch.setattr(stream, "BLOCK_POINTS", 777)
    chunked = DistanceTable(query, data, store=False).summaries(h)
    np.testing.assert_allclose(chunked["log_density"], whole["log_density"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        chunked["participation_ratio"], whole["participation_ratio"], rtol=1e-12
    )
    np.testing.assert_array_equal(chunked["n_points_90"], whole["n_points_90"])


def test_rebased_bins_with_a_coarse_pilot(monkeypatch):
    """A pilot of 8 points puts U_j far above the row minimum: many points are kept exactly and
    every bin moves by δ_j = U_j − dmin_j; the sums still agree with the exact path."""
    monkeypatch.setattr(stream, "PILOT_POINTS", 8)
    query, data = gaussian(12, 4000, 5, seed=3)
    table = DistanceTable(query, data, store=False)
    bins = table._stream
    shift = bins.base - bins.dmin
    assert shift.min() > 0.1  # the pilot's minimum is far from the true one
    kept = int((table._bins.key == -1).sum())
    assert kept > 10 * len(query)  # the points closer than the pilot's nearest are exact
    fast, slow = table.summaries(LAB_BANDWIDTHS), exact(query, data, LAB_BANDWIDTHS)
    assert np.abs(fast["log_density"] - slow["log_density"]).max() <= laplace.TOLERANCE
    np.testing.assert_array_equal(fast["n_points_90"], slow["n_points_90"])
    np.testing.assert_array_equal(table.dmin, slow_dmin(query, data))


def slow_dmin(query: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Row minima of the same augmented-GEMM distances (bit-for-bit what the pass computes)."""
    sq = np.einsum("ij,ij->i", data, data)
    qa = np.concatenate([query, np.einsum("ij,ij->i", query, query)[:, None]], axis=1)
    qa = np.concatenate([qa, np.ones((len(query), 1))], axis=1)
    ya = np.concatenate([-2.0 * data, np.ones((len(data), 1)), sq[:, None]], axis=1)
    return np.maximum(qa @ ya.T, 0.0).min(axis=1)


def test_too_many_kept_points_take_the_two_pass_form(monkeypatch):
    """Past NEAR_LIMIT kept points the pass restarts with exact minima and the floor bin
    (ties included: data with repeated points)."""
    monkeypatch.setattr(stream, "NEAR_LIMIT", 0)
    query, data = gaussian(10, 3000, 4, seed=4)
    data = np.concatenate([data, data[:500]])  # 500 exact duplicates
    table = DistanceTable(query, data, store=False)
    assert bool((table._bins.floor > 0).all())  # the floor-bin form
    np.testing.assert_array_equal(table.dmin, table._stream.base)
    fast, slow = table.summaries(LAB_BANDWIDTHS), exact(query, data, LAB_BANDWIDTHS)
    assert np.abs(fast["log_density"] - slow["log_density"]).max() <= laplace.TOLERANCE
    np.testing.assert_array_equal(fast["n_points_90"], slow["n_points_90"])


def test_interpolated_count_stays_within_its_bound(monkeypatch):
    """With the crossing bins over SELECT_LIMIT points the count inside a bin is interpolated;
    it is off by at most K (e^{s w} − 1) + 1 points (K points in the bin, w its width)."""
    monkeypatch.setattr(stream, "SELECT_LIMIT", 0)
    query, data = gaussian(20, 8000, 10, seed=5)
    h = np.geomspace(0.2, 4, 12)
    table = DistanceTable(query, data, store=False)
    fast, slow = table.summaries(h), exact(query, data, h)
    assert not table._inside  # nothing fetched: every count came from the bins
    binned = table.binned()
    for j, scale in enumerate(estimator.scales_of(h)):
        c = tables._crossing(binned, float(scale), np)
        width = 2 * binned.half[c["entry"]]
        bound = c["in_bin"] * np.expm1(scale * width) + 1
        assert np.all(np.abs(fast["n_points_90"][j] - slow["n_points_90"][j]) <= bound)
    assert (fast["n_points_90"] == slow["n_points_90"]).mean() > 0.3  # often exact anyway


def test_exact_method_on_a_streamed_table():
    """The exact path stays one keyword away on a streamed table too (the streaming
    estimator over the data: no table needed)."""
    query, data = gaussian(16, 3000, 6, seed=6)
    h = np.geomspace(0.1, 3, 9)
    streamed = DistanceTable(query, data, store=False).summaries(h, method="exact")
    slow = exact(query, data, h)
    np.testing.assert_allclose(streamed["log_density"], slow["log_density"], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(streamed["n_points_90"], slow["n_points_90"])
    with pytest.raises(ValueError, match="method must be"):
        DistanceTable(query, data, store=False).summaries(h, method="fast")


def test_streamed_table_never_allocates_the_m_by_n_table(monkeypatch):
    """m = 64 rows over n = 300,000 points: the full table would be 154 MB. Building the
    streamed table and a 24-bandwidth grid below h = 0.5 (crossing bins resolved by the second
    pass) stays under the
    stated bound: the pilot block, the workers' distance blocks, one row group's accumulator,
    the kept crossing-bin points (SELECT_LIMIT, here 2^18) and 8 MB of small arrays."""
    monkeypatch.setattr(stream, "SELECT_LIMIT", 2**18)
    monkeypatch.setattr(tables, "SECOND_PASS_DISTANCES", 2**25)
    query, data = gaussian(64, 300_000, 6, seed=7)
    h = np.geomspace(0.02, 0.5, 24)
    m = len(query)
    tracemalloc.start()
    try:
        table = DistanceTable(query, data, store=False)
        table.summaries(h)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    bins = table._stream.binner(np).bins
    bound = (
        8 * min(m, stream.PILOT_ROWS) * stream.PILOT_POINTS  # pilot block
        + 8 * m * stream.BLOCK_POINTS * 2  # the distance block and its row temporaries
        + 8 * laplace.ACC_WIDTH * m * bins  # the accumulator
        + 3 * 8 * stream.SELECT_LIMIT  # second pass: row, bin, gap of each kept point
        + 8 * len(data) * 2  # |y|² and the augmented data block
        + 8 * 2**20
    )
    assert table._inside  # the second pass ran
    assert peak < bound, (peak, bound)
    assert peak < 8 * m * len(data) / 3  # far below the full table


def test_study_kl_curve_streamed_matches_the_exact_path(monkeypatch):
    """The Study's KL/d curve over its own grid, with its query table streamed (forced here at
    n = 22,026): within the certificate of the exact path, counts equal."""
    monkeypatch.setattr(tables, "STORE_BYTES", 0)
    clear_caches()
    try:
        study = KDEStudy(dim=10, alpha=1.0, n_queries=64, seed=8)
        grid = study.bandwidth_grid()
        ds = study.evaluate(bandwidth=grid)
        table = study._table()
        assert not table.stored
        sample = study.sample()
        slow = table.summaries(grid, method="exact")
        gap = sample.log_density_exact[None, :] - slow["log_density"]
        kl_exact = gap.mean(axis=1) / study.dim
        assert np.abs(ds["kl_per_dim"].values - kl_exact).max() <= laplace.TOLERANCE / study.dim
        np.testing.assert_array_equal(
            ds["n_points_90"].values, np.median(slow["n_points_90"], axis=1)
        )
    finally:
        clear_caches()


def test_small_tables_are_stored_large_ones_streamed():
    query, data = gaussian(4, 100, 3)
    assert DistanceTable(query, data).stored
    assert not DistanceTable(query, data, store=False).stored
    big = math.ceil(tables.STORE_BYTES / (8 * 4)) + 1
    assert 8 * 4 * big > tables.STORE_BYTES  # the rule: 8 · m · n over STORE_BYTES streams


@pytest.mark.gpu
def test_streamed_table_on_the_device_matches_numpy(cupy_backend):
    xp = cupy_backend
    query, data = gaussian(32, 20000, 12, seed=9)
    h = np.geomspace(0.2, 4, 12)
    on_gpu = DistanceTable(xp.asarray(query), xp.asarray(data), store=False).summaries(h)
    on_cpu = DistanceTable(query, data, store=False).summaries(h)
    assert backend.get_namespace(xp.zeros(1)) is xp
    for name in ("log_density", "participation_ratio"):
        np.testing.assert_allclose(on_gpu[name], on_cpu[name], rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(on_gpu["n_points_90"], on_cpu["n_points_90"])
