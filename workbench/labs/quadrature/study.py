"""QuadratureStudy: the lab's knobs, described once, and the runs they drive.

Every knob (its label, tooltip, bounds) is declared here and nowhere else: the module-level
:func:`run_policy_iteration` and :func:`iter_policy_iteration`, the sweeps of
:mod:`workbench.labs.quadrature.sweeps`, the dashboard's widgets and its links all go through a
:class:`QuadratureStudy` (Cao & Pan, ICLR 2024; lab brief ``shared/science/quadrature.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import param
import xarray as xr

from workbench.labs.quadrature import policy, rules
from workbench.labs.quadrature.policy import IterationRecord
from workbench.labs.quadrature.systems import PROVENANCE, LQRSystem, SinSystem, make_system
from workbench.study import Study, StudyInputError, warn_user

#: Interval length T of the paper's experiments (brief, "Algorithm" step 1).
INTERVAL_LENGTH = 0.1
#: Largest |K₀ entry| accepted: beyond it the closed loop is so stiff that nothing is learned.
MAX_GAIN_ABS = 1e3


class QuadratureStudy(Study):
    """IntRL policy iteration with a quadrature rule inside (Cao & Pan, ICLR 2024; lab brief).

    ``evaluate()`` is one PI run at the knobs (:func:`run_policy_iteration`).
    ``evaluate(n=[...])`` runs every N (``n`` is vectorized) and returns a Dataset over ``n``:
    per-iteration errors, steps, weights and gains (padded with NaN to the longest run), the
    quadrature weights (padded to the largest N) and per-run summaries (``final_weight_error``,
    ``n_iterations``, ``converged``, ``worst_case_error``, ``weight_sum_bias``, ``bq_fallback``);
    trajectories are only in single runs. The interval weights of every N are cached.
    """

    lab = "quadrature"
    title = "Computation inside integral reinforcement learning"
    paper = (
        "Cao & Pan, Impact of Computation in Integral Reinforcement Learning for "
        "Continuous-Time Control (ICLR 2024)"
    )
    paper_url = "https://arxiv.org/abs/2402.17375"
    summary = (
        "Policy iteration is Newton's method on the HJB equation, but each step integrates the "
        "running cost from N samples per interval. Watch Newton's quadratic convergence hit a "
        "floor set by the quadrature rule: O(N^-2) for the trapezoid rule, O(N^-b) for Bayesian "
        "quadrature with a Matérn kernel of Sobolev order b, and a plateau from GP jitter."
    )
    vectorized = ("n",)

    system = param.Selector(
        objects={"LQR (3rd-order linear)": "lqr", "nonlinear sin system": "sin"},
        default="lqr",
        label="system",
        doc="LQR: ẋ = Ax + Bu with a known Riccati optimum K*. Nonlinear: ẋ = f(x) + g(x)u with "
        "g = [0, sin x₁] and known optimal value V* = x₁²/2 + x₂².",
    )
    rule = param.Selector(
        objects={"trapezoid": "trapezoid", "Bayesian quadrature": "bq", "exact integrals": "exact"},
        default="trapezoid",
        label="quadrature rule",
        doc="How the running cost is integrated over each interval from its N samples: "
        "trapezoid (error O(N⁻²)), Bayesian quadrature (O(N⁻ᵇ)) or exact integrals (reference).",
    )
    kernel = param.Selector(
        objects={"Matérn": "matern", "Wiener min(s, s')": "wiener"},
        default="matern",
        label="BQ kernel",
        doc="Prior covariance of Bayesian quadrature: Matérn of smoothness ν, or the Wiener "
        "(Brownian-motion) kernel min(s, s'), whose BQ weights are exactly the trapezoid ones.",
    )
    nu = param.Selector(
        objects={"1/2": 0.5, "3/2": 1.5, "5/2": 2.5, "7/2": 3.5},
        default=3.5,
        label="Matérn smoothness ν",
        doc="Smoothness ν of the Matérn kernel; its RKHS is the Sobolev space of order "
        "b = ν + ½, so BQ's error bound falls like N^-(ν+½).",
    )
    n = param.Integer(
        10,
        bounds=(2, 30),
        label="samples per interval N",
        doc="Equispaced samples of the state on each interval of length T = 0.1 s, both ends "
        "included (2 to 30).",
    )
    lengthscale = param.Number(
        0.3,
        bounds=(0.01, 10.0),
        softbounds=(0.02, 3.0),
        step=0.01,
        label="length-scale ℓ",
        doc="Matérn length-scale ℓ in seconds (0.01 to 10; the paper's 0.3 is three intervals). "
        "A long ℓ makes the kernel matrix nearly singular.",
    )
    jitter = param.Number(
        0.0,
        bounds=(0.0, 1e-2),
        label="jitter on K's diagonal",
        doc="Added to the kernel matrix's diagonal (0 to 0.01). The authors' 1e-8 creates an "
        "error plateau near 3e-6; 0 is exact BQ (Cholesky, with an eigendecomposition fallback).",
    )
    wiener_start = param.Number(
        INTERVAL_LENGTH,
        bounds=(1e-3, 10.0),
        label="Wiener kernel start a (s)",
        doc="The Wiener kernel min(s, s') is not translation invariant and needs s > 0: each "
        "interval is placed at [a, a + T] (0.001 to 10 s). The BQ weights are the trapezoid's "
        "for any a; the worst-case error depends on a.",
    )
    intervals = param.Integer(
        0,
        bounds=(0, 200),
        label="intervals M per iteration",
        doc="Intervals of length T fitted per policy evaluation (1 to 200); 0 uses the paper's "
        "M: 10 for the trapezoid rule on the LQR, 20 otherwise.",
    )
    max_iter = param.Integer(
        15,
        bounds=(1, 100),
        label="max PI iterations",
        doc="Policy iteration stops after this many iterations (1 to 100) if the stopping test "
        "has not passed; not converging is reported, not an error.",
    )
    tol = param.Number(
        1e-3,
        bounds=(0.0, 1.0),
        label="stopping tolerance",
        doc="Stop when ‖ω_{i+1} − ω_i‖₂ < tol (0 to 1; the paper's 1e-3); 0 runs all max PI "
        "iterations, which shows the quadrature floor.",
    )
    initial_gain = param.NumericTuple(
        default=(0.0, 0.0, 0.0),
        length=3,
        label="initial gain K₀ (LQR)",
        doc="LQR only: K₀ of the initial policy u = −K₀x, three numbers within ±1000; A − BK₀ "
        "must be stable (K₀ = 0 is, since A is). The sin system starts from ω₀ = [−1, 3, 1.5].",
    )

    # --- construction and checks --------------------------------------------------------------
    @classmethod
    def from_knobs(cls, **knobs: Any) -> QuadratureStudy:
        """A Study with ``knobs`` set and checked (:class:`StudyInputError` naming the knob)."""
        study = cls()
        if knobs.get("initial_gain") is None:
            knobs.pop("initial_gain", None)
        else:
            knobs["initial_gain"] = _gain_tuple(knobs["initial_gain"])
        if knobs.get("intervals", 0) is None:
            knobs["intervals"] = 0
        study.checked_update(**knobs)
        return study

    def validate(self) -> None:
        gain = self.initial_gain
        if not all(np.isfinite(gain)) or max(map(abs, gain)) > MAX_GAIN_ABS:
            raise StudyInputError(
                f"initial gain K₀ (LQR) must be three finite numbers within ±{MAX_GAIN_ABS:g}, "
                f"got {list(gain)}"
            )
        if self.system == "lqr":
            make_system("lqr", gain)  # admissible K₀ (A − BK₀ stable), or a message
        needed = (LQRSystem if self.system == "lqr" else SinSystem).feature_rank
        if 0 < self.intervals < needed:
            # fewer equations than value weights: least squares cannot determine ω (pinv gave
            # a minimum-norm guess and PI wandered: ‖ω − ω*‖ ≈ 7-8 after 15 iterations)
            raise StudyInputError(
                f"intervals M per iteration must be at least {needed} for the {self.system} "
                f"system (one equation per value weight; it has {needed}), or 0 for the "
                f"paper's M; got {self.intervals}"
            )

    def estimated_seconds(self) -> float:
        """The page's N-sweep (5 rules × the sweep's N, each a full policy iteration): about
        2.2 s (LQR) or 1.6 s (sin) when PI stops at its tolerance, which it does within a few
        iterations; with tolerance below 1e-6 every one of the max PI iterations runs, at about
        0.08 s (LQR) or 0.6 s (sin) each.

        Calibrated on the serving machine (2 cores, load ~2, NumPy, 2026-11-28): LQR 2.2 s at the
        defaults, 5.6 s and 10.2 s at 40 and 100 iterations with tolerance 0, 2.3 s with 200
        intervals; sin 1.6 s at its defaults, 37 s at 60 iterations with tolerance 0.
        """
        base, per_iteration = (2.2, 0.08) if self.system == "lqr" else (1.6, 0.6)
        return base + (per_iteration * self.max_iter if self.tol < 1e-6 else 0.0)

    # --- what a run needs ---------------------------------------------------------------------
    @property
    def interval_length(self) -> float:
        return INTERVAL_LENGTH

    def effective_intervals(self) -> int:
        """M: the knob, or the paper's (10 for trapezoid on the LQR, 20 otherwise) when 0."""
        if self.intervals:
            return int(self.intervals)
        return 10 if (self.system == "lqr" and self.rule == "trapezoid") else 20

    def make_system(self) -> LQRSystem | SinSystem:
        return make_system(self.system, self.initial_gain if self.system == "lqr" else None)

    def quadrature(self, n: int | None = None) -> rules.IntervalRule:
        """The weights used on every interval (cached across runs and sessions; read-only)."""
        return rules.interval_rule(
            self.rule,
            int(n or self.n),
            self.kernel,
            float(self.nu),
            float(self.lengthscale),
            float(self.jitter),
            INTERVAL_LENGTH,
            float(self.wiener_start),
        )

    def rule_label(self) -> str:
        """The rule's sweep label ("trapezoid", "bq-matern-3.5", "bq-wiener", "exact")."""
        return rules.rule_label(self.rule, self.kernel, self.nu)

    def attrs(self) -> dict[str, Any]:
        """NetCDF-safe attributes (strings, floats, ints) describing the knobs."""
        return {
            "system": self.system,
            "rule": self.rule,
            "kernel": self.kernel if self.rule == "bq" else "",
            "nu": float(self.nu),
            "n": int(self.n),
            "lengthscale": float(self.lengthscale),
            "jitter": float(self.jitter),
            "wiener_start": float(self.wiener_start),
            "intervals": int(self.effective_intervals()),
            "interval_length": float(INTERVAL_LENGTH),
            "max_iter": int(self.max_iter),
            "tol": float(self.tol),
            "initial_gain": ",".join(f"{g:.17g}" for g in self.initial_gain),
            "provenance": PROVENANCE,
        }

    def _note_fallback(self, ns: list[int]) -> None:
        """Tell the user when BQ fell back to an eigendecomposition (a cached rule says it once
        per call, not once per computation)."""
        fell_back = [n for n in ns if self.quadrature(n).solver == "eigh"]
        if not fell_back:
            return
        rule = self.quadrature(fell_back[0])
        text = rules.fallback_note(
            rule, fell_back[0], self.kernel, self.nu, self.lengthscale, self.jitter
        )
        if len(fell_back) > 1:
            text += f" (also for N = {', '.join(map(str, fell_back[1:]))})"
        warn_user(text, rules.QuadratureWarning, stacklevel=3)

    # --- runs ---------------------------------------------------------------------------------
    def stream(self) -> Iterator[IterationRecord]:
        """PI at the knobs, one :class:`IterationRecord` per iteration (the live curve).

        The interval rule is computed before the first ``next()`` (BQ errors and the fallback
        note surface at the call, not mid-stream).
        """
        self.quadrature()
        self._note_fallback([self.n])
        return policy.iterate(self)

    def evaluate(self, n: Any = None) -> xr.Dataset:
        """One PI run (``n=None``: the knob) or one run per N with a dim ``n``."""
        if n is None:
            records = list(self.stream())
            return policy.records_to_dataset(self, records)
        ns = check_ns(n)
        for value in ns:
            self.quadrature(int(value))
        self._note_fallback([int(v) for v in ns])
        runs, stopped = [], []
        for value in ns:
            records = []
            # one note for the whole sweep, not one per N (the generator returns its reason)
            reason = yield_into(policy.iterate(self, int(value), warn=False), records)
            runs.append(records)
            if reason:
                stopped.append((int(value), reason))
        if stopped:
            warn_user(
                f"{rules.rule_name(self.rule_label())}: policy iteration stopped before the "
                f"iteration cap for N = {_ranges([n for n, _ in stopped])}: at N = "
                f"{stopped[0][0]}, {stopped[0][1]}; the iterations before it are kept",
                rules.QuadratureWarning,
                stacklevel=2,
            )
        return _stack_runs(self, ns, runs)

    def copy_with(self, **knobs: Any) -> QuadratureStudy:
        """A new Study with these knobs changed (checked)."""
        other = type(self)(**self.values())
        other.checked_update(**knobs)
        return other


