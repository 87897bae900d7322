"""The spectral symbol f_{α,p} of the B-spline collocation matrices (Mazza et al. 2023, §3).

f_{α,p}(θ) = Σ_{j∈ℤ} |θ + 2πj|^α (sin(θ/2 + πj)/(θ/2 + πj))^{p+1}, θ ∈ [−π, π]: the centred
B-spline's Fourier transform times the Riesz symbol |ξ|^α, summed by Poisson. The sorted
eigenvalues of h^α A_n follow its sorted samples (lab brief ``shared/science/fractional.md``).

Closed form used here (the plain sum converges like |j|^{α−p−1} and, for even p, alternates):
with q = θ/(2π) and s = p + 1 − α, for θ ∈ (0, π],

    f_{α,p}(θ) = (2 sin(θ/2))^{p+1} (2π)^{−s} [Z(q) + Z(1 − q)],

Z(a) = ζ(s, a) (Hurwitz zeta) for odd p, Z(a) = 2^{−s}[ζ(s, a/2) − ζ(s, (a+1)/2)] for even p
(the alternating Hurwitz sum; at s = 1, i.e. p = 2 and α = 2, it is ψ((a+1)/2) − ψ(a/2)).
At α = 2 it gives 2 − 2cos θ (p = 2, 3), (2 − 2cos θ)(3 + cos θ)/4 (p = 4).

>>> round(float(symbol(np.pi, 1.5, 2)), 4)
2.4841
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, zeta

from workbench.study import StudyInputError


def check_alpha_degree(alpha: float, degree: int) -> tuple[float, int]:
    """Validated (α, p): 1 < α ≤ 2 and p ≥ 2 an integer (the symbol's series needs p ≥ 2)."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise StudyInputError(f"fractional order α must be a number, got {alpha!r}") from None
    if not (np.isfinite(a) and 1.0 < a <= 2.0):
        raise StudyInputError(f"fractional order α must lie in (1, 2], got {alpha}")
    if isinstance(degree, bool) or int(degree) != degree:
        raise StudyInputError(f"spline degree p must be a whole number, got {degree!r}")
    p = int(degree)
    if p < 2:
        raise StudyInputError(f"spline degree p must be at least 2, got {p}")
    return a, p


def _hurwitz_sum(s: float, a: np.ndarray, even: bool) -> np.ndarray:
    if not even:
        return zeta(s, a)
    if s == 1.0:  # ζ(1, ·) diverges; the alternating sum is a digamma difference
        return 0.5 * (digamma((a + 1.0) / 2.0) - digamma(a / 2.0))
    return 2.0**-s * (zeta(s, a / 2.0) - zeta(s, (a + 1.0) / 2.0))


def symbol(theta, alpha: float, degree: int) -> np.ndarray:
    """f_{α,p}(θ) (even in θ; 0 at θ = 0), accurate to ~1e−12 relative for p ≥ 2.

    ``theta`` is reduced to |θ| ∈ [0, π] (the symbol is even and 2π-periodic).
    """
    a, p = check_alpha_degree(alpha, degree)
    th = np.abs(np.asarray(theta, dtype=float))
    th = np.where(th > np.pi, 2 * np.pi - np.mod(th, 2 * np.pi), th)
    th = np.abs(th)
    s = p + 1.0 - a
    out = np.zeros_like(th)
    pos = th > 0
    q = th[pos] / (2.0 * np.pi)
    even = p % 2 == 0
    bracket = _hurwitz_sum(s, q, even) + _hurwitz_sum(s, 1.0 - q, even)
    out[pos] = (2.0 * np.sin(th[pos] / 2.0)) ** (p + 1) * (2.0 * np.pi) ** (-s) * bracket
    return out if out.ndim else float(out)


def symbol_grid(alpha: float, degree: int, points: int = 401) -> tuple[np.ndarray, np.ndarray]:
    """(θ, f(θ)) on a uniform grid of [0, π]."""
    theta = np.linspace(0.0, np.pi, int(points))
    return theta, symbol(theta, alpha, degree)
