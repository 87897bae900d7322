"""Fractional lab timings: matrix-free assembly + preconditioned GMRES vs a dense SciPy solve.

Run ``python benchmarks/bench_fractional.py [degree]``. Prints a table (median of repeats, wall
clock): for each N, the lab's path (compute the O(p n) distinct entries, FFT set-up, circulant-
preconditioned GMRES to 1e-10 on u = x⁴(1−x)⁴) and, where a dense matrix fits under the lab's
cap (n ≤ 4096, 128 MiB), what a user would otherwise do: build the dense matrix and call
``scipy.linalg.solve``. Agreement is max |c_lab − c_dense| / max |c_dense| on the coefficients.
The growth exponent of the lab's time vs n is a log–log fit over N ≥ 2^12. Dense at N = 2^16
would need (N + p − 2)² × 8 B ≈ 34 GB.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import scipy.linalg

from workbench.fit import loglog_slope
from workbench.labs import fractional as fr
from workbench.labs.fractional import matrices
from workbench.labs.fractional.analysis import krylov_run

ALPHA = 1.5


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Median wall time of ``fn`` (the entry cache cleared first, so assembly is counted)."""
    times, out = [], None
    for _ in range(repeats):
        matrices.structure.cache_clear()
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def lab_solve(n_int: int, degree: int) -> np.ndarray:
    run = krylov_run(n_int, ALPHA, degree, "x4", "circulant", tol=1e-10).run()
    assert run.converged
    return run.solution


def dense_solve(n_int: int, degree: int) -> np.ndarray:
    a = fr.collocation_matrix(n_int, ALPHA, degree)
    b = fr.right_hand_side("x4", ALPHA)(fr.collocation_points(n_int, degree))
    return scipy.linalg.solve(a, b)


def main() -> None:
    degree = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(
        f"# fractional lab, p = {degree}, α = {ALPHA}; {platform.processor() or platform.machine()}"
    )
    print(f"# {os.cpu_count()} CPUs visible; median of 3 runs; lab = assembly + GMRES (circulant)")
    print(f"{'N':>8} {'n':>8} {'lab (s)':>9} {'dense (s)':>10} {'ratio':>8} {'agreement':>10}")
    sizes, times = [], []
    dense_largest = matrices.DENSE_CAP - degree + 2
    for n_int in [2**k for k in range(8, 17)] + [dense_largest]:
        t_lab, c_lab = timed(lambda n=n_int: lab_solve(n, degree))
        n = n_int + degree - 2
        row = f"{n_int:>8} {n:>8} {t_lab:>9.3f}"
        if n <= matrices.DENSE_CAP:
            t_dense, c_dense = timed(lambda n=n_int: dense_solve(n, degree), repeats=1)
            agree = np.max(np.abs(c_lab - c_dense)) / np.max(np.abs(c_dense))
            row += f" {t_dense:>10.3f} {t_dense / t_lab:>7.1f}x {agree:>10.1e}"
        else:
            row += f" {'(> cap)':>10} {'':>8} {'':>10}"
        print(row)
        if n_int >= 2**12 and n_int != dense_largest:
            sizes.append(n)
            times.append(t_lab)
    slope, _ = loglog_slope(sizes, times)
    print(f"# growth exponent of the lab's time vs n (N = 2^12..2^16): {slope:.2f}")
    print(f"# dense at N = 2^16 would need {(2**16 + degree - 2) ** 2 * 8 / 1e9:.0f} GB")


if __name__ == "__main__":
    main()
