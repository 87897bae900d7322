"""FractionalStudy: the lab's knobs (degree, order, size, test solution, solver) and its compute."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import param
import xarray as xr

from workbench.labs.fractional import analysis
from workbench.labs.fractional.krylov import GMRES
from workbench.labs.fractional.matrices import check_size
from workbench.labs.fractional.problems import SOLUTIONS
from workbench.labs.fractional.symbol import symbol_grid
from workbench.study import Study, StudyInputError, warn_user

#: Without a preconditioner GMRES needs ~n^{α/2} iterations, each O(k n): refuse beyond this N.
UNPRECONDITIONED_CAP = 2**13
#: Sizes of the sweeps (cond, error, iteration counts) the dashboard and notebook draw.
COND_SIZES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
ERROR_SIZES = (16, 32, 64, 128, 256)
ITERATION_SIZES = (32, 64, 128, 256, 512, 1024)


class FractionalStudy(Study):
    """B-spline collocation for −∂^α u/∂|x|^α = f on (0, 1) (Riesz, 1 < α ≤ 2).

    ``evaluate()`` solves at the knobs (matrix-free operator, preconditioned GMRES) and returns
    the solution and its error on ``x`` and the residual history on ``iteration``;
    ``evaluate(intervals=[...])`` does it for several N at once (dim ``intervals``). The other
    panels have their own methods: :meth:`spectrum`, :meth:`symbol_curve`,
    :meth:`symbol_vs_degree`, :meth:`conditioning`, :meth:`convergence`,
    :meth:`iteration_counts`, and :meth:`krylov_run` (an unstarted solver to stream).
    """

    lab = "fractional"
    title = "Fractional diffusion: B-spline collocation, spectra and solvers"
    paper = (
        "Mazza, Donatelli, Manni & Speleers, On the matrices in B-spline collocation methods "
        "for Riesz fractional equations and their spectral properties, Numer. Linear Algebra "
        "Appl. 30(1), e2462 (2023)"
    )
    paper_url = "https://arxiv.org/abs/2106.14834"
    summary = (
        "Solve the Riesz fractional diffusion equation −∂^α u/∂|x|^α = f with splines of degree p "
        "collocated at the Greville points. The matrix is a Toeplitz matrix plus a boundary "
        "correction; its eigenvalues follow the symbol f_{α,p}(θ), which vanishes like θ^α "
        "(so cond(A_n) grows like n^α) and whose value at π falls as p grows. Watch the "
        "spectrum sit on the symbol, the error fall at rate p + 2 − α (even p) or p + 1 − α "
        "(odd p), and GMRES converge in a handful of iterations with symbol-based (τ, "
        "circulant) preconditioners while the unpreconditioned count grows with n."
    )
    vectorized = ("intervals",)

    degree = param.Integer(
        3,
        bounds=(2, 8),
        label="spline degree p",
        doc="Degree p of the B-splines (smoothness C^{p−1}); higher p: faster convergence, "
        "smaller symbol value at π.",
    )
    alpha = param.Number(
        1.5,
        bounds=(1.05, 2.0),
        step=0.05,
        label="fractional order α",
        doc="Order α of the Riesz derivative, 1 < α ≤ 2 (α = 2 is ordinary diffusion −u'').",
    )
    intervals = param.Integer(
        128,
        bounds=(16, 2**20),
        softbounds=(16, 2**16),
        label="intervals N",
        doc="Number N of uniform intervals (h = 1/N); n = N + p − 2 unknowns. The operator is "
        "matrix-free, so N = 2^16 solves in under a second.",
    )
    rhs = param.Selector(
        objects={label: key for key, (label, _) in SOLUTIONS.items()},
        default="x4",
        label="test solution",
        doc="Exact solution (closed-form right-hand side); f = 1 has a solution that is only "
        "Hölder-α/2 at the ends.",
    )
    preconditioner = param.Selector(
        objects={
            "τ (sine transform, symbol)": "tau",
            "Strang circulant": "circulant",
            "Laplacian (α = 2)": "laplacian",
            "none": "none",
        },
        default="tau",
        label="preconditioner",
        doc="Right preconditioner of GMRES: τ algebra from the symbol, Strang circulant of the "
        "central row, the second-order tridiagonal Laplacian, or none.",
    )
    tol = param.Number(
        1e-10,
        bounds=(1e-14, 1e-2),
        label="GMRES tolerance",
        doc="Relative residual ‖b − A x‖/‖b‖ at which GMRES stops.",
    )

    def validate(self) -> None:
        check_size(self.intervals, self.degree)
        if self.preconditioner == "none" and self.intervals > UNPRECONDITIONED_CAP:
            raise StudyInputError(
                f"without a preconditioner GMRES needs ~n^(α/2) iterations: intervals N must be "
                f"at most {UNPRECONDITIONED_CAP} for preconditioner none; choose a "
                "preconditioner or lower intervals N"
            )

    def estimated_seconds(self) -> float:
        """t ≈ 2.4 s + 0.13 s × degree p + 5 µs × intervals N, for sweeps not yet cached.

        The page's sweeps (spectrum, cond up to n = 4096, errors, iteration counts) have fixed
        sizes, so their cost depends on p only; N sets the (streamed, matrix-free) live solve.
        Sweeps already computed for this (α, p) are cached and take milliseconds: the estimate
        is the first visit's. Calibrated on the serving machine (2 cores, load ~1.5, NumPy,
        2026-11-28): 2.8 s at the defaults, 3.5 s at p = 8, 2.9 s at p = 2; the solve at
        N = 65,536 took 0.3 s.
        """
        return 2.4 + 0.13 * self.degree + 5e-6 * self.intervals

    def estimated_solve_seconds(self) -> float:
        """The live solve alone (matrix-free GMRES with FFT products): t ≈ 0.05 s + 5 µs × N.

        The slope is :meth:`estimated_seconds`'s (the solve at N = 65,536, the largest size the
        page offers, took 0.3 s); the 0.05 s for setup is an allowance, not a measurement. The
        page streams the solve on the pool's quick lane when this is under a second.
        """
        return 0.05 + 5e-6 * self.intervals

    # --- the main result --------------------------------------------------------------------------
    def evaluate(self, intervals: Any = None) -> xr.Dataset:
        """Solve at the knobs; with ``intervals=[...]`` for each N (dim ``intervals``).

        Variables: ``solution``, ``exact``, ``error`` (x), ``residual`` (iteration; NaN past
        the end of a shorter run), ``max_error``, ``iterations``.
        """
        if intervals is None:
            return self._solve(self.intervals)
        sizes = np.atleast_1d(np.asarray(intervals))
        if sizes.ndim != 1 or sizes.size == 0:
            raise StudyInputError("intervals N: give one value or a 1-D list of values")
        for n_int in sizes:
            check_size(n_int, self.degree)
            if self.preconditioner == "none" and int(n_int) > UNPRECONDITIONED_CAP:
                raise StudyInputError(
                    f"intervals N must be at most {UNPRECONDITIONED_CAP} for preconditioner none"
                )
        parts = [self._solve(int(n)).drop_attrs(deep=False) for n in sizes]
        ds = xr.concat(parts, dim=xr.DataArray(sizes.astype(int), dims="intervals"), join="outer")
        ds["intervals"].attrs.update(units="1", long_name="intervals N")
        attrs = self._solve(int(sizes[0])).attrs.copy()
        for key in ("intervals", "unknowns", "converged", "error_grid_points"):
            attrs.pop(key, None)
        ds.attrs = attrs
        return ds

    def _solve(self, n_int: int) -> xr.Dataset:
        return analysis.solve(
            n_int, self.alpha, self.degree, self.rhs, self.preconditioner, tol=self.tol
        )

    def krylov_run(self, preconditioner: str | None = None) -> GMRES:
        """An unstarted GMRES at the knobs (iterate ``.steps()`` to stream the residuals)."""
        return analysis.krylov_run(
            self.intervals,
            self.alpha,
            self.degree,
            self.rhs,
            preconditioner or self.preconditioner,
            tol=self.tol,
        )

    def result_from_run(self, run: GMRES, preconditioner: str | None = None) -> xr.Dataset:
        """The :meth:`evaluate` Dataset of a finished :meth:`krylov_run`."""
        return analysis.solution_dataset(
            run,
            self.intervals,
            self.alpha,
            self.degree,
            self.rhs,
            preconditioner or self.preconditioner,
        )

    # --- the other panels -----------------------------------------------------------------------
    def symbol_curve(self, points: int = 401) -> xr.Dataset:
        theta, f = symbol_grid(self.alpha, self.degree, points)
        ds = xr.Dataset({"symbol": (("theta",), f)}, coords={"theta": theta})
        ds["symbol"].attrs.update(units="1", long_name="symbol f_{α,p}(θ)")
        ds["theta"].attrs.update(units="rad", long_name="θ")
        return ds

    def spectrum(self, intervals: int | None = None) -> xr.Dataset:
        """Sorted eigenvalues of h^α A_n on the symbol (dense; n ≤ analysis.EIGEN_CAP)."""
        wanted = int(intervals or self.intervals)
        n_int = min(wanted, analysis.EIGEN_CAP - self.degree + 2)
        if n_int < wanted:
            warn_user(
                f"eigenvalues are computed densely, so the spectrum panel shows N = {n_int} "
                f"(n ≤ {analysis.EIGEN_CAP}) rather than N = {wanted}"
            )
        return analysis.spectrum(n_int, self.alpha, self.degree)

    def symbol_vs_degree(
        self, alphas: Sequence[float] = (1.1, 1.5, 2.0), degrees: Sequence[int] = range(2, 9)
    ) -> xr.Dataset:
        values = sorted({*alphas, float(self.alpha)})
        return analysis.symbol_at_pi(values, list(degrees))

    # The sweeps are shared by every session (LRU caches; the Datasets must not be mutated).
    def conditioning(self, intervals: Sequence[int] = COND_SIZES) -> xr.Dataset:
        return _conditioning(_sizes(intervals), float(self.alpha), int(self.degree))

    def convergence(self, intervals: Sequence[int] = ERROR_SIZES) -> xr.Dataset:
        return _convergence(_sizes(intervals), float(self.alpha), int(self.degree), self.rhs)

    def iteration_counts(self, intervals: Sequence[int] = ITERATION_SIZES) -> xr.Dataset:
        return _iterations(_sizes(intervals), float(self.alpha), int(self.degree))


def _sizes(intervals: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted({int(v) for v in intervals}))


@functools.lru_cache(maxsize=32)
def _conditioning(sizes: tuple[int, ...], alpha: float, degree: int) -> xr.Dataset:
    return analysis.conditioning(sizes, alpha, degree)


@functools.lru_cache(maxsize=32)
def _convergence(sizes: tuple[int, ...], alpha: float, degree: int, rhs: str) -> xr.Dataset:
    return analysis.convergence(sizes, alpha, degree, rhs)


@functools.lru_cache(maxsize=32)
def _iterations(sizes: tuple[int, ...], alpha: float, degree: int) -> xr.Dataset:
    return analysis.iteration_counts(sizes, alpha, degree, tol=1e-8)
