"""HoloViews figures of the criticality lab (one function per figure; notebook and dashboard share them).

Every function takes the Datasets of :class:`~workbench.labs.criticality.CriticalityStudy`
(``flows()``, ``monte_carlo()``, ``phase()``) and draws the measurement with its theory: the fixed
point and the asymptotic approach under the kernel flow, c* under the correlation flow, the
critical line on the phase plane, the Gaussian under the histogram, the 1/n lines under κ.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import xarray as xr

from workbench.plots import (
    FRAMEWISE,
    LEGEND_BELOW,
    LEGEND_OUTSIDE,
    PALETTE,
    THEORY_STYLE,
    distribution,
    marker_line,
    shown_if,
    styled,
)

_OPTS = {"responsive": True, "min_height": 300, "show_grid": True, **LEGEND_OUTSIDE}


def _setting(a: dict) -> str:
    return f"{a['activation']}, C_W={a['cw']:g}, C_b={a['cb']:g}"  # short: titles fit at 1400 px


def kernel_flow(flows: xr.Dataset) -> hv.Overlay:
    """K^(l) vs l (log–log) with the fixed point K* and the theory approach.

    Theory: tanh-class at criticality K ≈ 1/(2l); elsewhere K* + (K^(1) − K*) χ_∥(K*)^(l−1)
    (linearised flow, depth scale −1/log χ_∥).
    """
    a = flows.attrs
    layer = flows.layer.values[1:]
    kern = flows.kernel.values[1:]
    layers = [
        styled(
            hv.Curve((layer, kern), "layer l", "K^(l)", label="kernel flow K^(l)"),
            color=PALETTE[0],
            line_width=2.5,
            **FRAMEWISE,
        )
    ]
    qstar = a["q_star"]
    title = f"Kernel flow ({_setting(a)}): "
    # Every phase draws the same five layers (absent ones hidden, NaN data): a C_W move across
    # the critical line then patches this panel in place (plots.shown_if).
    fixed = bool(np.isfinite(qstar) and qstar > 0)
    tanh_critical = bool(qstar == 0 and a["cw"] == 1 and a["cb"] == 0 and a["activation"] == "tanh")
    approach = np.full(layer.shape, np.nan)
    if fixed:
        chi_par = float(np.interp(qstar, np.sort(kern), flows.chi_par.values[1:][np.argsort(kern)]))
        approach = qstar + (kern[0] - qstar) * chi_par ** (layer - 1.0)
        title += f"K* = {qstar:.3g}"
    elif tanh_critical:
        title += f"K·l = {kern[-1] * layer[-1]:.4f} at l = {layer[-1]}"  # → ½: the 1/(2l) law
    else:
        title += "no finite fixed point" if not np.isfinite(qstar) else "K → 0"
    layers += shown_if(
        fixed,
        *marker_line(
            qstar if fixed else np.nan, "fixed point K*", vertical=False, color=PALETTE[2]
        ),
        styled(
            hv.Curve((layer, approach), "layer l", "K^(l)", label="linearised approach"),
            color=PALETTE[1],
            **THEORY_STYLE,
        ),
    )
    law = 1 / (2 * layer) if tanh_critical else np.full(layer.shape, np.nan)
    layers += shown_if(
        tanh_critical,
        styled(
            hv.Curve((layer, law), "layer l", "K^(l)", label="1/(2l) (K* = 0 class)"),
            color=PALETTE[1],
            **THEORY_STYLE,
        ),
    )
    return hv.Overlay(layers).opts(title=title, logx=True, logy=True, ylabel="K^(l)", **_OPTS)


def correlation_flow(flows: xr.Dataset) -> hv.Overlay:
    """1 − ρ^(l) vs l (log–log) with the theory: 9π²/(2l²) for ReLU at criticality, 1 − c* otherwise."""
    a = flows.attrs
    layer = flows.layer.values[1:]
    gap = 1.0 - flows.rho.values[1:]
    keep = gap > 1e-14
    layers = [
        styled(
            hv.Curve((layer[keep], gap[keep]), "layer l", "1 − ρ^(l)", label="1 − ρ^(l)"),
            color=PALETTE[0],
            line_width=2.5,
            **FRAMEWISE,
        )
    ]
    # The same four layers in every phase, absent ones hidden (plots.shown_if): in place.
    relu_critical = bool(a["activation"] == "relu" and a["cw"] == 2 and a["cb"] == 0)
    law = 4.5 * np.pi**2 / layer**2 if relu_critical else np.full(layer.shape, np.nan)
    layers += shown_if(
        relu_critical,
        styled(
            hv.Curve((layer, law), "layer l", "1 − ρ^(l)", label="(9π²/2)/l²"),
            color=PALETTE[1],
            **THEORY_STYLE,
        ),
    )
    ordered = bool(np.isfinite(a["c_star"]) and a["c_star"] < 1)
    level = 1 - a["c_star"] if ordered else np.nan
    layers += shown_if(ordered, *marker_line(level, "1 − c*", vertical=False, color=PALETTE[2]))
    xi = a["xi_c"]
    title = f"Correlation ({_setting(a)}): ξ_c = {xi:.3g} layers, χ₁ = {a['chi1']:.4g}"
    if ordered:
        # Values go in the title: a legend label is what keeps a glyph patched in place.
        title += f", c* = {a['c_star']:.4f}"
    return hv.Overlay(layers).opts(title=title, logx=True, logy=True, **_OPTS)


def phase_diagram(
    phase: xr.Dataset, current: tuple[float, float] | None = None, critical=None
) -> hv.Overlay:
    """The (C_b, C_W) plane coloured by log₁₀ ξ, with the critical line, critical point and you."""
    xi = np.log10(phase.xi.values)
    mesh = styled(
        hv.QuadMesh(
            (phase.cb.values, phase.cw.values, xi),
            ["bias variance C_b", "weight variance C_W"],
            "log10 ξ",
        ),
        cmap="viridis",
        colorbar=True,
        tools=["hover", "tap"],
        clim=(-0.5, 3.0),
    )
    layers = [mesh]
    line = (phase.line_cb.values, phase.line_cw.values)
    dims = ["bias variance C_b", "weight variance C_W"]
    label = "critical line χ₁ = 1"
    # White on the mesh, over a dark edge: the legend (on white) shows the line too.
    layers += [
        styled(hv.Curve(line, *dims, label=label), color="#333333", line_width=5),
        styled(hv.Curve(line, *dims, label=label), color="white", line_width=3),
    ]
    if critical is not None and np.all(np.isfinite(critical)):
        layers.append(
            styled(
                hv.Points(
                    [critical], ["bias variance C_b", "weight variance C_W"], label="critical point"
                ),
                color=PALETTE[1],
                size=14,
                marker="star",
            )
        )
    if current is not None:
        layers.append(
            styled(
                hv.Points(
                    [current], ["bias variance C_b", "weight variance C_W"], label="you are here"
                ),
                color="red",
                size=14,
                marker="x",
                line_width=3,
            )
        )
    # The mesh fills the plot and the colour bar sits beside it: the legend goes underneath.
    title = f"Phases of {phase.attrs['activation']} (blank: K diverges)"
    return hv.Overlay(layers).opts(title=title, responsive=True, min_height=340, **LEGEND_BELOW)


def preactivation_histogram(mcds: xr.Dataset) -> hv.Overlay:
    """Histogram of z at layer L_mc over all networks, against N(0, K^(L)) (infinite width)."""
    a = mcds.attrs
    z = mcds.samples.values.ravel()
    k = a["kernel_at_mc_depth"]
    grid = np.linspace(-4 * np.sqrt(k), 4 * np.sqrt(k), 400) if np.isfinite(k) and k > 0 else None
    theory = (
        (grid, np.exp(-(grid**2) / (2 * k)) / np.sqrt(2 * np.pi * k)) if grid is not None else None
    )
    kappa = float(mcds.kurtosis_mc.values[-1])
    title = (
        f"z at layer {a['mc_depth']}, {a['networks']} networks, n = {a['width']}: "
        f"κ = {kappa:.3f} ± {float(mcds.kurtosis_err.values[-1]):.3f}"
    )
    return distribution(
        z,
        xlabel="preactivation z",
        bins=80,
        theory=theory,
        theory_label="Gaussian N(0, K^(L))",
        title=title,
    )


def kurtosis_vs_aspect(mcds: xr.Dataset) -> hv.Overlay:
    """Monte-Carlo κ (±2 SE) vs L/n with the leading-order 3V/(nK²) and (ReLU/linear) the exact curve."""
    a = mcds.attrs
    r = mcds.aspect.values
    k, e = mcds.kurtosis_mc.values, mcds.kurtosis_err.values
    layers = [
        styled(
            hv.ErrorBars((r, k, 2 * e), "aspect ratio L/n", ["excess kurtosis κ", "err"]),
            color=PALETTE[0],
        ),
        styled(
            hv.Scatter(
                (r, k), "aspect ratio L/n", "excess kurtosis κ", label="Monte-Carlo (±2 SE)"
            ),
            color=PALETTE[0],
            size=7,
            **FRAMEWISE,
        ),
        styled(
            hv.Curve(
                (r, mcds.kurtosis_leading.values),
                "aspect ratio L/n",
                "excess kurtosis κ",
                label="leading order 3V/(nK²)",
            ),
            color=PALETTE[1],
            **THEORY_STYLE,
        ),
    ]
    if np.all(np.isfinite(mcds.kurtosis_exact.values)):
        layers.append(
            styled(
                hv.Curve(
                    (r, mcds.kurtosis_exact.values),
                    "aspect ratio L/n",
                    "excess kurtosis κ",
                    label="exact 3[(1 + a/n)^(L−1) − 1]",
                ),
                color=PALETTE[2],
                line_width=2,
            )
        )
    title = f"Kurtosis vs L/n ({_setting(a)}, n = {a['width']})"
    return hv.Overlay(layers).opts(
        title=title, responsive=True, min_height=300, show_grid=True, **LEGEND_OUTSIDE
    )


def gradients(flows: xr.Dataset) -> hv.Overlay:
    """χ_∥, χ_⊥ of each layer and the back-propagated factor ∏χ_⊥ and NTK Θ^(l)/Θ^(1) vs depth."""
    a = flows.attrs
    layer = flows.layer.values[1:]
    curves = {
        "χ_∥(K^(l))": flows.chi_par.values[1:],
        "χ_⊥(K^(l))": flows.chi_perp.values[1:],
        "gradient factor ∏χ_⊥": flows.grad.values[1:],
        "NTK Θ^(l)/Θ^(1)": flows.ntk.values[1:] / flows.ntk.values[1],
    }
    layers = []
    for i, (label, y) in enumerate(curves.items()):
        keep = np.isfinite(y) & (y > 0)
        layers.append(
            styled(
                hv.Curve((layer[keep], y[keep]), "layer l", "value", label=label),
                color=PALETTE[i],
                line_width=2,
                **FRAMEWISE,
            )
        )
    layers += [*marker_line(1.0, "1", vertical=False, color="gray", line_dash="dotted")]
    grad = flows.grad.values[-1]
    title = f"Gradients ({_setting(a)}): ∏χ_⊥ = {grad:.3g} at l = {layer[-1]}"
    return hv.Overlay(layers).opts(title=title, logy=True, ylabel="value", **_OPTS)
