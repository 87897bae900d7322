"""Infinite-width theory: kernel and correlation flows, susceptibilities, criticality, NTK, vertex.

Roberts, Yaida & Hanin, *The Principles of Deep Learning Theory* (2022), ch. 4–5 and 8–9;
Poole et al. 2016 and Schoenholz et al. 2017 for the order/chaos picture. Conventions (as the
issue's API): K^(0) = k0 = |x|²/n₀, K^(1) = C_b + C_W k0, and for l ≥ 1
K^(l+1) = C_b + C_W ⟨σ²⟩_{K^(l)}; array index l is layer l.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.optimize import brentq

from workbench.labs.criticality.activations import (
    PAIR_ACCURATE_K,
    SCALE_INVARIANT,
    check_activation,
    gauss_moments,
    pair_expectations,
)
from workbench.study import StudyInputError, checkpoint, warn_user

#: Activations whose pair expectations are closed forms (exact at every K).
CLOSED_FORM_PAIRS = ("relu", "linear")
#: Deepest flow computed (the dashboard's depth knob is capped below this).
MAX_DEPTH = 100_000


def _check(cw, cb, depth=None, k0=None):
    if not (np.all(np.isfinite(cw)) and np.all(np.asarray(cw) > 0)):
        raise StudyInputError(f"weight variance C_W must be greater than 0; got {cw}")
    if not (np.all(np.isfinite(cb)) and np.all(np.asarray(cb) >= 0)):
        raise StudyInputError(f"bias variance C_b must be at least 0; got {cb}")
    if depth is not None and not (1 <= int(depth) <= MAX_DEPTH and int(depth) == depth):
        raise StudyInputError(
            f"depth L must be a whole number between 1 and {MAX_DEPTH}; got {depth}"
        )
    if k0 is not None and not (np.isfinite(k0) and k0 > 0):
        raise StudyInputError(f"input second moment k0 must be greater than 0; got {k0}")


def kernel_flow(activation: str, cw: float, cb: float, depth: int, k0: float) -> np.ndarray:
    """K^(l) for l = 0..depth: K^(0) = k0, K^(1) = C_b + C_W k0, K^(l+1) = C_b + C_W⟨σ²⟩_{K^(l)}.

    ``cw`` and ``cb`` may be arrays (broadcast); the result then has the layer axis last.
    An overflowing kernel (e.g. ReLU with C_W > 2 at great depth) becomes inf, not an error.
    """
    activation = check_activation(activation)
    _check(cw, cb, depth, k0)
    cw, cb = np.broadcast_arrays(np.asarray(cw, float), np.asarray(cb, float))
    out = np.empty(cw.shape + (int(depth) + 1,))
    out[..., 0] = k0
    k = cb + cw * k0
    with np.errstate(over="ignore", invalid="ignore"):
        for layer in range(1, int(depth) + 1):
            out[..., layer] = k
            k = cb + cw * gauss_moments(activation, np.minimum(k, 1e300))["s2"]
            if layer % 64 == 0:
                checkpoint()
    return out


def correlation_flow(
    activation: str, cw: float, cb: float, depth: int, k0: float, rho0: float
) -> np.ndarray:
    """ρ^(l) = K^(l)_12/K^(l)_11 for l = 0..depth, two inputs of equal norm (|x|²/n₀ = k0).

    ρ^(0) = rho0 is the inputs' correlation; K^(1)_12 = C_b + C_W rho0 k0 and
    K^(l+1)_12 = C_b + C_W⟨σ(z_a)σ(z_b)⟩ under the 2×2 Gaussian of layer l (2-D Gauss–Hermite,
    ReLU arc-cosine closed form). Where K^(l) overflows or underflows to 0, ρ is undefined: NaN.
    """
    activation = check_activation(activation)
    _check(cw, cb, depth, k0)
    _check_rho(rho0)
    return correlation_from_kernel(
        activation, cw, cb, kernel_flow(activation, cw, cb, depth, k0), rho0
    )


def _check_rho(rho0):
    if not -1.0 <= rho0 <= 1.0:
        raise StudyInputError(f"input correlation ρ₀ must be between -1 and 1; got {rho0}")


def correlation_from_kernel(activation: str, cw, cb, kern: np.ndarray, rho0: float) -> np.ndarray:
    """:func:`correlation_flow` given the diagonal kernel ``kern`` (l = 0..depth) already computed."""
    depth = kern.size - 1
    rho = np.full(depth + 1, np.nan)
    rho[0] = rho0
    k12 = cb + cw * rho0 * kern[0]
    for layer in range(1, depth + 1):
        k = kern[layer]
        if not (np.isfinite(k) and k > 0):
            break  # overflowed or underflowed: the correlation is undefined from here on
        rho[layer] = min(k12 / k, 1.0)
        k12 = cb + cw * pair_expectations(activation, k, rho[layer])[0]
        if layer % 64 == 0:
            checkpoint()
    big = kern[1:][np.isfinite(rho[1:])]
    if activation not in CLOSED_FORM_PAIRS and big.size and big.max() > PAIR_ACCURATE_K:
        warn_user(
            f"the kernel reaches K = {big.max():.3g}: above K = {PAIR_ACCURATE_K:g} the two-input "
            "Gaussian expectations of this activation are accurate to about 1e-5 (K = 10) to 1e-3 "
            "(K = 30) only, so read the correlation flow as approximate there"
        )
    return rho


def susceptibilities(activation: str, cw, cb, k) -> tuple[np.ndarray, np.ndarray]:
    """(χ_∥, χ_⊥) at kernel K: χ_∥ = C_W d⟨σ²⟩_K/dK, χ_⊥ = C_W⟨σ'²⟩_K (book eq. 5.9, 5.50).

    ``cb`` does not enter (it shifts K, not the derivatives); it is accepted for the API's
    symmetry. Arrays broadcast.
    """
    _check(cw, cb)
    m = gauss_moments(activation, k)
    cw = np.asarray(cw, float)
    return cw * m["dk"], cw * m["d2"]


def _criticality_condition(activation: str, k: float) -> float:
    """χ_∥/χ_⊥ − 1 at K with C_W = 1/⟨σ'²⟩_K: zero where both susceptibilities are 1."""
    m = gauss_moments(activation, k)
    return float(m["dk"] / m["d2"] - 1.0)


