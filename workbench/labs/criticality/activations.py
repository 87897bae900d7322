"""Activation functions and Gaussian expectations (Gauss–Hermite, closed forms for ReLU).

⟨f(z)⟩_K = E f(z), z ~ N(0, K), by the probabilists' Gauss–Hermite rule
⟨f⟩_K ≈ Σ_i w_i f(√K x_i) / √(2π) (nodes/weights of ``numpy.polynomial.hermite_e.hermegauss``).
For pairs, z_a = √K11 x, z_b = √K22 (ρ x + √(1 − ρ²) y) (Cholesky) with a tensor rule in (x, y).

Accuracy (lab brief ``shared/science/criticality.md``): tanh(√K x) has poles at ±iπ/(2√K), so
the rule loses accuracy as K grows (101 nodes: ~1e-11 for K ≤ 1, ~1e-4 at K = 4). Measured here
against SciPy ``quad`` with 301 nodes: ⟨tanh'²⟩ is off by 4e-9 at K = 4, 1e-5 at K = 10, 2e-3
at K = 30 and 2e-2 at K = 100. So above :data:`GH_MAX_K` the diagonal expectations switch to a
rule in z itself (:func:`_panel_moments`): composite Gauss–Legendre on [−Z, Z], Z = 40, where
every activation here differs from its straight-line asymptote a± z + b± by less than 1e-15,
plus the tails |z| > Z in closed form (truncated Gaussian moments). The σ-dependent factor is
then K-independent and analytic in the strip |Im z| < π/2, so the error is ~1e-14 for every K.

For pairs a tensor rule through ReLU's kink converges only like 1/N, so ReLU pairs use the
arc-cosine closed form (Cho & Saul 2009):
⟨σ(z_a)σ(z_b)⟩ = √(K_aa K_bb)/(2π) (sin θ + (π − θ) cos θ), cos θ = ρ. The smooth activations use
the 81 × 81 tensor rule; measured for tanh against nested SciPy ``quad``: ~3e-11 at K = 1,
4e-6 at K = 4, 3e-4 at K = 10 (ρ = 0.95); :func:`pair_expectations` raises the node count with K.
"""

from __future__ import annotations

import functools
import importlib
import math

import numpy as np
from scipy.special import expit, ndtr, roots_legendre

from workbench.study import StudyInputError

#: Names shown to users → stored keys.
ACTIVATIONS = {
    "ReLU": "relu",
    "tanh": "tanh",
    "linear": "linear",
    "GELU": "gelu",
    "SiLU (swish)": "silu",
    "sigmoid": "sigmoid",
}
#: Scale-invariant activations: σ(z) = a₊ z (z > 0), a₋ z (z < 0); slopes (a₊, a₋).
SCALE_INVARIANT = {"relu": (1.0, 0.0), "linear": (1.0, 1.0)}
#: Gauss–Hermite sizes: 1-D diagonal expectations and the 2-D tensor rule for pairs.
NODES_1D = 301
NODES_2D = 81
#: Above this variance the diagonal expectations use the rule in z (:func:`_panel_moments`).
GH_MAX_K = 1.0
#: Half-width of the z interval of the panel rule; beyond it σ is its asymptote a± z + b±.
PANEL_EDGE = 40.0
#: Gauss–Legendre panels of width 2 with 16 nodes: tanh's poles at ±iπ/2 are 1.57 half-widths
#: away, so each panel's error is ~(1.57 + √(1 + 1.57²))^(−32) ≈ 1e-17.
_PANEL_WIDTH, _PANEL_NODES = 2.0, 16
#: Asymptotes σ(z) → a₊ z + b₊ (z → +∞), a₋ z + b₋ (z → −∞): (a₊, b₊, a₋, b₋).
ASYMPTOTES = {
    "relu": (1.0, 0.0, 0.0, 0.0),
    "linear": (1.0, 0.0, 1.0, 0.0),
    "tanh": (0.0, 1.0, 0.0, -1.0),
    "gelu": (1.0, 0.0, 0.0, 0.0),
    "silu": (1.0, 0.0, 0.0, 0.0),
    "sigmoid": (0.0, 1.0, 0.0, 0.0),
}

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _phi(x):
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def _tanh(x):
    t = np.tanh(x)
    return t, 1.0 - t * t, -2.0 * t * (1.0 - t * t)


def _relu(x):
    return np.maximum(x, 0.0), (x > 0).astype(float), np.zeros_like(x)


def _linear(x):
    return x, np.ones_like(x), np.zeros_like(x)


def _gelu(x):
    cdf, pdf = ndtr(x), _phi(x)
    return x * cdf, cdf + x * pdf, pdf * (2.0 - x * x)


def _silu(x):
    s = expit(x)
    ds = s * (1.0 - s)
    return x * s, s + x * ds, ds * (2.0 + x * (1.0 - 2.0 * s))


def _sigmoid(x):
    s = expit(x)
    ds = s * (1.0 - s)
    return s, ds, ds * (1.0 - 2.0 * s)


