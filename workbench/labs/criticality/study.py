"""CriticalityStudy: the lab's knobs (activation, C_W, C_b, depth, width, Monte-Carlo) and compute."""

from __future__ import annotations

import functools
import math

import numpy as np
import param
import xarray as xr

from workbench.labs.criticality import montecarlo as mc
from workbench.labs.criticality import theory
from workbench.labs.criticality.activations import ACTIVATIONS, SCALE_INVARIANT
from workbench.labs.criticality.phases import phase_diagram
from workbench.study import Study, StudyInputError, warn_user

#: Most Gaussian draws (networks × n² × L_mc) one Monte-Carlo may take (~5–10 s on 2 cores).
WORK_CAP = 2.5e8


class CriticalityStudy(Study):
    """Deep networks at initialization: kernel flow, order/chaos, finite-width non-Gaussianity.

    :meth:`flows` (cheap): K^(l), ρ^(l), χ_∥, χ_⊥, NTK and gradient factor, leading-order n·κ for
    l = 0..L. :meth:`monte_carlo` (expensive): real random networks of width n, the excess
    kurtosis at every layer 1..L_mc with its error, the theory lines and the last layer's
    samples. :meth:`phase` : the (C_b, C_W) diagram of the activation. ``evaluate()`` merges
    flows and Monte-Carlo.
    """

    lab = "criticality"
    title = "Criticality: deep networks at initialization, order/chaos and finite width"
    paper = (
        "Roberts, Yaida & Hanin, The Principles of Deep Learning Theory (Cambridge UP 2022); "
        "Poole et al., Exponential expressivity in deep neural networks through transient "
        "chaos (NeurIPS 2016); Schoenholz et al., Deep information propagation (ICLR 2017)"
    )
    paper_url = "https://arxiv.org/abs/2106.10165"
    summary = (
        "A wide random network is a Gaussian process whose kernel flows layer by layer. Only at "
        "criticality (ReLU: C_W = 2, C_b = 0; tanh: C_W = 1, C_b = 0) does the signal neither "
        "explode nor vanish with depth; elsewhere correlations forget the input over a depth "
        "scale ξ (ordered phase: all inputs look alike; chaotic: nearby inputs fly apart). At "
        "finite width n the preactivations are not Gaussian: the excess kurtosis grows with the "
        "aspect ratio L/n (ReLU: 15(L − 1)/n at first, exactly 3[(1 + 5/n)^(L−1) − 1]). Watch the "
        "kernel flow, the phase diagram and real random networks drift from the Gaussian."
    )
    vectorized = ()

    activation = param.Selector(
        objects=ACTIVATIONS,
        default="tanh",
        label="activation σ",
        doc="Nonlinearity: ReLU and linear are scale-invariant (critical at C_b = 0, C_W = 2 or "
        "1); tanh belongs to the K* = 0 class (critical at C_b = 0, C_W = 1); GELU/SiLU have a "
        "critical point at K* > 0; sigmoid has none.",
    )
    cw = param.Number(
        1.0,
        bounds=(0.0, 10.0),
        inclusive_bounds=(False, True),
        softbounds=(0.05, 4.0),
        step=0.01,
        label="weight variance C_W",
        doc="Weights W ~ N(0, C_W/n). Larger C_W amplifies the signal; χ₁ = 1 on the critical "
        "line separates ordered (χ₁ < 1) from chaotic (χ₁ > 1).",
    )
    cb = param.Number(
        0.0,
        bounds=(0.0, 5.0),
        softbounds=(0.0, 0.5),
        step=0.005,
        label="bias variance C_b",
        doc="Biases b ~ N(0, C_b); C_b > 0 keeps the kernel from vanishing and moves tanh's "
        "critical line to larger C_W.",
    )
    depth = param.Integer(
        50,
        bounds=(1, 2000),
        softbounds=(1, 200),
        label="depth L",
        doc="Number of layers of the infinite-width flows (kernel, correlation, NTK).",
    )
    k0 = param.Number(
        1.0,
        bounds=(1e-6, 100.0),
        softbounds=(0.01, 4.0),
        step=0.01,
        label="input second moment k0",
        doc="|x|²/n₀ of the input; K^(1) = C_b + C_W k0.",
    )
    rho0 = param.Number(
        0.5,
        bounds=(-1.0, 1.0),
        step=0.01,
        label="input correlation ρ₀",
        doc="Correlation of the two inputs whose correlation flows with depth.",
    )
    width = param.Integer(
        32,
        bounds=(1, 1024),
        softbounds=(2, 256),
        label="width n",
        doc="Hidden width n of the finite networks of the Monte-Carlo (input dimension = n).",
    )
    mc_depth = param.Integer(
        8,
        bounds=(1, 200),
        softbounds=(1, 64),
        label="Monte-Carlo depth L_mc",
        doc="Layers of the finite networks; the aspect ratio L_mc/n controls the non-Gaussianity.",
    )
    networks = param.Integer(
        2000,
        bounds=(100, 10**6),
        softbounds=(100, 20000),
        label="networks",
        doc="Independent random networks in the Monte-Carlo (the kurtosis error falls like "
        "1/√networks).",
    )
    seed = param.Integer(0, bounds=(0, 2**31 - 1), label="seed", doc="Random seed of the weights.")

    def validate(self) -> None:
        mc.check_budget(self.width, self.mc_depth, self.networks)
        work = self.networks * self.width**2 * self.mc_depth
        if work > WORK_CAP:
            raise StudyInputError(
                f"a Monte-Carlo of {self.networks} networks × width n {self.width}² × "
                f"Monte-Carlo depth L_mc {self.mc_depth} draws {work:.2g} weights, over the "
                f"{WORK_CAP:.2g} cap: lower networks, width n or Monte-Carlo depth L_mc"
            )

    def estimated_seconds(self) -> float:
        """t ≈ 0.12 s + 0.5 ms × depth L + 19 ns × networks × width n² × L_mc (the Monte-Carlo's
        weight draws and products dominate; the phase diagram is cached per activation).

        Calibrated on the serving machine (2 cores, load ~1.5, NumPy, 2026-11-28): the page's
        compute took 0.40 s at the defaults (1.6e7 weights), 3.5 s at 20,000 networks (1.6e8),
        47 s and 97 s at 2.6e9 and 5.2e9 weights (over today's cap), 1.1 s at depth 2000.
        """
        work = self.networks * self.width**2 * self.mc_depth
        return 0.12 + 5e-4 * self.depth + 1.9e-8 * work

    # --- compute -----------------------------------------------------------------------------
    def flows(self) -> xr.Dataset:
        """Infinite-width flows on ``layer`` = 0..L (cheap)."""
        a, cw, cb, depth, k0 = self.activation, self.cw, self.cb, self.depth, self.k0
        # One kernel flow feeds every other flow (each public function would recompute it).
        kern = theory.kernel_flow(a, cw, cb, depth, k0)
        ntk = theory.ntk_from_kernel(a, cw, kern)
        with np.errstate(over="ignore", invalid="ignore"):
            chi_par, chi_perp = theory.susceptibilities(a, cw, cb, np.minimum(kern, 1e300))
        rho = theory.correlation_from_kernel(a, cw, cb, kern, self.rho0)
        nkappa = theory.vertex_from_kernel(a, cw, kern)
        layer = np.arange(depth + 1)
        ds = xr.Dataset(
            {
                "kernel": ("layer", kern),
                "rho": ("layer", rho),
                "chi_par": ("layer", chi_par),
                "chi_perp": ("layer", chi_perp),
                "ntk": ("layer", ntk["ntk"]),
                "grad": ("layer", ntk["grad"]),
                "n_kappa": ("layer", nkappa),
            },
            coords={"layer": layer},
        )
        for name, long in (
            ("kernel", "kernel K^(l)"),
            ("rho", "correlation ρ^(l) of two inputs"),
            ("chi_par", "parallel susceptibility χ_∥(K^(l))"),
            ("chi_perp", "perpendicular susceptibility χ_⊥(K^(l))"),
            ("ntk", "frozen NTK Θ^(l) (λ_b = λ_W = 1)"),
            ("grad", "gradient factor ∏ χ_⊥ over layers below l"),
            ("n_kappa", "leading-order width × excess kurtosis 3V/K²"),
            ("layer", "layer l"),
        ):
            ds[name].attrs.update(units="1", long_name=long)
        ds.attrs.update(self._attrs())
        return ds

    def monte_carlo(self) -> xr.Dataset:
        """Real random networks (batched): κ at layers 1..L_mc with errors, theory, samples."""
        a, n = self.activation, self.width
        z, m2, m4 = _monte_carlo(
            a, self.cw, self.cb, n, self.mc_depth, self.networks, self.seed, self.k0
        )
        kappa, err = mc.kurtosis_with_error(m2, m4)
        layers = np.arange(1, self.mc_depth + 1)
        leading = theory.vertex_flow(a, self.cw, self.cb, self.mc_depth, self.k0)[1:] / n
        exact = np.full(layers.shape, np.nan)
        if a in SCALE_INVARIANT and self.cb == 0:
            exact = theory.kurtosis_exact_scale_invariant(a, n, layers)
        ds = xr.Dataset(
            {
                "kurtosis_mc": ("mc_layer", kappa),
                "kurtosis_err": ("mc_layer", err),
                "kurtosis_leading": ("mc_layer", leading),
                "kurtosis_exact": ("mc_layer", exact),
                "variance_mc": ("mc_layer", m2.mean(axis=0)),
                "samples": (("network", "unit"), z[: min(len(z), 4000)]),
            },
            coords={"mc_layer": layers, "aspect": ("mc_layer", layers / n)},
        )
        for name, units, long in (
            ("kurtosis_mc", "1", "Monte-Carlo excess kurtosis κ (pooled)"),
            ("kurtosis_err", "1", "standard error of κ over networks"),
            ("kurtosis_leading", "1", "leading-order κ = 3V/(nK²)"),
            ("kurtosis_exact", "1", "exact κ = 3[(1 + a/n)^(L−1) − 1] (ReLU/linear, C_b = 0)"),
            ("variance_mc", "1", "Monte-Carlo ⟨z²⟩"),
            ("samples", "1", "preactivations z at layer L_mc"),
            ("mc_layer", "1", "layer L of the finite networks"),
            ("aspect", "1", "aspect ratio L/n"),
        ):
            ds[name].attrs.update(units=units, long_name=long)
        ds.attrs.update(self._attrs())
        ds.attrs["kernel_at_mc_depth"] = float(
            theory.kernel_flow(a, self.cw, self.cb, self.mc_depth, self.k0)[-1]
        )
        return ds

    def phase(self) -> xr.Dataset:
        """The 200 × 200 (C_b, C_W) phase diagram of the activation (shared cache)."""
        return _phase(self.activation)

    def evaluate(self) -> xr.Dataset:
        ds = xr.merge([self.flows(), self.monte_carlo()], combine_attrs="override")
        ds.attrs.update(self._attrs())
        return ds

    def _attrs(self) -> dict:
        attrs = {k: v for k, v in self.values().items()}
        scale = theory.correlation_depth_scale(self.activation, self.cw, self.cb)
        attrs.update({k: float(v) for k, v in scale.items()})
        try:
            ccb, ccw = theory.critical_point(self.activation)
        except StudyInputError as exc:
            ccb = ccw = math.nan
            warn_user(str(exc))
        attrs.update(critical_cb=ccb, critical_cw=ccw)
        return attrs


@functools.lru_cache(maxsize=16)
def _phase(activation: str) -> xr.Dataset:
    return phase_diagram(activation)


@functools.lru_cache(maxsize=8)
def _monte_carlo(a, cw, cb, width, depth, networks, seed, k0):
    return mc.run_networks(a, cw, cb, width, depth, networks, seed, k0)
