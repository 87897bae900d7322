"""Quadrature lab timings: one PI run, the full N-sweep, and BQ weights against a SciPy baseline.

Run ``python benchmarks/bench_quadrature.py``. Prints a table (median of repeats, wall clock).

The baseline for the BQ weights is what a user would otherwise write: the kernel means
z_n = ∫_a^b k(s, t_n) ds by ``scipy.integrate.quad`` per node (and Z by ``quad`` over z), then the
same Cholesky solve, with quad's default tolerances. The lab uses the closed forms of the brief
instead. cond(K) grows past 1e14 by N = 30, so quad's ~1e-10 errors in z show up as large weight
differences there: the closed forms are faster *and* the only accurate option at large N.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import scipy.integrate
import scipy.linalg

from workbench.labs import quadrature as quad
from workbench.labs.quadrature import rules as qr

T = quad.INTERVAL_LENGTH


def timed(fn: Callable[[], object], repeats: int = 5, clear: bool = False) -> float:
    """Median wall time of ``fn`` in seconds (``clear``: empty the weight cache before each)."""
    times = []
    for _ in range(repeats):
        if clear:
            quad.interval_rule.cache_clear()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scipy_bq_weights(n: int, nu: float, lengthscale: float = 0.3) -> tuple[np.ndarray, float]:
    """BQ weights with kernel means from scipy.integrate.quad (one call per node, one for Z)."""
    t = qr.nodes(n, 0.0, T)

    def mean(x: float) -> float:
        value, _ = scipy.integrate.quad(
            lambda s: float(qr.matern_kernel(s, x, nu, lengthscale)), 0.0, T, points=[x]
        )
        return value

    z = np.array([mean(x) for x in t])
    total, _ = scipy.integrate.quad(mean, 0.0, T)
    gram = qr.matern_kernel(t[:, None], t[None, :], nu, lengthscale)
    weights = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram), z)
    return weights, float(np.sqrt(max(total - z @ weights, 0.0)))


def main() -> None:
    rows: list[tuple[str, float, str]] = []
    for system in ("lqr", "sin"):
        for rule in ("trapezoid", "bq", "exact"):
            seconds = timed(lambda s=system, r=rule: quad.run_policy_iteration(s, n=10, rule=r))
            rows.append((f"one PI run: {system}, {rule}, N=10", seconds, "target < 500 ms"))
    labels = list(quad.DASHBOARD_RULES)
    sweep_seconds = timed(
        lambda: [quad.error_vs_n(s, labels, ns=quad.SWEEP_NS) for s in ("lqr", "sin")],
        repeats=3,
        clear=True,
    )
    rows.append(("N-sweep 2..30 x 5 rules x 2 systems (cold)", sweep_seconds, "target < 10 000 ms"))
    warm = timed(lambda: quad.error_vs_n("lqr", labels, ns=quad.SWEEP_NS), repeats=3)
    rows.append(("N-sweep 2..30 x 5 rules, lqr (weights cached)", warm, "dashboard knob change"))
    wce = timed(lambda: quad.worst_case_errors(ns=range(2, 31)), clear=True)
    rows.append(("worst_case_errors 2..30 x 4 nu", wce, ""))

    for n in (5, 15, 30):
        ours = timed(lambda n=n: qr.bq_weights(n, 0.0, T, nu=3.5), repeats=20)
        base = timed(lambda n=n: scipy_bq_weights(n, 3.5), repeats=3)
        w_ours, e_ours = qr.bq_weights(n, 0.0, T, nu=3.5)
        w_base, e_base = scipy_bq_weights(n, 3.5)
        diff = np.abs(w_ours - w_base).max() / np.abs(w_ours).max()
        rows.append((f"BQ weights nu=3.5 N={n}: closed form", ours, ""))
        rows.append(
            (
                f"BQ weights nu=3.5 N={n}: scipy quad means",
                base,
                f"x{base / ours:.0f} slower; max rel weight diff {diff:.1e}; "
                f"e {e_ours:.2e} vs {e_base:.2e}",
            )
        )

    print(f"# quadrature lab benchmark: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, numpy {np.__version__}")  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'case'.ljust(width)}  {'ms':>9}  notes")
    for name, seconds, note in rows:
        print(f"{name.ljust(width)}  {1e3 * seconds:9.3g}  {note}")


if __name__ == "__main__":
    main()
