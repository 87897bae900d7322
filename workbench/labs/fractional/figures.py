"""HoloViews figures of the fractional lab (one function per figure; notebook and dashboard share them).

Every function takes the Datasets of :mod:`workbench.labs.fractional.analysis` (or of the Study)
and draws the measurement with its theory: the symbol under the eigenvalues, the n^α line under
cond(A_n), the paper's rates under the errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import holoviews as hv
import numpy as np
import xarray as xr

from workbench.plots import (
    FRAMEWISE,
    HERE_COLOUR,
    LEGEND_OUTSIDE,
    PALETTE,
    THEORY_STYLE,
    curve_family,
    error_curve,
    shown_if,
    styled,
)

PRECONDITIONER_NAMES = {
    "none": "none",
    "tau": "τ (sine transform)",
    "circulant": "Strang circulant",
    "laplacian": "Laplacian (α = 2)",
}


def symbol_with_eigenvalues(spec: xr.Dataset) -> hv.Overlay:
    """f_{α,p}(θ) on [0, π] with the sorted eigenvalues of h^α A_n at the sorted samples θ_j.

    Outliers (eigenvalues outside the symbol's range) are marked with crosses.
    """
    a = spec.attrs
    theta = spec.sample_theta.values
    lam = spec.eigenvalue.values
    out = spec.outlier.values.astype(bool)
    layers = [
        styled(
            hv.Curve((spec.theta.values, spec.symbol.values), "θ", "value", label="symbol f(θ)"),
            color=PALETTE[1],
            **THEORY_STYLE,
            **FRAMEWISE,
        ),
        styled(
            hv.Scatter((theta[~out], lam[~out]), "θ", "value", label="eigenvalues of h^α A_n"),
            color=PALETTE[0],
            size=4,
            **FRAMEWISE,
        ),
    ]
    # Always the same three layers (no outliers: hidden), the count in the title: a degree or
    # size move then patches this panel in place (plots.shown_if, apps/live.py).
    layers += shown_if(
        bool(out.any()),
        styled(
            hv.Scatter((theta[out], lam[out]), "θ", "value", label="outliers"),
            color="red",
            marker="x",
            size=12,
            line_width=2,
            **FRAMEWISE,
        ),
    )
    title = (
        f"p = {a['degree']}, α = {a['alpha']:g}, N = {a['intervals']}: "
        f"max |λ − f| = {a['max_deviation_inliers']:.3g}, {int(out.sum())} outliers"
    )
    return hv.Overlay(layers).opts(
        title=title,
        xlabel="θ",
        ylabel="f(θ), sorted eigenvalues",
        responsive=True,
        min_height=300,
        show_grid=True,
        **LEGEND_OUTSIDE,
    )


def symbol_at_pi(ds: xr.Dataset, current: tuple[float, int] | None = None) -> hv.Overlay:
    """f_{α,p}(π) vs p for several α (log y): the high-frequency value falls with p.

    With ``current = (α, p)``: the reference α values (those of ``ds`` other than the current
    one; ``FractionalStudy.symbol_vs_degree`` gives 1.1, 1.5, 2 and yours) are labelled by value,
    the current α is "your α" (its value in the title) and the current p is marked. The layers
    are then the same whatever α is, so an α move patches the panel in place (apps/live.py).
    """
    alphas = [float(a) for a in ds.alpha.values]
    here, title = None, "Symbol at π: falls faster as α → 1"
    if current is None:
        curves = {f"α = {a:g}": ds.symbol_pi.sel(alpha=a).values for a in alphas}
    else:
        a, p = current
        reference = [v for v in alphas if not np.isclose(v, a)] if len(alphas) > 3 else alphas
        curves = {f"α = {v:g}": ds.symbol_pi.sel(alpha=v).values for v in reference}
        curves["your α"] = ds.symbol_pi.sel(alpha=a, method="nearest").values
        value = float(ds.symbol_pi.sel(alpha=a, degree=p, method="nearest"))
        here = styled(
            hv.Points([(p, value)], ["spline degree p", "f(π)"], label="current"),
            color=HERE_COLOUR,
            marker="x",
            size=14,
            line_width=3,
        )
        title = f"Symbol at π (your α = {a:g}): falls faster as α → 1"
    # The marker goes in as ``extra``: ``fig * marker`` would drop the log axis and the title.
    return curve_family(
        ds.degree.values,
        curves,
        xlabel="spline degree p",
        ylabel="f(π)",
        logy=True,
        title=title,
        extra=here,
    )


def condition_numbers(ds: xr.Dataset) -> hv.Overlay:
    """cond₂(A_n) vs n (log–log) with the n^α line through the first point; estimates hollow."""
    n = ds.unknowns.values.astype(float)
    cond = ds.cond.values
    alpha = ds.attrs["alpha"]
    exact = ds.exact.values.astype(bool)
    label = "cond₂(A_n)"  # the fitted exponent goes in the title: a short legend leaves room
    # The estimates' layer is always there (hidden when every point is an SVD) and α sits in
    # the title, so the panel keeps its layers and is patched in place (apps/live.py).
    (estimated,) = shown_if(
        bool((~exact).any()),
        styled(
            hv.Scatter((n[~exact], cond[~exact]), "unknowns n", "cond₂(A_n)"),
            color="white",
            line_color=PALETTE[0],
            size=8,
            **FRAMEWISE,
        ),
    )
    return curve_family(
        n,
        {label: cond},
        xlabel="unknowns n",
        ylabel="cond₂(A_n)",
        theory={"n^α": (n, cond[0] * (n / n[0]) ** alpha)},
        logx=True,
        logy=True,
        title=(
            f"cond ~ n^{ds.attrs['growth_exponent']:.3f}, α = {alpha:g}, p = {ds.attrs['degree']}: "
            "SVD filled, estimate open"
        ),
        pair={"n^α": label},
        extra=estimated,
    )


def errors(ds: xr.Dataset) -> hv.Overlay:
    """Max-norm error vs N with fitted rates and the paper's line (p + 2 − α or p + 1 − α)."""
    a = ds.attrs
    return error_curve(
        ds.intervals.values,
        {"‖u_h − u‖_∞": ds.max_error.values},
        xlabel="intervals N",
        ylabel="‖u_h − u‖_∞",
        theory_slopes={"paper's rate": -a["paper_rate"]},
        # error_curve appends the fitted slope; the successive rates are in ds.rate.
        title=f"Max error, p = {a['degree']}, α = {a['alpha']:g}: paper N^-{a['paper_rate']:g}",
    )


def residual_histories(
    histories: Mapping[str, Sequence[float]], title: str = "GMRES convergence"
) -> hv.Overlay:
    """Relative residual vs iteration (log y), one curve per preconditioner (streams append)."""
    layers, counts = [], []
    for i, (name, res) in enumerate(histories.items()):
        res = np.asarray(res, dtype=float)
        res = res[np.isfinite(res)]
        # The count goes in the title: a label that changes with each iteration would make the
        # streamed panel rebuild on every tick instead of appending in place (apps/live.py).
        name = PRECONDITIONER_NAMES.get(name, name)
        size = max(res.size - 1, 0)
        # One run (the dashboard's live solve): its preconditioner goes in the title too, so a
        # preconditioner move keeps the panel's one layer and patches it in place.
        label = "GMRES residual" if len(histories) == 1 else name
        counts.append(f"{name}, {size} it." if len(histories) == 1 else f"{name} {size} it.")
        layers.append(
            styled(
                hv.Curve((np.arange(res.size), res), "iteration", "relative residual", label=label),
                color=PALETTE[i % len(PALETTE)],
                logy=True,
                **FRAMEWISE,
            )
        )
    return hv.Overlay(layers).opts(
        title=f"{title}: {', '.join(counts)}" if counts else title,
        logy=True,
        xlabel="iteration",
        ylabel="‖b − A x_k‖/‖b‖",
        responsive=True,
        min_height=300,
        show_grid=True,
        **LEGEND_OUTSIDE,
    )


def iteration_counts(ds: xr.Dataset) -> hv.Overlay:
    """GMRES iterations vs n per preconditioner (log x): flat for τ and circulant."""
    curves = {
        PRECONDITIONER_NAMES.get(str(p), str(p)): ds.iterations.sel(preconditioner=p).values
        for p in ds.preconditioner.values
    }
    return curve_family(
        ds.intervals.values,
        curves,
        xlabel="intervals N",
        ylabel="iterations",
        logx=True,
        logy=True,
        title=f"GMRES iterations to {ds.attrs['tol']:g} (b = ones), p = {ds.attrs['degree']}",
    )


def solution(ds: xr.Dataset) -> hv.Overlay:
    """The collocation solution u_h and the exact u on [0, 1]."""
    return curve_family(
        ds.x.values,
        {"u_h (collocation)": ds.solution.values},
        xlabel="x",
        ylabel="u",
        theory={"exact u": (ds.x.values, ds.exact.values)},
        markers=False,
        title=f"{ds.attrs['solution_label']}: N = {ds.attrs.get('intervals', '')}",
    )


def pointwise_error(ds: xr.Dataset) -> hv.Overlay:
    """|u_h − u| on [0, 1] (log y), with the max-norm error in the title."""
    return curve_family(
        ds.x.values,
        {"|u_h − u|": ds.error.values},
        xlabel="x",
        ylabel="|u_h − u|",
        logy=True,
        markers=False,
        title=f"Pointwise error: max {float(ds.max_error):.2e}, {int(ds.iterations)} GMRES it.",
    )
