"""Small fitting helpers shared by labs, plots and tests."""

from __future__ import annotations

import numpy as np


def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares fit of log y = slope * log x + intercept over finite positive points.

    Returns ``(slope, intercept)``; the error curves of the labs print this slope on the plot.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)
    return float(slope), float(intercept)
