"""Quadrature lab dashboard (policy iteration with a quadrature rule inside), on LabDashboard.

Layout and bindings only: every number comes from :mod:`workbench.labs.quadrature` and every
figure from :mod:`workbench.labs.quadrature.figures`. The system, length-scale, jitter, M,
iteration cap, tolerance and K₀ recompute the N-sweep off the loop (shared by all sessions);
N, the rule, the kernel and ν only restart policy iteration, which the base's streaming runner
feeds into the live panels one batch per tick, and move the "you are here" markers.

Every panel is a :class:`apps.live.LiveFigures` figure: legend labels hold no numbers (values
are in the titles), so a knob change patches the panels' data in place; only a new system
(other states, K vs ω) rebuilds the trajectory and gain panels.
"""

from __future__ import annotations

import functools
import threading

import holoviews as hv
import panel as pn

from apps import shell
from apps.lab_app import LabDashboard
from apps.live import LiveFigures
from workbench import plots
from workbench.labs import quadrature as quad
from workbench.labs.quadrature import figures

EXPLANATION = r"""
**What you see.** Integral reinforcement learning (RL) evaluates each policy $u = -K_i x$ (or
its nonlinear counterpart) from $M$ intervals of length $T = 0.1$ s along one trajectory of the
state $x(t)$. The running cost $l = x^\top Q x + u^\top R u$ on each interval is integrated from
$N$ equispaced samples, $\hat\Xi = \sum_{n=1}^{N} w_n\, l_n$ with quadrature weights $w_n$, and
the value function's weights solve $\omega = \operatorname{pinv}(\Theta)\,\hat\Xi$, $\Theta$ the
matrix of value-feature differences over the intervals. Policy iteration (PI) is Newton's method
on the Hamilton–Jacobi–Bellman (HJB) equation, so the error $\lVert\omega_i - \omega^*\rVert$
($\omega^*$: the known optimal weights) falls quadratically until it meets the quadrature error.

* **Policy iteration (live)**: $\lVert\omega_i - \omega^*\rVert_2$ per iteration $i$ as it runs;
  dashed: with exact interval costs; dotted: the converged error of this rule at this $N$.
* **Error vs N**: the converged error per rule against $N - 1$, with the fitted slope; dashed:
  $(N - 1)^{-2}$ (trapezoid) and $(N - 1)^{-b}$, $b = \nu + \tfrac12$ (Bayesian quadrature, BQ,
  with a Matérn kernel of smoothness $\nu$, whose reproducing-kernel Hilbert space, RKHS, is the
  Sobolev space of order $b$). The dotted line is your $N$.
* **Weights** $w_n$ on one interval, and the **worst-case error** $e(w)$, the largest
  integration error over functions of unit norm in the kernel's RKHS; jitter added to the
  diagonal of the kernel matrix makes it level off (the paper's plateau).
* **Controller**: the trajectory each iteration sampled, and the gain $K_i$ approaching the
  Riccati gain $K^*$ of the linear-quadratic regulator (LQR), or the weights $\omega_i$
  approaching $\omega^*$ (nonlinear system).
"""

#: Jitter stops shown by the slider (the Study accepts any value from 0 to 0.01 in links).
JITTER_STOPS = [0.0, 1e-12, 1e-10, 1e-8, 1e-6]
#: The panels: the N-sweep pair (redrawn per sweep, with a live "you are here" line), the
#: weights (per N, rule, kernel) and the three live panels policy iteration streams into.
SWEEP_PANES = ("sweep", "wce")
LIVE_PANES = ("pi", "trajectory", "gain")
PANES = ("pi", "sweep", "weights", "wce", "trajectory", "gain")


_grid_locks: dict[tuple, threading.Lock] = {}
_grid_locks_guard = threading.Lock()


def _grids(knobs: tuple) -> tuple:
    """The N-sweep and the exact-integral reference for the knobs they depend on, computed once
    per key: a session asking for a key being computed (by the warm-cache thread or another
    session) waits for that computation instead of starting a second one on the same cores."""
    with _grid_locks_guard:
        lock = _grid_locks.setdefault(knobs, threading.Lock())
    with lock:
        return _cached_grids(knobs)


@functools.lru_cache(maxsize=16)
def _cached_grids(knobs: tuple) -> tuple:
    """Shared by every session, so its arrays are read-only: no session can edit another's."""
    study = quad.QuadratureStudy.from_knobs(**dict(knobs))
    grids = quad.error_vs_n(study, quad.DASHBOARD_RULES, quad.SWEEP_NS), quad.exact_reference(study)
    for ds in grids:
        for var in ds.variables.values():
            var.values.flags.writeable = False
    return grids


