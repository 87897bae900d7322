"""Computation inside integral reinforcement learning: the compute core of the quadrature lab.

Integral RL (IntRL) evaluates a policy from sampled states only: along one closed-loop trajectory,
the running cost over each interval [t_k, t_k + T] is integrated by a quadrature rule from N
equispaced samples, and the value weights solve a least-squares problem. Policy iteration (PI) is
Newton's method on the HJB equation; the quadrature error adds an error to every Newton step, so
the converged weights are off by O(quadrature error): O(N^-2) for the trapezoid rule, O(N^-b) for
Bayesian quadrature with a Matérn kernel of Sobolev order b = ν + ½ (Cao & Pan, "Impact of
Computation in Integral Reinforcement Learning for Continuous-Time Control", ICLR 2024,
arXiv 2402.17375; formulas and reference numbers from the lab brief
``shared/science/quadrature.md``).

Layout of this module
---------------------
* Systems: :class:`LQRSystem` (third-order linear, exact optimum by Riccati) and
  :class:`SinSystem` (nonlinear, V* = ½x₁² + x₂²), each sampling one PI iteration's trajectory.
* Exact references: :func:`lqr_optimum` (Riccati) and :func:`kleinman` (exact PI by Lyapunov).
* The algorithm: :func:`iter_policy_iteration` (a generator, one record per iteration, which the
  dashboard streams) and :func:`run_policy_iteration` (the same as one :class:`xarray.Dataset`).
* Sweeps: :func:`error_vs_n` (converged error over rules × N with fitted slopes) and
  :func:`worst_case_errors` (the BQ worst-case error e(w) over kernels × N).
* :class:`QuadratureStudy`, the lab's Study (vectorized over ``n``).

Rules
-----
``rule`` is ``"trapezoid"``, ``"bq"`` (with ``kernel`` = ``"matern"`` of smoothness ``nu`` or
``"wiener"``) or ``"exact"`` (Van Loan for the LQR, an accumulated-cost ODE state for the sin
system). :func:`error_vs_n` takes *rule labels*: ``"trapezoid"``, ``"exact"``,
``"bq-matern-<nu>"`` (``"bq-matern-3.5"``) and ``"bq-wiener"``; see :func:`parse_rule_label`.

Examples
--------
>>> from workbench.labs import quadrature
>>> ds = quadrature.run_policy_iteration("lqr", n=10, rule="trapezoid")
>>> f"{float(ds.weight_error[-1]):.2e}"  # brief: 2.3246e-4
'2.32e-04'
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import param
import scipy.linalg
import xarray as xr
from scipy.integrate import solve_ivp

from workbench.fit import loglog_slope
from workbench.labs import quadrature_rules as qrules
from workbench.labs.quadrature_rules import (  # noqa: F401 - re-exported public API
    QuadratureWarning,
    bq_rule,
    bq_weights,
    trapezoid_weights,
)
from workbench.study import Study, StudyInputError

PROVENANCE = (
    "Cao & Pan, Impact of Computation in Integral Reinforcement Learning for Continuous-Time "
    "Control, ICLR 2024 (arXiv 2402.17375); algorithm and numbers from the lab brief "
    "shared/science/quadrature.md"
)

SYSTEMS = ("lqr", "sin")
RULES = ("trapezoid", "bq", "exact")
#: Interval length T of the paper's experiments (brief, "Algorithm" step 1).
INTERVAL_LENGTH = 0.1
#: PI stops when ‖ω_{i+1} − ω_i‖₂ falls below this (brief, step 5).
DEFAULT_TOL = 1e-3
DEFAULT_MAX_ITER = 15
MAX_ITER_CAP = 200
MAX_INTERVALS = 200
#: ODE tolerances for the sin system: far below every quadrature error the lab shows (the
#: exact rule reaches ~4e-10), and DOP853 still needs only ~25 steps per iteration.
ODE_RTOL = 1e-12
ODE_ATOL = 1e-12
DEFAULT_SWEEP_RULES = ("trapezoid", "bq-matern-0.5", "bq-matern-3.5", "bq-wiener")


# ================================================================================================
# BLAS threads
# ================================================================================================
@functools.cache
def _thread_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return ThreadpoolController()


def _single_blas_thread() -> contextlib.AbstractContextManager:
    """Run BLAS single-threaded: every matrix here is at most 30 × 30, and a multi-threaded
    OpenBLAS busy-waiting on a loaded 2-core machine turned a 0.4 s N-sweep into 6-9 s.

    Entered per PI iteration (≈15 µs with a cached controller), never across a ``yield``, so
    the caller's own BLAS settings are untouched between records.
    """
    controller = _thread_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


# ================================================================================================
# Systems
# ================================================================================================
@dataclass
class Segment:
    """One PI iteration's samples: M intervals × N nodes along the trajectory.

    ``states`` (M, N, d) at ``times`` (M, N); ``costs`` (M, N) the running cost at the nodes;
    ``exact_costs`` (M,) the exact interval integrals, or None when not requested.
    """

    times: np.ndarray
    states: np.ndarray
    costs: np.ndarray
    exact_costs: np.ndarray | None


class LQRSystem:
    """Example 1 of the brief: ẋ = Ax + Bu, l = xᵀQx + uᵀRu, φ(x) = x ⊗ x, u = −Kx.

    With V = ωᵀ(x ⊗ x) = xᵀPx (P = ω reshaped, symmetric because pinv splits the duplicated
    columns x_i x_j = x_j x_i equally), the improvement u = −½R⁻¹gᵀ∇φᵀω is u = −Kx with
    K = ½R⁻¹Bᵀ(P + Pᵀ). Sampling is exact (matrix exponential of A − BK).
    """

    name = "lqr"
    A = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-0.1, -0.5, -0.7]])
    B = np.array([[0.0], [0.0], [1.0]])
    Q = np.eye(3)
    R = np.eye(1)
    x0 = np.array([2.0, -2.0, 3.0])
    state_labels = ("x1", "x2", "x3")
    basis_labels = tuple(f"x{i}*x{j}" for i in range(1, 4) for j in range(1, 4))

    def __init__(self, initial_gain: Any = None) -> None:
        self.initial_gain = self._admissible_gain(initial_gain)
        gain, p_matrix = lqr_optimum()
        self.optimal_gain = gain
        self.optimal_weights = p_matrix.ravel()

    def _admissible_gain(self, initial_gain: Any) -> np.ndarray:
        """K₀ (default 0: A is Hurwitz) if A − BK₀ is Hurwitz, else :class:`StudyInputError`."""
        if initial_gain is None:
            return np.zeros((1, 3))
        gain = np.asarray(initial_gain, dtype=float).reshape(1, -1)
        if gain.shape != (1, 3) or not np.all(np.isfinite(gain)):
            raise StudyInputError(
                f"initial_gain must be 3 finite numbers (K₀ in u = −K₀x), got {initial_gain!r}"
            )
        eigenvalues = np.linalg.eigvals(self.A - self.B @ gain)
        worst = eigenvalues[np.argmax(eigenvalues.real)]
        worst = worst.real if worst.imag == 0 else worst
        if worst.real >= 0:
            raise StudyInputError(
                f"initial_gain K₀ = {gain.ravel().tolist()} is not admissible: A − BK₀ has the "
                f"unstable eigenvalue {worst:.4g} (PI needs a stabilizing initial policy)"
            )
        return gain

    def initial_weights(self) -> np.ndarray:
        """ω₀ = 0: no previous estimate (only the first stopping test reads it)."""
        return np.zeros(9)

    def gain(self, weights: np.ndarray) -> np.ndarray:
        """K = ½R⁻¹Bᵀ(P + Pᵀ), P = ω reshaped (3 × 3)."""
        p_matrix = weights.reshape(3, 3)
        return 0.5 * np.linalg.solve(self.R, self.B.T @ (p_matrix + p_matrix.T))

    @staticmethod
    def features(states: np.ndarray) -> np.ndarray:
        """φ(x) = x ⊗ x for states (..., 3) → (..., 9)."""
        return (states[..., :, None] * states[..., None, :]).reshape(*states.shape[:-1], 9)

    def sample(self, x_start, gain, offsets, intervals, t_start, exact) -> Segment:
        """Node states x(t_k + s_j) = e^{A_c s_j} x_k, x_{k+1} = e^{A_c T} x_k (exact)."""
        closed = self.A - self.B @ gain
        length = float(offsets[-1])
        node_maps = scipy.linalg.expm(closed[None] * offsets[:, None, None])  # (N, 3, 3)
        step = scipy.linalg.expm(closed * length)
        starts = np.empty((intervals, 3))
        state = np.asarray(x_start, dtype=float)
        for k in range(intervals):
            starts[k] = state
            state = step @ state
        states = np.einsum("nij,kj->kni", node_maps, starts)
        cost_matrix = self.Q + gain.T @ self.R @ gain
        costs = np.einsum("kni,ij,knj->kn", states, cost_matrix, states)
        exact_costs = None
        if exact:
            gram = van_loan_cost(closed, cost_matrix, length)
            exact_costs = np.einsum("ki,ij,kj->k", starts, gram, starts)
        times = t_start + length * np.arange(intervals)[:, None] + offsets[None, :]
        return Segment(times, states, costs, exact_costs)


class SinSystem:
    """Example 2 of the brief: ẋ = f(x) + g(x)u with a known optimum.

    f(x) = [−x₁ + x₂, −½(x₁ + x₂) + ½x₂ sin²x₁], g(x) = [0, sin x₁]ᵀ, Q = I₂, R = 1,
    φ = [x₁², x₁x₂, x₂²]; V* = ½x₁² + x₂² (ω* = [0.5, 0, 1]), u* = −x₂ sin x₁.
    The policy u = −½R⁻¹gᵀ∇φᵀω = −½ sin x₁ (ω₂x₁ + 2ω₃x₂). Sampling integrates the ODE with
    DOP853 at rtol = atol = 1e-12 (relative to the state's size) and reads nodes from the dense
    output; the exact rule adds the accumulated cost as a third ODE state.
    """

    name = "sin"
    x0 = np.array([1.0, 1.0])
    state_labels = ("x1", "x2")
    basis_labels = ("x1*x1", "x1*x2", "x2*x2")
    optimal_weights = np.array([0.5, 0.0, 1.0])
    optimal_gain = None

    def __init__(self, initial_gain: Any = None) -> None:
        if initial_gain is not None:
            raise StudyInputError("initial_gain applies to the lqr system only (sin uses ω₀)")

    def initial_weights(self) -> np.ndarray:
        """ω₀ = [−1, 3, 1.5] (brief, Example 2)."""
        return np.array([-1.0, 3.0, 1.5])

    def gain(self, weights: np.ndarray) -> None:
        return None

    @staticmethod
    def features(states: np.ndarray) -> np.ndarray:
        x1, x2 = states[..., 0], states[..., 1]
        return np.stack([x1 * x1, x1 * x2, x2 * x2], axis=-1)

    @staticmethod
    def control(states: np.ndarray, weights: np.ndarray) -> np.ndarray:
        x1, x2 = states[..., 0], states[..., 1]
        return -0.5 * np.sin(x1) * (weights[1] * x1 + 2.0 * weights[2] * x2)

    def running_cost(self, states: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """l = x₁² + x₂² + u² (Q = I, R = 1)."""
        return (states**2).sum(axis=-1) + self.control(states, weights) ** 2

    def _rhs(self, weights: np.ndarray, with_cost: bool):
        def rhs(_t, y):
            x1, x2 = y[0], y[1]
            s = math.sin(x1)
            u = -0.5 * s * (weights[1] * x1 + 2.0 * weights[2] * x2)
            dx = [-x1 + x2, -0.5 * (x1 + x2) + 0.5 * x2 * s * s + s * u]
            return dx + [x1 * x1 + x2 * x2 + u * u] if with_cost else dx

        return rhs

    def sample(self, x_start, weights, offsets, intervals, t_start, exact) -> Segment:
        length = float(offsets[-1])
        t_end = t_start + intervals * length
        scale = max(float(np.abs(x_start).max()), 1e-150)  # atol follows the decaying state
        y0 = list(x_start) + ([0.0] if exact else [])
        atol = [ODE_ATOL * scale] * 2 + ([ODE_ATOL * scale**2] if exact else [])
        solution = solve_ivp(
            self._rhs(weights, exact),
            (t_start, t_end),
            y0,
            method="DOP853",
            rtol=ODE_RTOL,
            atol=atol,
            dense_output=True,
        )
        if solution.status < 0 or not np.all(np.isfinite(solution.y)):
            raise StudyInputError(
                f"sin system: the closed-loop trajectory blew up near t = {solution.t[-1]:.3g} "
                f"(policy weights {np.round(weights, 4).tolist()}); this policy is not admissible"
            )
        times = t_start + length * np.arange(intervals)[:, None] + offsets[None, :]
        values = solution.sol(times.ravel())  # (d [+1], M*N)
        values[:, -1] = solution.y[:, -1]  # the last node is the solver's own end point
        states = values[:2].T.reshape(intervals, len(offsets), 2)
        exact_costs = None
        if exact:
            accumulated = values[2].reshape(intervals, len(offsets))
            exact_costs = accumulated[:, -1] - accumulated[:, 0]
        return Segment(times, states, self.running_cost(states, weights), exact_costs)


def make_system(system: str, initial_gain: Any = None) -> LQRSystem | SinSystem:
    if system == "lqr":
        return LQRSystem(initial_gain)
    if system == "sin":
        return SinSystem(initial_gain)
    raise StudyInputError(f"system must be one of {', '.join(SYSTEMS)}, got {system!r}")


# ================================================================================================
# Exact references for the LQR
# ================================================================================================
def van_loan_cost(closed: np.ndarray, cost_matrix: np.ndarray, length: float) -> np.ndarray:
    """G = ∫₀^T e^{A_cᵀs} W e^{A_c s} ds by Van Loan's block exponential (brief, Example 1).

    exp([[−A_cᵀ, W], [0, A_c]] T) = [[·, F₁₂], [0, F₂₂]] and G = F₂₂ᵀ F₁₂ (Van Loan 1978).
    """
    d = closed.shape[0]
    block = np.zeros((2 * d, 2 * d))
    block[:d, :d] = -closed.T
    block[:d, d:] = cost_matrix
    block[d:, d:] = closed
    expo = scipy.linalg.expm(block * length)
    gram = expo[d:, d:].T @ expo[:d, d:]
    return 0.5 * (gram + gram.T)


@functools.cache
def _lqr_optimum() -> tuple[np.ndarray, np.ndarray]:
    a, b, q, r = LQRSystem.A, LQRSystem.B, LQRSystem.Q, LQRSystem.R
    p_matrix = scipy.linalg.solve_continuous_are(a, b, q, r)
    return np.linalg.solve(r, b.T @ p_matrix), p_matrix


def lqr_optimum() -> tuple[np.ndarray, np.ndarray]:
    """(K*, P*) of Example 1 from the algebraic Riccati equation (``solve_continuous_are``).

    K* = [0.904987562112, 1.893095222031, 1.596995960829] (brief).
    """
    gain, p_matrix = _lqr_optimum()
    return gain.copy(), p_matrix.copy()


def kleinman(max_iter: int = 8, initial_gain: Any = None) -> xr.Dataset:
    """Exact PI on the LQR (Kleinman 1968): A_iᵀP_i + P_iA_i + Q + K_iᵀRK_i = 0, K_{i+1} = R⁻¹BᵀP_i.

    From K₀ = 0 the brief lists ‖P_i − P*‖_F = 22.87, 10.00, 3.894, 1.286, 0.2667, 1.018e-2,
    1.09e-5, ~1e-11: Newton's quadratic convergence, the reference for every IntRL run.

    Returns
    -------
    xarray.Dataset over ``iteration`` (1, 2, …) with ``p_error`` (‖P_i − P*‖_F), ``gain`` (K_i,
    the gain that evaluated P_i is improved to: (iteration, state)) and ``gain_error``.
    """
    system = LQRSystem(initial_gain)
    max_iter = _check_int("max_iter", max_iter, 1, MAX_ITER_CAP)
    gain_star, p_star = lqr_optimum()
    gain, errors, gains = system.initial_gain, [], []
    for _ in range(max_iter):
        closed = system.A - system.B @ gain
        p_matrix = scipy.linalg.solve_continuous_lyapunov(
            closed.T, -(system.Q + gain.T @ system.R @ gain)
        )
        gain = np.linalg.solve(system.R, system.B.T @ p_matrix)
        errors.append(np.linalg.norm(p_matrix - p_star))
        gains.append(gain.ravel())
    gains = np.array(gains)
    return xr.Dataset(
        {
            "p_error": ("iteration", np.array(errors)),
            "gain": (("iteration", "state"), gains),
            "gain_error": ("iteration", np.linalg.norm(gains - gain_star.ravel(), axis=1)),
            "optimal_gain": ("state", gain_star.ravel()),
        },
        coords={"iteration": np.arange(1, max_iter + 1), "state": list(LQRSystem.state_labels)},
        attrs={
            "method": "Kleinman exact policy iteration (Lyapunov solves)",
            "provenance": PROVENANCE,
        },
    )


# ================================================================================================
# Settings: validation and the quadrature weights of one interval
# ================================================================================================
def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not float(value).is_integer():
        raise StudyInputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise StudyInputError(f"{name} must be between {low} and {high}, got {value}")
    return value


def default_intervals(system: str, rule: str) -> int:
    """The paper's M: 10 for the trapezoid rule on the LQR, 20 otherwise (brief)."""
    return 10 if (system == "lqr" and rule == "trapezoid") else 20


@dataclass(frozen=True)
class IntervalRule:
    """The quadrature weights used on every interval (nodes at offsets 0 … T from t_k)."""

    offsets: np.ndarray
    weights: np.ndarray | None  # None for the exact rule
    worst_case_error: float = float("nan")
    solver: str = ""


@functools.lru_cache(maxsize=512)
def interval_rule(
    rule: str, n: int, kernel: str, nu: float, lengthscale: float, jitter: float, length: float
) -> IntervalRule:
    """Weights on [0, T] (cached: every interval and iteration of a run, and every run of a
    sweep with the same settings, reuse them).

    Matérn BQ is translation invariant, so [0, T] stands for every [t_k, t_k + T]. The Wiener
    kernel is not, and needs a > 0: it is evaluated on [T, 2T]; its weights are the trapezoid
    weights for any a > 0, so the choice only keeps K well defined.
    """
    offsets = qrules.nodes(n, 0.0, length)
    if rule == "exact":
        return IntervalRule(offsets, None)
    if rule == "trapezoid":
        return IntervalRule(offsets, qrules.trapezoid_weights(n, 0.0, length))
    a = length if kernel == "wiener" else 0.0
    bq = qrules.bq_rule(n, a, a + length, kernel, nu, lengthscale, jitter)
    return IntervalRule(offsets, bq.weights, bq.worst_case_error, bq.solver)


@dataclass(frozen=True)
class Settings:
    """Validated arguments of one PI run."""

    system: str
    n: int
    rule: str
    kernel: str
    nu: float
    lengthscale: float
    jitter: float
    intervals: int
    max_iter: int
    tol: float
    length: float = INTERVAL_LENGTH
    initial_gain: tuple[float, ...] | None = None

    def quadrature(self) -> IntervalRule:
        return interval_rule(
            self.rule, self.n, self.kernel, self.nu, self.lengthscale, self.jitter, self.length
        )

    def attrs(self) -> dict[str, Any]:
        """NetCDF-safe attributes (strings, floats, ints) describing the run."""
        attrs: dict[str, Any] = {
            "system": self.system,
            "rule": self.rule,
            "kernel": self.kernel if self.rule == "bq" else "",
            "nu": float(self.nu),
            "n": int(self.n),
            "lengthscale": float(self.lengthscale),
            "jitter": float(self.jitter),
            "intervals": int(self.intervals),
            "interval_length": float(self.length),
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "provenance": PROVENANCE,
        }
        if self.initial_gain is not None:
            attrs["initial_gain"] = ",".join(f"{g:.17g}" for g in self.initial_gain)
        return attrs


def make_settings(
    system: str = "lqr",
    n: int = 10,
    rule: str = "trapezoid",
    nu: float = 3.5,
    lengthscale: float = 0.3,
    jitter: float = 0.0,
    intervals: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    kernel: str = "matern",
    initial_gain: Any = None,
) -> Settings:
    """Check every argument of a PI run; the error message names the offending parameter."""
    make_system(system, initial_gain)  # system name and K₀ admissibility
    if rule not in RULES:
        raise StudyInputError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    n = qrules.check_nodes(n, 0.0, INTERVAL_LENGTH)
    kernel = qrules.check_kernel(kernel)
    nu, lengthscale = qrules.check_nu(nu), qrules.check_lengthscale(lengthscale)
    jitter = qrules.check_jitter(jitter)
    if intervals is None or intervals == 0:
        intervals = default_intervals(system, rule)
    intervals = _check_int("intervals (M)", intervals, 1, MAX_INTERVALS)
    max_iter = _check_int("max_iter", max_iter, 1, MAX_ITER_CAP)
    tol = float(tol)
    if not math.isfinite(tol) or tol < 0:
        raise StudyInputError(
            f"tol must be a finite number >= 0 (0: run all max_iter), got {tol!r}"
        )
    gain = None if initial_gain is None else tuple(np.asarray(initial_gain, float).ravel().tolist())
    return Settings(
        system,
        n,
        rule,
        kernel,
        nu,
        lengthscale,
        jitter,
        intervals,
        max_iter,
        tol,
        initial_gain=gain,
    )


# ================================================================================================
# Policy iteration
# ================================================================================================
@dataclass(frozen=True)
class IterationRecord:
    """One finished PI iteration, as streamed by :func:`iter_policy_iteration`.

    Attributes
    ----------
    iteration
        1, 2, …: the weights ω_i of the i-th policy evaluation.
    weights, weight_error, step
        ω_i, ‖ω_i − ω*‖₂ and ‖ω_i − ω_{i−1}‖₂ (PI stops when ``step`` < tol).
    gain, gain_error
        LQR only: K_i (the improved policy u = −K_i x) and ‖K_i − K*‖₂; None for the sin system.
    times, states
        The trajectory this iteration sampled: M(N − 1) + 1 node times and the states there,
        (samples,) and (samples, d).
    converged
        True on the last record when the stopping test passed.
    """

    iteration: int
    weights: np.ndarray
    weight_error: float
    step: float
    gain: np.ndarray | None
    gain_error: float | None
    times: np.ndarray
    states: np.ndarray
    converged: bool = False


def _trajectory(segment: Segment) -> tuple[np.ndarray, np.ndarray]:
    """Flatten (M, N) node samples to the M(N − 1) + 1 distinct points of the trajectory."""
    times = np.append(segment.times[:, :-1].ravel(), segment.times[-1, -1])
    states = np.concatenate(
        [segment.states[:, :-1].reshape(-1, segment.states.shape[-1]), segment.states[-1, -1:]]
    )
    return times, states


def _evaluate_policy(system, segment: Segment, quadrature: IntervalRule) -> np.ndarray:
    """ω = pinv(Θ) Ξ̂ with Θ_k = φ(x(t_k)) − φ(x(t_k + T)), Ξ̂_k = Σ_n w_n l_n (brief, step 3)."""
    theta = system.features(segment.states[:, 0]) - system.features(segment.states[:, -1])
    if quadrature.weights is None:
        integrals = segment.exact_costs
    else:
        integrals = segment.costs @ quadrature.weights
    return np.linalg.pinv(theta) @ integrals


def _iterate(settings: Settings) -> Iterator[IterationRecord]:
    """The PI loop of the brief ("Algorithm"): evaluate, improve, continue the trajectory."""
    system = make_system(settings.system, settings.initial_gain)
    with _single_blas_thread():
        quadrature = settings.quadrature()
    exact = quadrature.weights is None
    weights = system.initial_weights()
    policy = system.initial_gain if settings.system == "lqr" else weights
    state, t_start = system.x0.copy(), 0.0
    for iteration in range(1, settings.max_iter + 1):
        with _single_blas_thread():
            segment = system.sample(
                state, policy, quadrature.offsets, settings.intervals, t_start, exact
            )
            new_weights = _evaluate_policy(system, segment, quadrature)
        step = float(np.linalg.norm(new_weights - weights))
        weights = new_weights
        gain = system.gain(weights)
        policy = gain if settings.system == "lqr" else weights
        # the trajectory continues from where this iteration stopped (the state is not reset)
        state, t_start = segment.states[-1, -1].copy(), float(segment.times[-1, -1])
        times, states = _trajectory(segment)
        converged = step < settings.tol
        yield IterationRecord(
            iteration=iteration,
            weights=weights,
            weight_error=float(np.linalg.norm(weights - system.optimal_weights)),
            step=step,
            gain=None if gain is None else gain.ravel(),
            gain_error=None if gain is None else float(np.linalg.norm(gain - system.optimal_gain)),
            times=times,
            states=states,
            converged=converged,
        )
        if converged:
            return


def iter_policy_iteration(
    system: str = "lqr",
    n: int = 10,
    rule: str = "trapezoid",
    nu: float = 3.5,
    lengthscale: float = 0.3,
    jitter: float = 0.0,
    intervals: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    kernel: str = "matern",
    initial_gain: Any = None,
) -> Iterator[IterationRecord]:
    """Run IntRL policy iteration, yielding an :class:`IterationRecord` per finished iteration.

    Arguments are validated before the first ``next()`` returns anything (the generator is
    primed eagerly), so a bad input raises :class:`StudyInputError` at the call site.

    Parameters
    ----------
    system
        ``"lqr"`` (Example 1; x₀ = (2, −2, 3), K₀ = 0) or ``"sin"`` (Example 2; x₀ = (1, 1),
        ω₀ = [−1, 3, 1.5]).
    n
        Samples per interval, N ≥ 2, equispaced with both ends included.
    rule
        ``"trapezoid"``, ``"bq"`` or ``"exact"`` (Van Loan for the LQR, an accumulated-cost ODE
        state for the sin system).
    nu, lengthscale, jitter, kernel
        BQ prior: ``kernel="matern"`` with smoothness ν ∈ {½, 3/2, 5/2, 7/2} and length-scale ℓ,
        or ``"wiener"``; ``jitter`` is added to the kernel matrix's diagonal.
    intervals
        M intervals of length T = 0.1 per iteration; None or 0: the paper's (10 for the
        trapezoid rule on the LQR, 20 otherwise).
    max_iter, tol
        Stop when ‖ω_{i+1} − ω_i‖₂ < tol (0: never, run ``max_iter`` iterations). Not converging
        within ``max_iter`` is not an error: the last record has ``converged=False``.
    initial_gain
        LQR only: K₀ (3 numbers); A − BK₀ must be Hurwitz.

    Examples
    --------
    >>> records = list(iter_policy_iteration("sin", n=5, rule="exact"))
    >>> [f"{r.weight_error:.1e}" for r in records][:2]
    ['6.4e-01', '7.9e-04']
    """
    settings = make_settings(
        system, n, rule, nu, lengthscale, jitter, intervals, max_iter, tol, kernel, initial_gain
    )
    settings.quadrature()  # BQ errors (and the fallback warning) surface here, not mid-stream
    return _iterate(settings)


# ================================================================================================
# Results as a Dataset
# ================================================================================================
def _records_to_dataset(settings: Settings, records: Sequence[IterationRecord]) -> xr.Dataset:
    system = make_system(settings.system, settings.initial_gain)
    quadrature = settings.quadrature()
    last = records[-1]
    iteration = np.array([r.iteration for r in records])
    data: dict[str, Any] = {
        "weight_error": ("iteration", np.array([r.weight_error for r in records])),
        "step": ("iteration", np.array([r.step for r in records])),
        "weights": (("iteration", "basis"), np.array([r.weights for r in records])),
        "final_weights": ("basis", last.weights),
        "optimal_weights": ("basis", system.optimal_weights),
        "time": (("iteration", "sample"), np.array([r.times for r in records])),
        "trajectory": (("iteration", "sample", "state"), np.array([r.states for r in records])),
        "node_offset": ("node", quadrature.offsets),
        "quadrature_weights": (
            "node",
            np.full(settings.n, np.nan) if quadrature.weights is None else quadrature.weights,
        ),
    }
    if settings.system == "lqr":
        data["gain"] = (("iteration", "state"), np.array([r.gain for r in records]))
        data["gain_error"] = ("iteration", np.array([r.gain_error for r in records]))
        data["optimal_gain"] = ("state", system.optimal_gain.ravel())
    summary = {
        "final_weight_error": float(last.weight_error),
        "n_iterations": int(last.iteration),
        "converged": int(last.converged),
        "worst_case_error": float(quadrature.worst_case_error),
        "weight_sum_bias": (
            float(quadrature.weights.sum() - settings.length)
            if quadrature.weights is not None
            else 0.0
        ),
        "bq_fallback": int(quadrature.solver == "eigh"),
    }
    data.update({name: ((), value) for name, value in summary.items()})
    ds = xr.Dataset(
        data,
        coords={
            "iteration": iteration,
            "basis": list(system.basis_labels),
            "state": list(system.state_labels),
            "sample": np.arange(len(last.times)),
            "node": np.arange(settings.n),
        },
        attrs={**settings.attrs(), **summary, "bq_solver": quadrature.solver},
    )
    ds["weight_error"].attrs["long_name"] = "‖ω_i − ω*‖₂"
    ds["step"].attrs["long_name"] = "‖ω_i − ω_{i−1}‖₂ (stopping test)"
    ds["time"].attrs["units"] = "s"
    ds["node_offset"].attrs["units"] = "s from the interval start"
    return ds


def run_policy_iteration(
    system: str = "lqr",
    n: int = 10,
    rule: str = "trapezoid",
    nu: float = 3.5,
    lengthscale: float = 0.3,
    jitter: float = 0.0,
    intervals: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    kernel: str = "matern",
    initial_gain: Any = None,
) -> xr.Dataset:
    """IntRL policy iteration as one Dataset (arguments as :func:`iter_policy_iteration`).

    Returns
    -------
    xarray.Dataset with dims ``iteration`` (1 …), ``basis`` (φ's terms), ``state``, ``sample``
    (trajectory points of one iteration) and ``node`` (quadrature nodes of one interval):

    * ``weight_error`` ‖ω_i − ω*‖₂, ``step`` ‖ω_i − ω_{i−1}‖₂, ``weights`` ω_i,
      ``final_weights``, ``optimal_weights``;
    * LQR: ``gain`` K_i, ``gain_error`` ‖K_i − K*‖₂, ``optimal_gain``;
    * ``time`` and ``trajectory``: the samples each iteration used;
    * ``node_offset`` and ``quadrature_weights``: the rule on one interval (NaN for ``exact``);
    * scalars ``final_weight_error``, ``n_iterations``, ``converged`` (1/0),
      ``worst_case_error`` (BQ's e(w), NaN otherwise) and ``weight_sum_bias`` (Σw − T), also
      repeated in ``attrs`` with the settings and ``bq_solver`` (``"cholesky"`` or ``"eigh"``).
    """
    settings = make_settings(
        system, n, rule, nu, lengthscale, jitter, intervals, max_iter, tol, kernel, initial_gain
    )
    return _records_to_dataset(settings, list(_iterate(settings)))


# ================================================================================================
# Sweeps over N
# ================================================================================================
def parse_rule_label(label: str) -> dict[str, Any]:
    """``"trapezoid"``, ``"exact"``, ``"bq-wiener"``, ``"bq-matern-<nu>"`` → PI keyword arguments.

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
            nu = qrules.check_nu(label[len(prefix) :])
        except StudyInputError as exc:
            raise StudyInputError(f"rule label {label!r}: {exc}") from exc
        return {"rule": "bq", "kernel": "matern", "nu": nu}
    raise StudyInputError(
        f"rule label {label!r} unknown; use trapezoid, exact, bq-wiener or bq-matern-<nu> "
        "with nu in 0.5, 1.5, 2.5, 3.5"
    )


def theory_order(label: str) -> float:
    """Convergence order of the rule's error bound: 2 (trapezoid, Wiener BQ), ν + ½ (Matérn
    BQ: Sobolev order b), NaN for the exact rule."""
    spec = parse_rule_label(label)
    if spec["rule"] == "exact":
        return float("nan")
    if spec["rule"] == "bq" and spec["kernel"] == "matern":
        return spec["nu"] + 0.5
    return 2.0


def error_vs_n(
    system: str = "lqr",
    rules: Sequence[str] = DEFAULT_SWEEP_RULES,
    ns: Sequence[int] = tuple(range(2, 31)),
    lengthscale: float = 0.3,
    jitter: float = 0.0,
    intervals: int | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    fit_range: tuple[int, int] = (3, 15),
) -> xr.Dataset:
    """Converged ‖ω̂ − ω*‖₂ over (rule, n): the N-sweep panel (brief, Examples 1 and 2).

    Every run reuses the cached interval weights (one BQ solve per (rule, N) however many
    iterations and intervals). ``intervals=None`` gives each rule the paper's M.

    Parameters
    ----------
    rules
        Rule labels (see :func:`parse_rule_label`).
    fit_range
        Inclusive N range of the log–log fit of error against N − 1 (N = 2 is left out by default:
        BQ's weight-sum bias dominates there; N ≤ 15 keeps BQ's jitter/rounding floor out).

    Returns
    -------
    xarray.Dataset over (``rule``, ``n``): ``weight_error``, ``n_iterations``, ``converged``,
    ``worst_case_error`` and ``weight_sum_bias``; over ``rule``: ``slope`` and ``intercept`` of
    log error vs log(N − 1), ``theory_order`` (the bound's exponent b: slope ≈ −b or steeper)
    and ``intervals`` (the M each rule ran with).
    """
    labels = list(rules)
    ns = _check_ns(ns)
    shape = (len(labels), len(ns))
    out = {
        name: np.full(shape, np.nan)
        for name in (
            "weight_error",
            "n_iterations",
            "converged",
            "worst_case_error",
            "weight_sum_bias",
        )
    }
    for i, label in enumerate(labels):
        spec = parse_rule_label(label)
        for j, n in enumerate(ns):
            settings = make_settings(
                system,
                int(n),
                lengthscale=lengthscale,
                jitter=jitter,
                intervals=intervals,
                max_iter=max_iter,
                tol=tol,
                **spec,
            )
            last = _last_record(settings)
            quadrature = settings.quadrature()
            out["weight_error"][i, j] = last.weight_error
            out["n_iterations"][i, j] = last.iteration
            out["converged"][i, j] = float(last.converged)
            out["worst_case_error"][i, j] = quadrature.worst_case_error
            if quadrature.weights is not None:
                out["weight_sum_bias"][i, j] = quadrature.weights.sum() - settings.length
    keep = (ns >= fit_range[0]) & (ns <= fit_range[1])
    fits = [loglog_slope(ns[keep] - 1, row[keep]) for row in out["weight_error"]]
    ds = xr.Dataset(
        {name: (("rule", "n"), values) for name, values in out.items()}
        | {
            "slope": ("rule", np.array([f[0] for f in fits])),
            "intercept": ("rule", np.array([f[1] for f in fits])),
            "theory_order": ("rule", np.array([theory_order(label) for label in labels])),
            "intervals": (
                "rule",
                np.array([_intervals_of(system, label, intervals) for label in labels]),
            ),
        },
        coords={"rule": labels, "n": ns},
        attrs={
            "system": system,
            "lengthscale": float(lengthscale),
            "jitter": float(jitter),
            "intervals": int(intervals or 0),
            "max_iter": int(max_iter),
            "tol": float(tol),
            "fit_min_n": int(fit_range[0]),
            "fit_max_n": int(fit_range[1]),
            "fit": "least squares of log weight_error against log(n - 1)",
            "provenance": PROVENANCE,
        },
    )
    ds["weight_error"].attrs["long_name"] = "converged ‖ω̂ − ω*‖₂"
    return ds


def _intervals_of(system: str, label: str, intervals: int | None) -> int:
    """M used for ``label``: the given one, else the paper's for that rule."""
    return (
        int(intervals) if intervals else default_intervals(system, parse_rule_label(label)["rule"])
    )


def _last_record(settings: Settings) -> IterationRecord:
    """Run PI to the end keeping only the final record (the N-sweep needs nothing else)."""
    return collections.deque(_iterate(settings), maxlen=1)[0]


def _check_ns(ns: Sequence[int]) -> np.ndarray:
    values = [qrules.check_nodes(n, 0.0, INTERVAL_LENGTH) for n in np.atleast_1d(ns).tolist()]
    if not values:
        raise StudyInputError("n: give at least one value")
    return np.array(values)


def _fill_worst_case_errors(out, weights, specs, ns, lengthscale, jitter, a, b) -> None:
    """Fill the (kernel, n) tables of :func:`worst_case_errors` in place."""
    for i, (kernel, nu) in enumerate(specs):
        nu_arg = 3.5 if kernel == "wiener" else nu  # ignored by the Wiener kernel
        for j, n in enumerate(ns):
            bq = qrules.bq_rule(int(n), a, b, kernel, nu_arg, lengthscale, jitter)
            weights[i, j, :n] = bq.weights
            out["worst_case_error"][i, j] = bq.worst_case_error
            out["trapezoid_worst_case_error"][i, j] = qrules.worst_case_error_of(
                qrules.trapezoid_weights(int(n), a, b), a, b, kernel, nu_arg, lengthscale
            )
            out["weight_sum_bias"][i, j] = bq.weights.sum() - (b - a)
            out["fallback"][i, j] = float(bq.solver != "cholesky")


def worst_case_errors(
    ns: Sequence[int] = tuple(range(2, 31)),
    nus: Sequence[float] = (0.5, 1.5, 2.5, 3.5),
    lengthscale: float = 0.3,
    jitter: float = 0.0,
    a: float = 0.0,
    b: float = INTERVAL_LENGTH,
    include_wiener: bool = False,
) -> xr.Dataset:
    """BQ weights and worst-case error e(w) over (kernel, n): the weights panel (brief).

    e(w)² = Z − zᵀK⁻¹z is the posterior variance of the integral, i.e. the squared worst-case
    error over the unit ball of the kernel's RKHS (Sobolev of order b = ν + ½ for Matérn).
    The brief's slopes (−1, −2.15, −3.19, −4.03 for ν = ½ … 7/2 on [0, 0.1], ℓ = 0.3, N = 3..11)
    are two-point slopes between the first and last N: ``endpoint_slope``; the least-squares
    ``slope`` over the same points is steeper for ν ≥ 5/2 (−3.25, −4.19).

    Parameters
    ----------
    ns, nus
        Node counts (≥ 2) and Matérn smoothness values.
    lengthscale, jitter, a, b
        Kernel length-scale, diagonal jitter and the interval.
    include_wiener
        Add the Wiener kernel (needs a > 0; its weights are the trapezoid's).

    Returns
    -------
    xarray.Dataset over ``kernel`` (labels ``"matern-<nu>"``, ``"wiener"``; coordinate ``nu``,
    NaN for Wiener) and ``n``: ``worst_case_error`` (of the BQ weights),
    ``trapezoid_worst_case_error`` (e of the trapezoid weights in the same RKHS),
    ``weight_sum_bias`` (Σw − (b − a)), ``fallback`` (1 where Cholesky failed) and ``weights``
    over (kernel, n, node) padded with NaN; over ``kernel``: ``slope`` (least squares of log e
    against log(N − 1), N ≥ 3), ``endpoint_slope`` and ``sobolev_order``.
    """
    ns = _check_ns(ns)
    specs = [("matern", qrules.check_nu(nu)) for nu in nus] + (
        [("wiener", float("nan"))] if include_wiener else []
    )
    labels = [f"matern-{nu:g}" if kernel == "matern" else "wiener" for kernel, nu in specs]
    shape = (len(specs), len(ns))
    out = {
        name: np.full(shape, np.nan)
        for name in (
            "worst_case_error",
            "trapezoid_worst_case_error",
            "weight_sum_bias",
            "fallback",
        )
    }
    weights = np.full((*shape, int(ns.max())), np.nan)
    with _single_blas_thread():
        _fill_worst_case_errors(out, weights, specs, ns, lengthscale, jitter, a, b)
    fit = ns >= 3
    slopes = [loglog_slope(ns[fit] - 1, row[fit])[0] for row in out["worst_case_error"]]
    first, last = int(np.argmin(ns)), int(np.argmax(ns))
    with np.errstate(divide="ignore", invalid="ignore"):
        endpoint = np.log(
            out["worst_case_error"][:, last] / out["worst_case_error"][:, first]
        ) / np.log((ns[last] - 1) / (ns[first] - 1))
    return xr.Dataset(
        {name: (("kernel", "n"), values) for name, values in out.items()}
        | {
            "weights": (("kernel", "n", "node"), weights),
            "slope": ("kernel", np.array(slopes)),
            "endpoint_slope": ("kernel", endpoint),
            "sobolev_order": ("kernel", np.array([nu + 0.5 for _, nu in specs])),
        },
        coords={
            "kernel": labels,
            "nu": ("kernel", np.array([nu for _, nu in specs])),
            "n": ns,
            "node": np.arange(int(ns.max())),
        },
        attrs={
            "lengthscale": float(lengthscale),
            "jitter": float(jitter),
            "a": float(a),
            "b": float(b),
            "provenance": PROVENANCE,
        },
    )


# ================================================================================================
# The Study
# ================================================================================================
#: Per-run summaries: scalar variables of a run, concatenated along ``n`` by a vectorized call.
_SUMMARIES = (
    "final_weight_error",
    "n_iterations",
    "converged",
    "worst_case_error",
    "weight_sum_bias",
    "bq_fallback",
)


class QuadratureStudy(Study):
    """IntRL policy iteration with a quadrature rule inside (Cao & Pan, ICLR 2024; lab brief).

    ``evaluate()`` is :func:`run_policy_iteration` at the knobs' values. ``evaluate(n=[...])``
    (``n`` is vectorized) runs every N and returns a Dataset with a dim ``n``: per-iteration
    variables are padded with NaN to the longest run (``iteration``), trajectories and weights
    to the largest N (``sample``, ``node``); per-run summaries (``final_weight_error``,
    ``n_iterations``, ``converged``, …) become variables over ``n``. Each run takes milliseconds,
    and the interval weights of every N are cached across calls.
    """

    lab = "quadrature"
    title = "Computation inside integral reinforcement learning"
    paper = "Cao & Pan, Impact of Computation in Integral Reinforcement Learning for Continuous-Time Control (ICLR 2024)"
    paper_url = "https://arxiv.org/abs/2402.17375"
    summary = (
        "Policy iteration is Newton's method on the HJB equation, but each step integrates the "
        "running cost from N samples per interval. Watch Newton's quadratic convergence hit a "
        "floor set by the quadrature rule: O(N^-2) for the trapezoid rule, O(N^-b) for Bayesian "
        "quadrature with a Matérn kernel of Sobolev order b, and a plateau from GP jitter."
    )
    vectorized = ("n",)

    system = param.Selector(
        default="lqr",
        objects=list(SYSTEMS),
        doc="lqr: third-order linear system (exact optimum by Riccati); sin: nonlinear system "
        "with V* = x1²/2 + x2².",
    )
    rule = param.Selector(
        default="trapezoid",
        objects=list(RULES),
        doc="Quadrature of the running cost over each interval: trapezoid (O(N^-2)), bq "
        "(Bayesian quadrature, O(N^-b)) or exact (Van Loan / ODE cost state).",
    )
    kernel = param.Selector(
        default="matern",
        objects=list(qrules.KERNELS),
        doc="BQ prior: Matérn of smoothness nu, or Wiener min(s, s') (= trapezoid weights).",
    )
    nu = param.Selector(
        default=3.5,
        objects=[0.5, 1.5, 2.5, 3.5],
        doc="Matérn smoothness ν; the RKHS is Sobolev of order b = ν + ½.",
    )
    n = param.Integer(10, bounds=(2, 30), doc="Samples N per interval (both ends included).")
    lengthscale = param.Number(
        0.3, bounds=(1e-3, 10.0), doc="Matérn length-scale ℓ (seconds; the interval is T = 0.1 s)."
    )
    jitter = param.Number(
        0.0,
        bounds=(0.0, 1e-2),
        doc="Added to the kernel matrix's diagonal. The authors' 1e-8 creates an error plateau "
        "near 3e-6; 0 is exact BQ (Cholesky, with an eigendecomposition fallback that warns).",
    )
    intervals = param.Integer(
        0,
        bounds=(0, MAX_INTERVALS),
        doc="Intervals M per PI iteration; 0: the paper's (10 for trapezoid on lqr, else 20).",
    )
    max_iter = param.Integer(DEFAULT_MAX_ITER, bounds=(1, 50), doc="Cap on PI iterations.")
    initial_gain = param.NumericTuple(
        default=(0.0, 0.0, 0.0),
        length=3,
        doc="LQR only: K₀ of the initial policy u = −K₀x; A − BK₀ must be Hurwitz (K₀ = 0 is, "
        "since A is). Ignored for the sin system, which starts from ω₀ = [−1, 3, 1.5].",
    )
    tol = param.Number(
        DEFAULT_TOL,
        bounds=(0.0, 1.0),
        doc="Stop when ‖ω_{i+1} − ω_i‖₂ < tol; 0 runs all max_iter iterations (shows the floor).",
    )

    def _kwargs(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "rule": self.rule,
            "kernel": self.kernel,
            "nu": self.nu,
            "lengthscale": self.lengthscale,
            "jitter": self.jitter,
            "intervals": self.intervals or None,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "initial_gain": self.initial_gain if self.system == "lqr" else None,
        }

    def stream(self) -> Iterator[IterationRecord]:
        """:func:`iter_policy_iteration` at the knobs' values (the dashboard's live curve)."""
        return iter_policy_iteration(n=self.n, **self._kwargs())

    def evaluate(self, n: Any = None) -> xr.Dataset:
        """One PI run (``n=None``: the knob) or one run per N with a dim ``n``."""
        if n is None:
            return run_policy_iteration(n=self.n, **self._kwargs())
        ns = _check_ns(n)
        runs = [run_policy_iteration(n=int(value), **self._kwargs()) for value in ns]
        varying = [name for name in runs[0].data_vars if not name.startswith("optimal")]
        ds = xr.concat(
            runs,
            dim=xr.DataArray(ns, dims="n", name="n"),
            data_vars=varying,
            coords="minimal",
            join="outer",
            compat="equals",
            combine_attrs="drop_conflicts",
        )
        for name in (*_SUMMARIES, "n", "bq_solver"):
            ds.attrs.pop(name, None)
        return ds
