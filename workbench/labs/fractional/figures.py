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
        hv.Curve((spec.theta.values, spec.symbol.values), "θ", "value", label="symbol f(θ)").opts(
            color=PALETTE[1], **THEORY_STYLE, **FRAMEWISE
        ),
        hv.Scatter((theta[~out], lam[~out]), "θ", "value", label="eigenvalues of h^α A_n").opts(
            color=PALETTE[0], size=4, **FRAMEWISE
        ),
    ]
    if out.any():
        layers.append(
            hv.Scatter((theta[out], lam[out]), "θ", "value", label=f"outliers ({out.sum()})").opts(
                color="red", marker="x", size=12, line_width=2, **FRAMEWISE
            )
        )
    title = (
        f"p = {a['degree']}, α = {a['alpha']:g}, N = {a['intervals']}: "
        f"max |λ − f| = {a['max_deviation_inliers']:.3g} (inliers)"
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
    """f_{α,p}(π) vs p for several α (log y): the high-frequency value falls with p."""
    curves = {f"α = {a:g}": ds.symbol_pi.sel(alpha=a).values for a in ds.alpha.values}
    here = None
    if current is not None:
        a, p = current
        value = float(ds.symbol_pi.sel(alpha=a, degree=p, method="nearest"))
        here = hv.Points([(p, value)], ["spline degree p", "f(π)"], label="current").opts(
            color=HERE_COLOUR, marker="x", size=14, line_width=3
        )
    # The marker goes in as ``extra``: ``fig * marker`` would drop the log axis and the title.
    return curve_family(
        ds.degree.values,
        curves,
        xlabel="spline degree p",
        ylabel="f(π)",
        logy=True,
        title="Symbol at π: falls faster as α → 1",
        extra=here,
    )


def condition_numbers(ds: xr.Dataset) -> hv.Overlay:
    """cond₂(A_n) vs n (log–log) with the n^α line through the first point; estimates hollow."""
    n = ds.unknowns.values.astype(float)
    cond = ds.cond.values
    alpha = ds.attrs["alpha"]
    exact = ds.exact.values.astype(bool)
    label = "cond₂(A_n)"  # the fitted exponent goes in the title: a short legend leaves room
    estimated = None
    if (~exact).any():
        estimated = hv.Scatter((n[~exact], cond[~exact]), "unknowns n", "cond₂(A_n)").opts(
            color="white", line_color=PALETTE[0], size=8, **FRAMEWISE
        )
    return curve_family(
        n,
        {label: cond},
        xlabel="unknowns n",
        ylabel="cond₂(A_n)",
        theory={f"n^α (α = {alpha:g})": (n, cond[0] * (n / n[0]) ** alpha)},
        logx=True,
        logy=True,
        title=(
            f"cond ~ n^{ds.attrs['growth_exponent']:.3f}, p = {ds.attrs['degree']}: "
            "SVD (filled), estimate (open)"
        ),
        pair={f"n^α (α = {alpha:g})": label},
        extra=estimated,
    )


def errors(ds: xr.Dataset) -> hv.Overlay:
    """Max-norm error vs N with fitted rates and the paper's line (p + 2 − α or p + 1 − α)."""
    a = ds.attrs
    rates = ", ".join(f"{r:.2f}" for r in ds.rate.values[:-1])
    return error_curve(
        ds.intervals.values,
        {f"p = {a['degree']}": ds.max_error.values},
        xlabel="intervals N",
        ylabel="‖u_h − u‖_∞",
        theory_slopes={f"paper: N^-{a['paper_rate']:g}": -a["paper_rate"]},
        title=f"Max-norm error, α = {a['alpha']:g}; rates {rates}",
    )


def residual_histories(
    histories: Mapping[str, Sequence[float]], title: str = "GMRES convergence"
) -> hv.Overlay:
    """Relative residual vs iteration (log y), one curve per preconditioner (streams append)."""
    layers = []
    for i, (name, res) in enumerate(histories.items()):
        res = np.asarray(res, dtype=float)
        res = res[np.isfinite(res)]
        label = f"{PRECONDITIONER_NAMES.get(name, name)} ({max(res.size - 1, 0)} it.)"
        layers.append(
            hv.Curve(
                (np.arange(res.size), res), "iteration", "relative residual", label=label
            ).opts(color=PALETTE[i % len(PALETTE)], logy=True, **FRAMEWISE)
        )
    return hv.Overlay(layers).opts(
        title=title,
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
