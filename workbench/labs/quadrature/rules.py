"""Quadrature rules on one interval [a, b]: trapezoid and Bayesian quadrature (BQ).

The quadrature lab (:mod:`workbench.labs.quadrature`) integrates the running cost of integral RL over
short intervals from N equispaced samples. This module owns the rules; formulas are from the lab
brief ``shared/science/quadrature.md`` ("Quadrature weights") and Cao & Pan, ICLR 2024, Sec. 4.

BQ with a kernel k puts a zero-mean GP prior on the integrand. For nodes t_1..t_N the weights are
w = K⁻¹z with K_nm = k(t_n, t_m) (+ jitter on the diagonal) and the kernel mean
z_n = ∫_a^b k(s, t_n) ds; the posterior variance of the integral, which equals the squared
worst-case error over the unit ball of the kernel's RKHS, is e² = Z − zᵀK⁻¹z with Z = ∫∫ k.

Kernels
-------
* Half-integer Matérn, ν = p + ½, c = √(2ν)/ℓ, ρ = c|s − s'|: k = e^{−ρ} P_p(ρ); its RKHS on an
  interval is the Sobolev space of order b = ν + ½, so BQ converges as O(N^{−b}).
* Wiener (Brownian motion), k = min(s, s'), defined for a > 0: its posterior mean is the piecewise
  linear interpolant, so BQ reproduces the trapezoid weights exactly (a test of the machinery).

Examples
--------
>>> import numpy as np
>>> from workbench.labs.quadrature.rules import trapezoid_weights, bq_weights
>>> trapezoid_weights(3, 0.0, 1.0).tolist()
[0.25, 0.5, 0.25]
>>> w, e = bq_weights(3, 1.0, 2.0, kernel="wiener")
>>> np.allclose(w, [0.25, 0.5, 0.25])
True
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.special

from workbench.study import StudyInputError, StudyWarning, warn_user

#: Polynomial coefficients a_j of P_p(ρ) = Σ_j a_j ρ^j for the half-integer Matérn kernels
#: (brief, "Quadrature weights"; Rasmussen & Williams eq. 4.16-4.17 for ν ≤ 5/2).
MATERN_COEFFICIENTS: dict[float, tuple[float, ...]] = {
    0.5: (1.0,),
    1.5: (1.0, 1.0),
    2.5: (1.0, 1.0, 1.0 / 3.0),
    3.5: (1.0, 1.0, 2.0 / 5.0, 1.0 / 15.0),
}
KERNELS = ("matern", "wiener")
RULES = ("trapezoid", "bq", "exact")

#: An eigenvalue of K below this fraction of the largest is treated as zero by the fallback
#: solve; it is the level at which double-precision Cholesky stops being trustworthy.
_EIGEN_CUTOFF = 1e-15


class QuadratureWarning(StudyWarning, RuntimeWarning):
    """BQ fell back from Cholesky to an eigendecomposition solve (K numerically singular)."""


@dataclass(frozen=True)
class BQRule:
    """BQ weights on one interval and how they were obtained.

    Attributes
    ----------
    weights
        w = K⁻¹z, shape (n,).
    worst_case_error
        e = √max(Z − zᵀK⁻¹z, 0), the posterior standard deviation of the integral.
    solver
        ``"cholesky"``, or ``"eigh"`` when Cholesky failed and the pseudo-inverse of K (eigenvalues
        below 1e-15 of the largest dropped) was used instead.
    dropped
        Number of eigen-directions the fallback dropped (0 for Cholesky).
    """

    weights: np.ndarray
    worst_case_error: float
    solver: str
    dropped: int = 0


# ================================================================================================
# Validation
# ================================================================================================
def check_nodes(n: Any, a: float, b: float) -> int:
    """N ≥ 2 nodes on a finite interval with a < b, or :class:`StudyInputError`."""
    if isinstance(n, bool) or not float(n).is_integer():
        raise StudyInputError(f"n (nodes per interval) must be an integer, got {n!r}")
    n = int(n)
    if n < 2:
        raise StudyInputError(f"n (nodes per interval) must be >= 2 (both ends included), got {n}")
    if not (math.isfinite(a) and math.isfinite(b)) or not a < b:
        raise StudyInputError(f"interval [a, b] = [{a}, {b}] must be finite with a < b")
    return n


def check_nu(nu: Any) -> float:
    """One of the half-integer smoothness values ½, 3/2, 5/2, 7/2."""
    try:
        value = float(nu)
    except (TypeError, ValueError) as exc:
        raise StudyInputError(f"nu must be one of 0.5, 1.5, 2.5, 3.5, got {nu!r}") from exc
    if value not in MATERN_COEFFICIENTS:
        raise StudyInputError(f"nu must be one of 0.5, 1.5, 2.5, 3.5 (half-integer), got {nu!r}")
    return value


def check_lengthscale(lengthscale: Any) -> float:
    value = float(lengthscale)
    if not math.isfinite(value) or value <= 0:
        raise StudyInputError(f"lengthscale must be a finite number > 0, got {lengthscale!r}")
    return value


def check_jitter(jitter: Any) -> float:
    value = float(jitter)
    if not math.isfinite(value) or value < 0:
        raise StudyInputError(f"jitter must be a finite number >= 0, got {jitter!r}")
    return value


def check_kernel(kernel: Any) -> str:
    if kernel not in KERNELS:
        raise StudyInputError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


# ================================================================================================
# Trapezoid
# ================================================================================================
def nodes(n: int, a: float, b: float) -> np.ndarray:
    """N equispaced nodes on [a, b], both ends included (brief, "Algorithm" step 2)."""
    return np.linspace(a, b, n)


def trapezoid_weights(n: int, a: float, b: float) -> np.ndarray:
    """Composite trapezoid weights h/2, h, …, h, h/2 with h = (b − a)/(N − 1).

    Error ≈ (h²/12)(l'(b) − l'(a)): O((N − 1)^{−2}) (brief, "Quadrature weights").
    """
    n = check_nodes(n, a, b)
    h = (b - a) / (n - 1)
    weights = np.full(n, h)
    weights[[0, -1]] = h / 2
    return weights


# ================================================================================================
# Kernels and their closed-form means
# ================================================================================================
def _matern_scale(nu: float, lengthscale: float) -> float:
    """c = √(2ν)/ℓ, so that ρ = c|s − s'|."""
    return math.sqrt(2.0 * nu) / lengthscale


