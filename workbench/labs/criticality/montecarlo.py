"""Finite width: Monte-Carlo over many random networks, batched as tensor operations.

Each network has weights W^(l) ~ N(0, C_W/n) (n × n, input dimension = width) and biases
b^(l) ~ N(0, C_b); all are fed the same input x = √k0 (1, …, 1) (|x|²/n = k0; by rotational
invariance of Gaussian weights only the norm matters). A chunk of networks is one
(networks, n, n) stack per layer and z^(l+1) = W σ(z^(l)) + b is one ``np.matmul``; chunks keep the
weight stack under :data:`CHUNK_BYTES` and :func:`workbench.study.checkpoint` runs between them.

The exact sampler (:func:`sample_second_moments`) uses that, given layer l, the next layer's
preactivations are i.i.d. N(0, G) with G = C_b + (C_W/n)Σ_j σ(z_j)² (lab brief): O(S n L) instead
of O(S n² L) random numbers, the same distribution.
"""

from __future__ import annotations

import math

import numpy as np

from workbench.backend import get_namespace, to_host
from workbench.labs.criticality.activations import check_activation, sigma, sigma_on
from workbench.study import StudyInputError, checkpoint

#: Largest weight stack per chunk (bytes); one layer of a chunk of networks.
CHUNK_BYTES = 32 * 2**20
#: Largest total memory a Monte-Carlo may hold (weights of one chunk + the preactivations).
MEMORY_CAP_BYTES = 1 * 2**30
_ITEM = 8  # float64


def memory_bytes(width: int, networks: int) -> int:
    """Peak memory of :func:`sample_preactivations`: one chunk's weights + 4 (networks, n) arrays."""
    chunk = chunk_size(width, networks)
    return _ITEM * (chunk * width * width + 4 * networks * width)


