"""HoloViews figures of the quadrature lab (one function per figure; notebook and dashboard share
them). They take the Datasets of :mod:`workbench.labs.quadrature` (a run, the N-sweep, the weights
table) or the records a live run streams, and draw the measurement with its theory: the exact-
integral Newton curve under PI, the N^-2 and N^-b lines under the errors, K* and ω* under the gains.
No maths here beyond presentation: slopes, targets and rules come from the Datasets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from workbench.labs.quadrature.policy import IterationRecord
from workbench.labs.quadrature.rules import rule_name
from workbench.plots import (
    FRAMEWISE,
    HERE_COLOUR,
    LEGEND_OUTSIDE,
    PALETTE,
    THEORY_STYLE,
    curve_family,
    marker_line,
    shown_if,
    styled,
)

#: Plots that share an x axis of N − 1 (what the error-vs-N fits are made against).
N_AXIS = "N − 1 (sub-intervals per interval)"
ERROR_AXIS = "‖ωᵢ − ω*‖₂"


#: The "you are here" line of the N plots (the page moves it in place).
HERE_STYLE = {"color": HERE_COLOUR, "line_dash": "dotted", "line_width": 2}


def _outside_legend(overlay: hv.Overlay, **opts) -> hv.Overlay:
    """Legends to the right of the axes, so they never cover data."""
    return overlay.opts(**LEGEND_OUTSIDE, **opts)


def _here_entry(here: bool) -> hv.Curve | None:
    """The legend entry of the "you are here" line composed on later (a Span has none)."""
    # NaN points, not none: Bokeh draws no legend glyph for a line with no data at all.
    entry = styled(hv.Curve(([np.nan] * 2, [np.nan] * 2), label="your N"), **HERE_STYLE)
    return entry if here else None


def policy_iteration(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    reference: xr.Dataset | None = None,
    floor: float | None = None,
    max_iter: int | None = None,
    title: str = "",
) -> hv.Overlay:
    """‖ω_i − ω*‖₂ per PI iteration (log y) for each run in ``curves`` (label → (i, error)),
    with the exact-integral run (``reference``: Newton's quadratic convergence, dashed) and the
    converged error of the current rule (``floor``, dotted: read off the log axis; the live
    title has no room left for it, tests/test_plots_legends.py).

    The floor line is always a layer, hidden when there is no floor, and its legend label holds
    no number: a live page then patches this panel in place at every N (apps/live.py)."""
    layers = []
    for k, (label, (its, errs)) in enumerate(curves.items()):
        its, errs = np.asarray(its, float), np.asarray(errs, float)
        colour = PALETTE[k % len(PALETTE)]
        layers += [
            styled(hv.Curve((its, errs), "PI iteration i", ERROR_AXIS, label=label), color=colour),
            styled(
                hv.Scatter((its, errs), "PI iteration i", ERROR_AXIS, label=label),
                color=colour,
                size=7,
            ),
        ]
    if reference is not None:
        layers.append(
            styled(
                hv.Curve(
                    (reference["iteration"].values, reference["weight_error"].values),
                    "PI iteration i",
                    ERROR_AXIS,
                    label="exact integrals (Newton)",
                ),
                color=PALETTE[len(curves) % len(PALETTE)],
                **THEORY_STYLE,
            )
        )
    has_floor = floor is not None and bool(np.isfinite(floor)) and floor > 0
    layers += shown_if(
        has_floor,
        *marker_line(
            floor if has_floor else 1.0,
            "converged error",
            vertical=False,
            color="grey",
            line_dash="dotted",
        ),
    )
    last = max_iter or max((len(its) for its, _ in curves.values()), default=1)
    return _outside_legend(
        hv.Overlay(layers),
        logy=True,
        title=title,
        xlabel="PI iteration i",
        ylabel=ERROR_AXIS,
        xlim=(0.5, max(6, last) + 0.5),
        ylim=(1e-12, 1e2),
        responsive=True,
        min_height=300,
        show_grid=True,
    )


def live_title(rule_label: str, n: int, records: Sequence[IterationRecord]) -> str:
    """The live PI panel's title: the rule, N and where the run stands (never stale)."""
    title = f"PI live: {rule_name(rule_label)}, N = {n}"
    if records:
        last = records[-1]
        state = "converged" if last.converged else "running"
        title += f": {last.weight_error:.2e} after {last.iteration} it. ({state})"
    return title


def records_curve(records: Sequence[IterationRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, errors) of streamed records, for :func:`policy_iteration`."""
    return (
        np.array([r.iteration for r in records], dtype=float),
        np.array([r.weight_error for r in records], dtype=float),
    )


def error_vs_n(sweep: xr.Dataset, *, title: str | None = None, here: bool = False) -> hv.Overlay:
    """Converged ‖ω̂ − ω*‖₂ against N − 1 (log–log) per rule, the slopes fitted by the library
    (over its fit range, ``attrs['fit_min_n']``..``fit_max_n``) in the title, in legend order, and dashed theory lines N^-b for each
    rule's order b, anchored at the first fitted point of the first rule with that order (and
    in its colour). ``here``: a legend entry for the :func:`you_are_here` line composed on later.

    Legend labels carry no numbers (a new sweep then patches the live panel in place)."""
    x = sweep["n"].values - 1
    curves, theory, pair, slopes = {}, {}, {}, []
    fit = (sweep["n"] >= sweep.attrs["fit_min_n"]).values
    for label in sweep["rule"].values:
        row = sweep.sel(rule=label)
        # "BQ ν = 3/2": the explanation says BQ uses a Matérn kernel; a short legend leaves room.
        rule = rule_name(str(label)).replace("BQ Matérn ", "BQ ")
        name = rule
        slopes.append(f"{float(row['slope']):.1f}".replace("-", "−"))
        curves[name] = row["weight_error"].values
        order = float(row["theory_order"])
        key = f"(N−1)^-{order:g}" if order != 2 else "(N−1)⁻²"
        if np.isfinite(order) and key not in theory:
            errors = row["weight_error"].values
            first = int(np.flatnonzero(fit & np.isfinite(errors) & (errors > 0))[0])
            theory[key] = (x, errors[first] * (x / x[first]) ** -order)
            pair[key] = name
    if title is None:
        title = f"Error vs N ({sweep.attrs['system']}), slopes {', '.join(slopes)}"
    overlay = curve_family(
        x,
        curves,
        theory=theory,
        xlabel=N_AXIS,
        ylabel="converged ‖ω̂ − ω*‖₂",
        logx=True,
        logy=True,
        title=title,
        pair=pair,
        extra=_here_entry(here),
    )
    return _outside_legend(overlay)


def you_are_here(n: int) -> hv.VLine:
    """The "you are here" marker of the N plots, at x = N − 1 (their axis), not at N. Compose it
    with :func:`workbench.plots.compose` onto a figure built with ``here=True``."""
    return styled(hv.VLine(float(n) - 1.0), **HERE_STYLE)


def worst_case_error(
    table: xr.Dataset, *, title: str | None = None, here: bool = False
) -> hv.Overlay:
    """The worst-case error e(w) against N − 1 (log–log).

    ``table`` is the N-sweep (:func:`~workbench.labs.quadrature.error_vs_n`: its BQ rows and the
    trapezoid row, whose e(w) is measured in the Study kernel's RKHS) or a
    :func:`~workbench.labs.quadrature.worst_case_errors` table (over ``kernel``).
    """
    x = table["n"].values - 1
    curves = {}
    if "kernel" in table.dims:
        for kernel in table["kernel"].values:
            name = "BQ Wiener" if kernel == "wiener" else f"BQ Matérn ν = {kernel[7:]}"
            curves[name] = table["worst_case_error"].sel(kernel=kernel).values
        if "trapezoid_worst_case_error" in table:
            last = str(table["kernel"].values[-1])
            curves[f"trapezoid (in the {last} RKHS)"] = (
                table["trapezoid_worst_case_error"].sel(kernel=last).values
            )
        default = f"Worst-case error, ℓ = {table.attrs['lengthscale']:g}"
    else:
        for label in table["rule"].values:
            if str(label) != "exact":
                curves[rule_name(str(label))] = table["worst_case_error"].sel(rule=label).values
        default = f"Worst-case error, ℓ = {table.attrs['lengthscale']:g}"
    default += f", jitter = {table.attrs['jitter']:g}"
    overlay = curve_family(
        x,
        curves,
        xlabel="N − 1",
        ylabel="worst-case error e(w)",
        logx=True,
        logy=True,
        title=title or default,
        extra=_here_entry(here),
    )
    return _outside_legend(overlay)


def quadrature_weights(table: xr.Dataset) -> hv.Overlay:
    """The weights w_n on one interval: trapezoid and BQ (from
    :func:`~workbench.labs.quadrature.weights_comparison`), with BQ's Σw − T and e(w) in the
    title (legend: "trapezoid", "BQ", whatever the kernel, so a kernel or ν move patches the
    live panel in place; the kernel is named in the sidebar and the live PI title)."""
    t = table["node_time"].values
    curves = {
        ("trapezoid" if str(r) == "trapezoid" else "BQ"): table["weights"].sel(rule=r).values
        for r in table["rule"].values
    }
    bq = table.sel(rule=table["rule"].values[-1])
    title = (
        f"Weights, N = {table.sizes['node']}: BQ Σw − T = "
        f"{float(bq['weight_sum_bias']):+.1e}, e(w) = {float(bq['worst_case_error']):.1e}"
    )
    overlay = curve_family(t, curves, xlabel="node time t (s)", ylabel="weight wₙ", title=title)
    return _outside_legend(overlay)


def trajectory(
    times: np.ndarray, states: np.ndarray, labels: Sequence[str], *, title: str = ""
) -> hv.Overlay:
    """The closed-loop states along the samples PI used (every iteration, one after another)."""
    states = np.asarray(states, float).reshape(len(times), len(labels))
    curves = {str(name): states[:, j] for j, name in enumerate(labels)}
    overlay = curve_family(
        times,
        curves,
        xlabel="time t (s)",
        ylabel="state",
        markers=False,
        title=title or "Closed-loop trajectory sampled by each iteration",
    )
    return _outside_legend(overlay)


def records_trajectory(records: Sequence[IterationRecord], labels: Sequence[str]) -> hv.Overlay:
    """:func:`trajectory` of streamed records."""
    if not records:
        return trajectory(np.empty(0), np.empty((0, len(labels))), labels)
    times = np.concatenate([r.times for r in records])
    states = np.concatenate([r.states for r in records])
    return trajectory(times, states, labels)


def gains(
    values: np.ndarray,
    target: np.ndarray,
    *,
    name: str,
    max_iter: int | None = None,
    title: str = "",
) -> hv.Overlay:
    """K_i approaching the Riccati K* (LQR) or ω_i approaching ω* (sin): one line per entry, the
    target as a dashed line of the same colour (its values in the title, not the legend)."""
    values = np.atleast_2d(np.asarray(values, float))
    its = np.arange(1, values.shape[0] + 1)
    span = np.array([0.5, max(6, max_iter or values.shape[0]) + 0.5])
    layers = []
    for j in range(target.size):
        colour = PALETTE[j % len(PALETTE)]
        y = values[:, j] if values.size else np.empty(0)
        layers += [
            styled(
                hv.Curve((its[: y.size], y), "PI iteration i", f"{name}ᵢ", label=f"{name}{j + 1}"),
                color=colour,
                **FRAMEWISE,
            ),
            styled(
                hv.Curve(
                    (span, np.full(2, target[j])),
                    "PI iteration i",
                    f"{name}ᵢ",
                    label=f"{name}*{j + 1}",
                ),
                color=colour,
                **THEORY_STYLE,
                **FRAMEWISE,
            ),
        ]
    values_text = ", ".join(f"{v:.3g}" for v in np.ravel(target))
    title = f"{title}: {name}* = ({values_text})" if title else f"{name}* = ({values_text})"
    return _outside_legend(
        hv.Overlay(layers),
        title=title,
        xlabel="PI iteration i",
        ylabel=f"{name}ᵢ",
        responsive=True,
        min_height=300,
        show_grid=True,
    )


def records_gains(
    records: Sequence[IterationRecord], run: xr.Dataset, max_iter: int | None = None
) -> hv.Overlay:
    """:func:`gains` of streamed records: K_i vs K* when ``run`` has ``optimal_gain`` (the LQR),
    else ω_i vs ω* (targets read from ``run``, a Dataset of the same system)."""
    if "optimal_gain" in run:
        rows = [np.ravel(r.gain) for r in records if r.gain is not None]
        target, name = run["optimal_gain"].values, "K"
        title = "Gain Kᵢ → Riccati K*"
    else:
        rows = [np.ravel(r.weights) for r in records]
        target, name = run["optimal_weights"].values, "ω"
        title = "Weights ωᵢ → ω*"
    values = np.array(rows) if rows else np.empty((0, target.size))
    return gains(values, target, name=name, max_iter=max_iter, title=title)


def samples_and_reference(
    t: np.ndarray, y: np.ndarray, t_ref: np.ndarray, y_ref: np.ndarray, *, ylabel: str, title: str
) -> hv.Overlay:
    """Sampled values (markers) over a densely sampled reference (dashed)."""
    return curve_family(
        t,
        {"samples": y},
        theory={"dense reference": (t_ref, y_ref)},
        xlabel="time t (s)",
        ylabel=ylabel,
        title=title,
    )