@functools.cache
def critical_point(activation: str) -> tuple[float, float]:
    """(C_b, C_W) where χ_∥ = χ_⊥ = 1 at the fixed point K* (book §5.2–5.3).

    Scale-invariant σ: C_b = 0, C_W = 1/A₂ (ReLU (0, 2), linear (0, 1)). tanh (K* = 0 class):
    χ_∥ → C_W σ'(0)² as K → 0, so (0, 1/σ'(0)²) = (0, 1). GELU and SiLU have a K* > 0 where
    ⟨σσ''⟩_K = 0 (found by Brent's method); then C_W = 1/⟨σ'²⟩_{K*}, C_b = K* − C_W⟨σ²⟩_{K*}.
    Sigmoid has none (σ(0) ≠ 0 forces C_b < 0): StudyInputError.
    """
    key = check_activation(activation)
    if key in SCALE_INVARIANT:
        return 0.0, float(1.0 / gauss_moments(key, 1.0)["d2"])
    if key == "tanh":
        return 0.0, 1.0
    if key == "sigmoid":
        raise StudyInputError(
            "sigmoid has no critical point: χ_∥ = χ_⊥ = 1 would need a negative bias variance "
            "C_b (σ(0) = ½ ≠ 0); choose tanh (= 2σ(2z) − 1) instead"
        )
    grid = np.geomspace(1e-2, 1e2, 400)
    f = np.array([_criticality_condition(key, k) for k in grid])
    i = int(np.flatnonzero(np.sign(f[:-1]) != np.sign(f[1:]))[0])
    kstar = brentq(lambda k: _criticality_condition(key, k), grid[i], grid[i + 1], xtol=1e-13)
    m = gauss_moments(key, kstar)
    cw = float(1.0 / m["d2"])
    return float(kstar - cw * m["s2"]), cw


def fixed_point(activation: str, cw: float, cb: float) -> float:
    """The stable fixed point K* = C_b + C_W⟨σ²⟩_{K*} (χ_∥(K*) < 1), or inf if K diverges.

    Solved by Brent's method on g(K) = K − C_W⟨σ²⟩_K − C_b beyond the minimum of g (the branch
    where χ_∥ = C_W d⟨σ²⟩/dK < 1); K* = 0 when C_b = 0 and 0 is the only stable fixed point.
    """
    key = check_activation(activation)
    _check(cw, cb)
    grid = np.concatenate([[0.0], np.geomspace(1e-10, 1e4, 600)])
    g = grid - cw * gauss_moments(key, grid)["s2"] - cb
    i0 = int(np.argmin(g))
    if cb == 0 and i0 == 0:
        return 0.0
    tangent = _tangent_fixed_point(key, cw, cb, grid)
    if tangent is not None:
        return tangent
    tail = g[i0:]
    above = np.flatnonzero(tail >= 0)
    if above.size == 0:
        return math.inf
    j = i0 + int(above[0])
    if j == 0 or g[j] == 0:
        return float(grid[j])

    def gk(k):
        return k - cw * float(gauss_moments(key, k)["s2"]) - cb

    return float(brentq(gk, grid[j - 1], grid[j], xtol=1e-14, rtol=1e-14))


