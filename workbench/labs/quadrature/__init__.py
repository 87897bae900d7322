"""Computation inside integral reinforcement learning: the quadrature lab.

Integral RL (IntRL) evaluates a policy from sampled states only: along one closed-loop trajectory,
the running cost over each interval [t_k, t_k + T] is integrated by a quadrature rule from N
equispaced samples, and the value weights solve a least-squares problem. Policy iteration (PI) is
Newton's method on the HJB equation; the quadrature error adds an error to every Newton step, so
the converged weights are off by O(quadrature error): O(N^-2) for the trapezoid rule, O(N^-b) for
Bayesian quadrature with a Matérn kernel of Sobolev order b = ν + ½ (Cao & Pan, "Impact of
Computation in Integral Reinforcement Learning for Continuous-Time Control", ICLR 2024,
arXiv 2402.17375; formulas and reference numbers from the lab brief
``shared/science/quadrature.md``).

Modules
-------
* :mod:`~workbench.labs.quadrature.rules`: trapezoid and BQ weights (closed-form Matérn means,
  Wiener kernel), worst-case errors, the cached rule of one interval, rule labels.
* :mod:`~workbench.labs.quadrature.systems`: the LQR and sin systems, Van Loan's exact interval
  cost, the Riccati optimum and Kleinman's exact PI.
* :mod:`~workbench.labs.quadrature.policy`: the PI loop (one record per iteration) and its Dataset.
* :mod:`~workbench.labs.quadrature.study`: :class:`QuadratureStudy`, where every knob is
  declared once; :func:`run_policy_iteration` and :func:`iter_policy_iteration` go through it.
* :mod:`~workbench.labs.quadrature.sweeps`: :func:`error_vs_n` (the Study's vectorized
  ``evaluate`` per rule), :func:`worst_case_errors`, the exact reference and the weights table.
* :mod:`~workbench.labs.quadrature.figures`: HoloViews figures (not imported here).

Examples
--------
>>> from workbench.labs import quadrature
>>> ds = quadrature.run_policy_iteration("lqr", n=10, rule="trapezoid")
>>> f"{float(ds.weight_error[-1]):.2e}"  # brief: 2.3246e-4
'2.32e-04'
"""

from workbench.labs.quadrature.policy import IterationRecord, evaluate_policy
from workbench.labs.quadrature.rules import (
    KERNELS,
    RULES,
    BQRule,
    IntervalRule,
    QuadratureWarning,
    bq_rule,
    bq_weights,
    interval_rule,
    parse_rule_label,
    rule_label,
    rule_name,
    theory_order,
    trapezoid_weights,
    worst_case_error_of,
)
from workbench.labs.quadrature.study import (
    INTERVAL_LENGTH,
    QuadratureStudy,
    iter_policy_iteration,
    run_policy_iteration,
)
from workbench.labs.quadrature.sweeps import (
    DASHBOARD_RULES,
    DEFAULT_SWEEP_RULES,
    SWEEP_NS,
    error_vs_n,
    exact_reference,
    weights_comparison,
    worst_case_errors,
)
from workbench.labs.quadrature.systems import (
    PROVENANCE,
    SYSTEMS,
    LQRSystem,
    Segment,
    SinSystem,
    kleinman,
    lqr_optimum,
    make_system,
    van_loan_cost,
)

#: Knob defaults and caps, read from the Study's declarations (one description per knob).
DEFAULT_TOL = QuadratureStudy.param.tol.default
DEFAULT_MAX_ITER = QuadratureStudy.param.max_iter.default
MAX_ITER_CAP = QuadratureStudy.param.max_iter.bounds[1]
MAX_INTERVALS = QuadratureStudy.param.intervals.bounds[1]

__all__ = [
    "DASHBOARD_RULES",
    "DEFAULT_MAX_ITER",
    "DEFAULT_SWEEP_RULES",
    "DEFAULT_TOL",
    "INTERVAL_LENGTH",
    "KERNELS",
    "MAX_INTERVALS",
    "MAX_ITER_CAP",
    "PROVENANCE",
    "RULES",
    "SWEEP_NS",
    "SYSTEMS",
    "BQRule",
    "IntervalRule",
    "IterationRecord",
    "LQRSystem",
    "QuadratureStudy",
    "QuadratureWarning",
    "Segment",
    "SinSystem",
    "bq_rule",
    "bq_weights",
    "error_vs_n",
    "evaluate_policy",
    "exact_reference",
    "interval_rule",
    "iter_policy_iteration",
    "kleinman",
    "lqr_optimum",
    "make_system",
    "parse_rule_label",
    "rule_label",
    "rule_name",
    "run_policy_iteration",
    "theory_order",
    "trapezoid_weights",
    "van_loan_cost",
    "weights_comparison",
    "worst_case_error_of",
    "worst_case_errors",
]