def chunk_size(width: int, networks: int) -> int:
    return int(max(1, min(networks, CHUNK_BYTES // (_ITEM * width * width))))


def check_budget(width: int, depth: int, networks: int) -> None:
    """StudyInputError naming the knobs if the run is malformed or exceeds the memory cap."""
    for label, value in (("width n", width), ("networks", networks), ("depth L", depth)):
        if int(value) != value or value < 1:
            raise StudyInputError(f"{label} must be a whole number of at least 1; got {value}")
    need = memory_bytes(int(width), int(networks))
    if need > MEMORY_CAP_BYTES:
        raise StudyInputError(
            f"a Monte-Carlo of {networks} networks × width n {width} needs "
            f"{need / 2**30:.2f} GiB, over the {MEMORY_CAP_BYTES / 2**30:.0f} GiB cap: "
            "lower networks or width n"
        )


def _check(activation, cw, cb, k0):
    check_activation(activation)
    if not cw > 0:
        raise StudyInputError(f"weight variance C_W must be greater than 0; got {cw}")
    if not cb >= 0:
        raise StudyInputError(f"bias variance C_b must be at least 0; got {cb}")
    if not k0 > 0:
        raise StudyInputError(f"input second moment k0 must be greater than 0; got {k0}")


def run_networks(
    activation: str,
    cw: float,
    cb: float,
    width: int,
    depth: int,
    networks: int,
    seed: int = 0,
    k0: float = 1.0,
    xp=None,
    device=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real networks, batched: (z^(depth) of shape (networks, n), m2, m4 of shape (networks, depth)).

    ``m2[s, l-1]`` and ``m4[s, l-1]`` are network s's unit-averaged z², z⁴ at layer l, so the
    kurtosis at every layer (and its error over networks) comes from one run.

    ``xp`` (default: the process default, NumPy or CuPy) and ``device`` (an array-API device;
    default ``xp``'s own) say where the layers are computed: any array-API namespace, with σ
    applied there (:func:`~.activations.sigma_on`; GELU only on NumPy and CuPy). Weights are
    drawn on the host by NumPy's seeded generator, so every namespace sees the same networks,
    and cross to the device once per layer (``xp.asarray``); per-layer moments and the last
    layer come back by :func:`workbench.backend.to_host`. Results are NumPy arrays.
    """
    _check(activation, cw, cb, k0)
    check_budget(width, depth, networks)
    xp = xp or get_namespace()
    on = {} if device is None else {"device": device}
    width, depth, networks = int(width), int(depth), int(networks)
    rng = np.random.default_rng(seed)
    chunk = chunk_size(width, networks)
    scale, bias_scale = math.sqrt(cw / width), math.sqrt(cb)  # Python floats: no NumPy pull
    x = np.full(width, np.sqrt(k0))
    z_out = np.empty((networks, width))
    m2 = np.empty((networks, depth))
    m4 = np.empty((networks, depth))
    for start in range(0, networks, chunk):
        stop = min(start + chunk, networks)
        c = stop - start
        h = xp.asarray(np.broadcast_to(x, (c, width))[..., None], **on)
        for layer in range(depth):
            w = xp.asarray(rng.standard_normal((c, width, width)), **on) * scale
            b = xp.asarray(rng.standard_normal((c, width, 1)), **on) * bias_scale
            z = xp.matmul(w, h) + b
            z2 = z[..., 0] ** 2
            m2[start:stop, layer] = to_host(xp.mean(z2, axis=1))
            m4[start:stop, layer] = to_host(xp.mean(z2 * z2, axis=1))
            # σ where z lives (it used to make a host round trip of the whole stack per layer).
            h = sigma(activation, z) if xp is np else sigma_on(activation, z, xp)
        z_out[start:stop] = to_host(z[..., 0])
        checkpoint()
    return z_out, m2, m4


def sample_preactivations(
    activation: str,
    cw: float,
    cb: float,
    width: int,
    depth: int,
    networks: int,
    seed: int = 0,
    k0: float = 1.0,
) -> np.ndarray:
    """Layer-``depth`` preactivations of ``networks`` independent random networks, (networks, width).

    Real weight matrices (module docstring), batched over networks in chunks; deterministic
    given ``seed``.
    """
    return run_networks(activation, cw, cb, width, depth, networks, seed, k0)[0]


def sample_second_moments(
    activation: str,
    cw: float,
    cb: float,
    width: int,
    depth: int,
    networks: int,
    seed: int = 0,
    k0: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact sampler: (G of shape (networks, depth), z^(depth) of shape (networks, width)).

    G[:, l-1] is layer l's conditional variance: z^(l) | G ~ N(0, G) i.i.d. over units, with
    G^(1) = C_b + C_W k0 and G^(l+1) = C_b + (C_W/n)Σ_j σ(z^(l)_j)². κ^(l) = 3 Var G/(E G)².
    """
    _check(activation, cw, cb, k0)
    check_budget(width, depth, networks)
    rng = np.random.default_rng(seed)
    g = np.empty((int(networks), int(depth)))
    g_now = np.full(int(networks), cb + cw * k0)
    for layer in range(int(depth)):
        g[:, layer] = g_now
        z = rng.standard_normal((int(networks), int(width))) * np.sqrt(g_now)[:, None]
        g_now = cb + cw * np.mean(sigma(activation, z) ** 2, axis=1)
        checkpoint()
    return g, z


def excess_kurtosis(samples) -> float:
    """Pooled excess kurtosis ⟨z⁴⟩/⟨z²⟩² − 3 over all entries (preactivations have mean 0 by the
    symmetry W → −W, so raw moments are used; a fitted mean would bias small samples)."""
    z = np.asarray(samples, dtype=float)
    if z.size < 2:
        raise StudyInputError("excess kurtosis needs at least 2 samples")
    z2 = z * z
    return float(np.mean(z2 * z2) / np.mean(z2) ** 2 - 3.0)


def kurtosis_with_error(m2: np.ndarray, m4: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled κ = M4/M2² − 3 per layer and its standard error over networks (delta method).

    Units of one network share G and are correlated, so the independent samples are networks:
    with per-network unit means m2_s, m4_s, SE² = Var_s(m4_s/M2² − 2 M4 m2_s/M2³)/S.
    """
    s = m2.shape[0]
    big2, big4 = m2.mean(axis=0), m4.mean(axis=0)
    kappa = big4 / big2**2 - 3.0
    influence = m4 / big2**2 - 2.0 * big4 * m2 / big2**3
    return kappa, influence.std(axis=0, ddof=1) / np.sqrt(s)


def kurtosis_from_second_moments(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """κ = 3 Var G/(E G)² per layer (exact sampler) and its standard error (delta method)."""
    s = g.shape[0]
    m1, m2 = g.mean(axis=0), (g * g).mean(axis=0)
    kappa = 3.0 * (m2 / m1**2 - 1.0)
    influence = 3.0 * (g * g / m1**2 - 2.0 * m2 * g / m1**3)
    return kappa, influence.std(axis=0, ddof=1) / np.sqrt(s)
