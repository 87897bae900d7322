"""KDE lab dashboard, on :class:`LabDashboard`: sweep the bandwidth and watch the CLT,
heavy-tailed and condensed regimes.

Layout and bindings only: every number comes from :mod:`workbench.labs.kde` and every figure
from :mod:`workbench.labs.kde.figures`. The bandwidth is cheap: it is evaluated against the
cached distance tables (:meth:`KDEStudy.at_bandwidth`, no new distances), the live markers move
in place and only the two per-h panels re-render. d, α, the query count and the seed are
expensive: the base recomputes them off the event loop; the grid panels
(:meth:`KDEStudy.panels`) are shared across sessions through a read-only cache.

Own data: the ``data`` knob picks scikit-learn's digits or an upload (:mod:`apps.uploads`: the
file is read by :func:`workbench.labs.kde.userdata.load_sample` and kept in this session's
Study only); the KL, heavy-tail and histogram panels then show what a sample with an unknown
density allows (held-out score, points carrying the estimate, held-out log ρ̂).
"""

from __future__ import annotations

import html

import holoviews as hv
import numpy as np
import panel as pn

from apps import shell
from apps.lab_app import LabDashboard
from apps.live import LiveFigures
from apps.uploads import UploadBox
from workbench import plots
from workbench.labs import kde
from workbench.labs.kde import figures as figs
from workbench.labs.kde import userdata

#: Bandwidth slider stops: the old log-spaced stops (links made with them still land on a stop)
#: plus the default h = 1, so slider and plots agree at start.
BANDWIDTH_STOPS = tuple(sorted({float(f"{h:.4g}") for h in np.geomspace(0.05, 5.0, 97)} | {1.0}))
#: Panels drawn once per data change, with a live marker moved by the bandwidth.
STATIC = ("kl", "participation", "regime", "heavy_tail")
#: Panels re-rendered for every bandwidth (a histogram and a slice: a few glyphs each).
LIVE = ("distribution", "slice")
PLOT_HEIGHT = 330

#: Colour of the live markers: the library's "you are here" colour (visible on both themes).
HERE = plots.HERE_COLOUR

