"""The KDE lab's Study: knobs, size cap, and every grid the page and the notebook draw.

:class:`KDEStudy` holds one dataset (n = e^{αd} points and m query points, cached) and a
distance table of its query points (:class:`~workbench.labs.kde.tables.DistanceTable`: the sorted
m × n distances when small, only their binned Laplace transform when large), so every bandwidth,
and every grid of bandwidths, costs a few passes over that table, never new distances: the KL/d
curve, the slider's current point and the CLI sweep all go through :meth:`KDEStudy.evaluate`
(one grid mechanism). Results shared across dashboard
sessions through caches are read-only.

The ``source`` knob swaps the Gaussian sample for scikit-learn's digits or the user's own array
(:mod:`workbench.labs.kde.userdata`: standardisation, held-out split, what is measured then).
An uploaded array belongs to one Study instance (one dashboard session), never to a cache
shared between sessions.
"""

from __future__ import annotations

import functools
import math
from types import MappingProxyType
from typing import Any

import numpy as np
import param
import xarray as xr

from workbench import backend
from workbench.labs.kde import data as kde_data
from workbench.labs.kde import estimator
from workbench.labs.kde import userdata as own
from workbench.labs.kde.heavytail import heavy_tail_statistics, read_only
from workbench.labs.kde.tables import DistanceTable
from workbench.labs.kde.theory import (
    effective_thresholds,
    kl_per_dim,
    participation_theory,
    regime_of,
    regime_thresholds,
    stable_index,
)
from workbench.labs.kde.validation import check_alpha, check_bandwidths
from workbench.study import Study, StudyInputError

PROVENANCE = (
    "Biroli & Mezard, Kernel Density Estimators in Large Dimensions, arXiv 2408.05807; "
    "formulas and finite-d theory from the lab brief shared/science/kde.md"
)
#: The (α, h) window of the regime map.
REGIME_ALPHAS = np.linspace(0.05, 2.0, 60)
REGIME_BANDWIDTHS = np.geomspace(0.05, 5.0, 120)
#: Bandwidths of the page's sweep panels (KL/d and Y₂ curves).
GRID_POINTS = 48

#: units and long_name of every data variable :meth:`KDEStudy.evaluate` returns.
_EVALUATE_ATTRS = {
    "kl_per_dim": ("nats per dimension", "KL(rho || rho_hat)/d, mean over query points"),
    "kl_per_dim_stderr": ("nats per dimension", "standard error of kl_per_dim"),
    "kl_per_dim_cv": ("nats per dimension", "KL/d with the control variate |x|^2 - d"),
    "kl_per_dim_cv_stderr": ("nats per dimension", "standard error of kl_per_dim_cv"),
    "kl_per_dim_theory": ("nats per dimension", "KL/d theory, d -> infinity"),
    "kl_per_dim_finite": ("nats per dimension", "KL/d theory at finite d (u_eff)"),
    "participation_ratio": ("1", "participation ratio Y2, mean over query points"),
    "participation_theory": ("1", "REM Y2 = max(0, 1 - h^2/h_G,eff^2)"),
    "participation_theory_inf": ("1", "REM Y2 = max(0, 1 - h^2/h_G^2), d -> infinity"),
    "n_points_90": ("points", "points carrying 90 % of the weight (median over queries)"),
    "effective_points": ("points", "effective number of points 1/Y2 (median over queries)"),
    "log_density_mean": ("nats", "mean of log rho_hat over query points (held-out score)"),
    "log_density_mean_stderr": ("nats", "standard error of log_density_mean"),
    "log_density_std": ("nats", "standard deviation of log rho_hat over query points"),
    "log_density_exact_mean": ("nats", "mean of the exact log rho over query points"),
    "stable_index": ("1", "stable index mu = h^2 (1 - s*)/s*, d -> infinity"),
    "stable_index_finite": ("1", "stable index mu = h^2/h_G,eff^2 at finite d"),
    "bandwidth_ratio": ("1", "h / h_G,eff"),
}