def matern_kernel(s: Any, t: Any, nu: float = 3.5, lengthscale: float = 0.3) -> np.ndarray:
    """k(s, t) = e^{−ρ} P_p(ρ), ρ = √(2ν)|s − t|/ℓ (brief; broadcasting over s and t)."""
    rho = _matern_scale(nu, lengthscale) * np.abs(np.asarray(s, float) - np.asarray(t, float))
    poly = np.polynomial.polynomial.polyval(rho, MATERN_COEFFICIENTS[nu])
    return np.exp(-rho) * poly


def _lower_gamma(order: int, y: np.ndarray) -> np.ndarray:
    """γ(order, y) = Γ(order)·P(order, y).

    SciPy's regularized ``gammainc`` keeps full relative accuracy for small y, where the brief's
    j!(1 − e^{−y}Σ y^m/m!) cancels catastrophically (nodes next to an interval end).
    """
    return math.gamma(order) * scipy.special.gammainc(order, y)


def _matern_partial_mean(u: np.ndarray, nu: float, lengthscale: float) -> np.ndarray:
    """F(u) = ∫_0^u k(r) dr = (1/c) Σ_j a_j γ(j + 1, c u) (brief, "Closed-form kernel mean")."""
    c = _matern_scale(nu, lengthscale)
    u = np.asarray(u, dtype=float)
    return sum(a * _lower_gamma(j + 1, c * u) for j, a in enumerate(MATERN_COEFFICIENTS[nu])) / c


def matern_kernel_mean(x: Any, a: float, b: float, nu: float = 3.5, lengthscale: float = 0.3):
    """z(x) = ∫_a^b k(s, x) ds = F(x − a) + F(b − x) for x in [a, b] (brief).

    Examples
    --------
    >>> round(float(matern_kernel_mean(0.23, 0.2, 0.3, 3.5, 0.3)), 10)
    0.0990573247
    """
    x = np.asarray(x, dtype=float)
    return _matern_partial_mean(x - a, nu, lengthscale) + _matern_partial_mean(
        b - x, nu, lengthscale
    )


