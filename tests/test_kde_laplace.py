"""The binned Laplace transform (KDE fast path): agreement with the exact path, its certificate,
its fallback and the 90 %-weight counts, on Gaussian data and on adversarial gap distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.labs.kde import estimator, laplace
from workbench.labs.kde.study import KDEStudy
from workbench.study import StudyInputError

#: The issue's bound on the fast path: ≤ 1e-6 nats against the exact path, whatever h.
ISSUE_BOUND_NATS = 1e-6
#: The lab's whole bandwidth range (the Study's hard bounds), far below h_KL included.
LAB_BANDWIDTHS = np.geomspace(1e-3, 100.0, 41)


def gaussian(m: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, d)), rng.standard_normal((n, d))


def exact_log_sums(gaps: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """log Σ_i e^{−s t_i} per (scale, row) with math.fsum: an independent reference."""
    out = np.empty((len(scales), gaps.shape[0]))
    for k, s in enumerate(scales):
        for j, row in enumerate(gaps):
            out[k, j] = math.log(math.fsum(np.exp(-s * row)))
    return out


def test_binned_matches_exact_over_the_labs_bandwidth_range():
    query, data = gaussian(48, 3000, 16)
    exact = estimator.kde_summary(query, data, LAB_BANDWIDTHS, method="exact")
    fast = estimator.kde_summary(query, data, LAB_BANDWIDTHS, method="binned")
    gap = np.abs(fast["log_density"] - exact["log_density"])
    assert gap.max() <= ISSUE_BOUND_NATS
    assert gap.max() <= laplace.TOLERANCE + 1e-10  # the certificate's own level
    rel = np.abs(fast["participation_ratio"] / exact["participation_ratio"] - 1)
    assert rel.max() <= 3 * laplace.TOLERANCE + 1e-10  # Y₂ = S(2s)/S(s)²
    np.testing.assert_array_equal(fast["nearest_sq_distance"], exact["nearest_sq_distance"])


def test_auto_takes_the_binned_path_for_many_bandwidths(monkeypatch):
    query, data = gaussian(8, 500, 4)
    calls = []
    original = estimator._binned
    monkeypatch.setattr(estimator, "_binned", lambda *a: calls.append(1) or original(*a))
    estimator.log_density(query, data, [0.5])
    assert not calls  # one bandwidth: exact
    estimator.log_density(query, data, np.geomspace(0.2, 2, estimator.BINNED_MIN_BANDWIDTHS))
    assert calls == [1]
    with pytest.raises(StudyInputError, match="method must be one of"):
        estimator.log_density(query, data, [0.5, 1.0], method="fast")


def test_certificate_bounds_the_true_error_on_adversarial_gaps():
    """Gaps spread over 20 decades, ties, and dense clusters at one distance: the bound holds
    against an fsum reference for every (row, scale), and the estimate stays inside 1e-6."""
    rng = np.random.default_rng(1)
    rows = [
        np.concatenate([[0.0], 10.0 ** rng.uniform(-12, 8, 999)]),  # 20 decades
        np.concatenate([[0.0, 0.0, 0.0], np.full(500, 3.7), rng.exponential(1, 300)]),  # ties
        np.concatenate([[0.0], 5.0 + 1e-9 * rng.random(2000)]),  # a shell of equal distances
        np.concatenate([[0.0], np.linspace(0, 100, 1500)]),  # uniform gaps
    ]
    width = max(len(r) for r in rows)
    # pad rows with a far gap that carries no weight at any scale here (e^{−0.5 · 1e9})
    gaps = np.array([np.pad(r, (0, width - len(r)), constant_values=1e9) for r in rows])
    scales = np.geomspace(5e-5, 5e5, 60)
    binned = laplace.bin_table(np, gaps, scales.max())
    total, error = laplace.laplace_sums(binned, scales)
    bound = laplace.log_error_bound(total, error)
    truth = exact_log_sums(gaps, scales)
    actual = np.abs(np.log(total) - truth)
    assert np.all(actual <= bound + 1e-13)  # + rounding of the reference
    assert actual.max() <= ISSUE_BOUND_NATS


def test_rows_over_the_tolerance_fall_back_to_the_exact_path(monkeypatch):
    query, data = gaussian(16, 800, 6, seed=2)
    h = np.geomspace(0.05, 5, 12)
    monkeypatch.setattr(laplace, "TOLERANCE", -1.0)  # every certificate "fails"
    fallback = estimator.kde_summary(query, data, h, method="binned")
    exact = estimator.kde_summary(query, data, h, method="exact")
    np.testing.assert_array_equal(fallback["log_density"], exact["log_density"])


def test_two_pass_streaming_equals_one_block():
    """A chunk budget too small for one (group × n) block takes the two-pass path (minima first)."""
    query, data = gaussian(20, 2500, 10, seed=3)
    h = np.geomspace(0.1, 4, 10)
    one = estimator.log_density(query, data, h, method="binned")
    streamed = estimator.log_density(query, data, h, method="binned", chunk_bytes=8 * 300)
    np.testing.assert_allclose(streamed, one, rtol=0, atol=1e-9)


def test_distance_table_grid_matches_the_exact_table_counts_included():
    study = KDEStudy(dim=10, alpha=0.9, n_queries=40, seed=4)
    table = study._table()
    h = np.geomspace(0.02, 6, 30)
    exact = table._exact_summaries(h)
    fast = table._binned_summaries(h)
    assert np.abs(fast["log_density"] - exact["log_density"]).max() <= ISSUE_BOUND_NATS
    np.testing.assert_allclose(
        fast["participation_ratio"], exact["participation_ratio"], rtol=1e-7, atol=0
    )
    # the count is exact inside the crossing bin; it can differ only where a point's cumulative
    # weight sits within the certificate (1e-8 relative) of 90 %: allow one row in a thousand
    assert (fast["n_points_90"] != exact["n_points_90"]).mean() <= 1e-3


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 300),
    d=st.integers(1, 12),
    spread=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_property_binned_within_the_bound_of_exact(n, d, spread, seed):
    rng = np.random.default_rng(seed)
    data = spread * rng.standard_normal((n, d))
    query = spread * rng.standard_normal((5, d))
    h = spread * np.geomspace(1e-2, 1e2, 8)
    fast = estimator.log_density(query, data, h, method="binned")
    exact = estimator.log_density(query, data, h, method="exact")
    assert np.abs(fast - exact).max() <= ISSUE_BOUND_NATS


def test_binned_path_memory_stays_bounded_by_the_chunk_not_the_table():
    """n = 200,000 points, 64 queries: a full (m × n) table would be 102 MB; the binned path
    holds one ≤ chunk_bytes distance block, one row group's accumulator (7 moments × rows ×
    bins) and a few cache-sized block temporaries."""
    import tracemalloc

    query, data = gaussian(64, 200_000, 4, seed=5)
    chunk = 4 * 2**20
    tracemalloc.start()
    try:
        estimator.kde_summary(query, data, np.geomspace(0.05, 5, 16), chunk_bytes=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    group_rows = max(1, chunk // (8 * len(data)))
    bins = (64 + 12) * 2**laplace.SUB_BITS  # octaves from the floor (≈ 2^-50) to 2^12, say
    bound = chunk + 8 * laplace.ACC_WIDTH * group_rows * bins + 64 * laplace.BLOCK_ELEMS
    assert peak < bound + 8 * 2**20, (peak, bound)  # + 8 MB of small arrays
    assert peak < 8 * 64 * len(data) / 4  # far below the full table
