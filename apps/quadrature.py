"""Quadrature lab dashboard: policy iteration with a quadrature rule inside (Cao & Pan, 2024).

Layout and bindings only; every number comes from :mod:`workbench.labs.quadrature`. A change of
any knob restarts policy iteration, which streams one record per periodic tick into the live
panels, so Newton's quadratic convergence and the quadrature floor appear as they happen.
"""

from __future__ import annotations

import functools

import holoviews as hv
import numpy as np
import panel as pn
import xarray as xr

from apps import shell
from workbench import plots
from workbench.labs import quadrature as quad
from workbench.labs import registry
from workbench.study import StudyInputError

INFO = registry()["quadrature"]
KNOBS = ("system", "rule", "kernel", "nu", "n", "lengthscale", "jitter", "intervals", "max_iter")
#: The initial gain is typed by the user: bounded text, parsed to three numbers.
MAX_GAIN_TEXT = 80
MAX_GAIN_ABS = 1e3
#: Rules compared in the N-sweep panel (labels of quad.parse_rule_label).
SWEEP_RULES = ("trapezoid", "bq-matern-0.5", "bq-matern-1.5", "bq-matern-2.5", "bq-matern-3.5")
SWEEP_NS = tuple(range(2, 31))
JITTERS = {
    "0 (exact BQ)": 0.0,
    "1e-12": 1e-12,
    "1e-10": 1e-10,
    "1e-8 (authors')": 1e-8,
    "1e-6": 1e-6,
}
STREAM_PERIOD_MS = 150
PLOT_HEIGHT = 320

EXPLANATION = r"""
**What you see.** Integral RL evaluates each policy from M intervals of length T = 0.1 along one
trajectory; the running cost l = xᵀQx + uᵀRu on each interval is integrated from N equispaced
samples, Ξ̂ = Σₙ wₙ lₙ, and ω = pinv(Θ) Ξ̂. Policy iteration is Newton's method on the HJB
equation, so the error ‖ωᵢ − ω*‖ falls quadratically until it meets the quadrature error.

* **Policy iteration (live)**: ‖ωᵢ − ω*‖₂ per iteration as it runs; dashed: exact interval costs
  (Van Loan for the LQR, an ODE cost state for the sin system).
* **Error vs N**: converged ‖ω̂ − ω*‖₂ per rule with the fitted slope against N − 1; theory
  O(N⁻²) (trapezoid) and O(N⁻ᵇ), b = ν + ½ (Bayesian quadrature, Matérn ν).
* **Worst-case error**: e(w)² = Z − zᵀK⁻¹z, the BQ posterior variance; jitter on K's diagonal
  creates the plateau the paper reports.
* **Controller**: the closed-loop trajectory sampled by each iteration and, for the LQR, the gain
  Kᵢ approaching K* (Riccati).

Source: Cao & Pan, ICLR 2024 (arXiv 2402.17375), formulas as in the lab brief.
"""


