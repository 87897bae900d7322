"""IntRL policy iteration with a quadrature rule inside (the brief's "Algorithm", steps 1-5).

For iteration i with policy u_i: along one closed-loop trajectory take M consecutive intervals
[t_k, t_k + T]; integrate the running cost over each from N equispaced samples,
Ξ̂_k = Σ_n w_n l_n; fit ω_{i+1} = pinv(Θ) Ξ̂ with Θ_k = φ(x(t_k)) − φ(x(t_k + T)); improve
u_{i+1} = −½R⁻¹gᵀ∇φᵀω_{i+1}; continue the trajectory (the state is not reset); stop when
‖ω_{i+1} − ω_i‖₂ < tol (Cao & Pan, ICLR 2024; lab brief ``shared/science/quadrature.md``).

Every function here takes the lab's :class:`~workbench.labs.quadrature.study.QuadratureStudy`
as its settings: the knobs are described once, in the Study's ``param`` declarations.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from workbench.blas import single_blas_thread
from workbench.labs.quadrature.rules import IntervalRule, QuadratureWarning
from workbench.labs.quadrature.systems import Segment
from workbench.study import StudyInputError, checkpoint, warn_user

if TYPE_CHECKING:
    from workbench.labs.quadrature.study import QuadratureStudy


@dataclass(frozen=True)
class IterationRecord:
    """One finished PI iteration, as streamed by :func:`iterate`.

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


def regression(system, segment: Segment, quadrature: IntervalRule) -> tuple[np.ndarray, np.ndarray]:
    """(Θ, Ξ̂): Θ_k = φ(x(t_k)) − φ(x(t_k + T)) and Ξ̂_k = Σ_n w_n l_n (brief, step 3)."""
    theta = system.features(segment.states[:, 0]) - system.features(segment.states[:, -1])
    if quadrature.weights is None:
        integrals = segment.exact_costs
    else:
        integrals = segment.costs @ quadrature.weights
    return theta, integrals


def evaluate_policy(system, segment: Segment, quadrature: IntervalRule) -> np.ndarray:
    """ω = pinv(Θ) Ξ̂ (brief, step 3; Θ and Ξ̂ from :func:`regression`)."""
    theta, integrals = regression(system, segment, quadrature)
    return np.linalg.pinv(theta) @ integrals


#: Below this a feature (a square of the state) has lost digits to underflow: the smallest
#: normal double divided by the unit roundoff (~1e-292, i.e. |x| below ~1e-146).
_UNDERFLOW = np.finfo(float).tiny / np.finfo(float).eps


def ill_posed(system, segment: Segment, theta: np.ndarray, integrals: np.ndarray) -> str | None:
    """Why Θω = Ξ̂ cannot determine this policy's value weights ω, in plain words (None if it can).

    Least squares determines ω only when Θ has full column rank over the independent features
    (``system.feature_rank``: 6 for x ⊗ x in 3-D, 3 for the sin system): the trajectory must
    excite every quadratic direction ("persistence of excitation", Vrabie et al., Automatica
    2009). PI continues one trajectory (the state is never reset) and a stabilizing policy
    makes it decay: after a few iterations of M = 200 intervals (20 s each) the LQR state is
    ~1e-46 and lies along the slowest closed-loop mode, so Θ's rows are (nearly) multiples of
    one vector. Its rank is then judged as NumPy/LAPACK do (``matrix_rank``: singular values
    above σ₁·max(M, p)·ε), after two cruder failures: a diverging policy overflows the state
    (non-finite Θ), and a state below ~1e-146 has squares that underflow. Without this check
    ``pinv`` returned a minimum-norm ω, the improved policy destabilized the loop, the state
    overflowed and the SVD failed (``LinAlgError``) some iterations later.
    """
    size = float(np.abs(segment.states[-1, -1]).max()) if segment.states.size else 0.0
    if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(integrals))):
        return "the closed-loop state diverged (it overflowed double precision)"
    if np.abs(theta).max() < _UNDERFLOW:
        return (
            f"the state has decayed to |x| ≈ {size:.0e}, so small that its squares underflow "
            "double precision"
        )
    rank = int(np.linalg.matrix_rank(theta))
    if rank < system.feature_rank:
        return (
            f"the trajectory has decayed to |x| ≈ {size:.0e} along too few directions: its "
            f"{theta.shape[0]} intervals no longer determine the {system.feature_rank} value "
            f"weights (the least-squares matrix has numerical rank {rank} of "
            f"{system.feature_rank})"
        )
    return None


