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
**What you see.** Collocation of the fractional (Riesz) diffusion equation
$-\partial^\alpha u/\partial|x|^\alpha = f$ on $(0, 1)$, order $1 < \alpha < 2$, with B-splines of
degree $p$ on $N$ intervals of width $h = 1/N$ ($n = N + p - 2$ unknowns, collocated at the
Greville points). The matrix is $A_n = h^{-\alpha}(T_n + \text{boundary correction})$, $T_n$
Toeplitz.

* **Symbol**: $f_{\alpha,p}(\theta) = \sum_{j} |\theta + 2\pi j|^\alpha
  \left(\frac{\sin(\theta/2 + \pi j)}{\theta/2 + \pi j}\right)^{p+1}$ (dashed), the function
  whose samples the eigenvalues follow, with the sorted eigenvalues of $h^\alpha A_n$ at
  $\theta_j = j\pi/(n + 1)$; crosses: outliers (odd $p$, from the first and last collocation
  points). $f(\theta) \sim \theta^\alpha$ at 0; **$f(\pi)$ vs $p$** falls as $p$ grows.
* **$\mathrm{cond}_2(A_n)$** vs $n$ with the $n^\alpha$ line (dense SVD up to $n = 512$,
  a matrix-free estimate beyond).
* **Max-norm error** $\lVert u_h - u\rVert_\infty$ vs $N$ with fitted rates; dashed: the
  paper's rate $p + 2 - \alpha$ (even $p$) or $p + 1 - \alpha$ (odd $p$).
* **GMRES** (right-preconditioned, live): the relative residual
  $\lVert b - A x_k\rVert/\lVert b\rVert$ per iteration $k$ for your preconditioner, and the
  iterations vs $N$ ($b$ = ones, tolerance $10^{-8}$) for none, $\tau$ (the sine-transform
  algebra built from the symbol), the Strang circulant and the $\alpha = 2$ Laplacian.
* **Solution** $u_h$ with the exact $u$, and the pointwise error $|u_h - u|$.
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
    # Degree, α, right-hand side: f(π) against p and the error curves (cached sweeps, ~0.06 s)
    # are drawn while the spectrum, conditioning and iteration counts compute (~1-3 s).
    previewed = ("symbol_pi", "errors")
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

    def preview(self, study):
        return {"symbol_pi": study.symbol_vs_degree(), "errors": study.convergence()}

    # --- drawing (event loop) -----------------------------------------------------------------
    def render(self, result):
        self.result = self._full = result
        if hasattr(self, "live"):
            same = self.previewed if self.preview_drawn() else ()  # not drawn twice
            self.live.refresh(*(n for n in SWEEP_PANES if n not in same))
        self.solve_live()

    def render_preview(self, part):
        self.result = {**self.result, **part}
        self.live.refresh(*self.previewed)

    def on_restored(self):
        # A refused or abandoned change: its previewed panels go back to the kept result.
        if hasattr(self, "live") and self.result is not self._full:
            self.result = self._full
            self.live.refresh(*self.previewed)

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

        self.start_stream(items, self._on_items, seconds=snapshot.estimated_solve_seconds())

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
        self.result = self._full = None


create_app = FractionalDashboard.create_app
warm_cache = FractionalDashboard.warm_cache
