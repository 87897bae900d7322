"""Low-rank factorisations of the K/V projections and the spectral statistics of the cache.

CSKV (Wang et al., arXiv 2409.10593) caches latents Z = X A (rank r per token) instead of
K = X W_K, and rebuilds K̂ = Z B at attention time, with W_K ≈ A B from a truncated SVD:

* weight SVD: W = U Σ Vᵀ, A = U_r Σ_r^{1/2}, B = Σ_r^{1/2} V_rᵀ (Eckart–Young for W, not for K);
* activation-aware SVD (ASVD, Yuan et al. 2023, as used by CSKV): scale the *rows* of W (its
  input features; glassllm multiplies x @ W) by s_j = mean_t |x_tj|^a, factor diag(s) W, unscale
  A ← diag(s)^{-1} A. Exponent a = 0.5 in CSKV; a = 0 is the plain weight SVD;
* PCA of the cached matrix itself (uncentred SVD of K): optimal for ‖K − K̂‖_F by Eckart–Young,
  error sqrt(1 − Σ_{i≤r} σ_i² / Σ σ_i²) exactly — the bound the other methods are measured to;
* ThinK-style key-channel pruning (Xu et al., arXiv 2407.21018): keep the r channels with the
  largest ‖Q_c‖·‖K_c‖ (query-aware magnitude), drop the rest. For values (ThinK prunes keys
  only) the same rule uses ‖V_c‖ alone.

One factorisation serves every rank: :class:`Factorisation` holds the full-rank latent and basis
ordered by importance, and rank r is the first r columns/rows (no SVD per rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.study import StudyInputError

METHODS = ("svd", "asvd", "pca", "think")
ENERGY_FRACTION = 0.9


def _check_rank(rank: Any, width: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer):
        raise StudyInputError(f"rank must be a whole number, got {rank!r}")
    if not 1 <= int(rank) <= width:
        raise StudyInputError(f"rank must be between 1 and {width} (the width), got {rank}")
    return int(rank)


def _check_matrix(name: str, value: Any) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise StudyInputError(f"{name} must be a numeric matrix: {exc}") from exc
    if a.ndim != 2 or min(a.shape) < 1:
        raise StudyInputError(f"{name} must be a 2-D matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise StudyInputError(f"{name} contains NaN or infinite values")
    return a


def asvd_scales(activations: Any, exponent: float = 0.5) -> np.ndarray:
    """s_j = (mean_t |x_tj|)^a, floored so that a dead feature cannot make diag(s) singular."""
    x = _check_matrix("activations", activations)
    if not 0.0 <= float(exponent) <= 4.0:
        raise StudyInputError(f"ASVD exponent must be between 0 and 4, got {exponent}")
    s = np.abs(x).mean(axis=0) ** float(exponent)
    return np.maximum(s, 1e-12 * max(float(s.max()), 1e-300))


@dataclass(frozen=True)
class WeightFactors:
    """Full-rank A (d_in × w) and B (w × d_out) with W = A B, columns in decreasing importance."""

    a: np.ndarray
    b: np.ndarray
    singular_values: np.ndarray

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        r = _check_rank(rank, self.b.shape[0])
        return self.a[:, :r], self.b[:r]


def weight_factors(
    weight: Any, method: str = "svd", activations: Any = None, exponent: float = 0.5
) -> WeightFactors:
    """One SVD of W (or diag(s) W) giving the factors of every rank (see module docstring)."""
    w = _check_matrix("weight", weight)
    if method == "svd":
        s = np.ones(w.shape[0])
    elif method == "asvd":
        if activations is None:
            raise StudyInputError("activation-aware SVD needs the activations X (token × feature)")
        s = asvd_scales(activations, exponent)
        if s.shape[0] != w.shape[0]:
            raise StudyInputError(
                f"activations have {s.shape[0]} features but the weight has {w.shape[0]} rows"
            )
    else:
        raise StudyInputError(
            f"weight factorisation method must be 'svd' or 'asvd', got {method!r}"
        )
    u, sigma, vt = np.linalg.svd(s[:, None] * w, full_matrices=False)
    root = np.sqrt(sigma)
    return WeightFactors((u * root) / s[:, None], root[:, None] * vt, sigma)


def low_rank_factors(
    weight: Any,
    rank: int,
    method: str = "svd",
    activations: Any = None,
    exponent: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) with W ≈ A B of rank ``rank``: ``method`` "svd" or "asvd" (module docstring).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.random.default_rng(0).standard_normal((8, 4))
    >>> a, b = low_rank_factors(w, 4)
    >>> bool(np.allclose(a @ b, w))
    True
    """
    return weight_factors(weight, method, activations, exponent).factors(rank)