def stop_message(study: QuadratureStudy, iteration: int, problem: str) -> str:
    """The plain-words note of a run that broke down at ``iteration`` (see :func:`ill_posed`)."""
    kept = iteration - 1
    if kept == 0:
        return f"Policy iteration cannot evaluate the initial policy: {problem}."
    return (
        f"Policy iteration stopped at iteration {iteration} of {study.max_iter}: {problem}. "
        f"The {kept} iteration{'s' if kept != 1 else ''} before it {'are' if kept != 1 else 'is'} "
        "kept. PI continues one "
        "trajectory that decays under each stabilizing policy; fewer intervals M per iteration, "
        "or a stopping tolerance above 0, ends the run before that."
    )


def iterate(
    study: QuadratureStudy, n: int | None = None, warn: bool = True
) -> Generator[IterationRecord, None, str | None]:
    """The PI loop of the brief: evaluate, improve, continue the trajectory (at N = ``n``, by
    default the Study's; a vectorized ``evaluate`` passes each N without copying the Study).

    When an iteration's least-squares problem cannot determine ω (:func:`ill_posed`) the run
    stops there: the records before it stand, the generator returns the reason (``warn``: also
    said to the user in full, a :class:`~workbench.labs.quadrature.rules.QuadratureWarning`), and a
    breakdown at the first iteration, with nothing to keep, raises :class:`StudyInputError`.

    BLAS runs on one thread inside each iteration (every matrix is at most 30 × 30; a
    multi-threaded OpenBLAS busy-waiting on a loaded 2-core machine made the N-sweep 5× slower,
    measured), through the shared reference-counted switch, and never across a ``yield``.
    """
    system = study.make_system()
    quadrature = study.quadrature(n)
    exact = quadrature.weights is None
    weights = system.initial_weights()
    policy = system.initial_gain if study.system == "lqr" else weights
    state, t_start = system.x0.copy(), 0.0
    intervals = study.effective_intervals()
    for iteration in range(1, study.max_iter + 1):
        checkpoint()
        with single_blas_thread():
            segment = system.sample(state, policy, quadrature.offsets, intervals, t_start, exact)
            theta, integrals = regression(system, segment, quadrature)
            problem = ill_posed(system, segment, theta, integrals)
            new_weights = None if problem else np.linalg.pinv(theta) @ integrals
        if problem:
            message = stop_message(study, iteration, problem)
            if iteration == 1:
                raise StudyInputError(message)
            if warn:
                warn_user(message, QuadratureWarning)
            return problem
        step = float(np.linalg.norm(new_weights - weights))
        weights = new_weights
        gain = system.gain(weights)
        policy = gain if study.system == "lqr" else weights
        # the trajectory continues from where this iteration stopped (the state is not reset)
        state, t_start = segment.states[-1, -1].copy(), float(segment.times[-1, -1])
        times, states = _trajectory(segment)
        converged = step < study.tol
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
            return None
    return None


def summary(
    study: QuadratureStudy, last: IterationRecord, n: int | None = None
) -> dict[str, float | int]:
    """Per-run scalars: final error, iterations, convergence and the rule's own figures."""
    quadrature = study.quadrature(n)
    return {
        "final_weight_error": float(last.weight_error),
        "n_iterations": int(last.iteration),
        "converged": int(last.converged),
        "worst_case_error": float(quadrature.worst_case_error),
        "weight_sum_bias": (
            float(quadrature.weights.sum() - study.interval_length)
            if quadrature.weights is not None
            else 0.0
        ),
        "bq_fallback": int(quadrature.solver == "eigh"),
        # neither converged nor at the cap: the iteration broke down (:func:`ill_posed`)
        "stopped_early": int(not last.converged and last.iteration < study.max_iter),
    }