_FUNCTIONS = {
    "relu": _relu,
    "tanh": _tanh,
    "linear": _linear,
    "gelu": _gelu,
    "silu": _silu,
    "sigmoid": _sigmoid,
}


def check_activation(activation: str) -> str:
    """The stored key of ``activation`` (a key or a shown name); StudyInputError if unknown."""
    key = ACTIVATIONS.get(activation, activation)
    if key not in _FUNCTIONS:
        raise StudyInputError(
            f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}"
        )
    return key


def sigma(activation: str, z, derivative: int = 0):
    """σ(z), σ'(z) or σ''(z) (``derivative`` = 0, 1, 2) elementwise."""
    return _FUNCTIONS[check_activation(activation)](np.asarray(z, dtype=float))[derivative]


def sigma_on(activation: str, z, xp):
    """σ(z) elementwise in namespace ``xp``, on ``z``'s device (the Monte-Carlo's device path).

    Array-API formulas: ReLU max(z, 0), tanh, linear z, sigmoid by the overflow-free
    s = 1/(1 + e^{−z}) (z ≥ 0), e^{z}/(1 + e^{z}) (z < 0) with e^{−|z|} computed once, SiLU z·s.
    GELU z Φ(z) needs the normal CDF, which the array API lacks: CuPy takes
    ``cupyx.scipy.special.ndtr``, other namespaces get a TypeError naming this function. NumPy
    callers use :func:`sigma` (SciPy's ``expit``/``ndtr``).
    """
    key = check_activation(activation)
    if key == "relu":
        return xp.maximum(z, 0.0)
    if key == "tanh":
        return xp.tanh(z)
    if key == "linear":
        return z
    if key in ("sigmoid", "silu"):
        e = xp.exp(-xp.abs(z))
        s = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return s if key == "sigmoid" else z * s
    if xp.__name__.split(".")[0] == "cupy":
        special = importlib.import_module("cupyx.scipy.special")
        return z * special.ndtr(z)
    raise TypeError(
        f"sigma_on(activation='GELU') needs the normal CDF (ndtr), which {xp.__name__} lacks: "
        "run GELU networks with NumPy or CuPy arrays"
    )