def matern_double_mean(a: float, b: float, nu: float = 3.5, lengthscale: float = 0.3) -> float:
    """Z = ∫∫ k = 2[L F(L) − (1/c²) Σ_j a_j γ(j + 2, cL)], L = b − a (brief).

    Examples
    --------
    >>> round(matern_double_mean(0.2, 0.3, 3.5, 0.3), 11)
    0.00987355866
    """
    c, length = _matern_scale(nu, lengthscale), b - a
    moment = sum(
        a_j * _lower_gamma(j + 2, c * length) for j, a_j in enumerate(MATERN_COEFFICIENTS[nu])
    )
    return float(2.0 * (length * _matern_partial_mean(length, nu, lengthscale) - moment / c**2))


def wiener_kernel(s: Any, t: Any) -> np.ndarray:
    """Brownian-motion kernel k(s, t) = min(s, t)."""
    return np.minimum(np.asarray(s, float), np.asarray(t, float))


def wiener_kernel_mean(x: Any, a: float, b: float) -> np.ndarray:
    """z(x) = ∫_a^b min(s, x) ds = (x² − a²)/2 + x(b − x) for x in [a, b]."""
    x = np.asarray(x, dtype=float)
    return 0.5 * (x**2 - a**2) + x * (b - x)


def wiener_double_mean(a: float, b: float) -> float:
    """Z = ∫_a^b ∫_a^b min(s, t) ds dt = a L² + L³/3, L = b − a."""
    length = b - a
    return float(a * length**2 + length**3 / 3.0)


def kernel_matrices(n: int, a: float, b: float, kernel: str, nu: float, lengthscale: float):
    """(K, z, Z) for N equispaced nodes on [a, b]: the inputs of every BQ formula."""
    t = nodes(n, a, b)
    if kernel == "wiener":
        if a <= 0:
            raise StudyInputError(
                f"the Wiener kernel min(s, s') needs a > 0 (k(0, 0) = 0 makes K singular), got a = {a}"
            )
        return (
            wiener_kernel(t[:, None], t[None, :]),
            wiener_kernel_mean(t, a, b),
            wiener_double_mean(a, b),
        )
    gram = matern_kernel(t[:, None], t[None, :], nu, lengthscale)
    return (
        gram,
        matern_kernel_mean(t, a, b, nu, lengthscale),
        matern_double_mean(a, b, nu, lengthscale),
    )


