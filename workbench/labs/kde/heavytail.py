"""Heavy tails made visible: Z = ρ̂(x)/E[ρ̂(x) | x] over many independent datasets at one x.

Lab brief, "Finite-d theory": for |x| = r the n squared distances of a Gaussian dataset are
i.i.d. (r − g)² + χ²_{d−1} with g ~ N(0, 1) (exact), so one dataset costs O(n) random numbers,
not O(n d), and E[ρ̂_h | x] = (2π(1 + h²))^{−d/2} exp(−r²/(2(1 + h²))) exactly. E[Z] = 1 at every
h; below h_G the median of Z collapses and mean log Z falls below 0 (the mean is carried by rare
datasets). The brief's reference values are median(Z) and mean log Z; the sample skewness of Z
is not reproducible with a few hundred datasets (it is bounded by (N − 2)/√(N − 1)), so it is
not computed here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from workbench.labs.kde.data import (
    HEAVY_TAIL_BLOCK_BYTES,
    HEAVY_TAIL_DATASETS,
    HEAVY_TAIL_MAX_DRAWS,
    n_points,
)
from workbench.labs.kde.estimator import scales_of
from workbench.labs.kde.theory import effective_thresholds, expected_log_density
from workbench.labs.kde.validation import check_bandwidths, check_dim
from workbench.study import StudyInputError, checkpoint

#: h/h_G,eff of the heavy-tail panel; includes the brief's 0.8, 1.0, 1.2, 1.41, 1.7 and 2.0.
HEAVY_TAIL_RATIOS = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.41, 1.55, 1.7, 1.85, 2.0, 2.2)
PROVENANCE = (
    "Biroli & Mezard, arXiv 2408.05807; exact O(n) shortcut and reference values from the lab "
    "brief shared/science/kde.md (Finite-d theory)"
)


def heavy_tail_ratios(
    dim: int,
    alpha: float,
    bandwidths: Any,
    n_datasets: int = HEAVY_TAIL_DATASETS,
    seed: int = 0,
    radius: float | None = None,
    block_bytes: int = HEAVY_TAIL_BLOCK_BYTES,
) -> np.ndarray:
    """Z = ρ̂_h(x)/E[ρ̂_h(x) | x] over ``n_datasets`` independent datasets at one fixed x.

    log Z = −log n − d log h + LSE_i(−D_i/(2h²)) − (d/2) log 2π − log E[ρ̂_h | x], with the
    squared distances D_i = (r − g_i)² + χ²_{d−1} drawn exactly (brief).

    Parameters
    ----------
    radius : float, optional
        |x|; default √d, the typical radius.
    block_bytes : int
        Datasets are drawn in blocks of b with 8 · n · b ≤ block_bytes (at least one); two such
        arrays are alive at a time (distances and one work array).

    Returns
    -------
    (k, n_datasets) NumPy array of Z (host NumPy: a theory panel, O(n) per dataset).
    """
    dim = check_dim(dim)
    h, _ = check_bandwidths(bandwidths)
    n, n_datasets = n_points(dim, alpha), int(n_datasets)
    if n * n_datasets > HEAVY_TAIL_MAX_DRAWS:
        raise StudyInputError(
            f"heavy-tail curve: n × datasets = {n:,} × {n_datasets} exceeds "
            f"{HEAVY_TAIL_MAX_DRAWS:,} draws; use fewer datasets or a smaller α·d"
        )
    r = math.sqrt(dim) if radius is None else float(radius)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2408_05807]))
    scales = scales_of(h)
    log_sums = np.empty((len(h), n_datasets))
    step = max(1, min(n_datasets, block_bytes // (8 * n)))
    for start in range(0, n_datasets, step):
        checkpoint()
        b = min(step, n_datasets - start)
        dist = rng.standard_normal((b, n))
        np.subtract(r, dist, out=dist)
        np.square(dist, out=dist)
        work = rng.standard_gamma(0.5 * (dim - 1), (b, n)) if dim > 1 else np.zeros((b, n))
        work *= 2.0  # χ²_{d−1} = 2 Γ((d − 1)/2)
        dist += work
        dmin = dist.min(axis=1)
        dist -= dmin[:, None]
        for k, scale in enumerate(scales):
            np.multiply(dist, -scale, out=work)
            np.exp(work, out=work)
            log_sums[k, start : start + b] = np.log(work.sum(axis=1)) - scale * dmin
    log_norm = -math.log(n) - dim * np.log(h) - 0.5 * dim * math.log(2 * math.pi)
    log_mean = expected_log_density(h, r, dim)
    return np.exp(log_norm[:, None] + log_sums - log_mean[:, None])


def heavy_tail_statistics(
    dim: int,
    alpha: float,
    seed: int = 0,
    ratios: Sequence[float] = HEAVY_TAIL_RATIOS,
    n_datasets: int = HEAVY_TAIL_DATASETS,
) -> xr.Dataset:
    """median(Z), mean log Z and mean Z over independent datasets at h = ratio × h_G,eff.

    Z from :func:`heavy_tail_ratios` at |x| = √d. h_G,eff is the finite-d threshold (the d → ∞
    one where undefined). Cached per argument tuple (LRU of 4) and read-only: the Dataset is
    shared by every dashboard session with the same (d, α, seed).
    """
    ratios = tuple(float(r) for r in np.atleast_1d(np.asarray(ratios, dtype=float)))
    if int(n_datasets) < 3:
        raise StudyInputError("heavy-tail curve: n_datasets must be at least 3")
    return _statistics(check_dim(dim), float(alpha), int(seed), ratios, int(n_datasets))


@functools.lru_cache(maxsize=4)
def _statistics(dim, alpha, seed, ratios, n_datasets) -> xr.Dataset:
    h_g_eff = effective_thresholds(alpha, dim)["h_g_eff"]
    h = np.asarray(ratios) * h_g_eff
    z = heavy_tail_ratios(dim, alpha, h, n_datasets, seed)
    attrs = {
        "median": ("1", "median of Z = rho_hat(x)/E[rho_hat(x)|x] over datasets"),
        "mean_log": ("1", "mean of log Z over datasets"),
        "mean": ("1", "sample mean of Z over datasets (its exact value is 1)"),
    }
    ds = xr.Dataset(
        {
            "z_median": (("bandwidth",), np.median(z, axis=1)),
            "z_mean_log": (("bandwidth",), np.log(z).mean(axis=1)),
            "z_mean": (("bandwidth",), z.mean(axis=1)),
            "bandwidth_ratio": (("bandwidth",), np.asarray(ratios)),
        },
        coords={"bandwidth": h},
        attrs={
            "description": "Z = rho_hat(x)/E[rho_hat(x)|x] over independent datasets, |x| = sqrt(d)",
            "n": n_points(dim, alpha),
            "dim": int(dim),
            "alpha": float(alpha),
            "seed": int(seed),
            "n_datasets": int(n_datasets),
            "h_g_eff": float(h_g_eff),
            "method": "exact shortcut: squared distances (r - g)^2 + chi2_{d-1}",
            "provenance": PROVENANCE,
        },
    )
    for key, (units, long_name) in attrs.items():
        ds[f"z_{key}"].attrs.update(units=units, long_name=long_name)
    ds["bandwidth_ratio"].attrs.update(units="1", long_name="h / h_G,eff")
    ds["bandwidth"].attrs.update(units="data units", long_name="bandwidth h")
    return read_only(ds)


def read_only(ds: xr.Dataset) -> xr.Dataset:
    """Freeze a Dataset shared across sessions through a cache: no session can edit another's."""
    for var in ds.variables.values():
        var.values.flags.writeable = False
    return ds


def clear_caches() -> None:
    _statistics.cache_clear()
