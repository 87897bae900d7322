"""HoloViews figures of the KV-cache lab: one function per figure, shared by notebook and app.

Every builder takes a Dataset from :class:`KVCacheStudy` (``spectra()``, ``evaluate()``,
``grid()``, ``sqnr()``) and returns a HoloViews object; theory lines are drawn over measurements
and the key numbers are printed in titles and legends. No computation beyond selection.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from workbench import plots

from .memory import CSKV_POINTS
from .spectra import TENSORS


def _hv():
    import holoviews as hv  # noqa: PLC0415 - figures only

    return hv


def spectrum_figure(sp: xr.Dataset, layer: int = 1, head: str = "joint", centered: bool = False):
    """Normalised singular values σ_i/σ_1 of K, K_rope and V (log y), rank@90 % in the legend."""
    sel = sp.sel(layer=layer, head=head, centered=int(centered))
    curves = {}
    for t, name in TENSORS.items():
        s = sel.singular_value.sel(tensor=t).values
        stats = sel.sel(tensor=t)
        label = (
            f"{name}: r90 {int(stats.rank90)}, eff {float(stats.effective_rank):.0f}, "
            f"stable {float(stats.stable_rank):.1f}"
        )
        curves[label] = s / np.nanmax(s)
    fig = plots.curve_family(
        sel.index.values,
        curves,
        xlabel="index i",
        ylabel="σ_i / σ_1",
        logy=True,
        markers=False,
        title=f"Singular values, layer {layer}, {'centred' if centered else 'uncentred'}, "
        f"{'both heads' if head == 'joint' else 'head ' + head}",
    )
    # The labels carry three numbers each: beside the plot they would take half its width.
    # Sorted singular values start at 1 on the left and fall to the right, so the lower left
    # corner stays empty (tests/test_plots_legends.py checks it at the defaults).
    return fig.opts(legend_position="bottom_left")


def energy_figure(sp: xr.Dataset, layer: int = 1, head: str = "joint", centered: bool = False):
    """Cumulative energy Σ_{j≤i} σ_j²/Σσ² with the 90 % line and each tensor's rank@90 % (a
    dotted line in its curve's colour)."""
    sel = sp.sel(layer=layer, head=head, centered=int(centered))
    curves = {name: sel.energy.sel(tensor=t).values for t, name in TENSORS.items()}
    marks = plots.vlines(
        {
            f"r90 {name} = {int(sel.rank90.sel(tensor=t))}": float(sel.rank90.sel(tensor=t))
            for t, name in TENSORS.items()
        }
    )
    ninety = plots.marker_line(0.9, "90 %", vertical=False, color="grey", line_dash="dotted")
    return plots.curve_family(
        sel.index.values,
        curves,
        xlabel="rank r",
        ylabel="energy fraction",
        markers=False,
        title="Cumulative energy; dotted: rank at 90 %",
        extra=marks * ninety,
    )


def rank_error_figure(ds: xr.Dataset, bits: int = 16, current: tuple[int, int] | None = None):
    """Relative K and V errors over rank (from ``reconstruction_errors()``) at ``bits``, with the
    Eckart–Young optimum sqrt(1 − energy_r) dashed and the current ranks as dotted lines."""
    r = ds["rank"].values
    b = int(bits) if int(bits) in ds.bits.values else int(ds.bits.values[-1])
    # The bit-width goes in the title, not the labels: a bits move then patches in place.
    curves = {
        "K, rank r + bits": ds.key_rel_error.sel(bits=b).values,
        "V, rank r + bits": ds.value_rel_error.sel(bits=b).values,
    }
    theory = {
        "K optimum (PCA)": (r, ds.key_optimal_error.values),
        "V optimum (PCA)": (r, ds.value_optimal_error.values),
    }
    k_curve, v_curve = curves
    title = f"Error vs rank at {b} bits ({ds.attrs.get('method', '')})"
    marks = None
    if current is not None:
        # Fixed legend labels, the ranks in the title: a rank move then patches the two lines
        # in place instead of rebuilding the figure. Each line in its tensor's colour.
        marks = plots.vlines({"your r_K": current[0], "your r_V": current[1]})
        title += f": r_K = {current[0]}, r_V = {current[1]}"
    return plots.curve_family(
        r,
        curves,
        xlabel="rank r",
        ylabel="relative error",
        theory=theory,
        logy=True,
        markers=False,
        title=title,
        pair=dict(zip(theory, (k_curve, v_curve), strict=True)),
        extra=marks,
    )