def _tangent_fixed_point(key, cw, cb, grid) -> float | None:
    """K at an extremum of g(K) = K − C_W⟨σ²⟩_K − C_b where g touches 0 (χ_∥ = 1 there: a
    marginal fixed point, as at the GELU/SiLU critical points), else None.

    There g ≈ ½ g''(K − K*)², so a rounding δ in ⟨σ²⟩ would move a sign-change search by
    √(2δ/|g''|) (2 % for SiLU); the extremum itself, the root of g' = 1 − χ_∥, is well
    conditioned.
    """
    slope = 1.0 - cw * gauss_moments(key, grid)["dk"]
    flips = np.flatnonzero(np.sign(slope[1:-1]) != np.sign(slope[2:])) + 1
    for i in flips:

        def dg(k):
            return 1.0 - cw * float(gauss_moments(key, k)["dk"])

        kext = brentq(dg, grid[i], grid[i + 1], xtol=1e-14, rtol=1e-14)
        gext = kext - cw * float(gauss_moments(key, kext)["s2"]) - cb
        if abs(gext) <= 1e-11 * max(1.0, kext):
            return float(kext)
    return None


def critical_line(activation: str, cb: float) -> float:
    """C_W on the order/chaos line χ₁ = C_W⟨σ'²⟩_{q*} = 1 at bias variance C_b (Poole et al.).

    Along the line, q* solves q − ⟨σ²⟩_q/⟨σ'²⟩_q = C_b (C_W = 1/⟨σ'²⟩_q); Brent's method in q.
    For ReLU/linear the line is C_W = 1/A₂ (2, 1) for every C_b.
    """
    key = check_activation(activation)
    _check(1.0, cb)
    if key in SCALE_INVARIANT:
        return float(1.0 / gauss_moments(key, 1.0)["d2"])

    def h(q):
        m = gauss_moments(key, q)
        return float(q - m["s2"] / m["d2"] - cb)

    if cb == 0:
        return (
            critical_point(key)[1]
            if key == "tanh"
            else 1.0 / float(gauss_moments(key, 1e-12)["d2"])
        )
    q = brentq(h, 1e-12, 1e3, xtol=1e-14)
    return float(1.0 / gauss_moments(key, q)["d2"])


def chi_one(activation: str, cw: float, cb: float) -> tuple[float, float]:
    """(χ₁, q*): χ₁ = C_W⟨σ'²⟩_{q*} at the stable fixed point q* (Poole et al. 2016, eq. 7)."""
    q = fixed_point(activation, cw, cb)
    if not np.isfinite(q):
        return math.nan, q
    return float(cw * gauss_moments(activation, q)["d2"]), q


def correlation_depth_scale(activation: str, cw: float, cb: float) -> dict[str, float]:
    """ξ_c = −1/log χ_c, χ_c = C_W⟨σ'(z_a)σ'(z_b)⟩ at the correlation fixed point c* (Schoenholz).

    Ordered phase (χ₁ < 1): c* = 1 and χ_c = χ₁. Chaotic: c* < 1 is the stable root of the
    c-map c ↦ (C_b + C_W⟨σσ⟩_{q*, c})/q*, found by iterating it from c = 0 (it converges
    geometrically in the chaotic phase). Returns q*, χ₁, c*, χ_c, ξ_c (inf at χ_c = 1).
    """
    chi1, q = chi_one(activation, cw, cb)
    out = {"q_star": q, "chi1": chi1, "c_star": 1.0, "chi_c": chi1}
    if not np.isfinite(chi1) or q == 0:
        out["xi_c"] = math.nan if not np.isfinite(chi1) else math.inf
        return out
    if chi1 > 1:
        out["c_star"] = c = _chaotic_c_star(activation, cw, cb, q)
        out["chi_c"] = float(cw * pair_expectations(activation, q, c)[1])
    chi_c = out["chi_c"]
    out["xi_c"] = math.inf if chi_c == 1 else float(-1.0 / math.log(chi_c))
    return out


def _chaotic_c_star(activation, cw, cb, q) -> float:
    """The stable root c* < 1 of c ↦ (C_b + C_W⟨σσ⟩_{q, c})/q in the chaotic phase.

    Brent's method on map(c) − c over [−1, 1 − 1e-6] (≥ 0 at −1 because a correlation is ≥ −1;
    < 0 just below 1 since the map's slope there is χ₁ > 1); where rounding hides that sign
    (χ₁ within ~1e-3 of 1), iterating the map converges instead (geometrically, rate χ_c).
    """

    def gap(c):
        return float((cb + cw * pair_expectations(activation, q, c)[0]) / q) - c

    top = 1.0 - 1e-6
    if gap(-1.0) >= 0 > gap(top):
        return float(brentq(gap, -1.0, top, xtol=1e-14, rtol=1e-14))
    c = 0.0
    for _ in range(2000):
        step = gap(c)
        c += step
        if abs(step) < 1e-13:
            break
    return c


