"""The error-vs-memory Pareto front over (rank, bits)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from workbench.study import StudyInputError


def pareto_front(cost: Any, error: Any) -> np.ndarray:
    """Mask of points no other point beats on both cost and error (lower is better).

    Sort by cost (ties by error); a point is on the front when its error is below every error
    seen at lower cost.
    """
    c = np.asarray(cost, dtype=float).ravel()
    e = np.asarray(error, dtype=float).ravel()
    order = np.lexsort((e, c))
    best = np.inf
    mask = np.zeros(c.size, dtype=bool)
    for i in order:
        if np.isfinite(e[i]) and e[i] < best:
            mask[i] = True
            best = e[i]
    return mask.reshape(np.shape(cost))


def pareto_points(grid: xr.Dataset, metric: str = "output_rel_error") -> xr.Dataset:
    """The Pareto front of ``grid`` (from :meth:`KVCacheStudy.grid`): error averaged over
    layers vs memory ratio (with metadata), as points sorted by memory with their (r, b)."""
    if metric not in grid:
        raise StudyInputError(
            f"unknown metric {metric!r}; choose one of {', '.join(grid.data_vars)}"
        )
    err = grid[metric].mean("layer") if "layer" in grid[metric].dims else grid[metric]
    mem = grid["memory_ratio"].broadcast_like(err)
    mask = pareto_front(mem.values, err.values)
    r_idx, b_idx = np.nonzero(mask)
    order = np.argsort(mem.values[mask], kind="stable")
    out = xr.Dataset(
        {
            "memory_ratio": (("point",), mem.values[mask][order]),
            "error": (("point",), err.values[mask][order]),
            "rank": (("point",), grid["rank"].values[r_idx][order]),
            "bits": (("point",), grid["bits"].values[b_idx][order]),
        },
        attrs={"metric": metric},
    )
    out["memory_ratio"].attrs.update(units="1", long_name="cache size ratio with metadata")
    out["error"].attrs.update(units=grid[metric].attrs.get("units", "1"), long_name=metric)
    out["rank"].attrs.update(units="1", long_name="rank r = r_K = r_V")
    out["bits"].attrs.update(units="bit", long_name="bits b")
    return out
