"""Benchmark: the KDE lab's bandwidth sweep against scikit-learn, SciPy and KDEpy.

Run ``python benchmarks/bench_kde.py`` (n = 2^16, d = 32, 1024 queries, float64) or with
``--quick`` (n = 2^13, d = 16, 256 queries). Prints one table: seconds for a single bandwidth and
for the 64-bandwidth sweep per library, and the speed-up of ``workbench.labs.kde.log_density``
(one distance computation, 64 bandwidths folded in) over each. Libraries too slow to run in full
are timed on a few bandwidths or a subset of the data and extrapolated linearly; the table says
so. Then the dashboard path: ``KDEStudy`` at the default sizes, first evaluate vs a new bandwidth.
No assertions: this is a measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np

from workbench import backend
from workbench.labs import kde
from workbench.labs.kde import binning_kernel


def best_time(fn, repeat: int = 3) -> float:
    """Smallest wall time of ``repeat`` calls (the least disturbed run)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def problem(n: int, d: int, m: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, d)), rng.standard_normal((n, d))


def bench_ours(query, data, bandwidths, repeat):
    """(single h, sweep on the default binned path, sweep on the exact path, max |binned − exact|)."""
    single = best_time(lambda: kde.log_density(query, data, bandwidths[0]), repeat)
    sweep = best_time(lambda: kde.log_density(query, data, bandwidths), repeat)
    exact = best_time(lambda: kde.log_density(query, data, bandwidths, method="exact"), 1)
    gap = np.abs(
        kde.log_density(query, data, bandwidths)
        - kde.log_density(query, data, bandwidths, method="exact")
    ).max()
    return single, sweep, exact, float(gap)


def exp_floor(elements: int) -> dict[str, float]:
    """Seconds for ``elements`` exponentials at this machine's NumPy exp throughput (one thread,
    float64 and float32): the floor of the exact path, one exp per (point, query, bandwidth)."""
    out = {}
    for dtype in (np.float64, np.float32):
        x = -np.random.default_rng(0).random(2**22).astype(dtype)
        per = best_time(lambda x=x: np.exp(x, out=x.copy()), 5) / x.size
        out[np.dtype(dtype).name] = per * elements
    return out


def upper_bound(query, data, h):
    """Rigorous bound log ρ̂_h(x) ≤ −(d/2) log(2πh²) − min_i |x − y_i|²/(2h²) (brief): the mean
    of n terms is at most the largest."""
    dmin = kde.kde_summary(query, data, h)["nearest_sq_distance"]
    return -0.5 * data.shape[1] * np.log(2 * np.pi * h * h) - dmin / (2 * h * h)


def bench_sklearn(query, data, bandwidths, n_timed):
    from sklearn.neighbors import KernelDensity

    def one(h):
        return KernelDensity(bandwidth=float(h)).fit(data).score_samples(query)

    start = time.perf_counter()
    values = [one(h) for h in bandwidths[:n_timed]]
    per = (time.perf_counter() - start) / n_timed
    # Agreement at the smallest timed h (the brief: scikit-learn is wrong on held-out points at
    # small h, above the rigorous upper bound; issues #7492 and #27186).
    h = float(bandwidths[0])
    ours = kde.log_density(query, data, h)
    over = int(np.sum(values[0] > upper_bound(query, data, h) + 1e-9))
    note = (
        f"{n_timed} of {len(bandwidths)} h timed, extrapolated; max |diff| "
        f"{np.max(np.abs(values[0] - ours)):.1e} nats, {over} of {len(query)} over the upper bound"
    )
    return per, per * len(bandwidths), note


def bench_scipy(query, data, bandwidths):
    """SciPy's kernel covariance is bw² · Cov(data): the data are whitened (Cov = I exactly) so
    that bw_method = h is our isotropic h, and the agreement is checked on the same data."""
    from scipy.stats import gaussian_kde

    centred = data - data.mean(axis=0)
    white = np.linalg.solve(np.linalg.cholesky(np.cov(centred, rowvar=False)), centred.T).T
    h = float(bandwidths[0])
    start = time.perf_counter()
    values = gaussian_kde(white.T, bw_method=h).logpdf(query.T)
    per = time.perf_counter() - start
    diff = np.max(np.abs(values - kde.log_density(query, white, h)))
    note = f"1 of {len(bandwidths)} h timed, extrapolated; max |diff| {diff:.1e} nats"
    return per, per * len(bandwidths), note


def bench_kdepy(query, data, bandwidths, subset):
    """KDEpy's NaiveKDE (the only KDEpy estimator that evaluates at arbitrary points in d > 1)."""
    from KDEpy import NaiveKDE

    part = data[:subset]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = NaiveKDE(kernel="gaussian", bw=float(bandwidths[0])).fit(part).evaluate(query)
    per_subset = time.perf_counter() - start
    per = per_subset * len(data) / subset
    # Same estimator on the same subset; KDEpy cuts the Gaussian's support at a finite radius,
    # so far-off query points (tiny densities) differ: report the median relative difference.
    ours = np.exp(kde.log_density(query, part, bandwidths[0]))
    rel = float(np.median(np.abs(values - ours) / ours))
    note = (
        f"1 h on {subset:,} of {len(data):,} points, extrapolated in n and h; "
        f"median rel diff {rel:.0e}"
    )
    return per, per * len(bandwidths), note