def ntk_flow(
    activation: str,
    cw: float,
    cb: float,
    depth: int,
    k0: float,
    lambda_b: float = 1.0,
    lambda_w: float = 1.0,
) -> dict[str, np.ndarray]:
    """Frozen infinite-width NTK Θ^(l) and the gradient factor ∏χ_⊥, for l = 0..depth.

    Θ^(1) = λ_b + λ_W k0, Θ^(l+1) = λ_b + λ_W⟨σ²⟩_{K^(l)} + χ_⊥(K^(l)) Θ^(l) (book eq. 9.5 with
    unscaled learning rates); ``grad`` = ∏_{m<l} χ_⊥(K^(m)) is the growth of a back-propagated
    signal through l − 1 layers (Θ^(0) and grad at l = 0 are NaN and 1).
    """
    kern = kernel_flow(activation, cw, cb, depth, k0)
    return ntk_from_kernel(activation, cw, kern, lambda_b, lambda_w)


def ntk_from_kernel(activation, cw, kern, lambda_b=1.0, lambda_w=1.0) -> dict[str, np.ndarray]:
    """:func:`ntk_flow` given the kernel ``kern`` (l = 0..depth) already computed."""
    with np.errstate(over="ignore", invalid="ignore"):
        m = gauss_moments(activation, np.minimum(kern, 1e300))
        chi_perp = cw * m["d2"]
        theta = np.full(kern.shape, np.nan)
        grad = np.ones(kern.shape)
        theta[1] = lambda_b + lambda_w * kern[0]
        for layer in range(1, kern.size - 1):
            theta[layer + 1] = lambda_b + lambda_w * m["s2"][layer] + chi_perp[layer] * theta[layer]
            grad[layer + 1] = grad[layer] * chi_perp[layer]
    return {"kernel": kern, "ntk": theta, "grad": grad, "chi_perp": chi_perp}


def vertex_flow(activation: str, cw: float, cb: float, depth: int, k0: float) -> np.ndarray:
    """Leading-order excess kurtosis times width, n·κ^(l) = 3V^(l)/K^(l)², for l = 0..depth.

    V^(1) = 0, V^(l+1) = χ_∥² V^(l) + C_W²(⟨σ⁴⟩ − ⟨σ²⟩²)_{K^(l)} (book eq. 4.90 at leading
    order in 1/n); κ ≈ 3V/(nK²). ReLU at criticality: 15(L − 1); tanh: κn/L → 2.
    """
    return vertex_from_kernel(activation, cw, kernel_flow(activation, cw, cb, depth, k0))


def vertex_from_kernel(activation, cw, kern: np.ndarray) -> np.ndarray:
    """:func:`vertex_flow` given the kernel ``kern`` (l = 0..depth); NaN where K over/underflows."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        m = gauss_moments(activation, np.minimum(kern, 1e300))
        chi_par = cw * m["dk"]
        source = cw * cw * (m["s4"] - m["s2"] ** 2)
        v = np.zeros(kern.shape)
        for layer in range(1, kern.size - 1):
            v[layer + 1] = chi_par[layer] ** 2 * v[layer] + source[layer]
        out = 3.0 * v / kern**2
    out[0] = np.nan
    out[~(np.isfinite(kern) & (kern > 0))] = np.nan
    return out


def kurtosis_exact_scale_invariant(activation: str, width, layer) -> np.ndarray:
    """Exact finite-width excess kurtosis for ReLU/linear at C_b = 0 (any C_W, fixed input).

    The layer's empirical second moment G^(l+1) = (C_W/n)Σσ(z_j)² is G^(l) times an independent
    factor of relative variance a/n, a = 3A₄/A₂² − 1 (ReLU 5, linear 2), and z | G ~ N(0, G), so
    κ^(L) = 3 Var G/(E G)² = 3[(1 + a/n)^(L−1) − 1] (lab brief).
    """
    key = check_activation(activation)
    if key not in SCALE_INVARIANT:
        raise StudyInputError(
            f"the exact finite-width kurtosis is known for ReLU and linear, not {key}"
        )
    ap, am = SCALE_INVARIANT[key]
    a2, a4 = (ap**2 + am**2) / 2, (ap**4 + am**4) / 2
    a = 3 * a4 / a2**2 - 1
    return 3.0 * ((1.0 + a / np.asarray(width, float)) ** (np.asarray(layer, float) - 1) - 1.0)
