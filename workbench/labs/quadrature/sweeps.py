"""Grids of the quadrature lab: the converged error vs N per rule, and BQ worst-case errors.

The error-vs-N grid (rules × N) is the Study's vectorized ``evaluate(n=[...])`` once per rule:
one mechanism for the notebook, the dashboard and ``workbench sweep``. Its rows also carry each
rule's worst-case error e(w) in the kernel's RKHS, which the dashboard's worst-case panel draws.
Formulas and reference numbers: lab brief ``shared/science/quadrature.md`` (Cao & Pan, ICLR 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from workbench.blas import single_blas_thread
from workbench.fit import loglog_slope
from workbench.labs.quadrature import rules as qrules
from workbench.labs.quadrature.policy import label_variables
from workbench.labs.quadrature.study import INTERVAL_LENGTH, QuadratureStudy, check_ns
from workbench.labs.quadrature.systems import PROVENANCE
from workbench.study import checkpoint

DEFAULT_SWEEP_RULES = ("trapezoid", "bq-matern-0.5", "bq-matern-3.5", "bq-wiener")
#: Rules of the dashboard's N-sweep: the trapezoid rule and BQ with every Matérn ν.
DASHBOARD_RULES = ("trapezoid", "bq-matern-0.5", "bq-matern-1.5", "bq-matern-2.5", "bq-matern-3.5")
SWEEP_NS = tuple(range(2, 31))
#: Summaries of a run that the N-sweep keeps (per rule and N).
_KEPT = ("final_weight_error", "n_iterations", "converged", "worst_case_error", "weight_sum_bias")


def error_vs_n(
    system: str | QuadratureStudy = "lqr",
    rules: Sequence[str] = DEFAULT_SWEEP_RULES,
    ns: Sequence[int] = SWEEP_NS,
    fit_range: tuple[int, int] = (3, 15),
    **knobs: Any,
) -> xr.Dataset:
    """Converged ‖ω̂ − ω*‖₂ over (rule, n): the N-sweep panel (brief, Examples 1 and 2).

    Parameters
    ----------
    system
        ``"lqr"``/``"sin"`` (with any other Study ``knobs``), or a :class:`QuadratureStudy`
        whose knobs (length-scale, jitter, M, max iterations, tol, …) every rule runs with.
    rules
        Rule labels (:func:`~workbench.labs.quadrature.rules.parse_rule_label`): each sets the
        rule, kernel and ν of its row. ``intervals = 0`` gives each rule the paper's M.
    fit_range
        Inclusive N range of the log–log fit of error against N − 1 (N = 2 is left out by default:
        BQ's weight-sum bias dominates there; N ≤ 15 keeps BQ's jitter/rounding floor out).

    Returns
    -------
    xarray.Dataset over (``rule``, ``n``): ``weight_error``, ``n_iterations``, ``converged``,
    ``worst_case_error`` (e(w) in the row kernel's RKHS; the trapezoid row uses the Study's
    kernel) and ``weight_sum_bias``; over ``rule``: ``slope`` and ``intercept`` of log error vs
    log(N − 1), ``theory_order`` (the bound's exponent b: slope ≈ −b or steeper) and
    ``intervals`` (the M each rule ran with).
    """
    labels = list(rules)
    base = system if isinstance(system, QuadratureStudy) else None
    if base is None:
        base = QuadratureStudy.from_knobs(system=system, **knobs)
    elif knobs:
        base = base.copy_with(**knobs)
    ns = check_ns(ns)
    rows, intervals = [], []
    with single_blas_thread():
        for label in labels:
            checkpoint()
            study = base.copy_with(**qrules.parse_rule_label(label))
            rows.append(study.evaluate(n=ns)[list(_KEPT)])
            intervals.append(study.effective_intervals())
    ds = xr.concat(rows, dim="rule", coords="minimal", compat="override", combine_attrs="drop")
    ds = ds.rename({"final_weight_error": "weight_error"}).assign_coords(rule=labels)
    keep = (ns >= fit_range[0]) & (ns <= fit_range[1])
    fits = [loglog_slope(ns[keep] - 1, row[keep]) for row in ds["weight_error"].values]
    ds["slope"] = ("rule", np.array([f[0] for f in fits]))
    ds["intercept"] = ("rule", np.array([f[1] for f in fits]))
    ds["theory_order"] = ("rule", np.array([qrules.theory_order(label) for label in labels]))
    ds["intervals"] = ("rule", np.array(intervals))
    ds["weight_error"].attrs["long_name"] = "converged ‖ω̂ − ω*‖₂"
    ds["slope"].attrs.update(units="1", long_name="fitted slope of log error vs log(N − 1)")
    ds["intercept"].attrs.update(units="1", long_name="fitted intercept (log error at N − 1 = 1)")
    ds["theory_order"].attrs.update(units="1", long_name="order b of the rule's error bound")
    ds["intervals"].attrs.update(units="1", long_name="intervals M per iteration")
    attrs = base.attrs()
    for key in ("n", "rule", "kernel", "nu", "intervals"):
        attrs.pop(key)
    ds.attrs = attrs | {
        "fit_min_n": int(fit_range[0]),
        "fit_max_n": int(fit_range[1]),
        "fit": "least squares of log weight_error against log(n - 1)",
    }
    return label_variables(ds)


def worst_case_errors(
    ns: Sequence[int] = SWEEP_NS,
    nus: Sequence[float] = (0.5, 1.5, 2.5, 3.5),
    lengthscale: float = 0.3,
    jitter: float = 0.0,
    a: float = 0.0,
    b: float = INTERVAL_LENGTH,
    include_wiener: bool = False,
) -> xr.Dataset:
    """BQ weights and worst-case error e(w) over (kernel, n) on any interval [a, b] (brief).

    A rules-level table (no policy iteration): e(w)² = Z − zᵀK⁻¹z is the posterior variance of
    the integral, i.e. the squared worst-case error over the unit ball of the kernel's RKHS
    (Sobolev of order b = ν + ½ for Matérn). The brief's slopes (−1, −2.15, −3.19, −4.03 for
    ν = ½ … 7/2 on [0, 0.1], ℓ = 0.3, N = 3..11) are two-point slopes between the first and last
    N: ``endpoint_slope``; the least-squares ``slope`` over the same points is steeper for
    ν ≥ 5/2 (−3.25, −4.19).

    Returns
    -------
    xarray.Dataset over ``kernel`` (labels ``"matern-<nu>"``, ``"wiener"``; coordinate ``nu``,
    NaN for Wiener) and ``n``: ``worst_case_error`` (of the BQ weights),
    ``trapezoid_worst_case_error`` (e of the trapezoid weights in the same RKHS),
    ``weight_sum_bias`` (Σw − (b − a)), ``fallback`` (1 where Cholesky failed) and ``weights``
    over (kernel, n, node) padded with NaN; over ``kernel``: ``slope`` (least squares of log e
    against log(N − 1), N ≥ 3), ``endpoint_slope`` and ``sobolev_order``.
    """
    ns = np.array([qrules.check_nodes(n, a, b) for n in np.atleast_1d(ns).tolist()])
    specs = [("matern", qrules.check_nu(nu)) for nu in nus]
    specs += [("wiener", float("nan"))] if include_wiener else []
    labels = [f"matern-{nu:g}" if kernel == "matern" else "wiener" for kernel, nu in specs]
    shape = (len(specs), len(ns))
    names = ("worst_case_error", "trapezoid_worst_case_error", "weight_sum_bias", "fallback")
    out = {name: np.full(shape, np.nan) for name in names}
    weights = np.full((*shape, int(ns.max())), np.nan)
    with single_blas_thread():
        for i, (kernel, nu) in enumerate(specs):
            nu_arg = 3.5 if kernel == "wiener" else nu  # ignored by the Wiener kernel
            for j, n in enumerate(ns):
                bq = qrules.bq_rule(int(n), a, b, kernel, nu_arg, lengthscale, jitter)
                trapezoid = qrules.trapezoid_weights(int(n), a, b)
                weights[i, j, :n] = bq.weights
                out["worst_case_error"][i, j] = bq.worst_case_error
                out["trapezoid_worst_case_error"][i, j] = qrules.worst_case_error_of(
                    trapezoid, a, b, kernel, nu_arg, lengthscale
                )
                out["weight_sum_bias"][i, j] = bq.weights.sum() - (b - a)
                out["fallback"][i, j] = float(bq.solver != "cholesky")
    fit = ns >= 3
    slopes = [loglog_slope(ns[fit] - 1, row[fit])[0] for row in out["worst_case_error"]]
    first, last = int(np.argmin(ns)), int(np.argmax(ns))
    with np.errstate(divide="ignore", invalid="ignore"):
        endpoint = np.log(
            out["worst_case_error"][:, last] / out["worst_case_error"][:, first]
        ) / np.log((ns[last] - 1) / (ns[first] - 1))
    ds = xr.Dataset(
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
    return label_variables(ds)


def exact_reference(study: QuadratureStudy) -> xr.Dataset:
    """PI with exact interval costs at the Study's system, M and K₀ (the dashed Newton curve).

    On the LQR it runs all max iterations (tol 0) to show Newton's sequence down to rounding;
    on the sin system it stops at the Study's tol (exact PI converges in 3 iterations).
    """
    tol = 0.0 if study.system == "lqr" else study.tol
    return study.copy_with(rule="exact", n=2, tol=tol).evaluate()


def weights_comparison(study: QuadratureStudy) -> xr.Dataset:
    """The trapezoid weights and BQ's (the Study's kernel, ν, ℓ, jitter) on one interval at N.

    Returns a Dataset over (``rule``, ``node``) with ``weights`` and ``node_time``; over ``rule``
    ``worst_case_error`` (in the BQ kernel's RKHS) and ``weight_sum_bias`` (Σw − T).
    """
    rows = [study.copy_with(rule="trapezoid"), study.copy_with(rule="bq")]
    parts = [row.quadrature() for row in rows]
    ds = xr.Dataset(
        {
            "weights": (("rule", "node"), np.array([np.asarray(p.weights) for p in parts])),
            "node_time": ("node", np.asarray(parts[0].offsets)),
            "worst_case_error": ("rule", np.array([p.worst_case_error for p in parts])),
            "weight_sum_bias": (
                "rule",
                np.array([float(np.sum(p.weights)) - INTERVAL_LENGTH for p in parts]),
            ),
        },
        coords={"rule": [row.rule_label() for row in rows], "node": np.arange(study.n)},
        attrs={k: v for k, v in study.attrs().items() if k != "rule"},
    )
    ds["weights"].attrs.update(units="s", long_name="quadrature weight w_n")
    ds["node_time"].attrs.update(units="s", long_name="node time from the interval start")
    return label_variables(ds)
