"""Fractional lab dashboard (B-spline collocation for Riesz diffusion), on :class:`LabDashboard`.

Layout and bindings only; every number comes from :mod:`workbench.labs.fractional`. Degree,
order, size and test solution recompute the spectrum and the sweeps (cond, errors, iteration
counts) off the loop; preconditioner and tolerance only restart the Krylov solve, whose
iterations are streamed into the residual panel as GMRES runs.
"""

from __future__ import annotations

import panel as pn

from apps import shell
from apps.knobs import log_slider
from apps.lab_app import LabDashboard
from apps.live import LiveFigures
from workbench.labs import fractional as fr
from workbench.labs.fractional import figures

EXPLANATION = r"""
**What you see.** Collocation of −∂^α u/∂|x|^α = f on (0, 1) with splines of degree p on N
intervals (n = N + p − 2 unknowns, Greville points). A_n = h^{−α}(Toeplitz + boundary correction).

* **Symbol**: f_{α,p}(θ) = Σ_j |θ + 2πj|^α (sin(θ/2 + πj)/(θ/2 + πj))^{p+1} (dashed) with the
  sorted eigenvalues of h^α A_n at θ_j = jπ/(n+1); crosses: outliers (odd p, from the first and
  last collocation points). f(θ) ~ θ^α at 0; **f(π) vs p** falls as p grows.
* **cond(A_n)** vs n with the n^α line (dense SVD up to n = 512, matrix-free estimate beyond).
* **Max-norm error** vs N with fitted rates; dashed: the paper's p + 2 − α (even p) or
  p + 1 − α (odd p).
* **GMRES** (right-preconditioned, live): residual per iteration for your preconditioner, and
  iterations vs N (b = ones, tol 1e-8) for none, τ (sine transform of the symbol), Strang
  circulant and the α = 2 Laplacian.
* **Solution** u_h with the exact u, and the pointwise error |u_h − u|.
"""

#: The solve panel's sizes: powers of two (the operator is matrix-free, so all solve quickly).
SIZE_OPTIONS = [2**k for k in range(4, 17)]
#: Panes redrawn when the sweeps are recomputed, and those the live Krylov solve redraws.
SWEEP_PANES = ("symbol", "symbol_pi", "cond", "errors", "counts")
SOLVE_PANES = ("residual", "solution", "error")


class FractionalDashboard(LabDashboard):
    study_class = fr.FractionalStudy
    cheap = ("preconditioner", "tol")
    main_knob = "degree"
    explanation = EXPLANATION
    widget_overrides = {
        "intervals": {"widget": pn.widgets.DiscreteSlider, "options": SIZE_OPTIONS},
        # One stop per decade: a linear slider over [1e-14, 1e-2] offered only its two ends.
        "tol": log_slider(fr.FractionalStudy, "tol"),
    }

    # --- heavy work (worker thread, on a snapshot) -------------------------------------------
    def compute(self, study):
        return {
            "spectrum": study.spectrum(),
            "symbol_pi": study.symbol_vs_degree(),
            "cond": study.conditioning(),
            "errors": study.convergence(),
            "counts": study.iteration_counts(),
        }

    # --- drawing (event loop) -----------------------------------------------------------------
    def render(self, result):
        self.result = result
        if hasattr(self, "live"):
            self.live.refresh(*SWEEP_PANES)
        self.solve_live()

    def update_cheap(self, changed):
        self.solve_live()

    def solve_live(self):
        """Restart the Krylov solve at the current knobs and stream its iterations."""
        snapshot = self._snapshot()
        self.history, self.solved = [], None

        def items():
            run = snapshot.krylov_run()
            yield from run.steps()
            yield snapshot.result_from_run(run)

        self.start_stream(items, self._on_items)

    def _on_items(self, batch):
        for item in batch:
            if isinstance(item, fr.KrylovStep):
                self.history.append(item.residual)
            else:
                self.solved = item
        if hasattr(self, "live"):
            self.live.refresh(
                "residual", *(("solution", "error") if self.solved is not None else ())
            )

    def _residual_figure(self):
        s = self.study
        title = f"GMRES live: N = {s.intervals}, tol {s.tol:g}"
        return figures.residual_histories({s.preconditioner: self.history}, title)

    def _figure(self, name):
        r, s = self.result, self.study
        if name == "symbol":
            return figures.symbol_with_eigenvalues(r["spectrum"])
        if name == "symbol_pi":
            return figures.symbol_at_pi(r["symbol_pi"], current=(s.alpha, s.degree))
        if name == "cond":
            return figures.condition_numbers(r["cond"])
        if name == "errors":
            return figures.errors(r["errors"])
        if name == "counts":
            return figures.iteration_counts(r["counts"])
        if name == "residual":
            return self._residual_figure()
        solved = self.solved if self.solved is not None else self.study.evaluate()
        return figures.solution(solved) if name == "solution" else figures.pointwise_error(solved)

    def _figures(self):
        return {name: self._figure(name) for name in SWEEP_PANES}

    def plots(self):
        opts = {"sizing_mode": "stretch_width", "min_height": 320}
        self.live = LiveFigures(self._figure, (*SWEEP_PANES, *SOLVE_PANES), opts)
        self.panes = self.live.panes
        p = self.panes
        return pn.Column(
            shell.row(p["symbol"], p["symbol_pi"]),
            shell.row(p["cond"], p["errors"]),
            shell.row(p["residual"], p["counts"]),
            shell.row(p["solution"], p["error"]),
            sizing_mode="stretch_width",
        )

    # --- exports ------------------------------------------------------------------------------
    def dataset(self):
        return self.solved if self.solved is not None else self.study.evaluate()

    def figure(self):
        f = self._figures()
        solved = self.dataset()
        return (
            f["symbol"]
            + f["cond"]
            + f["errors"]
            + f["counts"]
            + self._residual_figure()
            + figures.solution(solved)
        ).cols(2)

    def close(self):
        self.stop_stream()
        self.result = None


create_app = FractionalDashboard.create_app
warm_cache = FractionalDashboard.warm_cache
