"""Theory of the Gaussian KDE with n = e^{αd} Gaussian points: thresholds, stable index, KL/d,
the random-energy-model participation ratio, and the regime of a bandwidth.

Sources, line by line: the lab brief ``shared/science/kde.md`` ("Formulas for Gaussian data",
derived there from the random-energy-model argument of Biroli & Mézard, arXiv 2408.05807) for the
d → ∞ formulas, and its "Finite-d theory" section for the effective values at finite d.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import scipy.stats

from workbench.labs.kde.validation import check_alpha, check_dim, positive_bandwidths

#: Regime names in the order of :func:`regime_of`'s codes (most condensed first).
REGIMES = ("condensed", "heavy-tailed", "CLT")


def _rate(s: np.ndarray) -> np.ndarray:
    """Large-deviation rate I(s) = (s² − s − log s)/2 of the scaled distance u = s + s² (brief)."""
    return 0.5 * (s * s - s - np.log(s))


def _solve_s(alpha: np.ndarray) -> np.ndarray:
    """s* ∈ (0, 1) with I(s*) = α, vectorised bisection in log s.

    I decreases on (0, 1) from +∞ to 0, and I(s) ≥ α at log s = −2α − 1, so the root lies in
    [−2α − 1, 0]; 200 halvings reach full double precision for any α in the lab's range.
    """
    lo = -2.0 * alpha - 1.0
    hi = np.zeros_like(alpha)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = _rate(np.exp(mid)) > alpha  # still too far from s = 1: move right
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.exp(0.5 * (lo + hi))


def effective_min_distance(alpha: Any, dim: int) -> np.ndarray:
    """u_eff = F⁻¹(1/n)/d, F the CDF of the non-central χ²(d, nc = d), n = e^{αd}.

    The typical smallest scaled squared distance among n Gaussian points at finite d (brief,
    "Finite-d theory"); it exceeds the d → ∞ value u* by about [½ log(2πd) + O(1)]/d.
    """
    a = check_alpha(alpha)
    return scipy.stats.ncx2.ppf(np.exp(-a * dim), dim, dim) / dim


def _thresholds_from_s(s: np.ndarray, u: np.ndarray) -> dict[str, np.ndarray]:
    """h_CLT² = 2s/(1 − s), h_G² = s/(1 − s), h_KL² = u (brief). NaN where s ≥ 1 (no condensation)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(s < 1, s / (1 - s), np.nan)
    return {
        "h_clt": np.sqrt(2 * ratio),
        "h_g": np.sqrt(ratio),
        "h_kl": np.sqrt(u),
        "s_star": s,
        "u_star": u,
    }


def regime_thresholds(alpha: Any, dim: int | None = None) -> dict[str, Any]:
    """Regime thresholds h_CLT > h_G and the KL-optimal bandwidth h_KL at α = (log n)/d.

    Parameters
    ----------
    alpha : float or array
        α > 0.
    dim : int, optional
        None: the d → ∞ values. Given: the finite-d effective values (brief, "Finite-d theory").

    Returns
    -------
    dict
        ``h_clt``, ``h_g``, ``h_kl``, ``s_star``, ``u_star`` (floats for a scalar α, arrays
        otherwise). d → ∞: s* ∈ (0, 1) solves (s² − s − log s)/2 = α and u* = s*(1 + s*).
        Finite d: u_eff = ncx2.ppf(1/n, d, d)/d with n = e^{αd}, s_eff solves s(1 + s) = u_eff.
        Then h_CLT² = 2s/(1 − s), h_G² = s/(1 − s), h_KL² = u. Where s_eff ≥ 1 (fewer than about
        one point: no extreme-value regime) the h's are NaN.

    Examples
    --------
    >>> t = regime_thresholds(0.1)
    >>> round(t["h_clt"], 4), round(t["h_g"], 4), round(t["h_kl"], 4)
    (1.9386, 1.3708, 1.0386)
    """
    a = check_alpha(alpha)
    dim = None if dim is None else check_dim(dim)
    if a.ndim == 0:
        return dict(_scalar_thresholds(float(a), dim))
    return _thresholds(a, dim)


def _thresholds(a: np.ndarray, dim: int | None) -> dict[str, np.ndarray]:
    if dim is None:
        s = _solve_s(np.atleast_1d(a))
        u = s * (1 + s)
    else:
        u = np.atleast_1d(effective_min_distance(a, dim))
        s = 0.5 * (np.sqrt(1 + 4 * u) - 1)  # positive root of s² + s − u = 0
    return _thresholds_from_s(s, u)


@functools.lru_cache(maxsize=256)
def _scalar_thresholds(alpha: float, dim: int | None) -> tuple[tuple[str, float], ...]:
    """One (α, d): memoised, because a bandwidth move asks for the same thresholds several
    times (SciPy's ncx2.ppf inversion and the bisection cost milliseconds each)."""
    return tuple((k, float(v[0])) for k, v in _thresholds(np.asarray(alpha), dim).items())


def effective_thresholds(alpha: float, dim: int) -> dict[str, float]:
    """The d → ∞ thresholds and the finite-d ones (suffix ``_eff``) at one (α, d).

    Where the finite-d value is undefined (s_eff ≥ 1: about one point, no condensed regime) the
    ``_eff`` value falls back to the d → ∞ one, so a page always has a line to draw.

    >>> t = effective_thresholds(0.1, 100)
    >>> round(t["h_kl_eff"], 3), round(t["h_g_eff"], 3), round(t["h_g"], 3)
    (1.081, 1.495, 1.371)
    """
    inf = regime_thresholds(float(alpha))
    eff = regime_thresholds(float(alpha), dim)
    out = dict(inf)
    for key, value in eff.items():
        out[f"{key}_eff"] = value if math.isfinite(value) else inf[key]
    return out


