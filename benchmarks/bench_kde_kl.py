"""Benchmark: the KDE lab's KL curve after a data change, stage by stage, at n = 2^16, 2^18, 2^20.

What the dashboard does when a data knob moves (issue 12 §1): new data → the query points'
distance table → the KL/d curve over the Study's 48-bandwidth grid → the view at the current
bandwidth (one h on the same table, and the density slice's own 201-row table). Run at the heavy
setting's shape (d = 28, m = 200 query points, the grid of α = 0.5, d = 28) for three n, with
the streamed table (default above ``tables.STORE_BYTES``) and, with ``--stored``, the stored and
sorted m × n table it replaces. Prints, per n, seconds per stage:

* streamed: pilot (the shift U_j), distances (the augmented GEMM alone, in the same worker
  blocks), shift + kept points (the comparison pass), binning (the rest of pass 1), grid
  (log ρ̂, Y₂ and the 90 % counts at 48 bandwidths from the bins, second pass included), view
  (one more bandwidth), slice table (201 rows);
* stored: distances (one (m × n) GEMM), min/shift, sort, binning, grid;

then the growth exponent of each stage fitted over the three n (expected 1: every stage is
linear in n at fixed m), and the machine's floors over the same m · n elements: one float64 and
one float32 pass (a multiply in cache), the distance GEMM at the measured single-thread rate, the
(P + 1) = 7 bincounts per gap, and ``GapBinner.add`` itself per gap: the compiled kernel
(:mod:`workbench.labs.kde.binning_kernel`) and the bincount path, each on one core, with ns per
element. The streamed pass runs on two threads when the kernel is compiled (it releases the GIL),
one otherwise; ``--no-numba`` measures the bincount path (the "before"). Wall and CPU seconds are
both printed (the machine is shared: CPU time shows the work, wall the wait).
Run: ``python benchmarks/bench_kde_kl.py [--sizes 16 18 20] [--heavy] [--stored] [--no-numba]``.
No assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from workbench.blas import single_blas_thread
from workbench.labs.kde import binning_kernel, estimator, laplace, stream
from workbench.labs.kde.data import exact_log_density
from workbench.labs.kde.study import KDEStudy
from workbench.labs.kde.tables import TABLE_MAX_SCALE, DistanceTable


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def timed(fn) -> tuple[float, float, object]:
    with Clock() as c:
        out = fn()
    return c.wall, c.cpu, out


def per_element(fn, elements: int, repeat: int = 20) -> float:
    """Seconds per element of ``fn`` (CPU time, best of 3 × ``repeat`` calls)."""
    best = np.inf
    for _ in range(3):
        start = time.process_time()
        for _ in range(repeat):
            fn()
        best = min(best, (time.process_time() - start) / repeat)
    return best / elements


def floors(m: int, n: int, d: int) -> dict[str, float]:
    """Seconds for m · n elements at this machine's measured rates on one core (the streamed
    pass runs on one thread: ``np.bincount`` holds the GIL, so threads cannot share it)."""
    rng = np.random.default_rng(0)
    x64 = rng.random(2**16)
    x32 = x64.astype(np.float32)
    out64, out32 = np.empty_like(x64), np.empty_like(x32)
    q = rng.standard_normal((100, d + 2))
    y = rng.standard_normal((stream.BLOCK_POINTS, d + 2))
    index = rng.integers(0, 2000, 2**15)
    weights = rng.random(2**15)
    with single_blas_thread():
        gemm = per_element(lambda: q @ y.T, q.shape[0] * y.shape[0], 5)
    rates = {
        "float64 pass": per_element(lambda: np.multiply(x64, 2.0, out=out64), x64.size),
        "float32 pass": per_element(lambda: np.multiply(x32, 2.0, out=out32), x32.size),
        f"distance GEMM (d + 2 = {d + 2})": gemm,
        "7 bincounts": 7 * per_element(lambda: np.bincount(index, weights, 2000), index.size),
        **binning_rates(d),
    }
    return {name: rate * m * n for name, rate in rates.items()}


def binning_rates(d: int) -> dict[str, float]:
    """Seconds per gap of GapBinner.add on a (100 × 2^14) block of this benchmark's gaps
    (squared distances of d-dimensional Gaussians minus each row's minimum), on one core: the
    compiled kernel (when numba is present) and the bincount path."""
    rng = np.random.default_rng(1)
    q, y = rng.standard_normal((100, d)), rng.standard_normal((stream.BLOCK_POINTS, d))
    with single_blas_thread():  # no OpenBLAS workers left spinning: they count as our CPU time
        gaps = estimator.squared_distances(q, y)
    gaps -= gaps.min(axis=1)[:, None]
    rates = {}
    for name, compiled in (("binning kernel", True), ("binning, bincount path", False)):
        if compiled and not binning_kernel.available():
            continue
        binner = laplace.GapBinner(np, 100, float(gaps.max()), TABLE_MAX_SCALE)
        binner.compiled = compiled
        rates[name] = per_element(lambda b=binner: b.add(gaps, 0), gaps.size, 2)
    return rates


def streamed_stages(query, data, grid, h_now) -> dict[str, tuple[float, float]]:
    xp = np
    query_sq = np.einsum("ij,ij->i", query, query)
    data_sq = np.einsum("ij,ij->i", data, data)
    stages = {}
    stride = max(1, -(-len(data) // stream.PILOT_POINTS))
    with single_blas_thread():  # as the pass's pilot
        wall, cpu, pilot = timed(
            lambda: estimator.squared_distances(query, data[::stride]).min(axis=1)
        )
    stages["pilot"] = (wall, cpu)
    threads = stream.pass_threads(xp)
    clip = threads == 1  # compiled: the pass clips in the kernel, not in a pass of its own
    wall, cpu, _ = timed(
        lambda: stream._sweep(
            xp, query, data, query_sq, data_sq, lambda d, r: None, 2**26, threads, clip
        )
    )
    stages[f"distances (GEMM, {threads} thr.)"] = (wall, cpu)
    if threads == 1:  # NumPy binning: the comparison and shift are a pass of their own
        limit = pilot + 1e-7

        def shift(dist, rows):
            for i in range(dist.shape[0]):
                xp.nonzero(dist[i] < limit[rows.start + i])
                dist[i] -= pilot[rows.start + i]

        wall, cpu, _ = timed(
            lambda: stream._sweep(xp, query, data, query_sq, data_sq, shift, 2**26)
        )
        gemm = stages["distances (GEMM, 1 thr.)"]
        stages["shift + kept points"] = (wall - gemm[0], cpu - gemm[1])
    wall, cpu, table = timed(lambda: DistanceTable(query, data, store=False))
    done = sum(v for v, _ in stages.values()), sum(c for _, c in stages.values())
    stages["binning"] = (wall - done[0], cpu - done[1])
    wall, cpu, summary = timed(lambda: table.summaries(grid))
    stages["grid (48 h: log ρ̂, Y₂, counts)"] = (wall, cpu)
    stages["view (one more h)"] = timed(lambda: table.summaries([h_now]))[:2]
    line = query[:1] + np.linspace(-0.5, 1.5, 201)[:, None] * (data[1] - data[0])[None, :]
    stages["slice table (201 rows)"] = timed(lambda: DistanceTable(line, data, sort=False))[:2]
    kl = (exact_log_density(query)[None, :] - summary["log_density"]).mean(axis=1) / data.shape[1]
    stages["_kl"] = (float(kl.min()), float(np.median(summary["n_points_90"])))
    return stages


def stored_stages(query, data, grid) -> dict[str, tuple[float, float]]:
    stages = {}
    wall, cpu, delta = timed(lambda: estimator.squared_distances(query, data))
    stages["distances (GEMM)"] = (wall, cpu)

    def shift():
        dmin = delta.min(axis=1)
        delta.__isub__(dmin[:, None])
        return dmin

    wall, cpu, dmin = timed(shift)
    stages["min/shift"] = (wall, cpu)
    sort = lambda: estimator.parallel_rows(  # noqa: E731
        np, delta.shape[0], delta.shape[1], lambda rows: delta[rows].sort(axis=1)
    )
    stages["sort"] = timed(sort)[:2]
    wall, cpu, bins = timed(lambda: laplace.bin_table(np, delta, TABLE_MAX_SCALE))
    stages["binning"] = (wall, cpu)
    table = DistanceTable.__new__(DistanceTable)
    table.__dict__.update(
        xp=np,
        n=len(data),
        dim=data.shape[1],
        stored=True,
        sorted=True,
        delta=delta,
        dmin=dmin,
        _last=None,
        _bins=bins,
        _inside={},
        points=None,
        data=None,
    )
    stages["grid (48 h: log ρ̂, Y₂, counts)"] = timed(lambda: table.summaries(grid))[:2]
    return stages


def exponent(sizes: list[int], seconds: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(seconds, 1e-9)), 1)[0])


def report(title: str, sizes: list[int], rows: list[dict]) -> None:
    print(f"\n{title}: wall s (cpu s) per stage; growth exponent over n (expected 1)")
    print(
        f"{'stage':34s}"
        + "".join(f"{'n = ' + format(n, ','):>20s}" for n in sizes)
        + f"{'exponent':>10s}"
    )
    names = [k for k in rows[0] if not k.startswith("_")]
    totals = [sum(r[k][0] for k in names) for r in rows]
    for name in names + ["total"]:
        cells = [
            r[name] if name != "total" else (t, sum(r[k][1] for k in names))
            for r, t in zip(rows, totals, strict=True)
        ]
        text = "".join(f"{w:11.2f} ({c:6.2f})" for w, c in cells)
        fit = exponent(sizes, [w for w, _ in cells]) if len(sizes) > 1 else float("nan")
        print(f"{name:34s}{text}{fit:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=float, nargs="+", default=[16, 18, 20], help="log2 n of each size"
    )
    parser.add_argument(
        "--heavy", action="store_true", help="add n = e^(0.5 · 28) = 1,202,604 (the page's α, d)"
    )
    parser.add_argument("--dim", type=int, default=28)
    parser.add_argument("--queries", type=int, default=KDEStudy.n_queries)
    parser.add_argument("--stored", action="store_true", help="also time the stored table")
    parser.add_argument(
        "--no-numba", action="store_true", help="bincount binning (WORKBENCH_NO_NUMBA=1): before"
    )
    args = parser.parse_args()
    if args.no_numba:
        os.environ[binning_kernel.DISABLE_ENV] = "1"
    warm = binning_kernel.warm()
    print(
        f"binning: {'compiled kernel' if binning_kernel.available() else 'bincount path'}"
        f" (kernel compiled or loaded in {warm:.2f} s), streamed pass on "
        f"{stream.pass_threads(np)} thread(s)"
    )
    study = KDEStudy(dim=28, alpha=0.5)
    grid = study.bandwidth_grid()
    h_now = float(study.display_thresholds()["h_kl_eff"])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"d = {args.dim}, m = {args.queries} queries, {len(grid)} bandwidths "
        f"{grid[0]:.3f}..{grid[-1]:.3f} (the Study's grid at alpha = 0.5, d = 28)"
    )
    sizes = [round(2**e) for e in args.sizes] + ([round(np.exp(14.0))] if args.heavy else [])
    streamed, stored = [], []
    rng = np.random.default_rng(0)
    for n in sizes:
        query = rng.standard_normal((args.queries, args.dim))
        data = rng.standard_normal((n, args.dim))
        streamed.append(streamed_stages(query, data, grid, h_now))
        kl_min, median_count = streamed[-1]["_kl"]
        print(
            f"n = {n:,}: min KL/d over the grid {kl_min:.4f}, median 90 % count "
            f"{median_count:,.0f}",
            flush=True,
        )
        if args.stored:
            stored.append(stored_stages(query, data, grid))
    report("streamed table (default above STORE_BYTES)", sizes, streamed)
    if stored:
        report("stored, sorted m x n table (before)", sizes, stored)
    print("\nfloors over m x n elements, one core (s), and ns per element (gap, distance)")
    print(
        f"{'':34s}"
        + "".join(f"{'n = ' + format(n, ','):>20s}" for n in sizes)
        + f"{'ns/elem':>10s}"
    )
    per_size = [floors(args.queries, n, args.dim) for n in sizes]
    for name in per_size[0]:
        ns = per_size[-1][name] / (args.queries * sizes[-1]) * 1e9
        print(f"{name:34s}" + "".join(f"{f[name]:20.3f}" for f in per_size) + f"{ns:10.2f}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
