"""Figures of the KDE lab (HoloViews, no Panel), shared verbatim by the dashboard and the notebook.

One function per figure; each takes what :class:`workbench.labs.kde.KDEStudy` returns (Datasets
or arrays) and returns a HoloViews object. The few data helpers at the top say *what* is drawn
(the regime of a stable index, the bandwidth grid of the sweep panels, the heavy-tail statistics
of the corrected brief); every formula behind them lives in :mod:`workbench.labs.kde`.

Sources: Biroli & Mézard, arXiv 2408.05807; the lab brief ``shared/science/kde.md`` (corrected:
the heavy-tail panel shows median(Z) and mean log Z, not the sample skewness, which is not a
reproducible statistic with a few hundred datasets).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from workbench import plots
from workbench.labs import kde

#: Regime names in the order of :func:`regime_of`'s codes.
REGIMES = ("condensed", "heavy-tailed", "CLT")
#: h/h_G,eff of the heavy-tail panel; includes the brief's 0.8, 1.0, 1.2, 1.41, 1.7 and 2.0.
HEAVY_TAIL_RATIOS = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.41, 1.55, 1.7, 1.85, 2.0, 2.2)
#: Independent datasets per heavy-tail point (the brief's 600).
HEAVY_TAIL_DATASETS = 600
#: The (α, h) window of the regime map.
REGIME_ALPHAS = np.linspace(0.05, 2.0, 60)
REGIME_BANDWIDTHS = np.geomspace(0.05, 5.0, 120)


# --- what is drawn ---------------------------------------------------------------------------------
def regime_of(mu: Any) -> np.ndarray:
    """Regime code of a stable index μ (brief): 0 condensed (μ < 1), 1 heavy-tailed
    (1 ≤ μ < 2, α-stable), 2 CLT (μ ≥ 2). Names in :data:`REGIMES`.

    >>> regime_of([0.5, 1.0, 1.9, 2.0]).tolist()
    [0, 1, 1, 2]
    """
    mu = np.asarray(mu, dtype=float)
    return np.where(mu < 1, 0, np.where(mu < 2, 1, 2))


def _finite_or(value: float, fallback: float) -> float:
    return float(value) if math.isfinite(float(value)) else float(fallback)


def thresholds(study: kde.KDEStudy) -> dict[str, float]:
    """The study's thresholds; finite-d values (``_eff``) fall back to d → ∞ where undefined."""
    t = study.thresholds()
    for key in ("h_clt", "h_g", "h_kl"):
        t[f"{key}_eff"] = _finite_or(t[f"{key}_eff"], t[key])
    return t


def bandwidth_grid(study: kde.KDEStudy, points: int = 48) -> np.ndarray:
    """The sweep panels' bandwidths: log-spaced from 0.45 × the smaller h_KL (d → ∞ or finite d)
    to 2.4 × the larger h_CLT, so all three regimes and the KL optimum are on screen."""
    t = thresholds(study)
    lo = 0.45 * min(t["h_kl"], t["h_kl_eff"])
    hi = 2.4 * max(t["h_clt"], t["h_clt_eff"])
    return np.geomspace(lo, hi, points)


def heavy_tail_statistics(
    dim: int,
    alpha: float,
    seed: int = 0,
    ratios: Sequence[float] = HEAVY_TAIL_RATIOS,
    n_datasets: int = HEAVY_TAIL_DATASETS,
) -> xr.Dataset:
    """median(Z) and mean log Z over independent datasets at h = ratio × h_G,eff (brief).

    Z = ρ̂_h(x)/E[ρ̂_h(x) | x] at |x| = √d, drawn by :func:`kde.heavy_tail_ratios` (the exact O(n)
    shortcut). E[Z] = 1 at every h, yet below h_G the median collapses and mean log Z < 0: the
    mean is carried by rare datasets. Cached per argument tuple and read-only (shared across
    dashboard sessions).
    """
    return _heavy_tail_statistics(
        int(dim), float(alpha), int(seed), tuple(float(r) for r in ratios), int(n_datasets)
    )


@functools.lru_cache(maxsize=4)
def _heavy_tail_statistics(dim, alpha, seed, ratios, n_datasets) -> xr.Dataset:
    h_g_eff = _finite_or(
        kde.regime_thresholds(alpha, dim)["h_g"], kde.regime_thresholds(alpha)["h_g"]
    )
    h = np.asarray(ratios) * h_g_eff
    z = kde.heavy_tail_ratios(dim, alpha, h, n_datasets, seed)
    ds = xr.Dataset(
        {
            "z_median": (("bandwidth",), np.median(z, axis=1)),
            "z_mean_log": (("bandwidth",), np.log(z).mean(axis=1)),
            "bandwidth_ratio": (("bandwidth",), np.asarray(ratios)),
        },
        coords={"bandwidth": h},
        attrs={"dim": dim, "alpha": alpha, "seed": seed, "n_datasets": n_datasets},
    )
    ds["z_median"].attrs.update(units="1", long_name="median of Z = rho_hat/E[rho_hat | x]")
    ds["z_mean_log"].attrs.update(units="1", long_name="mean of log Z")
    ds["bandwidth_ratio"].attrs.update(units="1", long_name="h / h_G,eff")
    for var in ds.variables.values():
        var.values.flags.writeable = False
    return ds