def dashboard_path(repeat: int = 5):
    """What the page does: a data change computes ``panels()`` (the 48-h grid, the regime map,
    the heavy-tail statistics; it also bins the distance table), then each bandwidth move asks
    ``at_bandwidth(h)`` (evaluate at h, the query samples, the density slice)."""
    kde.clear_caches()
    study = kde.KDEStudy()
    start = time.perf_counter()
    study.evaluate(bandwidth=study.bandwidth_grid())
    first = time.perf_counter() - start
    start = time.perf_counter()
    study.heavy_tail_curve()
    heavy = time.perf_counter() - start
    study.panels()
    start = time.perf_counter()
    study.density_slice(1.0)
    slice_first = time.perf_counter() - start
    times = []
    for h in np.geomspace(0.5, 2.0, repeat):
        start = time.perf_counter()
        study.at_bandwidth(float(h))
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    study.density_slice(0.7)
    slice_next = time.perf_counter() - start
    return study, first, float(np.median(times)), slice_first, slice_next, heavy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 2^13, d = 16, 256 queries")
    parser.add_argument("--skip-others", action="store_true", help="time only workbench")
    parser.add_argument(
        "--no-numba", action="store_true", help="bincount binning (WORKBENCH_NO_NUMBA=1): before"
    )
    args = parser.parse_args(argv)
    if args.no_numba:
        os.environ[binning_kernel.DISABLE_ENV] = "1"
    warm = binning_kernel.warm()  # compile or load the kernels outside the timings
    n, d, m = (2**13, 16, 256) if args.quick else (2**16, 32, 1024)
    k = 64
    query, data = problem(n, d, m)
    bandwidths = np.geomspace(0.5, 4.0, k)

    print(f"KDE benchmark: n = {n:,}, d = {d}, {m} queries, {k} bandwidths, float64")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores; backend: "
        f"{backend.backend_name()} ({backend.device_description()['device']}); load average "
        f"{os.getloadavg()[0]:.2f}; binning: "
        f"{'compiled kernel' if binning_kernel.available() else 'bincount path'} "
        f"(kernels compiled or loaded in {warm:.2f} s)"
    )
    single, ours, exact, gap = bench_ours(
        query, data, bandwidths, repeat=2 if not args.quick else 3
    )
    extra = (ours - single) / (k - 1)
    rows = [
        ("workbench (binned, default)", single, ours, f"max |binned - exact| = {gap:.1e} nats"),
        ("workbench method='exact'", single, exact, "one exp per (point, query, h)"),
    ]
    if not args.skip_others:
        rows.append(("scikit-learn KernelDensity", *bench_sklearn(query, data, bandwidths, 2)))
        rows.append(("scipy gaussian_kde.logpdf", *bench_scipy(query, data, bandwidths)))
        rows.append(("KDEpy NaiveKDE", *bench_kdepy(query, data, bandwidths, min(n, 2048))))

    print()
    print(
        f"{'estimator':<28} {'1 h [s]':>9} {f'{k} h [s]':>9} {'ours faster':>12}  how / agreement with ours"
    )
    for name, t1, tk, how in rows:
        print(f"{name:<28} {t1:9.3f} {tk:9.2f} {tk / ours:11.1f}x  {how}")
    floor = exp_floor(n * m * k)
    print(
        f"{'exp floor (n m k exps, 1 thr)':<28} {'':>9} {floor['float64']:9.2f} "
        f"{floor['float64'] / ours:11.1f}x  float32: {floor['float32']:.2f} s"
    )
    print()
    print(
        f"workbench: one extra bandwidth costs {extra * 1e3:.1f} ms = {extra / single:.3f} of a "
        f"single-bandwidth call ({k} h in {ours:.2f} s vs {k} separate calls {k * single:.2f} s)"
    )

    study, first, next_h, slice_first, slice_next, heavy = dashboard_path()
    print()
    print(
        f"dashboard path, KDEStudy defaults (d = {study.dim}, alpha = {study.alpha}, "
        f"n = {kde.n_points(study.dim, study.alpha):,}, {study.n_queries} queries):"
    )
    print(f"  data change: 48-h grid (data, distances, sort, bins) {first * 1e3:8.1f} ms")
    print(f"  bandwidth move: at_bandwidth (median)                {next_h * 1e3:8.1f} ms")
    print(
        f"  density slice first / next h               {slice_first * 1e3:8.1f} / {slice_next * 1e3:.1f} ms"
    )
    k_heavy = len(kde.HEAVY_TAIL_RATIOS)
    print(f"  heavy-tail curve ({k_heavy} h x 600 datasets)     {heavy * 1e3:8.1f} ms")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