class QuadratureDashboard:
    """One browser session's dashboard (built per session, freed when it ends)."""

    def __init__(self) -> None:
        self.study = quad.QuadratureStudy()
        self.status = shell.StatusLine()
        self.records: list[quad.IterationRecord] = []
        self._stream = None
        self._callback = None
        self._sweep_key = None
        self._wce_key = None
        self._live_system = None
        self.pipes: dict = {}
        self._build_widgets()
        self._build_plots()
        self._recompute_sweeps()
        self._restart_run()

    # --- widgets -----------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        s = self.study
        self.system = pn.widgets.RadioButtonGroup(
            label="system",
            options={"LQR (3rd order)": "lqr", "nonlinear sin": "sin"},
            value=s.system,
        )
        self.rule = pn.widgets.RadioButtonGroup(
            label="rule",
            options={"trapezoid": "trapezoid", "Bayesian": "bq", "exact": "exact"},
            value=s.rule,
        )
        self.kernel = pn.widgets.Select(
            label="BQ kernel",
            options={"Matérn": "matern", "Wiener min(s, s')": "wiener"},
            value=s.kernel,
        )
        self.nu = pn.widgets.Select(
            label="Matérn ν (Sobolev order b = ν + ½)",
            options={"1/2": 0.5, "3/2": 1.5, "5/2": 2.5, "7/2": 3.5},
            value=s.nu,
        )
        self.n = pn.widgets.IntSlider(label="samples per interval N", start=2, end=30, value=s.n)
        self.player = pn.widgets.Player(
            label="animate N",
            start=2,
            end=30,
            value=s.n,
            interval=900,
            loop_policy="reflect",
            show_loop_controls=False,
            sizing_mode="stretch_width",
        )
        self.lengthscale = pn.widgets.EditableFloatSlider(
            label="length-scale ℓ",
            start=0.02,
            end=3.0,
            step=0.01,
            value=s.lengthscale,
            fixed_start=s.param.lengthscale.bounds[0],
            fixed_end=s.param.lengthscale.bounds[1],
        )
        self.jitter = pn.widgets.Select(
            label="jitter on K's diagonal", options=JITTERS, value=s.jitter
        )
        self.intervals = pn.widgets.IntSlider(
            label="intervals M per iteration (0 = paper's)", start=0, end=60, value=s.intervals
        )
        self.max_iter = pn.widgets.IntSlider(
            label="max PI iterations", start=1, end=50, value=s.max_iter
        )
        self.initial_gain = pn.widgets.TextInput(
            label="initial gain K₀ (LQR; u = −K₀x)", value="0, 0, 0", max_length=MAX_GAIN_TEXT
        )
        self.initial_gain.param.watch(self._on_knob, "value")
        self.replay = pn.widgets.Button(label="Replay policy iteration", button_type="primary")
        for name in KNOBS:
            widget = getattr(self, name)
            event = "value_throttled" if hasattr(widget.param, "value_throttled") else "value"
            widget.param.watch(self._on_knob, event)
        self.player.param.watch(self._on_player, "value")
        self.replay.on_click(lambda _e: self._restart_run())

    def _on_player(self, event) -> None:
        self.n.value = int(event.new)
        self.apply({"n": int(event.new)})

    def _on_knob(self, _event=None) -> None:
        values = {name: getattr(self, name).value for name in KNOBS}
        try:
            values["initial_gain"] = parse_gain(self.initial_gain.value)
        except StudyInputError as exc:
            self.status.warn(str(exc))
            return
        # Sweeps over N take up to a second: show the loading state first, then compute.
        self.plots_area.loading = True

        def apply_and_clear():
            try:
                self.apply(values)
            finally:
                self.plots_area.loading = False

        shell.defer(apply_and_clear)

    def apply(self, values: dict) -> None:
        """Validate and apply knob values; on bad input keep the last good run and say why."""
        previous = {k: getattr(self.study, k) for k in (*KNOBS, "initial_gain")}
        with self.status.guard("applying the knobs"):
            self.study.checked_update(**values)
            if self.study.system == "lqr":
                quad.make_system("lqr", self.study.initial_gain)  # admissible K₀, or a message
            if self.study.rule == "bq":
                # Fail fast (with the library's message) before any plot is touched.
                quad.bq_weights(
                    self.study.n,
                    0.0,
                    quad.INTERVAL_LENGTH,
                    kernel=self.study.kernel,
                    nu=self.study.nu,
                    lengthscale=self.study.lengthscale,
                    jitter=self.study.jitter,
                )
            self._recompute_sweeps()
            self._restart_run()
            shell.write_query(self.study.values())
        if self.status.alert.visible:
            self.study.param.update(**previous)

    def apply_query(self, values: dict) -> None:
        if values:
            for name, value in values.items():
                widget = getattr(self, name, None)
                if widget is not None and name in KNOBS:
                    try:
                        widget.value = value
                    except Exception:  # an off-menu value from a hand-edited link
                        self.status.warn(f"link parameter {name}={value!r} is not allowed here")
                        return
            self.apply(values)

    # --- computation ---------------------------------------------------------------------------
    def _recompute_sweeps(self) -> None:
        s = self.study
        key = (s.system, s.lengthscale, s.jitter, s.intervals, s.max_iter)
        if key != self._sweep_key:
            self.sweep, self.reference = n_sweep(*key)
            self._sweep_key = key
            self.panes["sweep"].object = self.sweep_plot()
        if (s.lengthscale, s.jitter) != self._wce_key:
            self.wce = quad.worst_case_errors(
                ns=SWEEP_NS, nus=(0.5, 1.5, 2.5, 3.5), lengthscale=s.lengthscale, jitter=s.jitter
            )
            self._wce_key = (s.lengthscale, s.jitter)
            self.panes["wce"].object = self.wce_plot()
        # N, ν and the rule only move markers and feed streams: no figure is replaced, so the
        # browser never receives a patch for a model it has already dropped.
        self.weights_stream.event(version=self.weights_stream.version + 1)
        self.n_marker.move(float(s.n))
        self.wce_marker.move(float(s.n))

    def _restart_run(self) -> None:
        """Start policy iteration afresh and stream one record per tick into the live panels."""
        self._stop_stream()
        self.records = []
        self._stream = self.study.stream()
        # The first iteration is computed now, so every panel has data to lay out; the rest
        # stream in, one per tick.
        self.records.append(next(self._stream))
        if self._live_system != self.study.system:
            self._build_live_panels()  # the state and gain layers differ between systems
            self._live_system = self.study.system
        else:
            self._push()
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            self._callback = pn.state.add_periodic_callback(self.step, period=STREAM_PERIOD_MS)
        else:  # no browser (tests, notebooks): run to the end, then draw once
            self.records.extend(self._stream)
            self._stream = None
            self._push()

    def step(self) -> bool:
        """Advance policy iteration by one iteration; False when the run has finished."""
        if self._stream is None:
            return False
        with self.status.guard("running policy iteration", timed=False):
            try:
                self.records.append(next(self._stream))
            except StopIteration:
                self._stop_stream()
                return False
            self._push()
            return True
        self._stop_stream()
        return False

    def _stop_stream(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self._stream = None

    def _push(self) -> None:
        """Send the records so far to the live panels (Pipe streams: in-place data updates)."""
        self.pipes["pi"].send(self._pi_data())
        self.pipes["trajectory"].send(self._trajectory_data())
        self.pipes["gain"].send(self._gain_data())

    def _pi_data(self) -> dict:
        its = np.array([r.iteration for r in self.records], dtype=float)
        errs = np.array([r.weight_error for r in self.records], dtype=float)
        return {"iteration": its, "error": errs}

    def _trajectory_data(self) -> dict:
        if not self.records:
            return {"t": np.empty(0), "states": np.empty((0, 1)), "iteration": np.empty(0)}
        t = np.concatenate([r.times for r in self.records])
        x = np.concatenate([r.states for r in self.records])
        it = np.concatenate([np.full(r.times.size, r.iteration) for r in self.records])
        return {"t": t, "states": x, "iteration": it}

    def _gain_data(self) -> dict:
        if self.study.system == "lqr":
            rows = [np.ravel(r.gain) for r in self.records if r.gain is not None]
        else:
            rows = [np.ravel(r.weights) for r in self.records]
        return {"values": np.array(rows) if rows else np.empty((0, 3))}

    def dataset(self) -> xr.Dataset:
        """Export: the current run (per iteration) merged with the N-sweep (per rule and N)."""
        run = self.study.evaluate()
        sweep = self.sweep.rename({n: f"sweep_{n}" for n in self.sweep.data_vars})
        ds = xr.merge([run, sweep], compat="override", combine_attrs="drop_conflicts")
        ds.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)}
        return ds

    # --- plots ---------------------------------------------------------------------------------
    def pi_plot(self, data):
        ref = self.reference
        live = hv.Curve(
            (data["iteration"], data["error"]),
            "PI iteration i",
            "‖ωᵢ − ω*‖₂",
            label="this run",
        )
        dots = hv.Scatter(live).opts(size=7, color=plots.PALETTE[0])
        exact = hv.Curve(
            (np.asarray(ref["iteration"]), np.asarray(ref["weight_error"])),
            "PI iteration i",
            "‖ωᵢ − ω*‖₂",
            label="exact integrals (Newton)",
        ).opts(color=plots.PALETTE[1], **plots.THEORY_STYLE)
        floor = float(self.sweep_floor())
        title = f"PI live, {self._rule_label()}, N = {self.study.n}"
        if data["error"].size:
            title += f": {data['error'][-1]:.2e} after {data['error'].size} it."
        return (
            exact
            * live.opts(color=plots.PALETTE[0])
            * dots
            * hv.HLine(floor).opts(color="grey", line_dash="dotted")
        ).opts(
            logy=True,
            title=title,
            responsive=True,
            min_height=PLOT_HEIGHT,
            legend_position="top_right",
            show_grid=True,
            xlim=(0.5, max(6, self.study.max_iter) + 0.5),
            ylim=(1e-12, 1e2),
        )

    def sweep_floor(self) -> float:
        """The converged error of the current rule at the current N, from the N-sweep panel."""
        label = self._sweep_label()
        if label in self.sweep.rule.values and self.study.n in self.sweep.n.values:
            return float(self.sweep["weight_error"].sel(rule=label, n=self.study.n))
        return float("nan")

    def _sweep_label(self) -> str:
        s = self.study
        if s.rule == "bq":
            return "bq-wiener" if s.kernel == "wiener" else f"bq-matern-{s.nu:g}"
        return s.rule

    def _rule_label(self) -> str:
        s = self.study
        if s.rule == "bq":
            return "BQ Wiener" if s.kernel == "wiener" else f"BQ Matérn ν={s.nu:g}"
        return s.rule

    def sweep_plot(self):
        ds = self.sweep
        ns = np.asarray(ds["n"], dtype=float)
        errors = {
            (label if label == "trapezoid" else label.replace("bq-matern-", "BQ ν=")): np.asarray(
                ds["weight_error"].sel(rule=label)
            )
            for label in ds.rule.values
        }
        nu = float(self.study.nu)
        overlay = plots.error_curve(
            ns - 1,
            errors,
            xlabel="N − 1 (sub-intervals per interval)",
            ylabel="converged ‖ω̂ − ω*‖₂",
            theory_slopes={"(N−1)⁻²": -2.0, f"(N−1)^-(ν+½), ν = {nu:g}": -(nu + 0.5)},
            title=f"Error vs N ({self.study.system}; slopes fitted for N = "
            f"{ds.attrs['fit_min_n']}..{ds.attrs['fit_max_n']})",
        )
        return overlay.opts(hooks=[self.n_marker.hook], min_height=PLOT_HEIGHT)

    def weights_plot(self, version=0):
        s = self.study
        nodes = np.linspace(0.0, quad.INTERVAL_LENGTH, s.n)
        trap = quad.trapezoid_weights(s.n, 0.0, quad.INTERVAL_LENGTH)
        layers = {"trapezoid": trap}
        title = f"Weights on [0, T], N = {s.n}, ν = {s.nu:g}"
        try:
            w, e = quad.bq_weights(
                s.n,
                0.0,
                quad.INTERVAL_LENGTH,
                kernel="matern",
                nu=s.nu,
                lengthscale=s.lengthscale,
                jitter=s.jitter,
            )
            layers["BQ (Matérn)"] = w
            title += f": BQ Σw − T = {w.sum() - quad.INTERVAL_LENGTH:+.1e}, e(w) = {e:.1e}"
        except Exception as exc:  # shown in the title; the alert already carries the message
            layers["BQ (Matérn)"] = np.full(s.n, np.nan)  # same layers, nothing drawn
            title += f" (BQ unavailable: {exc})"
        return plots.curve_family(
            nodes, layers, xlabel="node time t", ylabel="weight wₙ", title=title
        )

    def wce_plot(self):
        ds = self.wce
        ns = np.asarray(ds["n"], dtype=float)
        errors = {
            f"BQ ν={float(nu):g}": np.asarray(ds["worst_case_error"].isel(kernel=i))
            for i, nu in enumerate(ds["nu"].values)
        }
        errors["trapezoid (ν=7/2 RKHS)"] = np.asarray(
            ds["trapezoid_worst_case_error"].isel(kernel=-1)
        )
        return plots.error_curve(
            ns - 1,
            errors,
            xlabel="N − 1",
            ylabel="worst-case error e(w)",
            title=f"Worst-case error, ℓ = {self.study.lengthscale:g}, jitter = {self.study.jitter:g}",
        ).opts(hooks=[self.wce_marker.hook], min_height=PLOT_HEIGHT)

    def trajectory_plot(self, data):
        states = data["states"]
        curves = {f"x{j + 1}": states[:, j] for j in range(states.shape[1])} if states.size else {}
        overlay = plots.curve_family(
            data["t"],
            curves,
            xlabel="time t",
            ylabel="state",
            markers=False,
            title="Closed-loop trajectory sampled by each iteration",
        )
        return overlay.opts(min_height=PLOT_HEIGHT)

    def gain_plot(self, data):
        """LQR: the gain Kᵢ against the Riccati K*; sin: the weights ωᵢ against ω* (V* known)."""
        values = data["values"]
        its = np.arange(1, values.shape[0] + 1)
        if self.study.system == "lqr":
            target, name, title = (
                np.ravel(quad.lqr_optimum()[0]),
                "K",
                "Gain Kᵢ approaching the Riccati K*",
            )
        else:
            target, name, title = (
                np.array([0.5, 0.0, 1.0]),
                "ω",
                "Weights ωᵢ approaching ω* (V* = ½x₁² + x₂²)",
            )
        span = np.array([0.5, max(6, self.study.max_iter) + 0.5])
        curves = {f"{name}{j + 1}": values[:, j] for j in range(values.shape[1])}
        theory = {
            f"{name}*{j + 1} = {target[j]:.4f}": (span, np.full(2, target[j]))
            for j in range(target.size)
        }
        return plots.curve_family(
            its, curves, xlabel="PI iteration i", ylabel=f"{name}ᵢ", theory=theory, title=title
        ).opts(min_height=PLOT_HEIGHT)

    def figure(self):
        return hv.Layout(
            [
                self.pi_plot(self._pi_data()),
                self.sweep_plot(),
                self.weights_plot(),
                self.wce_plot(),
                self.trajectory_plot(self._trajectory_data()),
                self.gain_plot(self._gain_data()),
            ]
        ).cols(2)

    def _build_plots(self) -> None:
        self.n_marker = shell.LiveMarker(
            "vline", line_color="black", line_dash="dotted", line_width=2
        )
        self.wce_marker = shell.LiveMarker(
            "vline", line_color="black", line_dash="dotted", line_width=2
        )
        kw = {"height": PLOT_HEIGHT, "sizing_mode": "stretch_width", "linked_axes": False}
        self.panes = {
            name: pn.pane.HoloViews(hv.Curve([]), **kw)
            for name in ("pi", "sweep", "weights", "wce", "trajectory", "gain")
        }
        self.weights_stream = hv.streams.Stream.define("Version", version=0)()
        self.dmaps = {"weights": hv.DynamicMap(self.weights_plot, streams=[self.weights_stream])}
        self.panes["weights"].object = self.dmaps["weights"]
        p = self.panes
        self.plots_area = pn.Column(
            pn.Row(p["pi"], p["sweep"], sizing_mode="stretch_width"),
            pn.Row(p["weights"], p["wce"], sizing_mode="stretch_width"),
            pn.Row(p["trajectory"], p["gain"], sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    def _build_live_panels(self) -> None:
        """Fresh Pipe-fed DynamicMaps for a new run: the layers (rule, N, system) are fixed
        within a run, so each streamed iteration is an in-place data update."""
        self.pipes = {
            "pi": hv.streams.Pipe(data=self._pi_data()),
            "trajectory": hv.streams.Pipe(data=self._trajectory_data()),
            "gain": hv.streams.Pipe(data=self._gain_data()),
        }
        for name, pipe in self.pipes.items():
            self.dmaps[name] = hv.DynamicMap(getattr(self, f"{name}_plot"), streams=[pipe]).opts(
                framewise=True
            )
            self.panes[name].object = self.dmaps[name]

    def page(self):
        return shell.lab_page(
            INFO,
            knobs=[
                self.system,
                self.rule,
                self.n,
                self.player,
                self.kernel,
                self.nu,
                self.lengthscale,
                self.jitter,
                self.intervals,
                self.max_iter,
                self.initial_gain,
                self.replay,
            ],
            status=self.status,
            plots=self.plots_area,
            dataset=self.dataset,
            figure=self.figure,
            text=EXPLANATION,
        )

    def close(self) -> None:
        self._stop_stream()
        self.records = []
        self.dmaps.clear()


@functools.lru_cache(maxsize=16)
def n_sweep(system: str, lengthscale: float, jitter: float, intervals: int, max_iter: int):
    """The N-sweep and the exact-integral reference run, shared by all sessions (read-only)."""
    sweep = quad.error_vs_n(
        system,
        rules=SWEEP_RULES,
        ns=SWEEP_NS,
        lengthscale=lengthscale,
        jitter=jitter,
        intervals=intervals or None,
        max_iter=max_iter,
    )
    reference = quad.run_policy_iteration(
        system,
        n=2,
        rule="exact",
        intervals=intervals or None,
        max_iter=max_iter,
        tol=0.0 if system == "lqr" else quad.DEFAULT_TOL,
    )
    return sweep, reference


def warm_cache() -> None:
    """Compute the default view's N-sweeps (``workbench serve`` calls this in the background)."""
    s = quad.QuadratureStudy()
    for system in quad.SYSTEMS:
        n_sweep(system, s.lengthscale, s.jitter, s.intervals, s.max_iter)


def parse_gain(text: str) -> tuple[float, float, float]:
    """``"0, 0.5, 1"`` -> (0.0, 0.5, 1.0); three finite numbers of modest size, or a message."""
    text = (text or "")[:MAX_GAIN_TEXT]
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        gain = tuple(float(p) for p in parts)
    except ValueError:
        gain = ()
    if len(gain) != 3 or not all(np.isfinite(gain)) or max(map(abs, gain)) > MAX_GAIN_ABS:
        raise StudyInputError(
            f"initial gain K₀: type three numbers separated by commas, each within ±{MAX_GAIN_ABS:g} "
            f"(got {text!r})"
        )
    return gain


def create_app():
    dashboard = QuadratureDashboard()
    dashboard.apply_query(shell.read_query(list(KNOBS)))
    shell.on_session_end(dashboard.close)
    return dashboard.page()