def bits_error_figure(ds: xr.Dataset):
    """Attention-level errors against bits at the chosen ranks (16 = off drawn at 16)."""
    sel = ds.isel(rank_k=0, rank_v=0)
    curves = {
        "K error": ds.key_rel_error.isel(rank_k=0).values,
        "V error": ds.value_rel_error.isel(rank_v=0).values,
        "attention output error": sel.output_rel_error.values,
        "attention KL (nats)": sel.attention_kl.values,
    }
    return plots.curve_family(
        ds.bits.values,
        curves,
        xlabel="bits b",
        ylabel="error",
        logy=True,
        title=f"Errors vs bits at r_K = {int(ds.rank_k[0])}, r_V = {int(ds.rank_v[0])}",
    )


def pareto_figure(
    grid: xr.Dataset,
    front: xr.Dataset,
    metric: str = "output_rel_error",
    current: tuple[float, float] | None = None,
):
    """Error (mean over layers) vs memory ratio for every (r, b); the Pareto front as a line;
    CSKV's operating points (memory 0.2 at 16 bits, 0.05 at 4 bits) as vertical lines."""
    hv = _hv()
    err = grid[metric].mean("layer")
    mem = grid.memory_ratio
    points = []
    for i, b in enumerate(grid.bits.values):
        points.append(
            plots.styled(
                hv.Scatter(
                    (mem.sel(bits=b).values, err.sel(bits=b).values),
                    "memory ratio",
                    "error",
                    label=f"{b} bits" if b < 16 else "16 bits (off)",
                ),
                color=plots.PALETTE[i % len(plots.PALETTE)],
                size=4,
                alpha=0.7,
            )
        )
    line = plots.styled(
        hv.Curve(
            (front.memory_ratio.values, front.error.values),
            "memory ratio",
            "error",
            label="Pareto front",
        ),
        color="#777777",
        line_width=2,
    )  # mid grey: visible on both themes
    layers = [*points, line]
    for k, (label, (rho, b)) in enumerate(CSKV_POINTS.items()):
        colour = plots.PALETTE[k + 1]
        label = label.split(" (")[0]  # "CSKV 80 %": the explanation gives rank and bits
        layers += [
            *plots.marker_line(rho * min(b, 16) / 16, label, color=colour, line_dash="dotted")
        ]
    if current is not None:
        layers.append(
            plots.styled(
                hv.Points([current], ["memory ratio", "error"], label="you are here"),
                color=plots.HERE_COLOUR,
                marker="x",
                size=12,
                line_width=3,
            )
        )
    return hv.Overlay(layers).opts(
        logx=True,
        logy=True,
        title=f"Error vs memory (with metadata): front of {front.sizes['point']} points",
        ylabel=err.attrs.get("long_name", metric),
        responsive=True,
        min_height=320,
        show_grid=True,
        **plots.LEGEND_OUTSIDE,
    )


def sqnr_figure(ds: xr.Dataset):
    """Measured SQNR vs bits (both conventions, stochastic rounding) over the theory lines."""
    b = ds.bits.values
    # Short labels keep the legend beside the plot narrow; the explanation spells them out.
    curves = {
        "min–max (2ᵇ levels)": ds.sqnr_minmax.values,
        "cells (2ᵇ cells)": ds.sqnr_cells.values,
        "stochastic rounding": ds.sqnr_stochastic.values,
    }
    theory = {
        "20 log₁₀(2ᵇ − 1)": (b, ds.theory_minmax.values),
        "6.02 b": (b, ds.theory_cells.values),
        "20 log₁₀(2ᵇ − 1) − 3.01": (b, ds.theory_stochastic.values),
    }
    slope = np.polyfit(b[b >= 3], ds.sqnr_minmax.values[b >= 3], 1)[0]
    return plots.curve_family(
        b,
        curves,
        xlabel="bits b",
        ylabel="SQNR (dB)",
        theory=theory,
        pair=dict(zip(theory, curves, strict=True)),  # each convention's own theory line
        title=f"SQNR on U(−1, 1): fitted slope {slope:.2f} dB/bit (theory 6.02)",
    )


def error_histogram(x: np.ndarray, x_hat: np.ndarray, step: float | None = None):
    """Histogram of the quantization error x̂ − x with the uniform ±S/2 density it should follow."""
    e = np.asarray(x_hat) - np.asarray(x)
    theory = None
    if step:
        grid = np.linspace(-step, step, 201)
        theory = (grid, np.where(np.abs(grid) <= step / 2, 1.0 / step, 0.0))
    return plots.distribution(
        e.ravel(),
        xlabel="error x̂ − x",
        theory=theory,
        theory_label="uniform on ±S/2",
        title="Quantization error",
        bins=60,
    )