# --- markers ---------------------------------------------------------------------------------------
def current_point(x: float, y: float) -> Any:
    """A "you are here" point (exports; the dashboard moves its own live marker)."""
    import holoviews as hv

    return hv.Points([(float(x), float(y))], label="current h").opts(
        color="black", size=11, marker="diamond"
    )


def current_line(x: float) -> Any:
    import holoviews as hv

    return hv.VLine(float(x)).opts(color="black", line_dash="dotted", line_width=2)


# --- figures ---------------------------------------------------------------------------------------
def regime_bands(lo: float, hi: float, t: dict[str, float]) -> Any:
    """Shaded condensed | heavy-tailed | CLT strips with edges at h_G,eff and h_CLT,eff."""
    return plots.shaded_regimes([lo, t["h_g_eff"], t["h_clt_eff"], hi], REGIMES)


def kl_figure(sweep: xr.Dataset, t: dict[str, float], measured: str = "kl_per_dim") -> Any:
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
        title=(f"KL/d: argmin {h_best:.3f}, h_KL,eff {t['h_kl_eff']:.3f}, d→∞ {t['h_kl']:.3f}"),
    )


def participation_figure(sweep: xr.Dataset, t: dict[str, float]) -> Any:
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
    """Histogram of (log ρ̂ − log ρ)/d over the query points, with −KL/d (finite-d theory)."""
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
    """The (α, h) plane coloured by regime (μ = h²(1 − s*)/s*), with h_CLT, h_G, h_KL (d → ∞)
    and the finite-d h_G, h_KL at the Dataset's d."""
    alphas = np.asarray(regimes["alpha"])
    mu = kde.stable_index(REGIME_BANDWIDTHS[:, None], alphas[None, :])
    d = int(regimes.attrs["dim"])
    return plots.regime_map(
        alphas,
        REGIME_BANDWIDTHS,
        regime_of(mu),
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


def heavy_tail_figure(stats: xr.Dataset, t: dict[str, float]) -> Any:
    """median(Z) and mean log Z vs h (brief, corrected): both 1 and 0 in the CLT regime, the
    median collapsing and mean log Z falling below h_G, although E[Z] = 1 at every h."""
    h = np.asarray(stats["bandwidth"])
    return plots.curve_family(
        h,
        {"median(Z)": stats["z_median"], "mean log Z": stats["z_mean_log"]},
        xlabel="bandwidth h",
        ylabel="statistic of Z",
        logx=True,
        underlay=regime_bands(h[0] * 0.9, h[-1] * 1.1, t),
        title=(
            f"Heavy tails: Z = ρ̂(x)/E[ρ̂(x)|x] over {int(stats.attrs['n_datasets'])} datasets "
            "(E[Z] = 1)"
        ),
    )


def slice_figure(line: xr.Dataset) -> Any:
    """log ρ̂ (one or several h) and the true log ρ along x(t) = y₁ + t (y₂ − y₁)."""
    t = np.asarray(line["t"])
    h = np.atleast_1d(np.asarray(line["bandwidth"]))
    est = np.atleast_2d(np.asarray(line["log_density"]))
    curves = {f"log ρ̂, h = {v:.3g}": row for v, row in zip(h, est, strict=True)}
    return plots.curve_family(
        t,
        curves,
        xlabel="t  (x = y₁ + t (y₂ − y₁))",
        ylabel="log density",
        theory={"log ρ (true)": (t, line["log_density_exact"])},
        markers=False,
        title=(
            "A 1-D slice through two nearest data points"
            + (f", h = {h[0]:.3g}" if h.size == 1 else "")
        ),
    )


def convergence_figure(
    dims: Sequence[int], argmins: Sequence[float], alpha: float, d_max: int = 200
) -> Any:
    """Measured KL argmin vs d against h_KL,eff(d) and the d → ∞ h_KL at fixed α."""
    d_dense = np.arange(16, d_max + 1, 4)
    h_eff = [kde.regime_thresholds(alpha, int(k))["h_kl"] for k in d_dense]
    h_inf = kde.regime_thresholds(alpha)["h_kl"]
    return plots.curve_family(
        list(dims),
        {"measured KL argmin": list(argmins)},
        xlabel="dimension d",
        ylabel="KL-optimal bandwidth",
        theory={
            "h_KL,eff (finite-d theory)": (d_dense, h_eff),
            "h_KL (d → ∞)": (d_dense, np.full(d_dense.size, h_inf)),
        },
        title=f"Theory and measurement converge as d grows (α = {alpha})",
    )
