"""B-splines on a uniform grid and their exact Riemann–Liouville fractional derivatives.

Everything here works in scaled coordinates ξ = x/h (h = 1/N, knots at the integers 0..N), where
the fractional derivatives of a B-spline do not depend on N: D_L^α in x is h^{−α} D_L^α in ξ.

The left Riemann–Liouville derivative of a compactly supported piecewise polynomial B with
support [a, b] is computed in three zones (lab brief ``shared/science/fractional.md``):

* a < ξ ≤ b + ¼: the truncated-power sum. Writing B(ξ) = Σ_τ Σ_k c_{τ,k} (ξ − τ)_+^k (c from
  the jumps of the k-th derivative at each knot τ),
  D_L^α B(ξ) = Σ c_{τ,k} Γ(k+1)/Γ(k+1−α) (ξ − τ)_+^{k−α}. Near the support its terms are at
  most ~(p+2)^{p−α}, so little is lost to cancellation.
* b + ¼ < ξ < c + 4w (c the centre, w the half-width): outside the support the derivative is a
  regular integral, D_L^α B(ξ) = (1/Γ(−α)) ∫ B(s) (ξ − s)^{−1−α} ds (differentiate the RL
  integral twice under the sign), done by Gauss–Legendre on every knot span. The singularity
  is at least ¼ span away, so 24 nodes reach rounding level (Bernstein-ellipse ρ ≥ 2.6).
* ξ ≥ c + 4w: the same integral by its far-field (multipole) series
  Σ_r (1+α)_r/r! μ_r (ξ − c)^{−1−α−r}, μ_r = ∫ B(s)(s − c)^r ds, with ratio ≤ ¼ per term.

The plain truncated-power sum far from the support cancels catastrophically (its terms grow
like ξ^{p−α} while the result decays like ξ^{−1−α}); the brief measured that this spoils the
convergence rate for p = 5 from N ≈ 64 on. The zones above keep every entry at rounding level.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.interpolate import BSpline
from scipy.special import poch, rgamma

#: Beyond the support by more than this (in knot spans), the regular integral is used.
_NEAR = 0.25
#: Gauss–Legendre nodes per knot span in the near-field integral and for the moments.
_GAUSS_NODES = 24
#: Far field: distance from the centre (in half-widths) beyond which the multipole series is used.
_FAR = 4.0
#: Terms of the multipole series (ratio ≤ 1/_FAR per term: 4^−30 ≈ 1e−18).
_FAR_TERMS = 30


def open_knots(intervals: int, degree: int) -> np.ndarray:
    """Open uniform knot vector in ξ units: p+1 zeros, 1..N−1, p+1 copies of N."""
    p, n_int = int(degree), int(intervals)
    return np.concatenate(
        [np.zeros(p + 1), np.arange(1, n_int, dtype=float), np.full(p + 1, float(n_int))]
    )


def greville(intervals: int, degree: int) -> np.ndarray:
    """Greville abscissae (ξ units) of the N + p − 2 B-splines kept under Dirichlet conditions.

    τ_j = (t_{j+1} + … + t_{j+p})/p for B_j with knots t_j..t_{j+p+1}; the first and the last
    B-spline (nonzero at 0 and 1) are dropped. Interior ones are midpoints (even p) or knots
    (odd p); the first is h/p·… e.g. h/3 for p = 3.
    """
    t = open_knots(intervals, degree)
    p = int(degree)
    total = int(intervals) + p
    window = np.concatenate([[0.0], np.cumsum(t)])  # running sums: mean of t[j+1 .. j+p]
    sums = (window[p + 1 : p + 1 + total] - window[1 : 1 + total]) / p
    return sums[1:-1]


class PiecewisePolynomial:
    """One B-spline (given by its local knots, ξ units) prepared for fractional derivatives."""

    def __init__(self, knots: np.ndarray) -> None:
        self.knots = np.asarray(knots, dtype=float)
        self.degree = len(self.knots) - 2
        self.a, self.b = float(self.knots[0]), float(self.knots[-1])
        self.centre = 0.5 * (self.a + self.b)
        self.half_width = 0.5 * (self.b - self.a)
        self._spline = BSpline.basis_element(self.knots, extrapolate=False)
        self.taus, self.jumps = self._truncated_powers()
        nodes, weights = np.polynomial.legendre.leggauss(_GAUSS_NODES)
        spans = np.unique(self.knots)
        left, right = spans[:-1], spans[1:]
        s = (0.5 * (right - left)[:, None] * (nodes[None, :] + 1.0) + left[:, None]).ravel()
        w = (0.5 * (right - left)[:, None] * weights[None, :]).ravel()
        values = np.nan_to_num(self._spline(s))
        self.nodes, self.weighted = s, w * values
        r = np.arange(_FAR_TERMS)
        self.moments = ((s - self.centre)[None, :] ** r[:, None]) @ self.weighted

    def __call__(self, xi: np.ndarray) -> np.ndarray:
        """B(ξ) (zero outside the support)."""
        return np.nan_to_num(self._spline(np.asarray(xi, dtype=float)))

    def _truncated_powers(self) -> tuple[np.ndarray, np.ndarray]:
        """Knots τ and c[τ, k] with B(ξ) = Σ c_{τ,k} (ξ − τ)_+^k (k = 0..p)."""
        p = self.degree
        breaks = np.unique(self.knots)
        k = np.arange(p + 1)
        fact = np.array([math.factorial(int(j)) for j in k], dtype=float)
        # Taylor coefficients of each span's polynomial about the span's midpoint (exact: the
        # derivatives of a degree-p polynomial at one point determine it).
        taylor = []
        for lo, hi in zip(breaks[:-1], breaks[1:], strict=True):
            mid = 0.5 * (lo + hi)
            taylor.append((mid, np.array([self._spline(mid, nu=int(j)) for j in k]) / fact))

        def derivatives_at(piece: int, x: float) -> np.ndarray:
            """k-th derivatives (k = 0..p) at x of span ``piece``'s polynomial (0 outside)."""
            if piece < 0 or piece >= len(taylor):
                return np.zeros(p + 1)
            mid, coef = taylor[piece]
            d = x - mid
            out = np.zeros(p + 1)
            for j in k:  # d^j/dx^j Σ_m coef_m (x−mid)^m = Σ_{m≥j} coef_m m!/(m−j)! d^{m−j}
                m = k[j:]
                out[j] = np.sum(coef[m] * fact[m] / fact[m - j] * d ** (m - j))
            return out

        jumps = np.array(
            [(derivatives_at(i, x) - derivatives_at(i - 1, x)) / fact for i, x in enumerate(breaks)]
        )
        # Derivatives below the knot's order of continuity do not jump; clear their rounding.
        jumps[np.abs(jumps) < 1e-12 * np.abs(jumps).max()] = 0.0
        return breaks, jumps

    def left_derivative(self, xi: np.ndarray, alpha: float) -> np.ndarray:
        """D_L^α B(ξ) with the lower terminal anywhere ≤ a (B vanishes there); 0 for ξ ≤ a."""
        xi = np.asarray(xi, dtype=float)
        out = np.zeros_like(xi)
        near = (xi > self.a) & (xi <= self.b + _NEAR)
        far = xi >= self.centre + _FAR * self.half_width
        mid = (xi > self.b + _NEAR) & ~far
        if near.any():
            out[near] = self._truncated_sum(xi[near], alpha)
        if mid.any():
            kernel = (xi[mid][:, None] - self.nodes[None, :]) ** (-1.0 - alpha)
            out[mid] = rgamma(-alpha) * (kernel @ self.weighted)
        if far.any():
            inv = 1.0 / (xi[far] - self.centre)
            r = np.arange(_FAR_TERMS)
            coef = poch(1.0 + alpha, r) * rgamma(r + 1.0) * self.moments
            series = np.polynomial.polynomial.polyval(inv, coef)  # Horner in 1/(ξ − c)
            out[far] = rgamma(-alpha) * inv ** (1.0 + alpha) * series
        return out

    def _truncated_sum(self, xi: np.ndarray, alpha: float) -> np.ndarray:
        p = self.degree
        k = np.arange(p + 1, dtype=float)
        gam = np.array([math.gamma(j + 1.0) for j in k]) * rgamma(k + 1.0 - alpha)
        total = np.zeros_like(xi)
        for tau, c in zip(self.taus, self.jumps, strict=True):
            d = xi - tau
            pos = d > 0
            if not pos.any():
                continue
            for j in np.flatnonzero(c):
                if gam[j] == 0.0:  # 1/Γ(k+1−α) = 0 (α = 2, k ≤ 1): no contribution
                    continue
                total[pos] += c[j] * gam[j] * d[pos] ** (k[j] - alpha)
        return total

    def riesz(self, xi: np.ndarray, alpha: float) -> np.ndarray:
        """(−∂^α B/∂|x|^α)(ξ) in ξ units: (D_L^α B + D_R^α B)/(2 cos(απ/2)).

        D_R^α B(ξ) = D_L^α B̃(b − ξ) with B̃(η) = B(b − η), the mirror image (knots b − t).
        """
        mirrored = _element(tuple(self.b - self.knots[::-1]))
        xi = np.asarray(xi, dtype=float)
        total = self.left_derivative(xi, alpha) + mirrored.left_derivative(self.b - xi, alpha)
        return total * riesz_scale(alpha)