@functools.cache
def gauss_hermite(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite nodes and weights normalised to sum to 1 (E over N(0, 1))."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return x, w / w.sum()


def gauss_moments(activation: str, k, nodes: int = NODES_1D) -> dict[str, np.ndarray]:
    """Diagonal Gaussian expectations at variance ``k`` (any shape): a dict with

    ``s2`` = ⟨σ²⟩_K, ``s4`` = ⟨σ⁴⟩_K, ``d2`` = ⟨σ'²⟩_K and ``dk`` = d⟨σ²⟩_K/dK = ⟨σ'² + σσ''⟩_K
    (Stein's lemma: dE f(√K x)/dK = ½ E f''). ReLU and linear use their closed forms; the others
    Gauss–Hermite with ``nodes`` nodes for K ≤ :data:`GH_MAX_K` and the panel rule above it.
    """
    key = check_activation(activation)
    k = np.asarray(k, dtype=float)
    if key in SCALE_INVARIANT:
        ap, am = SCALE_INVARIANT[key]
        a2, a4 = (ap**2 + am**2) / 2, (ap**4 + am**4) / 2
        return {"s2": a2 * k, "s4": 3 * a4 * k * k, "d2": a2 + 0 * k, "dk": a2 + 0 * k}
    out = {name: np.empty(k.shape) for name in ("s2", "s4", "d2", "dk")}
    small = k <= GH_MAX_K
    if np.any(small):
        x, w = gauss_hermite(nodes)
        z = np.sqrt(k[small])[..., None] * x
        s, ds, dds = _FUNCTIONS[key](z)
        s2 = s * s
        out["s2"][small] = s2 @ w
        out["s4"][small] = (s2 * s2) @ w
        out["d2"][small] = (ds * ds) @ w
        out["dk"][small] = (ds * ds + s * dds) @ w
    if not np.all(small):
        large = ~small  # NaN lands here and stays NaN
        for name, value in _panel_moments(key, k[large]).items():
            out[name][large] = value
    return out


@functools.cache
def _panel_rule(activation: str) -> tuple[np.ndarray, ...]:
    """Nodes z_j, weights w_j on [−Z, Z] and σ², σ⁴, σ'², σ'² + σσ'' at the nodes (K-free)."""
    t, wt = roots_legendre(_PANEL_NODES)
    left = np.arange(-PANEL_EDGE, PANEL_EDGE, _PANEL_WIDTH)
    half = _PANEL_WIDTH / 2
    z = (left[:, None] + half * (t[None, :] + 1.0)).ravel()
    w = np.tile(half * wt, left.size)
    s, ds, dds = _FUNCTIONS[activation](z)
    return z, w, np.stack([s * s, s**4, ds * ds, ds * ds + s * dds])


def _tail_moments(k: np.ndarray) -> list[np.ndarray]:
    """E[z^p; z > Z] for z ~ N(0, K), p = 0..4 (t = Z/√K, Q = Φ(−t), φ = φ(t)):
    Q, √K φ, K(Q + tφ), K^{3/2}(t² + 2)φ, K²(3Q + (t³ + 3t)φ) (integration by parts)."""
    sk = np.sqrt(k)
    t = PANEL_EDGE / sk
    q, ph = ndtr(-t), _phi(t)
    return [
        q,
        sk * ph,
        k * (q + t * ph),
        k * sk * (t * t + 2) * ph,
        k * k * (3 * q + (t**3 + 3 * t) * ph),
    ]


def _panel_moments(activation: str, k: np.ndarray) -> dict[str, np.ndarray]:
    """⟨σ²⟩, ⟨σ⁴⟩, ⟨σ'²⟩, ⟨σ'² + σσ''⟩ at K > GH_MAX_K: Σ_j w_j F(z_j) φ_K(z_j) on [−Z, Z] plus
    the tails, where σ = a± z + b± exactly (to 1e-15), so σ² and σ⁴ are polynomials in z with
    closed-form truncated moments (E[z^p; z < −Z] = (−1)^p E[z^p; z > Z]), σ'² = a±², σσ'' = 0."""
    z, w, table = _panel_rule(activation)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        dens = w * np.exp(-0.5 * z * z / k[:, None]) / np.sqrt(2 * np.pi * k)[:, None]
        inner = dens @ table.T  # (K, 4)
        tail = _tail_moments(k)
        ap, bp, am, bm = ASYMPTOTES[activation]
        res = {}
        for i, name in enumerate(("s2", "s4", "d2", "dk")):
            total = inner[:, i].copy()
            for a, b, sign in (
                (
                    ap,
                    bp,
                    1.0,
                ),
                (am, bm, -1.0),
            ):
                # (a z + b)^p = Σ_j C(p, j) a^j b^(p−j) z^j; odd moments flip sign on the left.
                power = {"s2": 2, "s4": 4}.get(name)
                if power is None:
                    total += a * a * tail[0]
                    continue
                for j in range(power + 1):
                    coef = math.comb(power, j) * a**j * b ** (power - j)
                    if coef:
                        total += coef * sign**j * tail[j]
            res[name] = total
    return res


def pair_nodes(k: float) -> int:
    """Tensor-rule size for a pair at variance K: the error of ⟨tanh tanh⟩ (ρ = 0.95) measured
    against nested SciPy ``quad`` is ≤ 3e-8 at K ≤ 2 with 81 nodes, ≤ 1.3e-8 at K ≤ 4 with
    161 (7e-6 at K = 10, 5e-4 at K = 30; 241 nodes would cost 3.7 ms instead of 2 ms a call
    for 4e-7 and 9e-5). Cost per call: 0.5 ms with 81 nodes, 2 ms with 161."""
    return NODES_2D if k <= 1.0 else 161


#: Above this K the pair rule's error exceeds ~1e-6 (see :func:`pair_nodes`): a note is shown.
PAIR_ACCURATE_K = 10.0


def pair_expectations(activation: str, k, rho, nodes: int | None = None) -> tuple:
    """(⟨σ(z_a)σ(z_b)⟩, ⟨σ'(z_a)σ'(z_b)⟩) for K_aa = K_bb = k and correlation ``rho``.

    ReLU: the arc-cosine closed forms √(K_aa K_bb)/(2π)(sin θ + (π − θ) cos θ) and
    (π − θ)/(2π); linear: ρK and 1. Others: 2-D Gauss–Hermite after the Cholesky change of
    variables (module docstring), ``nodes`` per axis (default :func:`pair_nodes` of the largest K).
    """
    key = check_activation(activation)
    k = np.asarray(k, dtype=float)
    rho = np.clip(np.asarray(rho, dtype=float), -1.0, 1.0)
    if key == "relu":
        theta = np.arccos(rho)
        return (
            k / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * rho),
            (np.pi - theta) / (2 * np.pi) + 0 * k,
        )
    if key == "linear":
        return rho * k, 1.0 + 0 * rho * k
    if nodes is None:
        nodes = pair_nodes(float(np.max(k)) if k.size else 0.0)
    xi, yj, ww = _pruned_tensor_rule(nodes)
    sk = np.sqrt(k)[..., None]
    r = rho[..., None]
    za = sk * xi
    zb = sk * (r * xi + np.sqrt(1.0 - r * r) * yj)
    fa, dfa, _ = _FUNCTIONS[key](za)
    fb, dfb, _ = _FUNCTIONS[key](zb)
    return (fa * fb) @ ww, (dfa * dfb) @ ww


@functools.cache
def _pruned_tensor_rule(nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nodes × nodes Gauss–Hermite tensor rule without the pairs of weight < 1e-17 (the
    weights sum to 1, so what is dropped is < nodes² · 1e-17 ≈ 3e-13 of a bounded integrand):
    1741 of 6561 pairs at 81 nodes, 3457 of 25921 at 161, i.e. 4–7× less work."""
    x, w = gauss_hermite(nodes)
    ww = w[:, None] * w[None, :]
    i, j = np.nonzero(ww > 1e-17)
    return x[i], x[j], ww[i, j]
