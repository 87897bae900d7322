"""The two systems of the quadrature lab and their exact references (Van Loan, Riccati, Kleinman).

Example 1 of the lab brief (``shared/science/quadrature.md``) is a third-order linear system with
an LQR optimum from the algebraic Riccati equation; Example 2 is a nonlinear system with a known
optimal value V* = ½x₁² + x₂² (Cao & Pan, ICLR 2024, arXiv 2402.17375). Each system samples one
policy-iteration step's trajectory: M consecutive intervals of length T with N nodes each.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr
from scipy.integrate import solve_ivp

from workbench.study import StudyInputError, checkpoint

PROVENANCE = (
    "Cao & Pan, Impact of Computation in Integral Reinforcement Learning for Continuous-Time "
    "Control, ICLR 2024 (arXiv 2402.17375); algorithm and numbers from the lab brief "
    "shared/science/quadrature.md"
)
SYSTEMS = ("lqr", "sin")
#: ODE tolerances for the sin system: far below every quadrature error the lab shows (the
#: exact rule reaches ~4e-10), and DOP853 still needs only ~25 steps per iteration.
ODE_RTOL = 1e-12
ODE_ATOL = 1e-12


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
    #: Independent value features: x ⊗ x has 9 columns but x_i x_j = x_j x_i leaves 6, so the
    #: least-squares matrix Θ can have rank 6 at most (M ≥ 6 intervals are needed).
    feature_rank = 6

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
                f"initial gain K₀ must be 3 finite numbers (u = −K₀x), got {initial_gain!r}"
            )
        eigenvalues = np.linalg.eigvals(self.A - self.B @ gain)
        worst = eigenvalues[np.argmax(eigenvalues.real)]
        worst = worst.real if worst.imag == 0 else worst
        if worst.real >= 0:
            raise StudyInputError(
                f"initial gain K₀ = {gain.ravel().tolist()} is not admissible: A − BK₀ has the "
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
    #: Independent value features (Θ's largest rank; M ≥ 3 intervals are needed).
    feature_rank = 3
    optimal_weights = np.array([0.5, 0.0, 1.0])
    optimal_gain = None

    def __init__(self, initial_gain: Any = None) -> None:
        """``initial_gain`` is ignored: the sin system starts from the weights ω₀ (brief)."""

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
    """The system object of ``"lqr"`` (Example 1) or ``"sin"`` (Example 2)."""
    if system == "lqr":
        return LQRSystem(initial_gain)
    if system == "sin":
        return SinSystem(initial_gain)
    raise StudyInputError(f"system must be one of {', '.join(SYSTEMS)}, got {system!r}")


# --- exact references for the LQR -----------------------------------------------------------
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
    if isinstance(max_iter, bool) or not float(max_iter).is_integer() or int(max_iter) < 1:
        raise StudyInputError(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    max_iter = int(max_iter)
    gain_star, p_star = lqr_optimum()
    gain, errors, gains = system.initial_gain, [], []
    for _ in range(max_iter):
        checkpoint()
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
