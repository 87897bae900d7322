"""KDE lab dashboard: sweep the bandwidth and watch the CLT, heavy-tailed and condensed regimes.

Layout and bindings only; every number comes from :mod:`workbench.labs.kde`. Moving the
bandwidth re-evaluates one bandwidth against cached squared distances (no new GEMM); changing
d, α, the query count or the seed regenerates data (cached per tuple in the Study).
"""

from __future__ import annotations

import functools

import holoviews as hv
import numpy as np
import panel as pn
import param

from apps import shell
from workbench import plots
from workbench.labs import kde, registry

INFO = registry()["kde"]
DATA_KNOBS = ("dim", "alpha", "n_queries", "seed")
#: Bandwidth slider stops: log-spaced, wide enough for every α the lab allows.
BANDWIDTH_STOPS = tuple(float(f"{h:.4g}") for h in np.geomspace(0.05, 5.0, 97))
REGIMES = ("condensed", "heavy-tailed", "CLT")
REGIME_MAP_ALPHAS = np.linspace(0.05, 2.0, 60)
PLOT_HEIGHT = 330

EXPLANATION = r"""
**What you see.** n = e^{αd} points from N(0, I_d) and the Gaussian KDE
ρ̂_h(x) = (1/(n h^d)) Σᵢ K((x − yᵢ)/h), measured at the query points.

* **KL/d vs h**: the measured KL(ρ‖ρ̂_h)/d = mean over queries of (log ρ − log ρ̂)/d, against
  the d → ∞ theory ½[log(1+h²) + 1/(1+h²) − 1] for h ≥ h_G and α − ½ + ½log h² + u*/(2h²) below
  it, and the finite-d theory (u* → u_eff = F⁻¹_{ncχ²}(1/n)/d).
* **Y₂ vs h**: the participation ratio Σ wᵢ², wᵢ = Kᵢ/ΣKⱼ; the random-energy-model value is
  1 − h²/h_G² below h_G and 0 above.
* **Regime map**: the stable index μ = h²(1 − s*)/s* splits the (α, h) plane: μ > 2 CLT,
  1 < μ < 2 heavy-tailed, μ < 1 condensed; h_KL² = u* lies in the condensed regime.
* **Heavy tails**: Z = ρ̂(x)/E[ρ̂(x)|x] over many independent datasets at one x.
* **Slice**: log ρ̂ along the line through the two data points nearest a query point.

Source: Biroli & Mézard (arXiv 2408.05807), formulas as in the lab brief.
"""


class _View(param.Parameterized):
    """What the plots stream from; it only changes after a change is validated and computed."""

    data_version = param.Integer(0)
    bandwidth = param.Number(1.0)


