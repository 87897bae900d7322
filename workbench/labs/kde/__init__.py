"""KDE lab: kernel density estimation in large dimensions (Biroli & Mézard, arXiv 2408.05807).

With n = e^{αd} Gaussian data points in d dimensions, lowering the bandwidth h takes the Gaussian
KDE through three regimes (lab brief ``shared/science/kde.md``): central-limit (h > h_CLT),
heavy-tailed α-stable (h_G < h < h_CLT), and condensed / extreme-value (h < h_G), where a few
nearest points carry the estimate. The KL-optimal bandwidth h_KL lies in the condensed regime.

The package, by concern:

* :mod:`~workbench.labs.kde.validation`: input checks (:class:`StudyInputError` messages);
* :mod:`~workbench.labs.kde.estimator`: :func:`log_density`, :func:`participation_ratio`,
  :func:`kde_summary`: distances by one GEMM per chunk, a streamed log-sum-exp for all h, or,
  for many h (the default from 4 on), the binned Laplace transform;
* :mod:`~workbench.labs.kde.laplace`: the binned Laplace transform of the distance gaps: each
  extra h costs O(bins), with a certified error bound and an exact fallback (≤ 1e-8 nats);
* :mod:`~workbench.labs.kde.tables`: :class:`DistanceTable`, what makes a new h cheap;
* :mod:`~workbench.labs.kde.theory`: :func:`regime_thresholds`, :func:`stable_index`,
  :func:`kl_per_dim`, :func:`participation_theory`, :func:`regime_of` (d → ∞ and finite d);
* :mod:`~workbench.labs.kde.data`: :func:`make_data` (one cached copy) and the fixed size cap
  (:func:`max_points`, :func:`page_bytes`);
* :mod:`~workbench.labs.kde.heavytail`: :func:`heavy_tail_ratios`, :func:`heavy_tail_statistics`
  (median(Z), mean log Z by the brief's exact O(n) shortcut);
* :mod:`~workbench.labs.kde.userdata`: scikit-learn's digits and your own (N, d) points
  (standardisation, held-out split, caps; ``KDEStudy(source="digits")``,
  ``KDEStudy.from_array``, ``KDEStudy.from_file``);
* :mod:`~workbench.labs.kde.study`: :class:`KDEStudy`, the lab's Study.

Figures live in :mod:`workbench.labs.kde.figures` (not imported here: it needs HoloViews).

Examples
--------
>>> import numpy as np
>>> from workbench.labs import kde
>>> rng = np.random.default_rng(0)
>>> data, query = rng.standard_normal((500, 3)), rng.standard_normal((4, 3))
>>> kde.log_density(query, data, [0.5, 1.0]).shape
(2, 4)
>>> round(kde.regime_thresholds(0.5)["h_kl"], 4)
0.6224
"""

from workbench.labs.kde import data as _data
from workbench.labs.kde import heavytail as _heavytail
from workbench.labs.kde import study as _study
from workbench.labs.kde import userdata as _userdata
from workbench.labs.kde.data import (
    HEAVY_TAIL_DATASETS,
    HEAVY_TAIL_MAX_DRAWS,
    MEMORY_BUDGET_BYTES,
    SLICE_POINTS,
    KDEData,
    check_size,
    exact_log_density,
    make_data,
    max_points,
    n_points,
    page_bytes,
)
from workbench.labs.kde.estimator import (
    DEFAULT_CHUNK_BYTES,
    LOG_2PI,
    kde_summary,
    log_density,
    participation_ratio,
    shutdown_pool,
    squared_distances,
)
from workbench.labs.kde.heavytail import (
    HEAVY_TAIL_RATIOS,
    heavy_tail_ratios,
    heavy_tail_statistics,
)
from workbench.labs.kde.study import PROVENANCE, KDEStudy
from workbench.labs.kde.tables import WEIGHT_FRACTION, DistanceTable
from workbench.labs.kde.theory import (
    REGIMES,
    effective_min_distance,
    effective_thresholds,
    expected_log_density,
    finite_d_optimum,
    kl_per_dim,
    participation_theory,
    regime_name,
    regime_of,
    regime_thresholds,
    stable_index,
)


def clear_caches() -> None:
    """Drop every cached sample, distance table, slice, page panel and heavy-tail curve."""
    _data.clear_caches()
    _study.clear_caches()
    _heavytail.clear_caches()
    _userdata.digits.cache_clear()


__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "HEAVY_TAIL_DATASETS",
    "HEAVY_TAIL_MAX_DRAWS",
    "HEAVY_TAIL_RATIOS",
    "LOG_2PI",
    "MEMORY_BUDGET_BYTES",
    "PROVENANCE",
    "REGIMES",
    "SLICE_POINTS",
    "WEIGHT_FRACTION",
    "DistanceTable",
    "KDEData",
    "KDEStudy",
    "check_size",
    "clear_caches",
    "effective_min_distance",
    "effective_thresholds",
    "exact_log_density",
    "expected_log_density",
    "finite_d_optimum",
    "heavy_tail_ratios",
    "heavy_tail_statistics",
    "kde_summary",
    "kl_per_dim",
    "log_density",
    "make_data",
    "max_points",
    "n_points",
    "page_bytes",
    "participation_ratio",
    "participation_theory",
    "regime_name",
    "regime_of",
    "regime_thresholds",
    "shutdown_pool",
    "squared_distances",
    "stable_index",
]
