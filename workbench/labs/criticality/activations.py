"""Activation functions and Gaussian expectations (Gauss–Hermite, closed forms for ReLU).

⟨f(z)⟩_K = E f(z), z ~ N(0, K), by the probabilists' Gauss–Hermite rule
⟨f⟩_K ≈ Σ_i w_i f(√K x_i) / √(2π) (nodes/weights of ``numpy.polynomial.hermite_e.hermegauss``).
For pairs, z_a = √K11 x, z_b = √K22 (ρ x + √(1 − ρ²) y) (Cholesky) with a tensor rule in (x, y).

Accuracy (lab brief ``shared/science/criticality.md``): tanh(√K x) has poles at ±iπ/(2√K), so
the rule loses accuracy as K grows (101 nodes: ~1e-11 for K ≤ 1, ~1e-4 at K = 4); 300 nodes keep
≤ 1e-8 up to K = 4, which is what the phase diagram uses. A tensor rule through ReLU's kink
converges only like 1/N, so ReLU pairs use the arc-cosine closed form (Cho & Saul 2009):
⟨σ(z_a)σ(z_b)⟩ = √(K_aa K_bb)/(2π) (sin θ + (π − θ) cos θ), cos θ = ρ.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import expit, ndtr

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


@functools.cache
def gauss_hermite(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite nodes and weights normalised to sum to 1 (E over N(0, 1))."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return x, w / w.sum()


def gauss_moments(activation: str, k, nodes: int = NODES_1D) -> dict[str, np.ndarray]:
    """Diagonal Gaussian expectations at variance ``k`` (any shape): a dict with

    ``s2`` = ⟨σ²⟩_K, ``s4`` = ⟨σ⁴⟩_K, ``d2`` = ⟨σ'²⟩_K and ``dk`` = d⟨σ²⟩_K/dK = ⟨σ'² + σσ''⟩_K
    (Stein's lemma: dE f(√K x)/dK = ½ E f''). ReLU and linear use their closed forms.
    """
    key = check_activation(activation)
    k = np.asarray(k, dtype=float)
    if key in SCALE_INVARIANT:
        ap, am = SCALE_INVARIANT[key]
        a2, a4 = (ap**2 + am**2) / 2, (ap**4 + am**4) / 2
        return {"s2": a2 * k, "s4": 3 * a4 * k * k, "d2": a2 + 0 * k, "dk": a2 + 0 * k}
    x, w = gauss_hermite(nodes)
    z = np.sqrt(k)[..., None] * x
    s, ds, dds = _FUNCTIONS[key](z)
    s2 = s * s
    return {
        "s2": s2 @ w,
        "s4": (s2 * s2) @ w,
        "d2": (ds * ds) @ w,
        "dk": (ds * ds + s * dds) @ w,
    }


def pair_expectations(activation: str, k, rho, nodes: int = NODES_2D) -> tuple:
    """(⟨σ(z_a)σ(z_b)⟩, ⟨σ'(z_a)σ'(z_b)⟩) for K_aa = K_bb = k and correlation ``rho``.

    ReLU: the arc-cosine closed forms √(K_aa K_bb)/(2π)(sin θ + (π − θ) cos θ) and
    (π − θ)/(2π); linear: ρK and 1. Others: 2-D Gauss–Hermite after the Cholesky change of
    variables (module docstring).
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
    x, w = gauss_hermite(nodes)
    sk = np.sqrt(k)[..., None, None]
    r = rho[..., None, None]
    za = sk * x[:, None]
    zb = sk * (r * x[:, None] + np.sqrt(1.0 - r * r) * x[None, :])
    fa, dfa, _ = _FUNCTIONS[key](za)
    fb, dfb, _ = _FUNCTIONS[key](zb)
    ww = w[:, None] * w[None, :]
    return (fa * fb * ww).sum(axis=(-2, -1)), (dfa * dfb * ww).sum(axis=(-2, -1))