def _ranges(values: list[int]) -> str:
    """2, 3, 4, 7 → "2–4, 7"."""
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def yield_into(generator: Any, out: list) -> Any:
    """Append everything ``generator`` yields to ``out``; return what it returns."""
    while True:
        try:
            out.append(next(generator))
        except StopIteration as stop:
            return stop.value


def check_ns(ns: Any) -> np.ndarray:
    """A 1-D list of node counts within the Study's bounds (message names the knob)."""
    values = np.atleast_1d(np.asarray(ns)).ravel().tolist()
    if not values:
        raise StudyInputError("samples per interval N: give at least one value")
    probe = QuadratureStudy()
    for value in values:
        if isinstance(value, bool) or not float(value).is_integer():
            raise StudyInputError(probe._refusal("n", value))
        probe.checked_update(n=int(value))
    return np.array([int(v) for v in values])


def _stack_runs(study: QuadratureStudy, ns: np.ndarray, runs: list) -> xr.Dataset:
    """Per-N runs as one Dataset over ``n`` (per-iteration arrays padded with NaN)."""
    iterations = max(len(records) for records in runs)
    system = study.make_system()
    basis, states, nodes = len(system.basis_labels), len(system.state_labels), int(ns.max())

    def padded(shape):
        return np.full((len(ns), *shape), np.nan)

    out = {
        "weight_error": padded((iterations,)),
        "step": padded((iterations,)),
        "weights": padded((iterations, basis)),
        "node_offset": padded((nodes,)),
        "quadrature_weights": padded((nodes,)),
    }
    lqr = study.system == "lqr"
    if lqr:
        out["gain"] = padded((iterations, states))
        out["gain_error"] = padded((iterations,))
    summaries: dict[str, list] = {}
    for k, (n, records) in enumerate(zip(ns.tolist(), runs, strict=True)):
        m = len(records)
        out["weight_error"][k, :m] = [r.weight_error for r in records]
        out["step"][k, :m] = [r.step for r in records]
        out["weights"][k, :m] = [r.weights for r in records]
        rule = study.quadrature(n)
        out["node_offset"][k, :n] = rule.offsets
        if rule.weights is not None:
            out["quadrature_weights"][k, :n] = rule.weights
        if lqr:
            out["gain"][k, :m] = [r.gain for r in records]
            out["gain_error"][k, :m] = [r.gain_error for r in records]
        for name, value in policy.summary(study, records[-1], n).items():
            summaries.setdefault(name, []).append(value)
    dims = {
        "weight_error": ("n", "iteration"),
        "step": ("n", "iteration"),
        "weights": ("n", "iteration", "basis"),
        "node_offset": ("n", "node"),
        "quadrature_weights": ("n", "node"),
        "gain": ("n", "iteration", "state"),
        "gain_error": ("n", "iteration"),
    }
    data = {name: (dims[name], values) for name, values in out.items()}
    data |= {name: ("n", np.array(values)) for name, values in summaries.items()}
    data["optimal_weights"] = ("basis", system.optimal_weights)
    if lqr:
        data["optimal_gain"] = ("state", system.optimal_gain.ravel())
    attrs = study.attrs()
    attrs.pop("n")
    attrs["intervals"] = int(study.effective_intervals())
    ds = xr.Dataset(
        data,
        coords={
            "n": ns,
            "iteration": np.arange(1, iterations + 1),
            "basis": list(system.basis_labels),
            "state": list(system.state_labels),
            "node": np.arange(nodes),
        },
        attrs=attrs,
    )
    ds["n"].attrs.update(units="1", long_name="samples per interval N")
    return policy.label_variables(ds)


