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
**What you see.** A deep network of width $n$ and depth $L$, with weights
$W \sim \mathcal N(0, C_W/n)$, biases $b \sim \mathcal N(0, C_b)$ and activation $\sigma$, fed
one input $x$ with $|x|^2/n_0 = k_0$. At infinite width each layer's preactivations $z^{(l)}$
are Gaussian with variance (kernel) $K^{(l)}$:
$K^{(1)} = C_b + C_W k_0$ and $K^{(l+1)} = C_b + C_W \langle \sigma(z)^2 \rangle_{K^{(l)}}$,
$\langle\cdot\rangle_K$ the average over $z \sim \mathcal N(0, K)$.
The susceptibilities $\chi_\parallel = C_W\, \partial\langle\sigma^2\rangle_K / \partial K$
and $\chi_\perp = C_W \langle \sigma'(z)^2 \rangle_K$ say how a small change of the kernel, or of
the input's direction, grows from layer to layer; criticality is $\chi_\parallel = \chi_\perp = 1$.

* **Kernel flow** $K^{(l)}$ with its fixed point $K^*$
  ($K^* = C_b + C_W\langle\sigma^2\rangle_{K^*}$) and the linearised approach
  $K^* + (K^{(1)} - K^*)\chi_\parallel^{\,l-1}$; for tanh at criticality
  ($C_W = 1$, $C_b = 0$) the $1/(2l)$ law.
* **Correlation** $\rho^{(l)}$ of the preactivations of two inputs: $1 - \rho^{(l)}$ with
  $(9\pi^2/2)/l^2$ at ReLU criticality, and $1 - c^*$ in the chaotic phase, $c^*$ the correlation's
  fixed point; $\xi_c = -1/\log\chi_c$, $\chi_c = C_W\langle\sigma'(z_a)\sigma'(z_b)\rangle$ at
  $c^*$, is the depth over which correlations relax.
* **Phase diagram** $(C_b, C_W)$ coloured by $\log_{10}\xi$, $\xi = 1/|\log\chi_1|$,
  $\chi_1 = C_W\langle\sigma'^2\rangle_{K^*}$: ordered below the critical line $\chi_1 = 1$,
  chaotic above, blank where the kernel diverges. **Click it to move there.**
* **Finite width** (real random networks, batched): the histogram of the preactivations $z$ at
  layer $L_{\mathrm{mc}}$ against the Gaussian $\mathcal N(0, K^{(L)})$, and the excess kurtosis
  $\kappa = \langle z^4\rangle/\langle z^2\rangle^2 - 3$ ($\pm 2$ standard errors over networks)
  against the aspect ratio $L/n$, with the leading order $3V/(nK^2)$ ($V$ the four-point vertex:
  $n$ times the connected fourth moment, at leading order in $1/n$) and, for ReLU and linear at
  $C_b = 0$, the exact law $3[(1 + a/n)^{L-1} - 1]$ ($a = 5$ for ReLU, $2$ for linear).
* **Gradients**: $\chi_\parallel$ and $\chi_\perp$ per layer, the back-propagated factor
  $\prod_{m<l} \chi_\perp$ and the neural tangent kernel ratio $\Theta^{(l)}/\Theta^{(1)}$.
"""

NETWORK_OPTIONS = [100, 300, 1000, 2000, 5000, 10_000, 20_000, 50_000]
WIDTH_OPTIONS = [2**k for k in range(1, 9)]
FLOW_PANES = ("kernel", "correlation", "gradients")
PANES = (*FLOW_PANES, "phase", "histogram", "kurtosis")


class CriticalityDashboard(LabDashboard):
    study_class = cr.CriticalityStudy
    cheap = ("depth", "rho0")
    main_knob = "cw"
    # Activation, C_W, C_b, k0: the infinite-width flows (~0.1 s) are drawn while the
    # Monte-Carlo of real networks (~0.4 s at the defaults) and the phase diagram compute.
    previewed = FLOW_PANES
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
        drawn, self.flows = getattr(self, "flows", None), result["flows"]
        if hasattr(self, "live"):
            # Drawn by the preview, or left as they are by a Monte-Carlo knob: not drawn twice.
            same = self.preview_drawn() or (drawn is not None and drawn.identical(self.flows))
            self._attach_tap(
                self.live.refresh(*(n for n in PANES if not same or n not in FLOW_PANES))
            )

    def update_cheap(self, changed):
        self.flows = self.study.flows()
        self._attach_tap(self.live.refresh(*FLOW_PANES))

    def preview(self, study):
        return study.flows()

    def render_preview(self, flows):
        if not flows.identical(self.flows):  # a Monte-Carlo knob leaves the flows as they are
            self.flows = flows
            self.live.refresh(*FLOW_PANES)

    def on_restored(self):
        # A refused or abandoned change: the flows may show its preview; draw the kept knobs'.
        if hasattr(self, "live"):
            self.update_cheap(set())

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
