"""Test problems −∂^α u/∂|x|^α = f on (0, 1), u = 0 outside, with closed-form f (or u).

Polynomials u vanishing at 0 and 1 (lab brief ``shared/science/fractional.md``):
D_L^α x^k = Γ(k+1)/Γ(k+1−α) x^{k−α}, and for a symmetric u (u(x) = u(1−x)) D_R^α u(x) =
(D_L^α u)(1 − x), so f(x) = [(D_L^α u)(x) + (D_L^α u)(1 − x)]/(2 cos(απ/2)).

``"one"``: f = 1, whose solution is u = C (x(1 − x))^{α/2}, C = Γ(1/2)/(2^α Γ(1 + α/2)
Γ((1 + α)/2)) (the fractional Laplacian's torsion function on a ball, Getoor 1961 / Dyda 2012,
rescaled from (−1, 1) to (0, 1)); at α = 2 it is x(1 − x)/2. It is only Hölder-α/2 at the ends,
so it shows the low rates a singular solution gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.special import binom, gammaln, rgamma

from workbench.labs.fractional.splines import riesz_scale
from workbench.study import StudyInputError

#: Test solutions: key → (label, exponent a in u = x^a (1−x)^a; None for f = 1).
SOLUTIONS = {
    "x4": ("u = x⁴(1−x)⁴", 4),
    "x3": ("u = x³(1−x)³", 3),
    "x2": ("u = x²(1−x)² (a spline for p ≥ 4)", 2),
    "one": ("f = 1, u = C (x(1−x))^{α/2}", None),
}


def check_rhs(rhs: str) -> str:
    if rhs not in SOLUTIONS:
        raise StudyInputError(f"test solution must be one of {', '.join(SOLUTIONS)}; got {rhs!r}")
    return rhs


def _left_derivative_poly(power: int, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """x ↦ D_L^α [x^a (1−x)^a] = Σ_j C(a,j)(−1)^j Γ(a+j+1)/Γ(a+j+1−α) x^{a+j−α}."""
    j = np.arange(power + 1)
    k = power + j
    coef = binom(power, j) * (-1.0) ** j * np.exp(gammaln(k + 1.0)) * rgamma(k + 1.0 - alpha)

    def d_left(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return np.sum(coef[:, None] * x[None, :] ** (k[:, None] - alpha), axis=0)

    return d_left


def exact_solution(rhs: str, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """u(x) for the test problem (0 outside [0, 1])."""
    check_rhs(rhs)
    power = SOLUTIONS[rhs][1]
    if power is None:
        c = math.gamma(0.5) / (2.0**alpha * math.gamma(1 + alpha / 2) * math.gamma((1 + alpha) / 2))
        return lambda x: c * np.clip(np.asarray(x) * (1 - np.asarray(x)), 0, None) ** (alpha / 2)
    return lambda x: np.clip(np.asarray(x) * (1 - np.asarray(x)), 0, None) ** power


def right_hand_side(rhs: str, alpha: float) -> Callable[[np.ndarray], np.ndarray]:
    """f(x) = (−∂^α u/∂|x|^α)(x) for x in (0, 1), in closed form."""
    check_rhs(rhs)
    power = SOLUTIONS[rhs][1]
    if power is None:
        return lambda x: np.ones_like(np.asarray(x, dtype=float))
    d_left = _left_derivative_poly(power, alpha)
    scale = riesz_scale(alpha)
    return lambda x: scale * (d_left(x) + d_left(1.0 - np.asarray(x, dtype=float)))


def paper_rate(alpha: float, degree: int) -> float:
    """The paper's max-norm rate for smooth u: p + 2 − α (even p), p + 1 − α (odd p)."""
    return degree + (2 if degree % 2 == 0 else 1) - alpha
