"""Criticality lab dashboard (deep networks at initialization), on :class:`LabDashboard`.

Layout and bindings only; every number comes from :mod:`workbench.labs.criticality`. Depth and
the input correlation only redraw the infinite-width flows (cheap, in place); activation, C_W,
C_b, k0 and the Monte-Carlo knobs recompute the finite-width networks off the loop. Clicking the
phase diagram moves C_b and C_W there.
"""

from __future__ import annotations

import holoviews as hv
import panel as pn

from apps import shell
from apps.lab_app import LabDashboard
from apps.live import LiveFigures
from workbench.labs import criticality as cr
from workbench.labs.criticality import figures

EXPLANATION = r"""
**What you see.** A network with weights W ~ N(0, C_W/n) and biases b ~ N(0, C_b), one input with
|x|²/n₀ = k0 (K^(1) = C_b + C_W k0).

* **Kernel flow** K^(l) (infinite width) with its fixed point K* and the linearised approach; for
  tanh at criticality (C_W = 1, C_b = 0) the 1/(2l) law.
* **Correlation** of two inputs: 1 − ρ^(l) with (9π²/2)/l² at ReLU criticality, 1 − c* in the
  chaotic phase; ξ_c is the correlation depth scale.
* **Phase diagram** (C_b, C_W) coloured by log₁₀ ξ, ξ = 1/|log χ₁|: ordered below the white
  critical line, chaotic above, blank where the kernel diverges. **Click it to move there.**
* **Finite width** (real random networks, batched): the preactivation histogram at layer L_mc vs
  the Gaussian, and the excess kurtosis κ (±2 standard errors over networks) vs the aspect ratio
  L/n with the leading-order 3V/(nK²) and, for ReLU/linear at C_b = 0, the exact law.
* **Gradients**: χ_∥, χ_⊥ per layer, the back-propagated factor ∏χ_⊥ and the NTK Θ^(l)/Θ^(1).
"""

NETWORK_OPTIONS = [100, 300, 1000, 2000, 5000, 10_000, 20_000, 50_000]
WIDTH_OPTIONS = [2**k for k in range(1, 9)]
FLOW_PANES = ("kernel", "correlation", "gradients")
PANES = (*FLOW_PANES, "phase", "histogram", "kurtosis")


class CriticalityDashboard(LabDashboard):
    study_class = cr.CriticalityStudy
    cheap = ("depth", "rho0")
    main_knob = "cw"
    explanation = EXPLANATION
    widget_overrides = {
        "networks": {"widget": pn.widgets.DiscreteSlider, "options": NETWORK_OPTIONS},
        "width": {"widget": pn.widgets.DiscreteSlider, "options": WIDTH_OPTIONS},
    }

    # --- heavy work (worker thread, on a snapshot) -------------------------------------------
    def compute(self, study):
        return {"flows": study.flows(), "mc": study.monte_carlo(), "phase": study.phase()}

    # --- drawing (event loop) -----------------------------------------------------------------
    def render(self, result):
        self.result = result
        self.flows = result["flows"]
        if hasattr(self, "live"):
            self._attach_tap(self.live.refresh())

    def update_cheap(self, changed):
        self.flows = self.study.flows()
        self._attach_tap(self.live.refresh(*FLOW_PANES))

    def _figure(self, name):
        r, a = self.result, self.flows.attrs
        if name == "kernel":
            return figures.kernel_flow(self.flows)
        if name == "correlation":
            return figures.correlation_flow(self.flows)
        if name == "gradients":
            return figures.gradients(self.flows)
        if name == "phase":
            return figures.phase_diagram(
                r["phase"],
                current=(self.study.cb, self.study.cw),
                critical=(a["critical_cb"], a["critical_cw"]),
            )
        if name == "histogram":
            return figures.preactivation_histogram(r["mc"])
        return figures.kurtosis_vs_aspect(r["mc"])

    def _attach_tap(self, rebuilt=("phase",)):
        """A click on the phase diagram (its live DynamicMap) moves (C_b, C_W) there."""
        if "phase" in rebuilt:
            tap = hv.streams.Tap(source=self.live.dmaps["phase"], x=None, y=None)
            tap.add_subscriber(self._on_tap)

    def _on_tap(self, x=None, y=None):
        """A click on the phase diagram moves (C_b, C_W) there (validated like a widget)."""
        if x is None or y is None:
            return
        self.request({"cb": round(max(float(x), 0.0), 3), "cw": round(max(float(y), 0.01), 2)})

    def _figures(self):
        return {name: self._figure(name) for name in PANES}

    def plots(self):
        opts = {"sizing_mode": "stretch_width", "min_height": 320}
        self.live = LiveFigures(self._figure, PANES, opts)
        self._attach_tap()
        self.panes = p = self.live.panes
        return pn.Column(
            shell.row(p["kernel"], p["correlation"]),
            shell.row(p["phase"], p["gradients"]),
            shell.row(p["histogram"], p["kurtosis"]),
            sizing_mode="stretch_width",
        )

    # --- exports ------------------------------------------------------------------------------
    def dataset(self):
        ds = self.flows.merge(self.result["mc"], combine_attrs="override")
        ds.attrs.update(self.flows.attrs)
        return ds

    def figure(self):
        f = self._figures()
        return (
            f["kernel"]
            + f["correlation"]
            + f["phase"]
            + f["gradients"]
            + f["histogram"]
            + f["kurtosis"]
        ).cols(2)

    def close(self):
        self.result = None
        if hasattr(self, "live"):
            self.live.close()


create_app = CriticalityDashboard.create_app
warm_cache = CriticalityDashboard.warm_cache
