"""Figures of the KDE lab (HoloViews, no Panel), shared verbatim by the dashboard and the notebook.

One function per figure; each takes what :class:`workbench.labs.kde.KDEStudy` returns (Datasets,
arrays, the thresholds dict) and returns a HoloViews object. Every number drawn is computed in
the library (regimes, thresholds, heavy-tail statistics, the finite-d optimum); the builders only
lay it out and print the notable values in titles and legends.

Sources: Biroli & Mézard, arXiv 2408.05807; the lab brief ``shared/science/kde.md`` (corrected:
the heavy-tail panel shows median(Z) and mean log Z, not the sample skewness, which is not a
reproducible statistic with a few hundred datasets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from workbench import plots
from workbench.labs.kde.theory import REGIMES


# --- markers ---------------------------------------------------------------------------------------
def current_point(x: float, y: float) -> Any:
    """A "you are here" point (exports; the dashboard moves its own live marker)."""
    import holoviews as hv

    return plots.styled(
        hv.Points([(float(x), float(y))], label="current h"),
        color=plots.HERE_COLOUR,
        size=11,
        marker="diamond",
    )


def current_line(x: float) -> Any:
    """A dotted vertical line at the current h (exports)."""

    return plots.marker_line(x, "current h", color=plots.HERE_COLOUR, line_dash="dotted")


# --- figures ---------------------------------------------------------------------------------------
def regime_bands(lo: float, hi: float, t: Mapping[str, float]) -> Any:
    """Shaded condensed | heavy-tailed | CLT strips with edges at h_G,eff and h_CLT,eff."""
    return plots.shaded_regimes([lo, t["h_g_eff"], t["h_clt_eff"], hi], REGIMES)


def kl_figure(sweep: xr.Dataset, t: Mapping[str, float], measured: str = "kl_per_dim") -> Any:
    """KL/d vs h: measurement, d → ∞ theory and finite-d theory; argmin and h_KL in the title."""
    h = np.asarray(sweep["bandwidth"])
    y = np.asarray(sweep[measured])
    h_best = float(h[np.nanargmin(y)])
    return plots.curve_family(
        h,
        {"measured": y},
        xlabel="bandwidth h",
        ylabel="KL / d",
        theory={
            "theory d → ∞": (h, sweep["kl_per_dim_theory"]),
            "theory, finite d": (h, sweep["kl_per_dim_finite"]),
        },
        logx=True,
        underlay=regime_bands(h[0] * 0.5, h[-1] * 2, t),
        title=f"KL/d: argmin {h_best:.3f}, h_KL,eff {t['h_kl_eff']:.3f}, d→∞ {t['h_kl']:.3f}",
    )


def participation_figure(sweep: xr.Dataset, t: Mapping[str, float]) -> Any:
    """⟨Y₂⟩ vs h against the random-energy model 1 − h²/h_G² (d → ∞ and finite d)."""
    h = np.asarray(sweep["bandwidth"])
    return plots.curve_family(
        h,
        {"measured ⟨Y₂⟩": sweep["participation_ratio"]},
        xlabel="bandwidth h",
        ylabel="participation ratio Y₂",
        theory={
            "REM 1 − h²/h_G² (d → ∞)": (h, sweep["participation_theory_inf"]),
            "REM, finite d": (h, sweep["participation_theory"]),
        },
        logx=True,
        underlay=regime_bands(h[0] * 0.5, h[-1] * 2, t),
        title=f"Condensation: participation ratio vs h (d = {int(sweep.attrs['dim'])})",
    )


def distribution_figure(
    log_hat: np.ndarray, log_true: np.ndarray, dim: int, kl_theory: float, bandwidth: float
) -> Any:
    """Histogram of (log ρ̂ − log ρ)/d over the query points, with −KL/d (finite-d theory) and
    the sample mean as labelled vertical lines."""
    per_dim = (np.asarray(log_hat) - np.asarray(log_true)) / dim
    return plots.distribution(
        per_dim,
        xlabel="(log ρ̂ − log ρ)/d per query point",
        bins=min(60, max(10, per_dim.size // 6)),
        markers={
            "− KL/d, finite-d theory": -float(kl_theory),
            "sample mean": float(per_dim.mean()),
        },
        title=f"log ρ̂ across {per_dim.size} query points at h = {bandwidth:.3g}",
    )


def regime_figure(
    regimes: xr.Dataset, current: tuple[float, float] | None = None, label: str | None = None
) -> Any:
    """The (α, h) plane coloured by regime (the Dataset's ``regime``, from the stable index
    μ = h²(1 − s*)/s*), with h_CLT, h_G, h_KL (d → ∞) and the finite-d h_G, h_KL at its d."""
    alphas = np.asarray(regimes["alpha"])
    d = int(regimes.attrs["dim"])
    return plots.regime_map(
        alphas,
        np.asarray(regimes["bandwidth"]),
        np.asarray(regimes["regime"].transpose("bandwidth", "alpha")),
        xlabel="α = (log n)/d",
        ylabel="bandwidth h",
        regime_names=REGIMES,
        boundaries={
            "h_CLT (d→∞)": (alphas, regimes["h_clt"]),
            "h_G (d→∞)": (alphas, regimes["h_g"]),
            "h_KL (d→∞)": (alphas, regimes["h_kl"]),
            f"h_G, d = {d}": (alphas, regimes["h_g_eff"]),
            f"h_KL, d = {d}": (alphas, regimes["h_kl_eff"]),
        },
        current=current,
        logy=True,
        title=label or f"Regimes in the (α, h) plane (finite-d curves at d = {d})",
    )


def heavy_tail_figure(stats: xr.Dataset, t: Mapping[str, float]) -> Any:
    """median(Z) and mean log Z vs h (brief, corrected): 1 and 0 in the CLT regime, the median
    collapsing and mean log Z falling below h_G, although E[Z] = 1 at every h."""
    h = np.asarray(stats["bandwidth"])
    return plots.curve_family(
        h,
        {"median(Z)": stats["z_median"], "mean log Z": stats["z_mean_log"]},
        xlabel="bandwidth h",
        ylabel="statistic of Z",
        logx=True,
        underlay=regime_bands(h[0] * 0.9, h[-1] * 1.1, t),
        title=(
            f"Heavy tails: Z = ρ̂(x)/E[ρ̂(x)|x], {int(stats.attrs['n_datasets'])} datasets (E[Z] = 1)"
        ),
    )


def slice_figure(line: xr.Dataset) -> Any:
    """log ρ̂ (one or several h) and the true log ρ along x(t) = y₁ + t (y₂ − y₁) (the true
    curve is left out for own data, where it is unknown: NaN)."""
    t = np.asarray(line["t"])
    h = np.atleast_1d(np.asarray(line["bandwidth"]))
    est = np.atleast_2d(np.asarray(line["log_density"]))
    # One h: it is in the title, and a fixed label lets a bandwidth move patch the curve in
    # place (a new label is a new glyph to HoloViews).
    curves = (
        {"log ρ̂": est[0]}
        if h.size == 1
        else {f"log ρ̂, h = {v:.3g}": row for v, row in zip(h, est, strict=True)}
    )
    exact = np.asarray(line["log_density_exact"])
    return plots.curve_family(
        t,
        curves,
        xlabel="t  (x = y₁ + t (y₂ − y₁))",
        ylabel="log density",
        theory={"log ρ (true)": (t, exact)} if np.isfinite(exact).any() else None,
        markers=False,
        title=(
            "A 1-D slice through two nearest data points"
            + (f", h = {h[0]:.3g}" if h.size == 1 else "")
        ),
    )


# --- own data (digits, uploads): what a sample with an unknown density can show ------------------
def heldout_figure(sweep: xr.Dataset, t: Mapping[str, float]) -> Any:
    """Held-out mean log ρ̂ vs h (a proper score: higher is better, its argmax estimates the
    KL-optimal h), with the Gaussian-theory h_KL, h_G, h_CLT at the sample's n and d dotted and
    the Gaussian regimes shaded, for reference."""
    import holoviews as hv

    h = np.asarray(sweep["bandwidth"])
    y = np.asarray(sweep["log_density_mean"])
    err = np.asarray(sweep["log_density_mean_stderr"])
    best = int(np.nanargmax(y))
    band = hv.Spread((h, y, err), "bandwidth h", ["mean log ρ̂", "stderr"], label="± 1 s.e.")
    marks = plots.vlines(
        {
            f"h_KL (Gaussian) {t['h_kl_eff']:.3g}": t["h_kl_eff"],
            f"h_G (Gaussian) {t['h_g_eff']:.3g}": t["h_g_eff"],
            f"h_CLT (Gaussian) {t['h_clt_eff']:.3g}": t["h_clt_eff"],
        }
    )
    return plots.curve_family(
        h,
        {"held-out mean log ρ̂": y},
        xlabel="bandwidth h",
        ylabel="mean log ρ̂ on held-out points",
        logx=True,
        underlay=hv.Overlay(
            [*regime_bands(h[0] * 0.5, h[-1] * 2, t), plots.styled(band, alpha=0.3)]
        ),
        title=(
            f"Held-out score: best h {h[best]:.3f}; Gaussian theory h_KL {t['h_kl_eff']:.3f} "
            f"(n = {int(sweep.attrs['n']):,}, d = {int(sweep.attrs['dim'])})"
        ),
        extra=marks,
    )


def points_figure(sweep: xr.Dataset, t: Mapping[str, float]) -> Any:
    """How many points carry ρ̂ vs h: the median number carrying 90 % of the kernel weight and
    the median effective number 1/Y₂, from 1 (condensed) up to n (every point counts)."""
    h = np.asarray(sweep["bandwidth"])
    n = int(sweep.attrs["n"])
    return plots.curve_family(
        h,
        {
            "points carrying 90 % of the weight": sweep["n_points_90"],
            "effective points 1/Y₂": sweep["effective_points"],
        },
        xlabel="bandwidth h",
        ylabel="points (median over held-out points)",
        theory={f"all n = {n:,} points": (h[[0, -1]], [n, n])},
        logx=True,
        logy=True,
        underlay=regime_bands(h[0] * 0.5, h[-1] * 2, t),
        title="How many points carry the estimate",
    )


def heldout_distribution_figure(log_hat: np.ndarray, dim: int, bandwidth: float) -> Any:
    """Histogram of log ρ̂/d over the held-out points at one h, with its mean."""
    per_dim = np.asarray(log_hat) / dim
    return plots.distribution(
        per_dim,
        xlabel="log ρ̂ / d per held-out point",
        bins=min(60, max(10, per_dim.size // 6)),
        markers={"mean": float(per_dim.mean())},
        title=f"log ρ̂ across {per_dim.size} held-out points at h = {bandwidth:.3g}",
    )


def convergence_figure(
    dims: Sequence[int], argmins: Sequence[float], theory: Mapping[str, Any], alpha: float
) -> Any:
    """Measured KL argmin vs d against h_KL,eff(d) and the d → ∞ h_KL at fixed α; ``theory`` is
    :func:`workbench.labs.kde.finite_d_optimum` over a dense range of d."""
    d_dense = np.asarray(theory["dim"])
    return plots.curve_family(
        list(dims),
        {"measured KL argmin": list(argmins)},
        xlabel="dimension d",
        ylabel="KL-optimal bandwidth",
        theory={
            "h_KL,eff (finite-d theory)": (d_dense, theory["h_kl_eff"]),
            "h_KL (d → ∞)": (d_dense, theory["h_kl"]),
        },
        title=f"Theory and measurement converge as d grows (α = {alpha})",
    )
