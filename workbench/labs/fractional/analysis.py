"""Measurements of the lab: solve, spectrum vs symbol, conditioning, accuracy and solver counts.

Each function returns an :class:`xarray.Dataset` with units on every variable (lab brief
``shared/science/fractional.md``; Mazza, Donatelli, Manni, Speleers, NLAA 30(1), 2023).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr

from workbench import backend
from workbench.fit import loglog_slope
from workbench.labs.fractional.krylov import GMRES, Preconditioner, check_preconditioner
from workbench.labs.fractional.matrices import (
    DENSE_CAP,
    check_size,
    collocation_operator,
    collocation_points,
    dense_scaled,
    structure,
)
from workbench.labs.fractional.problems import (
    SOLUTIONS,
    exact_solution,
    paper_rate,
    right_hand_side,
)
from workbench.labs.fractional.splines import spline_values
from workbench.labs.fractional.symbol import check_alpha_degree, symbol
from workbench.study import StudyInputError, checkpoint

PROVENANCE = (
    "Mazza, Donatelli, Manni, Speleers, On the matrices in B-spline collocation methods for "
    "Riesz fractional equations and their spectral properties, NLAA 30(1) e2462 (2023), "
    "arXiv 2106.14834; construction and checks from the lab brief shared/science/fractional.md"
)
#: Points of the display grid on [0, 1] for the solution and its error.
DISPLAY_POINTS = 1025
#: Points per interval, and a cap on the total, of the grid the max-norm error is taken on.
ERROR_POINTS_PER_INTERVAL = 8
ERROR_POINTS_CAP = 2**19
#: Largest n for dense eigenvalues (nonsymmetric eig is O(n³): about 2 s at n = 1024 here).
EIGEN_CAP = 1024
#: Largest n for the exact 2-norm condition number by a dense SVD (n = 1024 takes 1-5 s here).
COND_EXACT_CAP = 512
#: Largest n for the estimated condition number (ARPACK with inner preconditioned solves).
COND_ESTIMATE_CAP = 2**16


def _attrs(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"lab": "fractional", "provenance": PROVENANCE}
    for key, value in extra.items():
        out[key] = int(value) if isinstance(value, bool | np.bool_) else value
    return out


# ------------------------------------------------------------------------------------------------
# Solve
# ------------------------------------------------------------------------------------------------
def krylov_run(
    intervals: int,
    alpha: float,
    degree: int,
    rhs: str = "x4",
    preconditioner: str | None = "tau",
    tol: float = 1e-10,
    maxiter: int = 2000,
    xp: Any = None,
) -> GMRES:
    """An unstarted :class:`GMRES` for A_n c = f(τ) (iterate ``.steps()`` to stream it)."""
    a, p = check_alpha_degree(alpha, degree)
    n_int = check_size(intervals, p)
    name = check_preconditioner(preconditioner)
    f = right_hand_side(rhs, a)
    xp = backend.get_namespace(xp=xp) if xp is not None else np
    op = collocation_operator(n_int, a, p)
    pre = Preconditioner(op, name)
    b = xp.asarray(f(collocation_points(n_int, p)))
    return GMRES(op.apply, b, pre.inverse, tol=tol, maxiter=maxiter)


def error_grid(intervals: int) -> np.ndarray:
    """The grid the max-norm error is taken on (8 points per interval, capped)."""
    count = min(ERROR_POINTS_PER_INTERVAL * int(intervals), ERROR_POINTS_CAP)
    return np.linspace(0.0, 1.0, count + 1)


def solution_dataset(
    run: GMRES, intervals: int, alpha: float, degree: int, rhs: str, preconditioner: Any
) -> xr.Dataset:
    """The Dataset of a finished run: solution, exact, error on ``x``; residual on ``iteration``."""
    coef = backend.to_host(run.solution)
    u = exact_solution(rhs, alpha)
    x = np.linspace(0.0, 1.0, DISPLAY_POINTS)
    uh = spline_values(intervals, degree, coef, x)
    fine = error_grid(intervals)
    max_error = float(np.max(np.abs(spline_values(intervals, degree, coef, fine) - u(fine))))
    residual = np.asarray(run.history)
    ds = xr.Dataset(
        {
            "solution": (("x",), uh),
            "exact": (("x",), u(x)),
            "error": (("x",), np.abs(uh - u(x))),
            "residual": (("iteration",), residual),
            "max_error": ((), max_error),
            "iterations": ((), run.iterations),
        },
        coords={"x": x, "iteration": np.arange(residual.size)},
        attrs=_attrs(
            intervals=int(intervals),
            unknowns=int(intervals) + int(degree) - 2,
            alpha=float(alpha),
            degree=int(degree),
            rhs=rhs,
            solution_label=SOLUTIONS[rhs][0],
            preconditioner=check_preconditioner(preconditioner),
            tol=float(run.tol),
            converged=bool(run.converged),
            paper_rate=paper_rate(alpha, degree),
            error_grid_points=int(fine.size),
        ),
    )
    units = {
        "solution": ("1", "spline collocation solution u_h"),
        "exact": ("1", "exact solution u"),
        "error": ("1", "pointwise error |u_h − u|"),
        "residual": ("1", "relative residual ‖b − A x_k‖/‖b‖"),
        "max_error": ("1", "max-norm error ‖u_h − u‖_∞ (8 points per interval)"),
        "iterations": ("1", "GMRES iterations to the tolerance"),
    }
    for name, (unit, long_name) in units.items():
        ds[name].attrs.update(units=unit, long_name=long_name)
    ds["x"].attrs.update(units="1", long_name="x (domain (0, 1))")
    ds["iteration"].attrs.update(units="1", long_name="GMRES iteration")
    return ds


def solve(
    intervals: int,
    alpha: float,
    degree: int,
    rhs: str = "x4",
    preconditioner: str | None = "tau",
    tol: float = 1e-10,
    maxiter: int = 2000,
    xp: Any = None,
) -> xr.Dataset:
    """Collocation solution of −∂^α u/∂|x|^α = f by preconditioned GMRES (matrix-free).

    Returns a Dataset with ``solution``, ``exact`` and ``error`` = |u_h − u| on ``x`` (a display
    grid of 1025 points), ``residual`` (relative residual norm) over ``iteration``, and the
    scalars ``max_error`` (on 8 points per interval) and ``iterations``.

    >>> ds = solve(64, 1.5, 2, rhs="x4", preconditioner="circulant")
    >>> int(ds.iterations) <= 10, float(ds.max_error) < 1e-6
    (True, True)
    """
    run = krylov_run(intervals, alpha, degree, rhs, preconditioner, tol, maxiter, xp).run()
    return solution_dataset(run, int(intervals), float(alpha), int(degree), rhs, preconditioner)


def observed_rates(intervals: Sequence[int], errors: Sequence[float]) -> np.ndarray:
    """log(e_k/e_{k+1})/log(N_{k+1}/N_k) between consecutive sizes."""
    n = np.asarray(intervals, dtype=float)
    e = np.asarray(errors, dtype=float)
    return np.log(e[:-1] / e[1:]) / np.log(n[1:] / n[:-1])


def convergence(
    intervals: Sequence[int], alpha: float, degree: int, rhs: str = "x4", tol: float = 1e-14
) -> xr.Dataset:
    """Max-norm error vs N, observed rates, and the paper's rate (p + 2 − α or p + 1 − α).

    Solved by circulant-preconditioned GMRES to a tight tolerance so the rounding floor stays
    far below the discretisation error.
    """
    sizes = np.asarray(sorted({int(v) for v in intervals}))
    errors = [
        float(solve(int(n), alpha, degree, rhs, "circulant", tol=tol).max_error) for n in sizes
    ]
    rates = np.append(observed_rates(sizes, errors), np.nan)
    slope, _ = loglog_slope(sizes, errors)
    ds = xr.Dataset(
        {"max_error": (("intervals",), errors), "rate": (("intervals",), rates)},
        coords={"intervals": sizes},
        attrs=_attrs(
            alpha=float(alpha),
            degree=int(degree),
            rhs=rhs,
            paper_rate=paper_rate(alpha, degree),
            fitted_rate=-slope,
        ),
    )
    ds["max_error"].attrs.update(units="1", long_name="max-norm error ‖u_h − u‖_∞")
    ds["rate"].attrs.update(units="1", long_name="observed rate from N to the next N")
    ds["intervals"].attrs.update(units="1", long_name="intervals N")
    return ds


# ------------------------------------------------------------------------------------------------
# Spectrum and conditioning
# ------------------------------------------------------------------------------------------------
def spectrum(intervals: int, alpha: float, degree: int) -> xr.Dataset:
    """Sorted eigenvalues of h^α A_n against the sorted symbol samples f(jπ/(n+1)).

    Outliers: eigenvalues above max_θ f (by more than 0.1 %) or below 0; ``deviation`` is
    |λ_(k) − f_(k)| in sorted order. Dense eig: n ≤ :data:`EIGEN_CAP`.
    """
    a, p = check_alpha_degree(alpha, degree)
    n_int = check_size(intervals, p)
    n = n_int + p - 2
    if n > EIGEN_CAP:
        raise StudyInputError(
            f"eigenvalues are computed densely for n ≤ {EIGEN_CAP}: lower intervals N "
            f"(got N = {n_int}, n = {n})"
        )
    eig = scipy.linalg.eigvals(dense_scaled(structure(n_int, a, p)))
    order = np.argsort(eig.real)
    lam = eig.real[order]
    theta = np.arange(1, n + 1) * np.pi / (n + 1)
    samples = np.sort(symbol(theta, a, p))
    top = float(symbol(np.linspace(0, np.pi, 2001), a, p).max())
    outlier = (lam > top * (1 + 1e-3)) | (lam < 0)
    grid = np.linspace(0.0, np.pi, 401)
    ds = xr.Dataset(
        {
            "eigenvalue": (("index",), lam),
            "eigenvalue_imag": (("index",), eig.imag[order]),
            "symbol_sample": (("index",), samples),
            "deviation": (("index",), np.abs(lam - samples)),
            "outlier": (("index",), outlier.astype(np.int8)),
            "sample_theta": (("index",), np.sort(theta)),
            "symbol": (("theta",), symbol(grid, a, p)),
        },
        coords={"index": np.arange(1, n + 1), "theta": grid},
        attrs=_attrs(
            intervals=n_int,
            unknowns=n,
            alpha=a,
            degree=p,
            symbol_max=top,
            outliers=int(outlier.sum()),
            max_deviation_inliers=float(np.abs(lam - samples)[~outlier].max()),
            max_imag=float(np.abs(eig.imag).max()),
        ),
    )
    for name, long_name in {
        "eigenvalue": "eigenvalue of h^α A_n (real part, sorted)",
        "eigenvalue_imag": "imaginary part of the eigenvalue",
        "symbol_sample": "f_{α,p}(jπ/(n+1)), sorted",
        "deviation": "|λ − f| in sorted order",
        "outlier": "1 if the eigenvalue lies outside the symbol's range",
        "sample_theta": "θ_j = jπ/(n+1)",
        "symbol": "symbol f_{α,p}(θ)",
    }.items():
        ds[name].attrs.update(units="1", long_name=long_name)
    ds["theta"].attrs.update(units="rad", long_name="θ")
    ds["index"].attrs.update(units="1", long_name="eigenvalue index (ascending)")
    return ds


def symbol_at_pi(alphas: Sequence[float], degrees: Sequence[int]) -> xr.Dataset:
    """f_{α,p}(π) over (α, p): the high-frequency value that falls with p."""
    a = np.asarray(alphas, dtype=float)
    p = np.asarray(degrees, dtype=int)
    values = np.array([[symbol(np.pi, ai, int(pi)) for pi in p] for ai in a])
    ds = xr.Dataset(
        {"symbol_pi": (("alpha", "degree"), values)},
        coords={"alpha": a, "degree": p},
        attrs=_attrs(),
    )
    ds["symbol_pi"].attrs.update(units="1", long_name="f_{α,p}(π)")
    return ds


def _estimated_extremes(
    n_int: int, alpha: float, degree: int, steps: int = 30
) -> tuple[float, float]:
    """(σ_max, σ_min) of A_n without the matrix, to about 1e−4 relative.

    σ_max: power iteration on AᵀA from the θ = π mode plus boundary bumps (where the top
    singular vectors live: high frequency for even p, the boundary outliers for odd p); the
    top of the spectrum is a dense cluster, so ARPACK converges slowly there while the
    Rayleigh quotient of this start is within 5e−5 after 30 steps (checked against a dense
    SVD at N = 1024 for p = 2, 3, 5). σ_min: inverse iteration on AᵀA (well separated: the
    ratio σ₁/σ₂ ≈ 2^{−α}) with inner circulant-preconditioned GMRES solves (tolerance 1e−13).
    """
    op = collocation_operator(n_int, alpha, degree)
    n = op.shape[0]
    pre = Preconditioner(op, "circulant")
    v = (-1.0) ** np.arange(n)
    v[:degree] += 3.0
    v[-degree:] += 3.0
    v /= np.linalg.norm(v)
    top = 0.0
    for _ in range(steps):
        checkpoint()
        w = op.apply_transpose(op.apply(v))
        top = float(v @ w)
        v = w / np.linalg.norm(w)
    u = np.sin(np.pi * np.arange(1, n + 1) / (n + 1))
    u /= np.linalg.norm(u)
    bottom = 0.0
    for _ in range(steps // 2):
        checkpoint()
        y = GMRES(op.apply_transpose, u, pre.inverse, tol=1e-13, maxiter=500).run().solution
        w = GMRES(op.apply, y, pre.inverse, tol=1e-13, maxiter=500).run().solution
        bottom = float(u @ w)
        u = w / np.linalg.norm(w)
    return math.sqrt(top), 1.0 / math.sqrt(bottom)


def conditioning(
    intervals: Sequence[int], alpha: float, degree: int, exact_cap: int = COND_EXACT_CAP
) -> xr.Dataset:
    """cond₂(A_n) vs n: by a dense SVD for n ≤ ``exact_cap``, estimated (matrix-free) beyond.

    The fitted growth exponent (log–log least squares over all sizes) is compared with α.
    """
    a, p = check_alpha_degree(alpha, degree)
    sizes = np.asarray(sorted({check_size(v, p) for v in intervals}))
    cond, exact = [], []
    for n_int in sizes:
        checkpoint()
        n = n_int + p - 2
        if n <= min(exact_cap, DENSE_CAP):
            sv = scipy.linalg.svdvals(dense_scaled(structure(int(n_int), a, p)))
            cond.append(float(sv[0] / sv[-1]))
            exact.append(1)
        elif n <= COND_ESTIMATE_CAP:
            smax, smin = _estimated_extremes(int(n_int), a, p)
            cond.append(smax / smin)
            exact.append(0)
        else:
            raise StudyInputError(
                f"condition numbers are estimated for n ≤ {COND_ESTIMATE_CAP}: lower "
                f"intervals N (got N = {n_int})"
            )
    unknowns = sizes + p - 2
    slope, _ = loglog_slope(unknowns, cond)
    ds = xr.Dataset(
        {
            "cond": (("intervals",), cond),
            "exact": (("intervals",), np.asarray(exact, dtype=np.int8)),
            "unknowns": (("intervals",), unknowns),
        },
        coords={"intervals": sizes},
        attrs=_attrs(alpha=a, degree=p, growth_exponent=slope),
    )
    ds["cond"].attrs.update(units="1", long_name="cond₂(A_n)")
    ds["exact"].attrs.update(units="1", long_name="1: dense SVD, 0: matrix-free estimate")
    ds["unknowns"].attrs.update(units="1", long_name="n = N + p − 2")
    ds["intervals"].attrs.update(units="1", long_name="intervals N")
    return ds


# ------------------------------------------------------------------------------------------------
# Solvers
# ------------------------------------------------------------------------------------------------
def iteration_counts(
    intervals: Sequence[int],
    alpha: float,
    degree: int,
    preconditioners: Sequence[str] = ("none", "tau", "circulant", "laplacian"),
    tol: float = 1e-8,
    maxiter: int = 2000,
) -> xr.Dataset:
    """GMRES iterations to ``tol`` with b = ones (the brief's setting) per preconditioner and N.

    Also returns each residual history (``residual`` over (preconditioner, intervals,
    iteration), NaN-padded).
    """
    a, p = check_alpha_degree(alpha, degree)
    sizes = np.asarray(sorted({check_size(v, p) for v in intervals}))
    names = [check_preconditioner(v) for v in preconditioners]
    counts = np.zeros((len(names), sizes.size), dtype=np.int64)
    converged = np.zeros_like(counts, dtype=np.int8)
    histories: dict[tuple[int, int], list[float]] = {}
    for j, n_int in enumerate(sizes):
        op = collocation_operator(int(n_int), a, p)
        b = np.ones(op.shape[0])
        for i, name in enumerate(names):
            run = GMRES(op.apply, b, Preconditioner(op, name).inverse, tol=tol, maxiter=maxiter)
            run.run()
            counts[i, j], converged[i, j] = run.iterations, int(run.converged)
            histories[i, j] = run.history
    longest = max(len(h) for h in histories.values())
    residual = np.full((len(names), sizes.size, longest), np.nan)
    for (i, j), h in histories.items():
        residual[i, j, : len(h)] = h
    ds = xr.Dataset(
        {
            "iterations": (("preconditioner", "intervals"), counts),
            "converged": (("preconditioner", "intervals"), converged),
            "residual": (("preconditioner", "intervals", "iteration"), residual),
        },
        coords={"preconditioner": names, "intervals": sizes, "iteration": np.arange(longest)},
        attrs=_attrs(alpha=a, degree=p, tol=float(tol), rhs="b = ones"),
    )
    ds["iterations"].attrs.update(units="1", long_name="GMRES iterations to the tolerance")
    ds["converged"].attrs.update(units="1", long_name="1 if the tolerance was reached")
    ds["residual"].attrs.update(units="1", long_name="relative residual ‖b − A x_k‖/‖b‖")
    ds["intervals"].attrs.update(units="1", long_name="intervals N")
    return ds