@dataclass(frozen=True)
class Factorisation:
    """Latents Z (token × w) and basis B (w × width) with Z B ≈ the cached matrix, by importance.

    Rank r caches Z[:, :r] and rebuilds Z[:, :r] B[:r]; at full rank Z B is the matrix itself
    (up to rounding). ``importance`` is what orders the columns (singular values or scores).
    """

    latent: np.ndarray
    basis: np.ndarray
    importance: np.ndarray
    method: str

    @property
    def width(self) -> int:
        return self.basis.shape[0]

    def truncate(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        r = _check_rank(rank, self.width)
        return self.latent[:, :r], self.basis[:r]


def factorise(
    method: str,
    cache: np.ndarray,
    inputs: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    exponent: float = 0.5,
) -> Factorisation:
    """Factor one cached matrix (token × width, heads concatenated: joint over heads as CSKV).

    ``inputs``/``weight`` (X, W with cache = X W) are needed by "svd"/"asvd"; ``queries``
    (token × query width, grouped heads summed onto their KV channel) by "think" for keys.
    """
    if method not in METHODS:
        raise StudyInputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    cache = _check_matrix("cache", cache)
    if method in ("svd", "asvd"):
        if inputs is None or weight is None:
            raise StudyInputError(
                f"method {method!r} needs the projection weights, which user arrays do not "
                "carry: choose PCA or ThinK"
            )
        wf = weight_factors(weight, method, inputs, exponent)
        return Factorisation(inputs @ wf.a, wf.b, wf.singular_values, method)
    if method == "pca":
        # full_matrices: with fewer tokens than channels the basis is still complete (width rows)
        _, sigma, vt = np.linalg.svd(cache, full_matrices=True)
        sigma = np.concatenate([sigma, np.zeros(vt.shape[0] - sigma.size)])
        return Factorisation(cache @ vt.T, vt, sigma, method)
    # ThinK: channel selection by query-aware magnitude.
    score = np.linalg.norm(cache, axis=0)
    if queries is not None:
        score = score * np.linalg.norm(queries, axis=0)
    order = np.argsort(-score, kind="stable")
    return Factorisation(cache[:, order], np.eye(cache.shape[1])[order], score[order], method)


# ================================================================================================
# Spectral statistics
# ================================================================================================
def energy_fraction(singular_values: Any) -> np.ndarray:
    """Cumulative energy Σ_{i≤r} σ_i² / Σ σ_i² for r = 1..n."""
    s2 = np.asarray(singular_values, dtype=float) ** 2
    total = s2.sum()
    return np.cumsum(s2) / total if total > 0 else np.ones_like(s2)


def eckart_young_error(singular_values: Any) -> np.ndarray:
    """‖M − M_r‖_F/‖M‖_F = sqrt(Σ_{i>r} σ_i² / Σ σ_i²) = sqrt(1 − energy_r), r = 1..n.

    Summed from the tail (not 1 − energy), so the error at full rank is 0, not √ε ≈ 1e-8.
    """
    s2 = np.asarray(singular_values, dtype=float) ** 2
    total = s2.sum()
    if total == 0:
        return np.zeros_like(s2)
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1][1:], [0.0]])
    return np.sqrt(tail / total)


def rank_at(singular_values: Any, fraction: float = ENERGY_FRACTION) -> int:
    """Smallest r whose leading singular values carry at least ``fraction`` of the energy."""
    e = energy_fraction(singular_values)
    # a relative tolerance so that an energy of exactly 0.9 (up to rounding) counts as reached
    return int(np.searchsorted(e, fraction * (1 - 1e-12)) + 1)


def effective_rank(singular_values: Any) -> float:
    """Roy & Vetterli (2007): exp of the Shannon entropy of p_i = σ_i / Σ σ_j."""
    s = np.asarray(singular_values, dtype=float)
    s = s[s > 0]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(math.exp(-(p * np.log(p)).sum()))


def stable_rank(singular_values: Any) -> float:
    """‖M‖_F² / ‖M‖_2² = Σ σ_i² / σ_1² (Rudelson & Vershynin)."""
    s = np.asarray(singular_values, dtype=float)
    return float((s**2).sum() / s.max() ** 2) if s.size and s.max() > 0 else 0.0
