"""Fractional lab: B-spline collocation for Riesz fractional diffusion (Mazza et al. 2023).

−∂^α u/∂|x|^α = f on (0, 1), 1 < α ≤ 2, with splines of degree p on N uniform intervals
collocated at the Greville points. Public API (lab brief ``shared/science/fractional.md``):

* :func:`symbol` — f_{α,p}(θ) in closed form (Hurwitz zeta);
* :func:`collocation_matrix` (dense, capped) and :func:`collocation_operator` (matrix-free: FFT
  Toeplitz part + boundary strips, O(n log n) per product, a SciPy ``LinearOperator``);
* :func:`collocation_points` (Greville abscissae);
* :func:`solve` → Dataset with ``solution``, ``error`` (dim ``x``), ``residual`` (``iteration``);
* :class:`GMRES` (iterate ``.steps()`` to stream residuals), :class:`Preconditioner`
  ("none", "tau", "circulant", "laplacian");
* :func:`spectrum`, :func:`conditioning`, :func:`convergence`, :func:`iteration_counts`;
* :class:`FractionalStudy`, the lab's Study.

Figures live in :mod:`workbench.labs.fractional.figures` (not imported here: it needs HoloViews).

>>> from workbench.labs import fractional
>>> round(float(fractional.symbol(3.141592653589793, 2.0, 4)), 6)
2.0
"""

from workbench.labs.fractional.analysis import (
    conditioning,
    convergence,
    iteration_counts,
    observed_rates,
    solve,
    spectrum,
    symbol_at_pi,
)
from workbench.labs.fractional.krylov import GMRES, PRECONDITIONERS, KrylovStep, Preconditioner
from workbench.labs.fractional.matrices import (
    DENSE_CAP,
    CollocationOperator,
    collocation_matrix,
    collocation_operator,
    collocation_points,
)
from workbench.labs.fractional.problems import exact_solution, paper_rate, right_hand_side
from workbench.labs.fractional.study import FractionalStudy
from workbench.labs.fractional.symbol import symbol

__all__ = [
    "DENSE_CAP",
    "GMRES",
    "PRECONDITIONERS",
    "CollocationOperator",
    "FractionalStudy",
    "KrylovStep",
    "Preconditioner",
    "collocation_matrix",
    "collocation_operator",
    "collocation_points",
    "conditioning",
    "convergence",
    "exact_solution",
    "iteration_counts",
    "observed_rates",
    "paper_rate",
    "right_hand_side",
    "solve",
    "spectrum",
    "symbol",
    "symbol_at_pi",
]
