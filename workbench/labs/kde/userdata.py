"""Samples that are not N(0, I_d): scikit-learn's handwritten digits and a user's own array.

For such a sample the true density ρ is unknown, so the lab shows what the sample itself can
measure, against the Gaussian theory at the sample's own n and d:

* the **held-out mean log ρ̂**, ⟨log ρ̂_h(x_j)⟩ over m points x_j kept out of the estimator. Its
  expectation is E_ρ[log ρ̂_h(x)] = −H(ρ) − KL(ρ‖ρ̂_h): the log score is strictly proper (Gneiting
  & Raftery, J. Am. Stat. Assoc. 102, 359 (2007), section 4.1), higher is better, and the h that
  maximises it estimates the KL-optimal bandwidth (the quantity h_KL predicts for Gaussian data);
* the participation ratio Y₂ = Σᵢ wᵢ², wᵢ = Kᵢ/Σⱼ Kⱼ (exact for any sample), against the
  random-energy-model prediction max(0, 1 − h²/h_G,eff²) of Biroli & Mézard (arXiv 2408.05807)
  evaluated at α = (log n)/d with the sample's n and d (lab brief, "Finite-d theory");
* the Gaussian thresholds h_G, h_CLT and h_KL at that α and d, drawn for reference.

**Preprocessing** (digits and uploads alike): features with zero variance (standard deviation
at most 1e-12 × the largest |value| of the column, or exactly 0) are **dropped**: a constant
column puts every point on a hyperplane, where a d-dimensional ρ̂ grows without bound as h → 0,
and d would count a dimension that holds no data. The other features are standardised over the
whole sample, z = (x − mean)/std with the population std (ddof = 0), so every column has mean 0
and standard deviation 1 and h is in units of one feature's spread, the scale of the Gaussian
theory. Digits: 64 pixels, of which 3 (indices 0, 32, 39) are 0 in every image, so d = 61.

**Split** into estimator and query points: a random permutation seeded by the Study's seed; its
first m = min(m_knob, ⌊N/5⌋) points (20 % of the N points, at most the "query points m" knob)
are held out as query points, the other n = N − m points form the estimator. Digits at the
default m = 200: n = 1,597, m = 200.

**Caps** (what an upload may be; the page states them): the file at most
:data:`UPLOAD_MAX_BYTES` as float64 (checked from the file's header before reading, by
:func:`workbench.data.load_array`), N from :data:`MIN_POINTS` to :data:`MAX_POINTS` rows, d from
1 to :data:`MAX_DIM` columns, and the distance tables at most :data:`TABLE_BUDGET_BYTES`
(:func:`sample_bytes`).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np

from workbench import backend
from workbench.data import load_array
from workbench.labs.kde import estimator
from workbench.labs.kde.data import SLICE_POINTS
from workbench.labs.kde.heavytail import read_only
from workbench.labs.kde.tables import DistanceTable
from workbench.labs.kde.theory import effective_thresholds, participation_theory, stable_index
from workbench.study import StudyInputError

#: Largest uploaded array, as float64 (1,048,576 values), checked before the data are read.
UPLOAD_MAX_BYTES = 8 * 2**20
#: Fewest and most points (rows) of an own sample: 10 leave ⌊10/5⌋ = 2 held-out points.
MIN_POINTS = 10
MAX_POINTS = 20_000
#: Most dimensions (columns) of an own sample.
MAX_DIM = 1_000
#: Memory of one own sample's tables: the points, the query table and the slice's table.
TABLE_BUDGET_BYTES = 256 * 2**20
#: 1/5 = 20 % of the points are held out as query points (at most the query-points knob).
HELD_OUT_DIVISOR = 5
#: Zero-variance rule: a column whose std is at most this × its largest |value| is dropped.
CONSTANT_RTOL = 1e-12
#: scikit-learn's digits: 1,797 images of 8 × 8 pixels; 3 pixels are always 0 (d = 61 kept).
DIGITS_SHAPE = (1797, 64)
DIGITS_DIM = 61
DIGITS_LABEL = "digits (scikit-learn, 1,797 × 64)"


# --- preprocessing and the split ----------------------------------------------------------------
def standardise(points: Any) -> tuple[np.ndarray, np.ndarray]:
    """(z, kept): the columns with non-zero variance, each scaled to mean 0 and std 1 (ddof 0).

    ``kept`` is the boolean mask of the columns kept (see the module docstring for the rule).

    >>> z, kept = standardise([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0]])
    >>> z.tolist(), kept.tolist()
    ([[-1.0, -1.0], [1.0, 1.0]], [True, False, True])
    """
    x = np.asarray(points, dtype=np.float64)
    std = x.std(axis=0)
    kept = std > CONSTANT_RTOL * np.abs(x).max(axis=0)
    z = (x[:, kept] - x[:, kept].mean(axis=0)) / std[kept]
    return np.ascontiguousarray(z), kept


def split_counts(total: int, n_queries: int) -> tuple[int, int]:
    """(n, m): m = min(n_queries, ⌊total/5⌋) held-out query points, n = total − m estimator points.

    >>> split_counts(1797, 200), split_counts(1797, 4096), split_counts(10, 200)
    ((1597, 200), (1438, 359), (8, 2))
    """
    m = min(int(n_queries), int(total) // HELD_OUT_DIVISOR)
    return int(total) - m, m


def sample_bytes(total: int, dim: int, n_queries: int) -> int:
    """Bytes an own sample holds at once: 8 × (N·d standardised points + n·m query distances +
    n·SLICE_POINTS slice distances), with (n, m) from :func:`split_counts`."""
    n, m = split_counts(total, n_queries)
    return 8 * (int(total) * int(dim) + n * (m + SLICE_POINTS))


def check_sample_size(total: int, dim: int, n_queries: int, what: str) -> None:
    """StudyInputError, naming the knob, when the tables of this sample break the budget."""
    need = sample_bytes(total, dim, n_queries)
    if need > TABLE_BUDGET_BYTES:
        _, m = split_counts(total, n_queries)
        raise StudyInputError(
            f"{what}: {total:,} points in d = {dim} with m = {m} held-out query points need "
            f"{need / 2**20:,.0f} MiB of distance tables, over the {TABLE_BUDGET_BYTES / 2**20:.0f}"
            " MiB cap for your own data: lower query points m or use fewer points"
        )


# --- the samples ----------------------------------------------------------------------------------
class OwnSample:
    """An (N, d) sample, standardised, with the per-split views (tables) it has computed.

    ``points`` is read-only. :meth:`view` builds (once per m, seed and backend) the split, the
    sorted distance table of the held-out points and the slice's table; the digits sample is
    shared by every session (read-only results), an upload belongs to one session's Study.
    """

    def __init__(self, points: np.ndarray, kept: np.ndarray, name: str, label: str):
        self.points, self.kept, self.name, self.label = points, kept, name, label
        self.points.flags.writeable = False
        self._views: dict[tuple, SampleView] = {}
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def dropped(self) -> int:
        """Columns dropped for zero variance."""
        return int(self.kept.size - self.kept.sum())

    def view(self, n_queries: int, seed: int) -> SampleView:
        """The split at (m knob, seed) with its tables; the two most recent are kept."""
        key = (int(n_queries), int(seed), backend.backend_name())
        with self._lock:  # two sessions asking at once build it once
            if key not in self._views:
                self._views[key] = SampleView(self, *key[:2])
                while len(self._views) > 2:
                    self._views.pop(next(iter(self._views)))
            return self._views[key]


class SampleView:
    """One split of an :class:`OwnSample`: estimator points ``data`` (n, d), held-out ``queries``
    (m, d), their sorted :class:`DistanceTable`, and memoised derived results (read-only)."""

    def __init__(self, sample: OwnSample, n_queries: int, seed: int):
        self.sample = sample
        self.n, self.m = split_counts(sample.total, n_queries)
        order = np.random.default_rng(seed).permutation(sample.total)
        self.queries = sample.points[order[: self.m]]
        self.data = sample.points[order[self.m :]]
        self.queries.flags.writeable = self.data.flags.writeable = False
        self.dim = sample.dim
        self.alpha = math.log(self.n) / self.dim  # α = (log n)/d of the estimator's n points
        xp = backend.get_namespace()
        self._xp = xp
        self.table = DistanceTable(
            xp.asarray(self.queries), xp.asarray(self.data), sort=True, xp=xp
        )
        self._memo: dict[str, Any] = {}
        self._lock = threading.RLock()  # re-entrant: the panels' build asks for nearest_scale

    def memo(self, name: str, build: Callable[[], Any]) -> Any:
        """``build()`` once per view (shared by every caller of this view)."""
        with self._lock:
            if name not in self._memo:
                self._memo[name] = build()
            return self._memo[name]

    def nearest_scale(self) -> float:
        """h_nn = √(median_j min_i |x_j − y_i|² / d): the typical nearest-neighbour distance per
        dimension. Below it ρ̂ rests on the nearest point (Y₂ → 1) whatever the theory says."""

        def build() -> float:
            xp = self._xp
            summary = estimator.kde_summary(xp.asarray(self.queries), xp.asarray(self.data), 1.0)
            return float(math.sqrt(np.median(summary["nearest_sq_distance"]) / self.dim))

        return self.memo("nearest_scale", build)

    def slice_line(self, points: int = SLICE_POINTS):
        """(t, line, table, |y2 − y1|) of x(t) = y1 + t (y2 − y1), t ∈ [−0.5, 1.5], y1, y2 the
        two estimator points nearest the first held-out point (as for Gaussian data)."""

        def build():
            xp = self._xp
            first = xp.asarray(self.queries[:1])
            d0 = backend.to_host(estimator.squared_distances(first, xp.asarray(self.data)))
            nearest = np.argsort(d0[0], kind="stable")[:2]
            y1, y2 = self.data[nearest[0]], self.data[nearest[-1]]
            t = np.linspace(-0.5, 1.5, points)
            line = y1[None, :] + t[:, None] * (y2 - y1)[None, :]
            t.flags.writeable = line.flags.writeable = False
            table = DistanceTable(xp.asarray(line), xp.asarray(self.data), sort=False, xp=xp)
            return t, line, table, float(np.linalg.norm(y2 - y1))

        return self.memo(f"slice_{int(points)}", build)


def make_sample(array: Any, name: str = "array", label: str | None = None) -> OwnSample:
    """Check an (N, d) array against the caps and standardise it (module docstring).

    Raises StudyInputError with a message naming the file (``name``) and the limit.
    """
    try:
        x = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise StudyInputError(f"{name}: the data must be a numeric (points × dims) array") from None
    if x.ndim != 2:
        raise StudyInputError(
            f"{name}: expected a 2-D array of points × dimensions, got shape {x.shape}"
        )
    total, dim = x.shape
    if not MIN_POINTS <= total <= MAX_POINTS:
        raise StudyInputError(
            f"{name}: {total:,} points (rows); use {MIN_POINTS} to {MAX_POINTS:,} points"
        )
    if not 1 <= dim <= MAX_DIM:
        raise StudyInputError(f"{name}: {dim:,} dimensions (columns); use 1 to {MAX_DIM:,}")
    if not np.isfinite(x).all():
        raise StudyInputError(f"{name}: the array contains NaN or infinite values")
    z, kept = standardise(x)
    if not kept.any():
        raise StudyInputError(f"{name}: every column is constant; there is nothing to estimate")
    return OwnSample(z, kept, name, label or f"your data ({name})")


def load_sample(source: str | os.PathLike | IO[bytes], name: str | None = None) -> OwnSample:
    """Read ``.npy`` or ``.csv`` (points × dims) through :func:`workbench.data.load_array` with
    ``max_bytes=UPLOAD_MAX_BYTES`` and ``ndim=2``, then :func:`make_sample`. A refused file
    raises ValueError (StudyInputError for the sample caps) with a plain message."""
    shown = name or (Path(source).name if isinstance(source, str | os.PathLike) else "upload")
    if Path(shown).suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"{shown}: use a .npy or .csv file (rows = points, columns = dims)")
    array = load_array(source, max_bytes=UPLOAD_MAX_BYTES, ndim=2, name=shown)
    return make_sample(array, Path(shown).name)


def digits_available() -> bool:
    """Whether scikit-learn (which ships the digits) is importable, without importing it."""
    return importlib.util.find_spec("sklearn") is not None


@functools.lru_cache(maxsize=1)
def digits() -> OwnSample:
    """scikit-learn's ``load_digits`` (1,797 8 × 8 images, pixel values 0..16; no download: the
    file ships inside scikit-learn), standardised with 3 constant pixels dropped: (1797, 61).
    One shared read-only copy."""
    if not digits_available():
        raise StudyInputError(
            "the digits example needs scikit-learn (pip install scikit-learn); "
            "choose another data source"
        )
    from sklearn.datasets import load_digits  # noqa: PLC0415 - heavy (seconds): on first use

    return make_sample(load_digits().data, "digits", DIGITS_LABEL)


# --- what the Study reports -------------------------------------------------------------------------
def evaluate_variables(view: SampleView, h: np.ndarray) -> dict[str, np.ndarray]:
    """The Study's variables over bandwidths ``h`` for an own sample (module docstring).

    The same names as for Gaussian data; those that need the true density (KL, exact log ρ)
    or the d → ∞ Gaussian KL theory are NaN. Theory columns use α = (log n)/d and d of the
    sample: ``participation_theory`` = max(0, 1 − h²/h_G,eff²), ``stable_index_finite`` =
    h²/h_G,eff², ``bandwidth_ratio`` = h/h_G,eff.
    """
    summary = view.table.summaries(h)
    log_hat, y2 = summary["log_density"], summary["participation_ratio"]
    h_g_eff = effective_thresholds(view.alpha, view.dim)["h_g_eff"]
    nan = np.full(len(h), np.nan)
    return {
        "kl_per_dim": nan,
        "kl_per_dim_stderr": nan,
        "kl_per_dim_cv": nan,
        "kl_per_dim_cv_stderr": nan,
        "kl_per_dim_theory": nan,
        "kl_per_dim_finite": nan,
        "participation_ratio": y2.mean(axis=1),
        "participation_theory": np.clip(1.0 - h**2 / h_g_eff**2, 0.0, None),
        "participation_theory_inf": np.atleast_1d(participation_theory(h, view.alpha)),
        "n_points_90": np.median(summary["n_points_90"], axis=1),
        "effective_points": np.median(1.0 / y2, axis=1),
        "log_density_mean": log_hat.mean(axis=1),
        "log_density_mean_stderr": log_hat.std(axis=1, ddof=1) / math.sqrt(view.m),
        "log_density_std": log_hat.std(axis=1, ddof=1),
        "log_density_exact_mean": nan,
        "stable_index": np.atleast_1d(stable_index(h, view.alpha)),
        "stable_index_finite": h**2 / h_g_eff**2,
        "bandwidth_ratio": h / h_g_eff,
    }


def attrs(view: SampleView, source: str) -> dict[str, Any]:
    """NetCDF-safe attrs describing an own sample and its split."""
    s = view.sample
    return {
        "source": source,
        "sample": s.label,
        "n_total": s.total,
        "n_queries_held_out": view.m,
        "dropped_constant_columns": s.dropped,
        "data": (
            f"{s.label}: {s.total} points, {s.dropped} zero-variance columns dropped, the rest "
            "standardised (mean 0, std 1, ddof 0); a seeded random 20 % (at most m) held out as "
            "query points; theory: Gaussian at alpha = log(n)/d"
        ),
    }


# --- the Study's side -------------------------------------------------------------------------------
class OwnData:
    """What :class:`~workbench.labs.kde.KDEStudy` does with digits and uploads (a mix-in).

    An upload is attached to one Study instance (``_own``), never to a module-level cache, so
    two dashboard sessions never see each other's data; :meth:`session_copy` hands it to the
    copy a worker thread computes on.
    """

    _own: OwnSample | None = None  # set per instance by use_sample

    @classmethod
    def from_array(cls, points: Any, *, name: str = "array", **knobs: Any):
        """A Study of your own (N, d) points (``source="upload"``), standardised and split as
        in the module docstring. Caps: 10 to 20,000 points, 1 to 1,000 dims, tables within
        256 MiB at the chosen m; StudyInputError with a plain message otherwise."""
        study = cls(**{**knobs, "source": "upload"})
        study.use_array(points, name=name)
        return study

    @classmethod
    def from_file(cls, path: str | os.PathLike, **knobs: Any):
        """A Study of the points in a ``.npy`` or ``.csv`` file (rows = points, columns = dims),
        read by :func:`load_sample` (``load_array`` with ``max_bytes`` = 8 MiB as float64, 2-D):
        pickles, truncated files, NaN and the like are refused with a ValueError."""
        study = cls(**{**knobs, "source": "upload"})
        study.use_sample(load_sample(path))
        return study

    def use_array(self, points: Any, name: str = "array") -> None:
        """Attach your own (N, d) points (checked, standardised); used when ``source="upload"``."""
        self.use_sample(make_sample(points, name))

    def use_sample(self, sample: OwnSample | None) -> None:
        """Attach an :class:`OwnSample` (None detaches). Refused whole, the previous sample
        kept, when its tables would break the cap at the current query count m."""
        if sample is not None:
            check_sample_size(sample.total, sample.dim, self.n_queries, sample.name)
        self._own = sample

    @property
    def own_sample(self) -> OwnSample | None:
        """The attached upload (None if there is none), whatever the current source."""
        return self._own

    def session_copy(self):
        """A Study with the same knobs and the same attached upload (for a worker thread)."""
        copy = type(self)(**self.values())
        copy._own = self._own
        return copy

    def validate_own(self) -> None:
        """Digits: scikit-learn importable and the tables within the cap (their size is known
        without loading them). Upload: a sample attached, its tables within the cap."""
        label = self.param["source"].label
        if self.source == "digits":
            if not digits_available():
                raise StudyInputError(f"{label}: the digits example needs scikit-learn installed")
            check_sample_size(DIGITS_SHAPE[0], DIGITS_DIM, self.n_queries, label)
        elif self._own is None:
            raise StudyInputError(
                f"{label}: no file uploaded yet; upload a .npy or .csv file (rows = points, "
                "columns = dimensions) first, or choose another data source"
            )
        else:
            check_sample_size(self._own.total, self._own.dim, self.n_queries, label)

    def _own_view(self) -> SampleView:
        self.validate()
        sample = digits() if self.source == "digits" else self._own
        return sample.view(self.n_queries, self.seed)

    def theory_point(self) -> tuple[int, float]:
        """(d, α) of the Gaussian theory drawn: the knobs for Gaussian data; for own data the
        sample's d and α = (log n)/d, n its estimator points (known without loading digits)."""
        if self.source == "gaussian":
            return int(self.dim), float(self.alpha)
        if self.source == "digits":
            total, dim = DIGITS_SHAPE[0], DIGITS_DIM
        else:
            self.validate()  # no upload: the "no file uploaded" message
            total, dim = self._own.total, self._own.dim
        n, _ = split_counts(total, self.n_queries)
        return dim, math.log(n) / dim

    def own_panels(self) -> dict[str, Any]:
        """The page's grid panels for own data (read-only; memoised on the sample's view)."""
        return {
            "sweep": read_only(self.evaluate(bandwidth=self.bandwidth_grid())),
            "regimes": read_only(self.regime_map()),
            "heavy": None,
            "thresholds": MappingProxyType(self.display_thresholds()),
        }

    def own_size_note(self) -> str:
        """One line for the page: the sample, its split, d and α (the d, α knobs do not apply)."""
        dim, alpha = self.theory_point()
        sample = digits() if self.source == "digits" else self._own
        n, m = split_counts(sample.total, self.n_queries)
        dropped = f", {sample.dropped} constant columns dropped" if sample.dropped else ""
        return (
            f"{sample.label}: n = {n:,} points in the estimator, m = {m} held out as query "
            f"points, d = {dim} (α = (log n)/d = {alpha:.3f}){dropped}; the d and α knobs do "
            "not apply."
        )