EXPLANATION = r"""
**What you see.** $n = e^{\alpha d}$ points $y_1, \dots, y_n$ drawn from $\mathcal N(0, I_d)$
($\alpha = \log n / d$) and the Gaussian kernel density estimate with bandwidth $h$

$$\hat\rho_h(x) = \frac{1}{n h^d} \sum_{i=1}^{n} K\!\left(\frac{x - y_i}{h}\right),$$

$K$ the standard normal density in $d$ dimensions, at $m$ query points $x \sim \mathcal N(0, I_d)$,
where the true density $\rho$ is known. The scaled squared distance from a query to a point is
$u = |x - y|^2/d$; the nearest of the $n$ points sits at $u^* = s^*(1 + s^*)$ as $d \to \infty$,
where $s^* \in (0, 1)$ solves $I(s^*) = \alpha$, $I(s) = (s^2 - s - \log s)/2$ being the rate of
large deviations of $u$. Three bandwidths follow from $s^*$:
$h_G^2 = s^*/(1 - s^*)$ (condensation: below it a few nearest points carry $\hat\rho_h$),
$h_{\mathrm{CLT}} = \sqrt2\, h_G$ (above it $\hat\rho_h$ obeys the central limit theorem) and
the KL-optimal $h_{\mathrm{KL}} = \sqrt{u^*}$. At finite $d$ the nearest point is further:
$u_{\mathrm{eff}} = F^{-1}(1/n)/d$, $F$ the CDF of the non-central $\chi^2$ distribution with $d$
degrees of freedom and non-centrality $d$ (the law of $|x - y|^2$ when $|x|^2 = d$), which gives
the "eff" thresholds $h_{G,\mathrm{eff}}$ and $h_{\mathrm{KL,eff}}$.

* **KL/d vs h**: the measured $\mathrm{KL}(\rho \,\|\, \hat\rho_h)/d$, the mean over queries of
  $(\log\rho - \log\hat\rho_h)/d$, against the $d \to \infty$ theory
  $\tfrac12\left[\log(1 + h^2) + \frac{1}{1 + h^2} - 1\right]$ for $h \ge h_G$ and
  $\alpha - \tfrac12 + \tfrac12 \log h^2 + \frac{u^*}{2h^2}$ below it, and the finite-$d$ theory
  (the same formulas with $u_{\mathrm{eff}}$).
* **$Y_2$ vs h**: the participation ratio $Y_2 = \sum_i w_i^2$, $w_i = K_i / \sum_j K_j$
  ($1/Y_2$ is the effective number of points carrying $\hat\rho_h$); the random-energy model
  (REM: the $n$ kernel values treated as independent Boltzmann weights) predicts
  $1 - h^2/h_G^2$ below $h_G$ and $0$ above.
* **Regime map**: the stable index $\mu = h^2 (1 - s^*)/s^* = h^2/h_G^2$ (the tail exponent of
  the kernel values' law) splits the $(\alpha, h)$ plane: $\mu > 2$ CLT (above $h_{\mathrm{CLT}}$),
  $1 < \mu < 2$ heavy-tailed (between $h_G$ and $h_{\mathrm{CLT}}$), $\mu < 1$ condensed (below
  $h_G$); the KL-optimal $h_{\mathrm{KL}}$ lies in the condensed regime.
* **Heavy tails**: $Z = \hat\rho_h(x) / \mathbb E[\hat\rho_h(x) \mid x]$ over 600 independent
  datasets at $|x| = \sqrt d$, $h = (0.6 \dots 2.2) \times h_{G,\mathrm{eff}}$.
  $\mathbb E[Z] = 1$ always, yet below $h_G$ the median of $Z$ collapses and the mean of
  $\log Z$ falls below 0: the mean is carried by rare datasets.
* **Histogram**: $(\log\hat\rho_h - \log\rho)/d$ across the query points at the current $h$.
* **Slice**: $\log\hat\rho_h$ along the line through the two data points nearest a query point:
  smooth at large $h$, peaked on the data at small $h$.

**Your own data** (the *data* knob: digits, or a file you upload). Features are standardised
(mean 0, std 1; constant ones dropped) and a seeded random 20 % of the points (at most $m$) is
held out as query points. The true density is unknown, so the first panel shows the **held-out
mean $\log\hat\rho_h$** (a proper score, higher is better: its best $h$ estimates the
KL-optimal one) with the Gaussian thresholds $h_{\mathrm{KL}}$, $h_G$, $h_{\mathrm{CLT}}$ at the
sample's $n$ and $d$ ($\alpha = \log n / d$) for reference; $Y_2$ is compared with the Gaussian
REM at that $n$ and $d$; the heavy-tail panel becomes the number of points carrying
$\hat\rho_h$, the histogram shows $\log\hat\rho_h/d$ on the held-out points.

""" + (
    f"Sizes: n over {kde.data.SLOW_POINTS:,} points takes tens of seconds. Every setting must fit "
    f"a fixed {kde.MEMORY_BUDGET_BYTES / 2**30:g} GiB memory budget (data, distance tables, "
    f"heavy-tail panel): at d = 20 with m = 200 query points that is n up to "
    f"{kde.max_points(20, 200):,} points; a setting over it is refused at once, naming the knobs.\n"
)


UPLOAD_CAPS = (
    f"A .npy or .csv file, rows = points, columns = dimensions: at most "
    f"{userdata.UPLOAD_MAX_BYTES // 2**20} MiB (the file, and the array as float64: "
    f"{userdata.UPLOAD_MAX_BYTES // 8:,} numbers), {userdata.MIN_POINTS} to "
    f"{userdata.MAX_POINTS:,} points, 1 to {userdata.MAX_DIM:,} dimensions. Pickled .npy files "
    "are refused unread. The data stay in this page's session only (never saved)."
)