class KDEDashboard:
    """One browser session's dashboard (built per session, freed when it ends)."""

    def __init__(self) -> None:
        self.study = kde.KDEStudy()
        self.status = shell.StatusLine()
        self.view = _View(bandwidth=self.study.bandwidth)
        self._build_widgets()
        self._recompute_data()
        self._recompute_current()
        self._build_plots()

    # --- widgets -----------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        p = self.study.param
        self.dim = pn.widgets.IntSlider(
            label="dimension d", start=p.dim.bounds[0], end=p.dim.bounds[1], value=self.study.dim
        )
        self.alpha = pn.widgets.FloatSlider(
            label="α = (log n)/d", start=0.05, end=2.0, step=0.01, value=self.study.alpha
        )
        self.n_queries = pn.widgets.IntSlider(
            label="query points", start=16, end=1024, step=8, value=self.study.n_queries
        )
        self.seed = pn.widgets.IntInput(label="seed", start=0, end=2**31 - 1, value=self.study.seed)
        self.bandwidth = pn.widgets.DiscreteSlider(
            label="bandwidth h (log scale)",
            options=list(BANDWIDTH_STOPS),
            value=_nearest_stop(self.study.bandwidth),
        )
        self.player = pn.widgets.Player(
            label="animate h",
            start=0,
            end=len(BANDWIDTH_STOPS) - 1,
            value=BANDWIDTH_STOPS.index(self.bandwidth.value),
            interval=350,
            loop_policy="reflect",
            show_loop_controls=False,
            sizing_mode="stretch_width",
        )
        self.size_note = pn.pane.Markdown("", margin=(0, 10))
        self._syncing = False
        for widget in (self.dim, self.alpha, self.n_queries):
            widget.param.watch(self._on_data_knob, "value_throttled")
        self.seed.param.watch(self._on_data_knob, "value")
        self.bandwidth.param.watch(self._on_bandwidth, "value_throttled")
        self.player.param.watch(self._on_player, "value")

    def _widget_values(self) -> dict:
        return {
            "dim": self.dim.value,
            "alpha": round(float(self.alpha.value), 4),
            "n_queries": self.n_queries.value,
            "seed": self.seed.value,
        }

    def _on_data_knob(self, _event=None) -> None:
        self.plots_area.loading = True
        shell.defer(self._apply_data_knobs)

    def _apply_data_knobs(self) -> None:
        previous = {k: getattr(self.study, k) for k in DATA_KNOBS}
        try:
            with self.status.guard("regenerating data"):
                self.study.checked_update(**self._widget_values())
                kde.make_data(self.study.dim, self.study.alpha, self.study.seed)  # size check
                self._recompute_data()
                self._recompute_current()
                self._refresh_static()
                self.view.data_version += 1
                shell.write_query(self.study.values())
            if self.status.alert.visible:
                # Not applied: keep the last good results and put the knobs back where they were.
                self.study.param.update(**previous)
                self._set_widgets(previous)
        finally:
            self.plots_area.loading = False

    def _on_bandwidth(self, event) -> None:
        self.apply_bandwidth(event.new)

    def apply_bandwidth(self, value: float) -> None:
        with self.status.guard("moving the bandwidth"):
            self.study.checked_update(bandwidth=float(value))
            self._recompute_current()
            self._move_markers()
            self.view.bandwidth = self.study.bandwidth
            shell.write_query(self.study.values())
        if not self._syncing:
            self._syncing = True
            self.player.value = BANDWIDTH_STOPS.index(_nearest_stop(value))
            self._syncing = False

    def _on_player(self, event) -> None:
        if self._syncing:
            return
        self._syncing = True
        value = BANDWIDTH_STOPS[int(event.new)]
        self.bandwidth.value = value
        self._syncing = False
        self.apply_bandwidth(value)

    def _set_widgets(self, values: dict) -> None:
        for name, value in values.items():
            widget = getattr(self, name)
            widget.value = value

    def apply_query(self, values: dict) -> None:
        """Apply knob values from a shared link (validated like any knob change)."""
        data = {k: v for k, v in values.items() if k in DATA_KNOBS}
        if data:
            self._set_widgets(data)
            self._apply_data_knobs()
        if "bandwidth" in values:
            stop = _nearest_stop(values["bandwidth"])
            self.bandwidth.value = stop
            self.apply_bandwidth(values["bandwidth"])

    # --- computation (cached in the Study) -----------------------------------------------------
    def _recompute_data(self) -> None:
        s = self.study
        self.thr_inf = kde.regime_thresholds(s.alpha)
        self.thr_eff = kde.regime_thresholds(s.alpha, dim=s.dim)
        self.grid, self.curves, self.heavy, self.regimes = data_panels(
            s.dim, s.alpha, s.seed, s.n_queries
        )
        n = int(self.curves.attrs.get("n", round(np.exp(s.alpha * s.dim))))
        self.size_note.object = (
            f"n = e^(αd) = **{n:,}** data points, {s.n_queries} queries "
            f"(this machine holds at most {kde.max_points():,})."
        )

    def _recompute_current(self) -> None:
        h = self.study.bandwidth
        self.current = self.study.evaluate(bandwidth=[h])
        self.samples = self.study.log_density_samples(h)
        self.slice = self.study.density_slice(h)

    def dataset(self):
        """What "Data" export writes: the bandwidth sweep at the current d, α, seed."""
        ds = self.curves.copy()
        ds.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)}
        ds.attrs["current_bandwidth"] = float(self.study.bandwidth)
        return ds

    # --- plots ---------------------------------------------------------------------------------
    def _bands(self):
        return plots.shaded_regimes(
            [self.grid[0] * 0.5, self.thr_eff["h_g"], self.thr_eff["h_clt"], self.grid[-1] * 2],
            REGIMES,
        )

    def kl_plot(self):
        c = self.curves
        measured = np.asarray(c["kl_per_dim"])
        h_best = float(self.grid[np.nanargmin(measured)])
        body = plots.curve_family(
            self.grid,
            {"measured": measured},
            xlabel="bandwidth h",
            ylabel="KL / d",
            theory={
                "theory d → ∞": (self.grid, c["kl_per_dim_theory"]),
                "theory, finite d": (self.grid, c["kl_per_dim_finite"]),
            },
            logx=True,
            underlay=self._bands(),
            title=(
                f"KL/d: argmin {h_best:.3f}, h_KL,eff {self.thr_eff['h_kl']:.3f}, "
                f"d→∞ {self.thr_inf['h_kl']:.3f}"
            ),
        )
        return body

    def participation_plot(self):
        c = self.curves
        body = plots.curve_family(
            self.grid,
            {"measured ⟨Y₂⟩": c["participation_ratio"]},
            xlabel="bandwidth h",
            ylabel="participation ratio Y₂",
            theory={
                "REM 1 − h²/h_G² (d → ∞)": (self.grid, c["participation_theory_inf"]),
                "REM, finite d": (self.grid, c["participation_theory"]),
            },
            logx=True,
            underlay=self._bands(),
            title=f"Condensation: participation ratio vs h (d = {self.study.dim})",
        )
        return body

    def distribution_plot(self, data_version=0, bandwidth=1.0):
        log_hat, log_true = self.samples
        per_dim = (np.asarray(log_hat) - np.asarray(log_true)) / self.study.dim
        kl_theory = float(np.asarray(self.current["kl_per_dim_finite"]).ravel()[0])
        return plots.distribution(
            per_dim,
            xlabel="(log ρ̂ − log ρ)/d per query point",
            bins=min(60, max(10, per_dim.size // 6)),
            markers={"− KL/d, finite-d theory": -kl_theory, "sample mean": float(per_dim.mean())},
            title=f"log ρ̂ across {per_dim.size} query points at h = {self.study.bandwidth:.3g}",
        )

    def regime_plot(self):
        r = self.regimes
        alphas = np.asarray(r["alpha"])
        h_axis = np.geomspace(0.05, 5.0, 120)
        mu = kde.stable_index(h_axis[:, None], alphas[None, :])
        regime = np.where(mu < 1, 0, np.where(mu < 2, 1, 2))
        boundaries = {
            "h_CLT (d→∞)": (alphas, r["h_clt"]),
            "h_G (d→∞)": (alphas, r["h_g"]),
            "h_KL (d→∞)": (alphas, r["h_kl"]),
            "h_G, finite d": (alphas, r["h_g_eff"]),
            "h_KL, finite d": (alphas, r["h_kl_eff"]),
        }
        return plots.regime_map(
            alphas,
            h_axis,
            regime,
            xlabel="α = (log n)/d",
            ylabel="bandwidth h",
            regime_names=REGIMES,
            boundaries=boundaries,
            logy=True,
            title=f"Regimes in the (α, h) plane (finite-d curves at d = {self.study.dim})",
        )

    def heavy_tail_plot(self):
        z = self.heavy
        h = np.asarray(z["bandwidth"])
        body = plots.curve_family(
            h,
            {"skew(Z)": z["z_skew"], "median(Z)": z["z_median"]},
            xlabel="bandwidth h",
            ylabel="statistic of Z",
            logx=True,
            logy=True,
            underlay=self._bands(),
            title="Heavy tails: Z = ρ̂(x)/E[ρ̂(x)|x] across datasets",
        )
        return body

    def slice_plot(self, data_version=0, bandwidth=1.0):
        s = self.slice
        t = np.asarray(s["t"])
        return plots.curve_family(
            t,
            {"log ρ̂ (estimate)": s["log_density"]},
            xlabel="t  (x = y₁ + t (y₂ − y₁))",
            ylabel="log density",
            theory={"log ρ (true)": (t, s["log_density_exact"])},
            markers=False,
            title=f"A 1-D slice through two nearest data points, h = {self.study.bandwidth:.3g}",
        )

    #: Panels drawn once per data change, with a live marker moved by the bandwidth.
    STATIC = {
        "kl": ("kl_plot", "kl_per_dim"),
        "participation": ("participation_plot", "participation_ratio"),
        "regime": ("regime_plot", None),
        "heavy_tail": ("heavy_tail_plot", None),
    }
    #: Panels recomputed for every bandwidth (a histogram and a slice: a few glyphs each).
    LIVE = ("distribution", "slice")

    def figure(self):
        """The whole figure for HTML export (a static snapshot of every panel)."""
        h = float(self.study.bandwidth)
        panels = []
        for name, (builder, variable) in self.STATIC.items():
            if variable:
                y = float(np.asarray(self.current[variable]).ravel()[0])
                marker = hv.Points([(h, y)], label="current h").opts(color="black", size=11)
            elif name == "regime":
                marker = hv.Points([(float(self.study.alpha), h)], label="you are here").opts(
                    color="black", size=11
                )
            else:
                marker = hv.VLine(h).opts(color="black", line_dash="dotted")
            panels.append(getattr(self, builder)() * marker)
        panels += [getattr(self, f"{name}_plot")() for name in self.LIVE]
        return hv.Layout(panels).cols(2)

    def _build_plots(self) -> None:
        # Curves over the bandwidth grid change only with the data: they are plain HoloViews
        # objects, replaced wholesale after a data change. A bandwidth move only moves the live
        # markers (one data-source edit each) and re-renders the two per-h panels in place.
        self.markers = {
            "kl": shell.LiveMarker("point", size=12, marker="diamond", color="black"),
            "participation": shell.LiveMarker("point", size=12, marker="diamond", color="black"),
            "regime": shell.LiveMarker("point", size=14, marker="x", line_width=3, color="black"),
            "heavy_tail": shell.LiveMarker(
                "vline", line_color="black", line_dash="dotted", line_width=2
            ),
        }
        self._move_markers()
        stream = hv.streams.Params(self.view, ["bandwidth", "data_version"])
        self.dmaps = {
            name: hv.DynamicMap(getattr(self, f"{name}_plot"), streams=[stream]).opts(
                framewise=True, axiswise=True
            )
            for name in self.LIVE
        }
        self.panes = {
            name: pn.pane.HoloViews(
                self._static_object(name) if name in self.STATIC else self.dmaps[name],
                height=PLOT_HEIGHT,
                sizing_mode="stretch_width",
                linked_axes=False,
            )
            for name in (*self.STATIC, *self.LIVE)
        }
        p = self.panes
        self.plots_area = pn.Column(
            pn.Row(p["kl"], p["participation"], sizing_mode="stretch_width"),
            pn.Row(p["distribution"], p["regime"], sizing_mode="stretch_width"),
            pn.Row(p["heavy_tail"], p["slice"], sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    def _static_object(self, name: str):
        builder, _variable = self.STATIC[name]
        return getattr(self, builder)().opts(hooks=[self.markers[name].hook])

    def _refresh_static(self) -> None:
        self._move_markers()
        for name in self.STATIC:
            self.panes[name].object = self._static_object(name)

    def _move_markers(self) -> None:
        h = float(self.study.bandwidth)
        for name, (_builder, variable) in self.STATIC.items():
            if variable:
                self.markers[name].move(h, float(np.asarray(self.current[variable]).ravel()[0]))
        self.markers["regime"].move(float(self.study.alpha), h)
        self.markers["heavy_tail"].move(h)

    def page(self):
        return shell.lab_page(
            INFO,
            knobs=[
                self.bandwidth,
                self.player,
                self.dim,
                self.alpha,
                self.n_queries,
                self.seed,
                self.size_note,
            ],
            status=self.status,
            plots=self.plots_area,
            dataset=self.dataset,
            figure=self.figure,
            text=EXPLANATION,
        )

    def close(self) -> None:
        """Drop references so the session's arrays can be collected."""
        self.dmaps.clear()
        self.curves = self.heavy = self.regimes = self.current = self.samples = self.slice = None


@functools.lru_cache(maxsize=8)
def data_panels(dim: int, alpha: float, seed: int, n_queries: int):
    """Everything drawn over a bandwidth grid for one dataset, shared by all sessions.

    Returns ``(grid, curves, heavy_tails, regimes)``; callers treat them as read-only. A second
    visitor with the same (d, α, seed, m), or a teacher's demo reloaded, renders at once.
    """
    study = kde.KDEStudy(dim=dim, alpha=alpha, seed=seed, n_queries=n_queries)
    thr_inf = kde.regime_thresholds(alpha)
    thr_eff = kde.regime_thresholds(alpha, dim=dim)
    lo = 0.45 * min(thr_inf["h_kl"], thr_eff["h_kl"])
    hi = 2.4 * max(thr_inf["h_clt"], thr_eff["h_clt"])
    grid = np.geomspace(lo, hi, 48)
    return (
        grid,
        study.evaluate(bandwidth=grid),
        study.heavy_tail_curve(),
        study.regime_map(REGIME_MAP_ALPHAS),
    )


def warm_cache() -> None:
    """Compute the default view's panels (``workbench serve`` calls this in the background)."""
    s = kde.KDEStudy()
    data_panels(s.dim, s.alpha, s.seed, s.n_queries)


def _nearest_stop(value: float) -> float:
    stops = np.asarray(BANDWIDTH_STOPS)
    return BANDWIDTH_STOPS[int(np.argmin(np.abs(np.log(stops) - np.log(max(float(value), 1e-9)))))]


def create_app():
    dashboard = KDEDashboard()
    dashboard.apply_query(shell.read_query(["bandwidth", *DATA_KNOBS]))
    shell.on_session_end(dashboard.close)
    return dashboard.page()