# ================================================================================================
# BQ weights
# ================================================================================================
def _solve_cholesky(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
    """K⁻¹ rhs by Cholesky, or None when K is not numerically positive definite."""
    try:
        factor = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    solution = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
    return solution if np.all(np.isfinite(solution)) else None


def _solve_eigh(gram: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, int]:
    """Pseudo-inverse solve through eigh, dropping eigenvalues below 1e-15 × the largest."""
    values, vectors = np.linalg.eigh(gram)
    keep = values > _EIGEN_CUTOFF * values.max()
    if keep.sum() == 0:
        raise StudyInputError("BQ: the kernel matrix has no positive eigenvalue; check lengthscale")
    projected = vectors[:, keep].T @ rhs
    return vectors[:, keep] @ (projected / values[keep]), int((~keep).sum())


def bq_rule(
    n: int,
    a: float,
    b: float,
    kernel: str = "matern",
    nu: float = 3.5,
    lengthscale: float = 0.3,
    jitter: float = 0.0,
) -> BQRule:
    """BQ weights w = (K + jitter·I)⁻¹ z and the worst-case error, with the solver used.

    Cholesky (``scipy.linalg.cho_factor``) first. When it fails (K is numerically singular: e.g.
    ν = 7/2, ℓ = 0.3 on an interval of 0.1 has cond(K) ≈ 2e12 at N = 15 and beyond 1e16 soon
    after), the weights come from the pseudo-inverse of K by an eigendecomposition, a
    :class:`QuadratureWarning` is emitted and :attr:`BQRule.solver` says ``"eigh"``. Weights that
    are still not finite raise :class:`StudyInputError`: nothing sensible can be integrated.

    Parameters
    ----------
    n, a, b
        N ≥ 2 equispaced nodes on [a, b], both ends included.
    kernel
        ``"matern"`` (half-integer ν) or ``"wiener"`` (min(s, s'), needs a > 0).
    nu, lengthscale
        Matérn smoothness ν ∈ {½, 3/2, 5/2, 7/2} and length-scale ℓ > 0 (ignored for Wiener).
    jitter
        Added to the diagonal of K. The authors used probnum's 1e-8, which puts a floor of about
        3e-6 under the IntRL error (brief, "Pitfalls"); the default 0 is exact BQ.
    """
    rule = _bq_rule_quiet(n, a, b, kernel, nu, lengthscale, jitter)
    if rule.solver == "eigh":
        warn_user(fallback_note(rule, n, kernel, nu, lengthscale, jitter), QuadratureWarning)
    return rule


def fallback_note(rule: BQRule, n: int, kernel: str, nu: float, lengthscale: float, jitter: float):
    """The note shown when BQ fell back from Cholesky to an eigendecomposition."""
    return (
        f"BQ (kernel {kernel}, ν = {nu:g}, ℓ = {lengthscale:g}, jitter {jitter:g}, N = {n}): "
        f"Cholesky failed, K is numerically singular; used an eigendecomposition pseudo-"
        f"inverse dropping {rule.dropped} direction(s). Raise the jitter for a stable solve."
    )


def _bq_rule_quiet(
    n: int, a: float, b: float, kernel: str, nu: float, lengthscale: float, jitter: float
) -> BQRule:
    """:func:`bq_rule` without the fallback warning (callers that cache say it themselves)."""
    n = check_nodes(n, a, b)
    kernel, jitter = check_kernel(kernel), check_jitter(jitter)
    nu, lengthscale = check_nu(nu), check_lengthscale(lengthscale)
    gram, mean, total = kernel_matrices(n, a, b, kernel, nu, lengthscale)
    gram = gram + jitter * np.eye(n)
    weights, solver, dropped = _solve_cholesky(gram, mean), "cholesky", 0
    if weights is None:
        weights, dropped = _solve_eigh(gram, mean)
        solver = "eigh"
    if not np.all(np.isfinite(weights)):
        raise StudyInputError(
            f"BQ weights are not finite (N = {n}, length-scale ℓ = {lengthscale:g}, jitter "
            f"{jitter:g}); raise the jitter or the length-scale"
        )
    variance = total - float(mean @ weights)
    return BQRule(weights, math.sqrt(max(variance, 0.0)), solver, dropped)


def bq_weights(
    n: int,
    a: float,
    b: float,
    kernel: str = "matern",
    nu: float = 3.5,
    lengthscale: float = 0.3,
    jitter: float = 0.0,
) -> tuple[np.ndarray, float]:
    """BQ weights w = K⁻¹z and worst-case error e = √max(Z − zᵀK⁻¹z, 0) (brief).

    See :func:`bq_rule` for the parameters and the Cholesky → eigendecomposition fallback (which
    warns with :class:`QuadratureWarning`).

    Examples
    --------
    >>> w, e = bq_weights(5, 0.0, 0.1, nu=3.5, lengthscale=0.3)
    >>> f"{w.sum() - 0.1:.1e}", f"{e:.1e}"  # a zero-mean prior over-weights constants slightly
    ('6.0e-07', '3.5e-06')
    """
    rule = bq_rule(n, a, b, kernel, nu, lengthscale, jitter)
    return rule.weights, rule.worst_case_error


def worst_case_error_of(
    weights: np.ndarray,
    a: float,
    b: float,
    kernel: str = "matern",
    nu: float = 3.5,
    lengthscale: float = 0.3,
) -> float:
    """e(w)² = Z − 2wᵀz + wᵀKw for *any* weights on the equispaced nodes (e.g. the trapezoid's).

    At the BQ weights this equals Z − zᵀK⁻¹z, the minimum over all weights.
    """
    gram, mean, total = kernel_matrices(len(weights), a, b, kernel, nu, lengthscale)
    value = total - 2.0 * float(weights @ mean) + float(weights @ gram @ weights)
    return math.sqrt(max(value, 0.0))


# ================================================================================================
# The rule used on every interval of a PI run, and rule labels for sweeps
# ================================================================================================
@dataclass(frozen=True)
class IntervalRule:
    """The quadrature weights used on every interval (nodes at offsets 0 … T from t_k).

    ``worst_case_error`` is e(w) of these weights over the unit ball of the RKHS of the chosen
    kernel (Matérn ν, ℓ; or Wiener on [a, a + T]); for the exact rule it is NaN. The arrays are
    read-only: the rule is cached and shared by every caller.
    """

    offsets: np.ndarray
    weights: np.ndarray | None  # None for the exact rule
    worst_case_error: float = float("nan")
    solver: str = ""
    dropped: int = 0


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@functools.lru_cache(maxsize=1024)
def interval_rule(
    rule: str,
    n: int,
    kernel: str,
    nu: float,
    lengthscale: float,
    jitter: float,
    length: float,
    wiener_start: float = 0.1,
) -> IntervalRule:
    """Weights on one interval of length T (cached: every interval and iteration of a run, and
    every run of a sweep with the same settings, reuse them).

    Matérn BQ is translation invariant, so [0, T] stands for every [t_k, t_k + T]. The Wiener
    kernel min(s, s') is not, and needs a > 0 (k(0, 0) = 0 makes K singular): it is placed on
    [a, a + T] with a = ``wiener_start``; its BQ weights are the trapezoid weights for any a > 0
    (brief), while its worst-case error depends on a.
    """
    offsets = _frozen(nodes(n, 0.0, length))
    if rule == "exact":
        return IntervalRule(offsets, None)
    a = wiener_start if kernel == "wiener" else 0.0
    if rule == "trapezoid":
        weights = trapezoid_weights(n, 0.0, length)
        error = worst_case_error_of(weights, a, a + length, kernel, nu, lengthscale)
        return IntervalRule(offsets, _frozen(weights), error, "")
    bq = _bq_rule_quiet(n, a, a + length, kernel, nu, lengthscale, jitter)
    return IntervalRule(offsets, _frozen(bq.weights), bq.worst_case_error, bq.solver, bq.dropped)


def parse_rule_label(label: str) -> dict[str, Any]:
    """``"trapezoid"``, ``"exact"``, ``"bq-wiener"``, ``"bq-matern-<nu>"`` → knob values.

    Examples
    --------
    >>> parse_rule_label("bq-matern-3.5")
    {'rule': 'bq', 'kernel': 'matern', 'nu': 3.5}
    """
    if label in ("trapezoid", "exact"):
        return {"rule": label}
    if label == "bq-wiener":
        return {"rule": "bq", "kernel": "wiener"}
    prefix = "bq-matern-"
    if isinstance(label, str) and label.startswith(prefix):
        try:
            nu = check_nu(label[len(prefix) :])
        except StudyInputError as exc:
            raise StudyInputError(f"rule label {label!r}: {exc}") from exc
        return {"rule": "bq", "kernel": "matern", "nu": nu}
    raise StudyInputError(
        f"rule label {label!r} unknown; use trapezoid, exact, bq-wiener or bq-matern-<nu> "
        "with nu in 0.5, 1.5, 2.5, 3.5"
    )


def rule_label(rule: str, kernel: str = "matern", nu: float = 3.5) -> str:
    """The sweep label of a rule (inverse of :func:`parse_rule_label`)."""
    if rule != "bq":
        return rule
    return "bq-wiener" if kernel == "wiener" else f"bq-matern-{nu:g}"


def rule_name(label: str) -> str:
    """What a legend shows for a rule label: "trapezoid", "BQ Matérn ν = 7/2", "BQ Wiener"."""
    spec = parse_rule_label(label)
    if spec["rule"] != "bq":
        return "exact integrals" if spec["rule"] == "exact" else spec["rule"]
    if spec["kernel"] == "wiener":
        return "BQ Wiener"
    return f"BQ Matérn ν = {NU_NAMES[spec['nu']]}"


#: Half-integer smoothness values as a student reads them.
NU_NAMES = {0.5: "1/2", 1.5: "3/2", 2.5: "5/2", 3.5: "7/2"}


def theory_order(label: str) -> float:
    """Convergence order of the rule's error bound: 2 (trapezoid, Wiener BQ), ν + ½ (Matérn
    BQ: Sobolev order b), NaN for the exact rule (brief, "Quadrature weights")."""
    spec = parse_rule_label(label)
    if spec["rule"] == "exact":
        return float("nan")
    if spec["rule"] == "bq" and spec["kernel"] == "matern":
        return spec["nu"] + 0.5
    return 2.0