class KDEDashboard(LabDashboard):
    study_class = kde.KDEStudy
    cheap = ("bandwidth",)
    main_knob = "bandwidth"
    explanation = EXPLANATION
    widget_overrides = {
        "bandwidth": {
            "widget": pn.widgets.DiscreteSlider,
            "options": list(BANDWIDTH_STOPS),
            "label": "bandwidth h (log scale)",
        }
    }

    def __init__(self, query=None):
        self._good_own = None  # the upload of the last good view (restored after a failure)
        self.player = pn.widgets.Player(
            label="animate h",
            start=0,
            end=len(BANDWIDTH_STOPS) - 1,
            value=_stop_index(kde.KDEStudy.param["bandwidth"].default),
            interval=350,
            loop_policy="reflect",
            show_loop_controls=False,
            sizing_mode="stretch_width",
        )
        self.player.param.watch(self._on_player, "value")
        self._moving_player = False
        self.size_note = pn.pane.Markdown("", margin=(0, 10))
        self.markers = {
            "kl": shell.LiveMarker("point", size=12, marker="diamond", color=HERE),
            "participation": shell.LiveMarker("point", size=12, marker="diamond", color=HERE),
            "regime": shell.LiveMarker("point", size=14, marker="x", line_width=3, color=HERE),
            "heavy_tail": shell.LiveMarker(
                "vline", line_color=HERE, line_dash="dotted", line_width=2
            ),
        }
        super().__init__(query)
        self.upload = UploadBox(
            title="Your data",
            caps=UPLOAD_CAPS,
            suffixes=(".npy", ".csv"),
            max_bytes=userdata.UPLOAD_MAX_BYTES,
            parse=lambda path, name, _choice: userdata.load_sample(path, name=name),
            apply=self._use_sample,
            status=self.status,
        )

    # --- heavy work (worker thread, on a snapshot) -------------------------------------------
    def compute(self, study):
        return {**study.panels(), **study.at_bandwidth(), "source": study.source}

    # --- drawing (event loop) -----------------------------------------------------------------
    def render(self, result):
        self.result = result
        self._good_own = self.study.own_sample
        self.size_note.object = html.escape(self.study.size_note())  # may name an uploaded file
        for name in ("dim", "alpha"):  # d and n come from own data
            self.widgets[name].disabled = result["source"] != "gaussian"
        self._move_markers()
        self._sync_player()
        if hasattr(self, "panes"):
            self.live.refresh()  # in place unless a figure's layers change (own data)

    def update_cheap(self, changed):
        """A new bandwidth: evaluated on the cached distance tables (no new distances)."""
        self.result.update(self.study.at_bandwidth())
        self._move_markers()
        self._sync_player()
        self.live.refresh(*LIVE)

    def _own(self):
        return self.result["source"] != "gaussian"

    def _move_markers(self):
        h, current = float(self.study.bandwidth), self.result["current"]
        first = "log_density_mean" if self._own() else "kl_per_dim"
        self.markers["kl"].move(h, float(current[first][0]))
        self.markers["participation"].move(h, float(current["participation_ratio"][0]))
        self.markers["regime"].move(float(current.attrs["alpha"]), h)  # own data: log(n)/d
        self.markers["heavy_tail"].move(h)

    def _figure(self, name):
        r = self.result
        t = r["thresholds"]
        if self._own() and name in ("kl", "heavy_tail", "distribution"):
            return self._own_figure(name)
        if name == "kl":
            return figs.kl_figure(r["sweep"], t)
        if name == "participation":
            return figs.participation_figure(r["sweep"], t)
        if name == "regime":
            return figs.regime_figure(r["regimes"])
        if name == "heavy_tail":
            return figs.heavy_tail_figure(r["heavy"], t)
        if name == "distribution":
            log_hat, log_true = r["samples"]
            kl = float(r["current"]["kl_per_dim_finite"][0])
            return figs.distribution_figure(log_hat, log_true, self.study.dim, kl, r["h"])
        return figs.slice_figure(r["slice"])

    def _own_figure(self, name):
        r = self.result
        if name == "kl":
            return figs.heldout_figure(r["sweep"], r["thresholds"])
        if name == "heavy_tail":
            return figs.points_figure(r["sweep"], r["thresholds"])
        dim = int(r["current"].attrs["dim"])
        return figs.heldout_distribution_figure(r["samples"][0], dim, r["h"])

    def _draw(self, name):
        return self._static(name) if name in STATIC else self._figure(name)

    def _static(self, name):
        return self._figure(name).opts(hooks=[self.markers[name].hook])

    def plots(self):
        opts = {"height": PLOT_HEIGHT, "sizing_mode": "stretch_width", "linked_axes": False}
        self.live = LiveFigures(self._draw, (*STATIC, *LIVE), opts)
        self.panes = self.live.panes
        p = self.panes
        row = shell.row
        return pn.Column(
            row(p["kl"], p["participation"]),
            row(p["distribution"], p["regime"]),
            row(p["heavy_tail"], p["slice"]),
            sizing_mode="stretch_width",
        )

    # --- the bandwidth player -----------------------------------------------------------------
    def knob_widgets(self):
        items = dict(zip(self.widgets, super().knob_widgets(), strict=True))
        return [items.pop("bandwidth"), self.player, *items.values(), self.size_note]

    def sidebar_extras(self):
        return [self.upload.view]

    # --- your own data ------------------------------------------------------------------------
    def _use_sample(self, sample, name):
        """Show an upload read on the worker pool (ValueError refuses it, the previous data
        stay)."""
        previous = self.study.own_sample
        self.study.use_sample(sample)
        if self.study.source == "upload":
            self.status.clear()
            self.recompute()  # same knobs, new data
        elif not self.request({"source": "upload"}):  # refused: the alert says why
            self.study.use_sample(previous)

    def on_restored(self):
        self.study.use_sample(self._good_own)  # a failed view: back to the last good data

    def _on_player(self, event):
        if not self._moving_player:
            self.request({"bandwidth": BANDWIDTH_STOPS[int(event.new)]})

    def _sync_player(self):
        self._moving_player = True
        try:
            self.player.value = _stop_index(self.study.bandwidth)
        finally:
            self._moving_player = False

    # --- exports ------------------------------------------------------------------------------
    def dataset(self):
        """The bandwidth sweep at the current d, α, m, seed (what the Data exports write)."""
        ds = self.result["sweep"].copy()
        ds.attrs = {**ds.attrs, "current_bandwidth": float(self.study.bandwidth)}
        return ds

    def figure(self):
        h, current = float(self.study.bandwidth), self.result["current"]
        first = "log_density_mean" if self._own() else "kl_per_dim"
        marks = {
            "kl": figs.current_point(h, float(current[first][0])),
            "participation": figs.current_point(h, float(current["participation_ratio"][0])),
            "regime": figs.current_point(float(current.attrs["alpha"]), h),
            "heavy_tail": figs.current_line(h),
        }
        # compose keeps each figure's log axes, title and legend place (``*`` drops them).
        panels = [plots.compose(self._figure(name), marks[name]) for name in STATIC]
        return hv.Layout(panels + [self._figure(name) for name in LIVE]).cols(2)

    def close(self):
        self.result = None


def _stop_index(value: float) -> int:
    return int(np.argmin(np.abs(np.log(BANDWIDTH_STOPS) - np.log(max(float(value), 1e-9)))))


create_app = KDEDashboard.create_app
warm_cache = KDEDashboard.warm_cache