def stable_index(bandwidth: Any, alpha: Any, dim: int | None = None) -> Any:
    """Stable index μ(h, α) = h² (1 − s*)/s* = h²/h_G² (brief), broadcasting.

    μ > 2: CLT; 1 < μ < 2: α-stable (heavy-tailed); μ < 1: extreme-value / condensed. With
    ``dim``, s_eff replaces s* (finite-d theory).
    """
    h, _ = positive_bandwidths(bandwidth)
    t = regime_thresholds(alpha, dim)
    return _shape_like(h**2 / np.asarray(t["h_g"]) ** 2, bandwidth, alpha)


def _shape_like(values: np.ndarray, *inputs: Any) -> Any:
    """A Python float when every input was a scalar, else the array."""
    if all(np.ndim(x) == 0 for x in inputs):
        return float(values)
    return values


def regime_of(mu: Any) -> np.ndarray:
    """Regime code of a stable index μ (brief): 0 condensed (μ < 1), 1 heavy-tailed
    (1 ≤ μ < 2, α-stable), 2 CLT (μ ≥ 2). Names in :data:`REGIMES`.

    >>> regime_of([0.5, 1.0, 1.9, 2.0]).tolist()
    [0, 1, 1, 2]
    """
    mu = np.asarray(mu, dtype=float)
    return np.where(mu < 1, 0, np.where(mu < 2, 1, 2))


def regime_name(bandwidth: float, alpha: float, dim: int | None = None) -> str:
    """The regime of one bandwidth, "condensed", "heavy-tailed" or "CLT" (μ(h, α) of the brief).

    >>> regime_name(1.0, 0.1), regime_name(1.5, 0.1), regime_name(2.0, 0.1)
    ('condensed', 'heavy-tailed', 'CLT')
    """
    return REGIMES[int(regime_of(stable_index(float(bandwidth), float(alpha), dim)))]


def kl_per_dim(bandwidth: Any, alpha: Any, dim: int | None = None) -> Any:
    """Theory KL(ρ‖ρ̂_h)/d for Gaussian data (brief, "Formulas for Gaussian data").

    h ≥ h_G: ½[log(1 + h²) + 1/(1 + h²) − 1] (ρ̂ behaves as the smoothed density ρ ∗ K_h);
    h < h_G: α − ½ + ½ log h² + u*/(2h²) (the nearest point at scaled distance u* dominates).
    Continuous at h_G and minimal at h_KL = √u* as d → ∞. With ``dim`` the same formulas with
    u_eff and h_G,eff ("finite-d theory"): then the condensed branch is minimal at h_KL,eff and
    the curve jumps by α − I(s_eff) > 0 at h_G,eff, the price of the single-nearest-point
    approximation. Broadcasts over ``bandwidth`` and ``alpha``.
    """
    h, _ = positive_bandwidths(bandwidth)
    a = check_alpha(alpha)
    t = regime_thresholds(a, dim)
    h_g, u = np.asarray(t["h_g"]), np.asarray(t["u_star"])
    h2 = h * h
    smooth = 0.5 * (np.log1p(h2) + 1.0 / (1.0 + h2) - 1.0)
    condensed = a - 0.5 + 0.5 * np.log(h2) + u / (2.0 * h2)
    return _shape_like(np.where(h < h_g, condensed, smooth), bandwidth, alpha)


def participation_theory(bandwidth: Any, alpha: Any, dim: int | None = None) -> Any:
    """Random-energy-model participation ratio E[Y₂] = max(0, 1 − μ), μ = h²/h_G² (brief).

    d → ∞ by default; with ``dim`` the effective h_G,eff (brief: ⟨Y₂⟩ ≈ 1 − h²/h_G,eff², rounded
    near h_G at finite d).
    """
    mu = np.asarray(stable_index(bandwidth, alpha, dim))
    return _shape_like(np.clip(1.0 - mu, 0.0, None), bandwidth, alpha)


def expected_log_density(bandwidth: Any, radius: float, dim: int) -> np.ndarray:
    """log E[ρ̂_h(x) | x] for Gaussian data at |x| = r (brief, exact Gaussian convolution):
    E[ρ̂_h | x] = (ρ ∗ K_h)(x) = (2π(1 + h²))^{−d/2} exp(−r²/(2(1 + h²)))."""
    h, _ = positive_bandwidths(bandwidth)
    return -0.5 * dim * (np.log(2 * np.pi) + np.log1p(h**2)) - radius**2 / (2.0 * (1.0 + h**2))


def finite_d_optimum(alpha: float, dims: Any) -> dict[str, np.ndarray]:
    """h_KL,eff(d) over ``dims`` at fixed α (brief, "Finite-d theory") and the d → ∞ h_KL.

    >>> t = finite_d_optimum(0.1, [100])
    >>> round(float(t["h_kl_eff"][0]), 3), round(float(t["h_kl"][0]), 3)
    (1.081, 1.039)
    """
    dims = np.atleast_1d(np.asarray(dims, dtype=int))
    h_eff = np.array([regime_thresholds(float(alpha), int(d))["h_kl"] for d in dims])
    return {
        "dim": dims,
        "h_kl_eff": h_eff,
        "h_kl": np.full(dims.size, regime_thresholds(float(alpha))["h_kl"]),
    }