class QuadratureDashboard(LabDashboard):
    study_class = quad.QuadratureStudy
    cheap = ("n", "rule", "kernel", "nu", "wiener_start")
    main_knob = "n"
    explanation = EXPLANATION
    link_limits = {"initial_gain": 80}
    widget_overrides = {
        "system": {"widget": pn.widgets.RadioButtonGroup, "color": "primary"},
        "rule": {"widget": pn.widgets.RadioButtonGroup, "color": "primary"},
        "lengthscale": {"widget": pn.widgets.EditableFloatSlider},
        "jitter": {"widget": pn.widgets.DiscreteSlider, "options": JITTER_STOPS},
        "tol": {"widget": pn.widgets.FloatInput, "step": 1e-4},
    }

    # --- heavy work (worker thread, on a snapshot) -------------------------------------------
    def compute(self, study):
        # The sweep rows set their own rule, kernel and ν; N is swept: none of them is in the key.
        keep = ("system", "lengthscale", "jitter", "intervals", "max_iter", "tol", "initial_gain")
        sweep, reference = _grids(tuple((k, getattr(study, k)) for k in keep))
        return {"sweep": sweep, "reference": reference}

    # --- drawing (event loop) -----------------------------------------------------------------
    def render(self, result):
        self.result = result
        if hasattr(self, "live"):
            self.live.refresh(*SWEEP_PANES)  # in place: the legends hold no numbers
        self.restart()

    def update_cheap(self, changed):
        self.study.quadrature()  # a BQ solve that cannot run is refused here, with its message
        self.restart()

    def restart(self):
        """Start policy iteration afresh at the knobs and stream its records into the panels."""
        snapshot = self._snapshot()
        self.run = {"records": [], "label": snapshot.rule_label(), "n": snapshot.n}
        self.run["max_iter"] = snapshot.max_iter
        self.run["targets"] = snapshot.copy_with(max_iter=1, n=2, rule="trapezoid").evaluate()
        self.weights = quad.weights_comparison(snapshot)
        if not hasattr(self, "markers"):
            # "you are here" lines drawn into the N plots by a hook and moved in place (a
            # marker layer would re-process the whole overlay per N: ~80 ms a plot)
            style = {"line_color": figures.HERE_STYLE["color"], "line_dash": "dotted"}
            style["line_width"] = figures.HERE_STYLE["line_width"]
            self.markers = {name: shell.LiveMarker("vline", **style) for name in SWEEP_PANES}
        for marker in self.markers.values():
            marker.move(float(snapshot.n) - 1.0)  # the N plots' axis is N − 1
        if hasattr(self, "live"):
            self.live.refresh("weights")
        # No clearing redraw: the live panels keep the last run, title included, until the new
        # run's first batch arrives a tick later (a clearing redraw cost ~140 ms of the loop).
        self.start_stream(snapshot.stream, self._on_records)

    def _on_records(self, batch):
        self.run["records"].extend(batch)
        if hasattr(self, "live"):
            self.live.refresh(*LIVE_PANES)

    def floor(self):
        """The converged error of the running rule at the running N (from the N-sweep)."""
        sweep = self.result["sweep"]
        if self.run["label"] in sweep["rule"].values:
            return float(sweep["weight_error"].sel(rule=self.run["label"], n=self.run["n"]))
        return None

    def _pi_figure(self):
        records = self.run["records"]
        return figures.policy_iteration(
            {"this run": figures.records_curve(records)},
            reference=self.result["reference"],
            floor=self.floor(),
            max_iter=self.run["max_iter"],
            title=figures.live_title(self.run["label"], self.run["n"], records),
        )

    def _trajectory_figure(self):
        return figures.records_trajectory(self.run["records"], self.run["targets"]["state"].values)

    def _gain_figure(self):
        return figures.records_gains(self.run["records"], self.run["targets"], self.run["max_iter"])

    def _draw(self, name):
        """One panel at the current state (LiveFigures patches it in place when it can)."""
        sweep = self.result["sweep"]
        if name == "sweep":
            return figures.error_vs_n(sweep, here=True).opts(hooks=[self.markers[name].hook])
        if name == "wce":
            return figures.worst_case_error(sweep, here=True).opts(hooks=[self.markers[name].hook])
        if name == "weights":
            return figures.quadrature_weights(self.weights)
        return getattr(self, f"_{name}_figure")()

    def plots(self):
        opts = {"sizing_mode": "stretch_width", "min_height": 320}
        self.live = LiveFigures(self._draw, PANES, opts)
        self.panes = self.live.panes
        p = self.panes
        return pn.Column(
            shell.row(p["pi"], p["sweep"]),
            shell.row(p["weights"], p["wce"]),
            shell.row(p["trajectory"], p["gain"]),
            sizing_mode="stretch_width",
        )

    def sidebar_extras(self):
        self.player = pn.widgets.Player(
            name="animate N",
            start=self.study.param.n.bounds[0],
            end=self.study.param.n.bounds[1],
            value=self.study.n,
            interval=900,
            loop_policy="reflect",
            show_loop_controls=False,
            sizing_mode="stretch_width",
        )
        self.player.param.watch(lambda e: self.request({"n": int(e.new)}), "value")
        self.widgets["n"].link(self.player, value="value")  # moving N moves its player
        replay = pn.widgets.Button(name="Replay policy iteration", color="primary")
        replay.on_click(lambda _e: self.restart())
        return [pn.pane.Markdown("**animate N**", margin=(10, 10, 0, 10)), self.player, replay]

    # --- exports ------------------------------------------------------------------------------
    def dataset(self):
        """The current run at the knobs the page (and its URL) shows."""
        return self.study.evaluate()

    def figure(self):
        sweep, n = self.result["sweep"], self.run["n"]
        return hv.Layout(
            [
                self._pi_figure(),
                plots.compose(figures.error_vs_n(sweep, here=True), figures.you_are_here(n)),
                figures.quadrature_weights(quad.weights_comparison(self.study)),
                plots.compose(figures.worst_case_error(sweep, here=True), figures.you_are_here(n)),
                self._trajectory_figure(),
                self._gain_figure(),
            ]
        ).cols(2)

    def close(self):
        self.stop_stream()
        self.run = {"records": []}
        if hasattr(self, "live"):
            self.live.close()


create_app = QuadratureDashboard.create_app
warm_cache = QuadratureDashboard.warm_cache