def riesz_scale(alpha: float) -> float:
    """1/(2 cos(απ/2)): −∂^α/∂|x|^α = (D_L^α + D_R^α)/(2 cos(απ/2)); −1/2 at α = 2."""
    return 1.0 / (2.0 * math.cos(alpha * math.pi / 2.0))


@functools.lru_cache(maxsize=256)
def _element(knots: tuple[float, ...]) -> PiecewisePolynomial:
    return PiecewisePolynomial(np.array(knots))


def element(knots) -> PiecewisePolynomial:
    """The (cached) prepared B-spline with these local knots (ξ units)."""
    return _element(tuple(float(k) for k in knots))


def cardinal(degree: int) -> PiecewisePolynomial:
    """The cardinal B-spline N_p with knots 0, 1, …, p+1."""
    return element(np.arange(int(degree) + 2, dtype=float))


def spline_values(intervals: int, degree: int, coefficients, x) -> np.ndarray:
    """u_h(x) = Σ_j c_j B_j(x) over the kept B-splines (x in [0, 1])."""
    t = open_knots(intervals, degree) / float(intervals)
    c = np.concatenate([[0.0], np.asarray(coefficients, dtype=float), [0.0]])
    return BSpline(t, c, int(degree), extrapolate=False)(np.asarray(x, dtype=float))


__all__ = [
    "PiecewisePolynomial",
    "cardinal",
    "element",
    "greville",
    "open_knots",
    "riesz_scale",
    "spline_values",
]