#: units and long names of every variable a run or a sweep reports (one place).
VARIABLES: dict[str, tuple[str, str]] = {
    "weight_error": ("1", "‖ω_i − ω*‖₂"),
    "step": ("1", "‖ω_i − ω_{i−1}‖₂ (stopping test)"),
    "weights": ("1", "value weights ω_i"),
    "final_weights": ("1", "value weights at the stop"),
    "optimal_weights": ("1", "optimal value weights ω*"),
    "time": ("s", "sample time"),
    "trajectory": ("1", "closed-loop state x(t)"),
    "node_offset": ("s", "node time from the interval start"),
    "quadrature_weights": ("s", "quadrature weight w_n"),
    "gain": ("1", "gain K_i (u = −K_i x)"),
    "gain_error": ("1", "‖K_i − K*‖₂"),
    "optimal_gain": ("1", "Riccati gain K*"),
    "final_weight_error": ("1", "converged ‖ω̂ − ω*‖₂"),
    "n_iterations": ("1", "PI iterations run"),
    "converged": ("1", "stopping test passed (1) or iteration cap hit (0)"),
    "worst_case_error": ("1", "worst-case error e(w) of the weights in the kernel's RKHS"),
    "weight_sum_bias": ("s", "Σw − T"),
    "bq_fallback": ("1", "BQ solved by eigendecomposition (1) instead of Cholesky (0)"),
    "stopped_early": ("1", "PI stopped before the cap: ω no longer determined (1), or not (0)"),
}


def label_variables(ds: xr.Dataset) -> xr.Dataset:
    """Attach units and long names (``VARIABLES``) to every variable that has one."""
    for name, var in ds.data_vars.items():
        units, long_name = VARIABLES.get(name, ("1", name))
        var.attrs.setdefault("units", units)
        var.attrs.setdefault("long_name", long_name)
    return ds


def records_to_dataset(study: QuadratureStudy, records: Sequence[IterationRecord]) -> xr.Dataset:
    """One run as a Dataset (see :func:`workbench.labs.quadrature.run_policy_iteration`)."""
    system = study.make_system()
    quadrature = study.quadrature()
    last = records[-1]
    data: dict[str, Any] = {
        "weight_error": ("iteration", np.array([r.weight_error for r in records])),
        "step": ("iteration", np.array([r.step for r in records])),
        "weights": (("iteration", "basis"), np.array([r.weights for r in records])),
        "final_weights": ("basis", last.weights),
        "optimal_weights": ("basis", system.optimal_weights),
        "time": (("iteration", "sample"), np.array([r.times for r in records])),
        "trajectory": (("iteration", "sample", "state"), np.array([r.states for r in records])),
        "node_offset": ("node", np.array(quadrature.offsets)),
        "quadrature_weights": (
            "node",
            np.full(study.n, np.nan)
            if quadrature.weights is None
            else np.array(quadrature.weights),
        ),
    }
    if study.system == "lqr":
        data["gain"] = (("iteration", "state"), np.array([r.gain for r in records]))
        data["gain_error"] = ("iteration", np.array([r.gain_error for r in records]))
        data["optimal_gain"] = ("state", system.optimal_gain.ravel())
    scalars = summary(study, last)
    data.update({name: ((), value) for name, value in scalars.items()})
    ds = xr.Dataset(
        data,
        coords={
            "iteration": np.array([r.iteration for r in records]),
            "basis": list(system.basis_labels),
            "state": list(system.state_labels),
            "sample": np.arange(len(last.times)),
            "node": np.arange(study.n),
        },
        attrs={**study.attrs(), **scalars, "bq_solver": quadrature.solver},
    )
    return label_variables(ds)