def _gain_tuple(gain: Any) -> tuple[float, ...]:
    try:
        values = np.asarray(gain, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise StudyInputError(f"initial gain K₀ (LQR) must be 3 numbers, got {gain!r}") from exc
    if values.size != 3:
        raise StudyInputError(f"initial gain K₀ (LQR) must be 3 numbers, got {gain!r}")
    return tuple(float(v) for v in values)


def iter_policy_iteration(system: str = "lqr", **knobs: Any) -> Iterator[IterationRecord]:
    """Run IntRL policy iteration, yielding an :class:`IterationRecord` per finished iteration.

    ``knobs`` are :class:`QuadratureStudy`'s (``n``, ``rule``, ``kernel``, ``nu``,
    ``lengthscale``, ``jitter``, ``wiener_start``, ``intervals``, ``max_iter``, ``tol``,
    ``initial_gain``); their meaning and bounds are declared there, once. Arguments are checked
    at the call (a bad one raises :class:`StudyInputError` naming the knob), before any record.

    Examples
    --------
    >>> records = list(iter_policy_iteration("sin", n=5, rule="exact"))
    >>> [f"{r.weight_error:.1e}" for r in records][:2]
    ['6.4e-01', '7.9e-04']
    """
    return QuadratureStudy.from_knobs(system=system, **knobs).stream()


def run_policy_iteration(system: str = "lqr", **knobs: Any) -> xr.Dataset:
    """IntRL policy iteration as one Dataset (knobs as :func:`iter_policy_iteration`).

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
      ``worst_case_error`` (e(w) of the weights in the kernel's RKHS, NaN for ``exact``),
      ``weight_sum_bias`` (Σw − T) and ``bq_fallback``, also in ``attrs`` with the knobs and
      ``bq_solver`` (``"cholesky"``, ``"eigh"`` or ``""``).

    Examples
    --------
    >>> ds = run_policy_iteration("lqr", n=10, rule="trapezoid")
    >>> f"{float(ds.weight_error[-1]):.2e}"  # brief: 2.3246e-4
    '2.32e-04'
    """
    return QuadratureStudy.from_knobs(system=system, **knobs).evaluate()