class KDEStudy(own.OwnData, Study):
    """Gaussian KDE on n = e^{αd} points from N(0, I_d): KL/d, Y₂ and regimes versus bandwidth.

    ``evaluate(bandwidth=[...])`` reuses one cached distance table per (dim, alpha, seed,
    n_queries): the first call computes the (n_queries × n) squared distances (stored and
    sorted up to ``tables.STORE_BYTES``, else streamed into per-row bins and dropped), every
    later bandwidth costs a few passes over the table (tens of ms at the default sizes).

    **Other data** (``source``): ``"digits"`` is scikit-learn's 1,797 handwritten digits and
    ``"upload"`` your own (N, d) array, both standardised per feature (mean 0, std 1; zero-variance
    columns dropped: digits keep d = 61 of 64) and split by the seed into m = min(m knob, ⌊N/5⌋)
    held-out query points and n = N − m estimator points. d and n then come from the data (the
    ``dim`` and ``alpha`` knobs do not apply); the true density is unknown, so the KL columns are
    NaN and the measurable ones remain: the held-out mean log ρ̂ (``log_density_mean``, a proper
    score: its maximiser estimates the KL-optimal h) and ⟨Y₂⟩, with the Gaussian theory at
    α = (log n)/d and the sample's d for reference (:mod:`workbench.labs.kde.userdata`).
    From Python::

        study = KDEStudy.from_array(points)            # an (N, d) array, in memory
        study = KDEStudy.from_file("points.npy")       # .npy or .csv, at most 8 MiB as float64
        study.evaluate(bandwidth=np.geomspace(0.1, 3, 40))["log_density_mean"]

    (``workbench sweep kde --set source=digits ...`` works too; an upload cannot be swept from
    the command line, since the sweep builds its Studies from knob values alone.)
    """

    lab = "kde"
    title = "Kernel density estimation in large dimensions"
    paper = "Biroli & Mézard, Kernel Density Estimators in Large Dimensions (2024)"
    paper_url = "https://arxiv.org/abs/2408.05807"
    summary = (
        "With n = e^(αd) Gaussian points in d dimensions, lowering the bandwidth h takes the "
        "estimator from the central-limit regime through a heavy-tailed (α-stable) regime into "
        "a condensed regime where a few nearest points dominate. Sweep h and watch KL/d, the "
        "participation ratio and the distribution of log ρ̂ change; the KL-optimal bandwidth "
        "sits below the CLT threshold, outside classical bandwidth theory."
    )
    vectorized = ("bandwidth",)

    source = param.Selector(
        default="gaussian",
        objects={
            "Gaussian N(0, I_d)": "gaussian",
            own.DIGITS_LABEL: "digits",
            "your data (upload)": "upload",
        },
        label="data",
        doc="Where the points come from: n = e^(αd) draws from N(0, I_d) (the paper's setting, "
        "true density known); scikit-learn's 1,797 handwritten digits; or your own file. For the "
        "last two, d and n come from the data (the d and α knobs do not apply), features are "
        "standardised and 20 % of the points (at most m) are held out as query points.",
    )
    dim = param.Integer(
        20,
        bounds=(2, 128),
        label="dimension d",
        doc="Dimension d of the data and query points (2 to 128). With α fixed, n = e^(αd) grows "
        "exponentially with d.",
    )
    alpha = param.Number(
        0.5,
        bounds=(0.02, 3.0),
        step=0.01,
        label="α = (log n)/d",
        doc="α = (log n)/d sets the sample size n = round(e^(αd)). Larger α: more points per "
        "dimension and smaller thresholds h_G, h_CLT.",
    )
    n_queries = param.Integer(
        200,
        bounds=(8, 4096),
        label="query points m",
        doc="Number m of query points x ~ N(0, I_d) where ρ̂ is compared with the true density "
        "(KL/d and ⟨Y₂⟩ are means over them; more points, smaller error bars).",
    )
    seed = param.Integer(
        0,
        bounds=(0, 2**31 - 1),
        label="seed",
        doc="Seed of the random data and query points: the same seed gives the same sample.",
    )
    bandwidth = param.Number(
        1.0,
        bounds=(1e-3, 100.0),
        softbounds=(0.05, 5.0),
        label="bandwidth h",
        doc="Kernel bandwidth h (standard deviation of the Gaussian kernel, in data units). "
        "Lower h moves the estimate from the CLT through the heavy-tailed to the condensed regime.",
    )

    def validate(self) -> None:
        """Refuse sizes over the page's fixed memory cap before any data is drawn (the message
        names α, d and m; :func:`workbench.labs.kde.data.check_size`); own data: see
        :meth:`~workbench.labs.kde.userdata.OwnData.validate_own`."""
        if self.source == "gaussian":
            kde_data.check_size(self.dim, self.alpha, self.n_queries)
        else:
            self.validate_own()

    # --- shared pieces --------------------------------------------------------------------------
    def sample(self) -> kde_data.KDEData:
        """The cached data and query points (raises StudyInputError beyond the size cap).

        Own data: the standardised estimator points and held-out query points of the split;
        ``log_density_exact`` is NaN (the true density is unknown)."""
        if self.source != "gaussian":
            view = self._own_view()
            return kde_data.KDEData(view.data, view.queries, np.full(view.m, np.nan))
        return kde_data.make_data(self.dim, self.alpha, self.seed, self.n_queries)

    def _table(self) -> DistanceTable:
        if self.source != "gaussian":
            return self._own_view().table
        self.sample()  # size check with the user-facing message before any allocation
        key = (self.dim, float(self.alpha), self.seed, self.n_queries, backend.backend_name())
        return _query_table(*key)

    def thresholds(self) -> dict[str, float]:
        """d → ∞ thresholds and the finite-d ones (suffix ``_eff``, NaN where undefined)."""
        dim, alpha = self.theory_point()
        inf = regime_thresholds(alpha)
        eff = regime_thresholds(alpha, dim)
        return {**inf, **{f"{k}_eff": v for k, v in eff.items()}}

    def display_thresholds(self) -> dict[str, float]:
        """As :meth:`thresholds`, with undefined finite-d values replaced by the d → ∞ ones."""
        dim, alpha = self.theory_point()
        return effective_thresholds(alpha, dim)

    def _bandwidths(self, bandwidth: Any) -> tuple[np.ndarray, bool]:
        return check_bandwidths(self.bandwidth if bandwidth is None else bandwidth)

    def bandwidth_grid(self, points: int = GRID_POINTS) -> np.ndarray:
        """The sweep panels' bandwidths: log-spaced from 0.45 × the smaller h_KL (d → ∞ or finite
        d) to 2.4 × the larger h_CLT, so all three regimes and the KL optimum are on screen.
        Own data: the low end also goes to 0.5 × the nearest-neighbour scale h_nn (real data
        cluster, so their best h can sit far below the Gaussian h_KL)."""
        t = self.display_thresholds()
        lo = 0.45 * min(t["h_kl"], t["h_kl_eff"])
        if self.source != "gaussian":
            lo = min(lo, 0.5 * self._own_view().nearest_scale())
        hi = 2.4 * max(t["h_clt"], t["h_clt_eff"])
        return np.geomspace(lo, hi, int(points))

    # --- the main result ------------------------------------------------------------------------
    def evaluate(self, bandwidth: Any = None) -> xr.Dataset:
        """Measurements and theory over ``bandwidth`` (default: the ``bandwidth`` knob).

        Returns
        -------
        xarray.Dataset with dim ``bandwidth`` (always, even for one value) and variables

        * ``kl_per_dim``: mean over queries of log ρ(x) − log ρ̂(x), divided by d (measured),
          with ``kl_per_dim_stderr`` its standard error;
        * ``kl_per_dim_cv`` (and ``_stderr``): the same mean with the control variate |x|² − d,
          whose exact mean is 0; it removes the query-to-query spread of |x|² that dominates the
          plain mean's error (about 6 % at the default sizes, 0.6 % with the control variate);
        * ``kl_per_dim_theory`` (d → ∞) and ``kl_per_dim_finite`` (finite-d theory);
        * ``participation_ratio``: mean Y₂ over queries; ``participation_theory``: REM
          1 − h²/h_G,eff² at this d; ``participation_theory_inf``: with the d → ∞ h_G;
        * ``n_points_90``: median over queries of the number of points carrying 90 % of the
          weight; ``effective_points``: median of 1/Y₂;
        * ``log_density_mean``/``log_density_std``: mean/std of log ρ̂ across queries, and
          ``log_density_exact_mean``;
        * ``stable_index`` (d → ∞) and ``stable_index_finite``; ``bandwidth_ratio`` = h/h_G,eff;
        * ``log_density_mean_stderr``: the standard error of ``log_density_mean``.

        Own data (``source`` digits or upload): the same variables, NaN where the true density is
        needed; ``log_density_mean`` is then the held-out score and the theory columns are the
        Gaussian ones at the sample's d and α = (log n)/d (:func:`userdata.evaluate_variables`).
        """
        h, _ = self._bandwidths(bandwidth)
        if self.source != "gaussian":
            return self._evaluate_own(h)
        table = self._table()
        summary = table.summaries(h)
        sample = self.sample()
        exact = sample.log_density_exact
        d, m = self.dim, self.n_queries
        gap = exact[None, :] - summary["log_density"]  # log ρ − log ρ̂ per (h, query)
        thr = self.thresholds()
        h_g_eff = self.display_thresholds()["h_g_eff"]
        kl_cv, kl_cv_err = _control_variate_mean(gap, sample.queries)
        variables = {
            "kl_per_dim": gap.mean(axis=1) / d,
            "kl_per_dim_stderr": gap.std(axis=1, ddof=1) / math.sqrt(m) / d,
            "kl_per_dim_cv": kl_cv / d,
            "kl_per_dim_cv_stderr": kl_cv_err / d,
            "kl_per_dim_theory": np.atleast_1d(kl_per_dim(h, self.alpha)),
            "kl_per_dim_finite": np.atleast_1d(kl_per_dim(h, self.alpha, d)),
            "participation_ratio": summary["participation_ratio"].mean(axis=1),
            "participation_theory": np.clip(1.0 - h**2 / h_g_eff**2, 0.0, None),
            "participation_theory_inf": np.atleast_1d(participation_theory(h, self.alpha)),
            "n_points_90": np.median(summary["n_points_90"], axis=1),
            "effective_points": np.median(1.0 / summary["participation_ratio"], axis=1),
            "log_density_mean": summary["log_density"].mean(axis=1),
            "log_density_mean_stderr": summary["log_density"].std(axis=1, ddof=1) / math.sqrt(m),
            "log_density_std": summary["log_density"].std(axis=1, ddof=1),
            "log_density_exact_mean": np.full(len(h), exact.mean()),
            "stable_index": np.atleast_1d(stable_index(h, self.alpha)),
            "stable_index_finite": h**2 / h_g_eff**2,
            "bandwidth_ratio": h / h_g_eff,
        }
        return self._dataset(variables, h, self._attrs(thr, table.n))

    def _evaluate_own(self, h: np.ndarray) -> xr.Dataset:
        view = self._own_view()
        attrs = self._attrs(self.thresholds(), view.n)
        attrs.update(own.attrs(view, self.source))
        return self._dataset(own.evaluate_variables(view, h), h, attrs)

    @staticmethod
    def _dataset(variables: dict[str, Any], h: np.ndarray, attrs: dict[str, Any]) -> xr.Dataset:
        ds = xr.Dataset(
            {name: (("bandwidth",), np.asarray(v, dtype=float)) for name, v in variables.items()},
            coords={"bandwidth": h},
            attrs=attrs,
        )
        ds["bandwidth"].attrs["units"] = "same units as the data (N(0, I) or standardised scale)"
        for name, (units, long_name) in _EVALUATE_ATTRS.items():
            ds[name].attrs.update(units=units, long_name=long_name)
        return ds

    def _attrs(self, thresholds: dict[str, float], n: int) -> dict[str, Any]:
        dim, alpha = self.theory_point()
        attrs: dict[str, Any] = {
            "lab": self.lab,
            "source": self.source,
            "n": int(n),
            "dim": int(dim),
            "alpha": float(alpha),
            "n_queries": int(self.n_queries),
            "seed": int(self.seed),
            "backend": backend.backend_name(),
            "units": "bandwidth in data units; KL and log densities in nats",
            "provenance": PROVENANCE,
            "data": "y_i, x_j ~ N(0, I_d) i.i.d.; n = round(e^(alpha d))",
        }
        attrs.update({k: float(v) for k, v in thresholds.items()})
        return attrs

    # --- what the page draws ----------------------------------------------------------------------
    def log_density_samples(self, bandwidth: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(log ρ̂(x_j), log ρ(x_j)) over the query points, from the cached distance table.

        log ρ̂ has shape (m,) for a scalar bandwidth, (k, m) for k bandwidths; log ρ is (m,),
        NaN for own data (unknown density). Both are read-only (shared through the table's memo
        and the sample cache).
        """
        h, scalar = self._bandwidths(bandwidth)
        log_hat = self._table().summaries(h)["log_density"]
        return (log_hat[0] if scalar else log_hat), self.sample().log_density_exact

    def heavy_tail_curve(self, bandwidths: Any = None, n_datasets: int = 600) -> xr.Dataset:
        """median(Z), mean log Z and mean Z of Z = ρ̂(x)/E[ρ̂(x)|x] over datasets, per h.

        Default grid: the page's h/h_G,eff ratios (0.6 to 2.2). See
        :func:`workbench.labs.kde.heavytail.heavy_tail_statistics` (cached, read-only).
        Gaussian data only: Z needs hundreds of independent samples from a known density.
        """
        self.validate()
        if self.source != "gaussian":
            raise StudyInputError(
                "the heavy-tail statistics need many independent Gaussian samples; choose the "
                "Gaussian data source"
            )
        if bandwidths is None:
            from workbench.labs.kde.heavytail import HEAVY_TAIL_RATIOS as ratios
        else:
            h, _ = check_bandwidths(bandwidths)
            ratios = h / self.display_thresholds()["h_g_eff"]
        return heavy_tail_statistics(self.dim, self.alpha, self.seed, ratios, n_datasets)

    def density_slice(
        self, bandwidth: Any = None, points: int = kde_data.SLICE_POINTS
    ) -> xr.Dataset:
        """log ρ̂ and the true log ρ along x(t) = y1 + t (y2 − y1), t ∈ [−0.5, 1.5].

        y1, y2 are the two data points nearest the first query point: at large h the slice is
        smooth, at small h it shows two peaks at t = 0 and t = 1 (the estimate sits on the data).
        Data variables, in order: ``log_density`` then ``log_density_exact``; dims ``(t,)`` for a
        scalar bandwidth, ``(bandwidth, t)`` otherwise. The line's distance table is cached
        (``points`` × n; the page's memory cap counts ``SLICE_POINTS`` = 201).
        """
        h, scalar = self._bandwidths(bandwidth)
        if int(points) < 2:
            raise StudyInputError("density_slice: points must be at least 2")
        self.validate()
        if self.source != "gaussian":  # own data: the true log ρ is unknown (NaN)
            t, line, table, gap = self._own_view().slice_line(int(points))
            exact = np.full(t.size, np.nan)
        else:
            key = (self.dim, float(self.alpha), self.seed, int(points), backend.backend_name())
            t, line, table, gap = _slice_line(*key)
            exact = kde_data.exact_log_density(line)
        log_hat = table.summaries(h)["log_density"]
        dims: tuple[str, ...] = ("bandwidth", "t")
        if scalar:
            log_hat, dims = log_hat[0], ("t",)
        return xr.Dataset(
            {
                "log_density": (dims, log_hat),
                "log_density_exact": (("t",), exact),
            },
            coords={"t": t, "bandwidth": h[0] if scalar else h},
            attrs={
                "distance_y1_y2": gap,
                "line": "x(t) = y1 + t (y2 - y1)",
                "dim": self.theory_point()[0],
            },
        )

    def regime_map(self, alphas: Any = None, bandwidths: Any = None) -> xr.Dataset:
        """The (α, h) plane: h_CLT, h_G, h_KL over α (d → ∞, and suffix ``_eff`` at the study's d)
        and ``regime`` (0 condensed, 1 heavy-tailed, 2 CLT; :func:`theory.regime_of` of the d → ∞
        stable index) on the (bandwidth, alpha) grid."""
        a = np.atleast_1d(check_alpha(REGIME_ALPHAS if alphas is None else alphas))
        h, _ = check_bandwidths(REGIME_BANDWIDTHS if bandwidths is None else bandwidths)
        dim = self.theory_point()[0]  # own data: the sample's d
        inf = regime_thresholds(a)
        eff = regime_thresholds(a, dim)
        names = ("h_clt", "h_g", "h_kl", "s_star", "u_star")
        variables = {k: (("alpha",), inf[k]) for k in names}
        variables.update({f"{k}_eff": (("alpha",), eff[k]) for k in names})
        codes = regime_of(stable_index(h[:, None], a[None, :]))
        variables["regime"] = (("bandwidth", "alpha"), codes.astype(np.int8))
        ds = xr.Dataset(
            variables,
            coords={"alpha": a, "bandwidth": h},
            attrs={"dim": int(dim), "provenance": PROVENANCE},
        )
        for name in ds.data_vars:
            ds[name].attrs["units"] = (
                "1" if name in ("regime", "s_star", "s_star_eff") else "data units"
            )
        ds["regime"].attrs["long_name"] = "regime: 0 condensed, 1 heavy-tailed, 2 CLT (d -> inf)"
        for name in ("u_star", "u_star_eff"):
            ds[name].attrs["units"] = "1"
        return ds

    def panels(self) -> dict[str, Any]:
        """Everything the page draws over a grid for this dataset: the bandwidth ``sweep``
        (:meth:`evaluate` over :meth:`bandwidth_grid`), the ``regimes`` map, the ``heavy`` tail
        statistics and the ``thresholds``. Cached per (d, α, seed, m) and read-only: shared by
        every dashboard session with the same data knobs. Own data: ``heavy`` is None (see
        :meth:`heavy_tail_curve`); cached with the sample's split (digits: shared; an upload:
        its own session's)."""
        self.validate()
        if self.source != "gaussian":
            return self._own_view().memo("panels", self.own_panels)
        key = (self.dim, float(self.alpha), self.seed, self.n_queries, backend.backend_name())
        return _panels(*key)

    def at_bandwidth(self, bandwidth: float | None = None) -> dict[str, Any]:
        """What the page shows at one h, from the cached tables (no new distances): ``current``
        (evaluate at h), ``samples`` (log ρ̂ and log ρ over the queries) and ``slice``."""
        h = float(self.bandwidth if bandwidth is None else bandwidth)
        return {
            "h": h,
            "current": self.evaluate(bandwidth=[h]),
            "samples": self.log_density_samples(h),
            "slice": self.density_slice(h),
        }

    def estimated_seconds(self) -> float | None:
        """A data change (new d, α, m or seed): t ≈ 1.2 s + 4.1 µs × n d + 16 ns × n m d, with
        n = e^(αd) points and m queries (the n·d term: drawing the data and the heavy-tail
        panel's datasets; the n·m·d term: the distances and their tables). None for own data.

        Calibrated on the serving machine (2 cores, load ~1.8, NumPy, 2026-11-28; the binned
        tables before the streamed ones): 4.4 s at the defaults (n = 22,026, d = 20, m = 200;
        the server computes that view once at start), 9.6 s at n = 59,874, 25 s at n = 162,755,
        4.9 s at n = 22,026, d = 10, m = 800. A bandwidth move reuses the tables (milliseconds).
        """
        if self.source != "gaussian":
            return None
        n, d, m = kde_data.n_points(self.dim, self.alpha), self.dim, self.n_queries
        return 1.2 + 4.1e-6 * n * d + 1.6e-8 * n * m * d

    def size_note(self) -> str:
        """One line for the page: n, m, and a warning when a data change will be slow."""
        if self.source != "gaussian":
            return self.own_size_note()
        n = kde_data.n_points(self.dim, self.alpha)
        note = f"n = e^(αd) = {n:,} data points, m = {self.n_queries} query points"
        if n > kde_data.SLOW_POINTS:
            note += " (large: a change of d, α, m or the seed takes tens of seconds)"
        return note + "."


def _control_variate_mean(values: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over queries (last axis) of ``values`` with the control variate c = |x|² − d.

    E[c] = 0 exactly for x ~ N(0, I_d), so mean(v − β c) is unbiased for E[v] for any fixed β;
    β = cov(v, c)/var(c) (least squares over the queries, O(1/m) bias) minimises the variance.
    Returns (estimate, standard error), each of shape values.shape[:-1].
    """
    m = values.shape[-1]
    c = np.einsum("ij,ij->i", queries, queries) - queries.shape[1]
    c_centered = c - c.mean()
    v_centered = values - values.mean(axis=-1, keepdims=True)
    beta = (v_centered @ c_centered) / (c_centered @ c_centered)
    adjusted = values - beta[..., None] * c
    return adjusted.mean(axis=-1), adjusted.std(axis=-1, ddof=2) / math.sqrt(m)


# --- caches shared across sessions ---------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _query_table(dim: int, alpha: float, seed: int, n_queries: int, backend_name: str):
    """Distance table of the study's query points (LRU of 2: each at most ``STORE_BYTES`` of
    stored distances, or a streamed table's bins)."""
    sample = kde_data.make_data(dim, alpha, seed, n_queries)
    xp = backend.get_namespace()
    return DistanceTable(xp.asarray(sample.queries), xp.asarray(sample.data), sort=True, xp=xp)


@functools.lru_cache(maxsize=2)
def _slice_line(dim: int, alpha: float, seed: int, points: int, backend_name: str):
    """Points x(t) = y1 + t (y2 − y1), y1, y2 the data points nearest the first query point, and
    their distance table. Uses the one cached data array (the first query point is the same
    for every query count m)."""
    data = kde_data._data(dim, alpha, seed)
    first = kde_data._queries(dim, seed, 1)[0]
    xp = backend.get_namespace()
    d0 = backend.to_host(estimator.squared_distances(xp.asarray(first), xp.asarray(data)))
    nearest = np.argsort(d0[0], kind="stable")[:2]
    y1, y2 = data[nearest[0]], data[nearest[-1]]
    t = np.linspace(-0.5, 1.5, points)
    line = y1[None, :] + t[:, None] * (y2 - y1)[None, :]
    t.flags.writeable = line.flags.writeable = False  # shared across sessions by the cache
    table = DistanceTable(xp.asarray(line), xp.asarray(data), sort=False, xp=xp)
    return t, line, table, float(np.linalg.norm(y2 - y1))


@functools.lru_cache(maxsize=8)
def _panels(dim: int, alpha: float, seed: int, n_queries: int, backend_name: str) -> dict:
    study = KDEStudy(dim=dim, alpha=alpha, seed=seed, n_queries=n_queries)
    return {
        "sweep": read_only(study.evaluate(bandwidth=study.bandwidth_grid())),
        "regimes": read_only(study.regime_map()),
        "heavy": heavy_tail_statistics(dim, alpha, seed),
        "thresholds": MappingProxyType(study.display_thresholds()),  # read-only too
    }


def clear_caches() -> None:
    """Drop the Study's cached distance tables, slice lines and page panels."""
    for cached in (_query_table, _slice_line, _panels):
        cached.cache_clear()
