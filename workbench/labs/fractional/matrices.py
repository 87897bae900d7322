"""The collocation matrix A_n: dense for moderate n, matrix-free (FFT Toeplitz + strips) for any n.

A_ij = (−∂^α B_j/∂|x|^α)(τ_i) on N uniform intervals with splines of degree p (open knots, the
first and last B-spline dropped: n = N + p − 2 unknowns; τ_i the Greville abscissae). In ξ = x/h
units A = h^{−α} Â, and Â is (Mazza, Donatelli, Manni, Speleers 2023; lab brief
``shared/science/fractional.md``)

* a symmetric Toeplitz block T_m = [g_{i−k}] (m = N − p) where the interior rows (collocation at
  the centres k + (p+1)/2 of the cardinal B-splines) meet the cardinal columns:
  g_d = (−∂^α N_p/∂|ξ|^α)((p+1)/2 + d), N_p the cardinal B-spline; Σ_d g_d e^{idθ} = f_{α,p}(θ);
* p − 1 boundary columns on each side (the B-splines with repeated knots) over all rows, and
  p − 1 boundary rows on each side (Greville points h/p-spaced near the ends) over the cardinal
  columns: O(p n) numbers;
* centrosymmetry: reflecting ξ → N − ξ swaps D_L and D_R and reverses basis and points, so
  A[n−1−i, n−1−j] = A[i, j]: the right strips are the left ones reversed.

Only O(p n) distinct numbers are computed (accurately, see :mod:`.splines`), so the operator has
O(p n) memory and an O(n log n) product (the Toeplitz block by a circulant embedding of size 2m).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy.sparse.linalg import LinearOperator

from workbench import backend
from workbench.labs.fractional.splines import cardinal, element, greville, open_knots
from workbench.labs.fractional.symbol import check_alpha_degree
from workbench.study import StudyInputError

#: Largest n for which a dense n × n matrix is built (128 MiB of float64).
DENSE_CAP = 4096
#: Largest N for the matrix-free operator on the CPU (O(p N) memory, a few hundred MB at most).
OPERATOR_CAP = 2**22


def check_size(intervals: int, degree: int) -> int:
    """Validated N: a whole number with N ≥ 2p (the two boundary layers must not overlap)."""
    if isinstance(intervals, bool) or int(intervals) != intervals:
        raise StudyInputError(f"intervals N must be a whole number, got {intervals!r}")
    n_int = int(intervals)
    if n_int < 2 * int(degree):
        raise StudyInputError(
            f"intervals N must be at least 2p = {2 * int(degree)} for degree p = {degree}; "
            f"got {n_int}"
        )
    if n_int > OPERATOR_CAP:
        raise StudyInputError(f"intervals N must be at most {OPERATOR_CAP}; got {n_int}")
    return n_int


@dataclass(frozen=True)
class Structure:
    """The distinct entries of Â = h^α A_n (ξ units); see the module docstring.

    ``toeplitz[d]`` = g_d (d = 0..m−1); ``left_columns[i, c]`` = Â[i, c] (all rows, c < p−1);
    ``left_rows[r, k]`` = Â[r, p−1+k] (r < p−1, cardinal columns k).
    """

    intervals: int
    degree: int
    alpha: float
    toeplitz: np.ndarray
    left_columns: np.ndarray
    left_rows: np.ndarray

    @property
    def size(self) -> int:
        return self.intervals + self.degree - 2

    @property
    def scale(self) -> float:
        """h^{−α}: A_n = h^{−α} Â."""
        return float(self.intervals) ** self.alpha


def toeplitz_row(count: int, alpha: float, degree: int) -> np.ndarray:
    """g_0..g_{count−1}: the central row of Â (−∂^α N_p/∂|ξ|^α at (p+1)/2 + d)."""
    a, p = check_alpha_degree(alpha, degree)
    d = np.arange(int(count), dtype=float)
    return cardinal(p).riesz((p + 1) / 2.0 + d, a)


@functools.lru_cache(maxsize=16)
def structure(intervals: int, alpha: float, degree: int) -> Structure:
    """The distinct entries of Â for (N, α, p) (cached; arrays are read-only)."""
    a, p = check_alpha_degree(alpha, degree)
    n_int = check_size(intervals, p)
    n, m = n_int + p - 2, n_int - p
    xi = greville(n_int, p)
    knots = open_knots(n_int, p)
    # Left boundary columns: kept B-splines 1..p−1 (0-based in the full basis), at every row.
    columns = np.empty((n, p - 1))
    for c in range(p - 1):
        columns[:, c] = element(knots[c + 1 : c + p + 3]).riesz(xi, a)
    # Left boundary rows against the cardinal columns k (support [k, k+p+1]).
    k = np.arange(m, dtype=float)
    rows = np.stack([cardinal(p).riesz(xi[r] - k, a) for r in range(p - 1)]) if p > 1 else None
    g = toeplitz_row(m, a, p)
    for arr in (g, columns, rows):
        arr.setflags(write=False)
    return Structure(n_int, p, a, g, columns, rows)


def collocation_points(intervals: int, degree: int) -> np.ndarray:
    """The n = N + p − 2 collocation points τ_i in (0, 1): Greville abscissae (x units).

    >>> collocation_points(16, 3)[:2] * 16
    array([0.33333333, 1.        ])
    """
    p = check_alpha_degree(1.5, degree)[1]
    n_int = check_size(intervals, p)
    return greville(n_int, p) / n_int


def dense_scaled(s: Structure) -> np.ndarray:
    """Â = h^α A_n as a dense array (assembled from the structure)."""
    p, n = s.degree, s.size
    m = n - 2 * (p - 1)
    b = p - 1
    out = np.zeros((n, n))
    d = np.abs(np.arange(m)[:, None] - np.arange(m)[None, :])
    out[b : b + m, b : b + m] = s.toeplitz[d]
    out[:b, b : b + m] = s.left_rows
    out[n - 1 : n - 1 - b : -1, b : b + m] = s.left_rows[:, ::-1]
    out[:, :b] = s.left_columns
    out[:, n - 1 : n - 1 - b : -1] = s.left_columns[::-1, :]
    return out


def collocation_matrix(intervals: int, alpha: float, degree: int) -> np.ndarray:
    """Dense A_n = h^{−α} Â (x units), for n = N + p − 2 ≤ :data:`DENSE_CAP`.

    >>> A = collocation_matrix(16, 1.5, 2)
    >>> round(float(A[0, 0]) / 16**1.5, 4)  # the brief's h^α A[0, 0] for p = 2
    1.8437
    """
    a, p = check_alpha_degree(alpha, degree)
    n_int = check_size(intervals, p)
    n = n_int + p - 2
    if n > DENSE_CAP:
        raise StudyInputError(
            f"a dense matrix with intervals N = {n_int} (n = {n}) is over the cap n ≤ {DENSE_CAP} "
            f"({DENSE_CAP**2 * 8 / 2**20:.0f} MiB): lower intervals N or use collocation_operator"
        )
    s = structure(n_int, a, p)
    return dense_scaled(s) * s.scale


class CollocationOperator(LinearOperator):
    """A_n without the matrix: Toeplitz block by FFT (O(n log n)) plus the boundary strips.

    A SciPy :class:`~scipy.sparse.linalg.LinearOperator` (``A @ x``, ``A.T @ x``, SciPy Krylov
    solvers). :meth:`apply` and :meth:`apply_transpose` take a vector of any array-API namespace
    with the ``fft`` extension (NumPy, CuPy, ``array_api_strict`` in the tests) and compute in
    it, on its device (the O(p n) strips and the Toeplitz symbol are copied there once per
    device by :func:`workbench.backend.from_host`); :meth:`cupy_operator` wraps them for
    ``cupyx.scipy.sparse.linalg``.
    """

    def __init__(self, intervals: int, alpha: float, degree: int, scaled: bool = False) -> None:
        self.structure = structure(intervals, alpha, degree)
        n = self.structure.size
        super().__init__(dtype=np.float64, shape=(n, n))
        #: Multiplier of Â: h^{−α} for A_n, 1 for the scaled Â.
        self.factor = 1.0 if scaled else self.structure.scale
        g = self.structure.toeplitz
        m = g.size
        self._fft_len = scipy.fft.next_fast_len(2 * m, real=True)
        column = np.zeros(self._fft_len)
        column[:m] = g
        column[self._fft_len - m + 1 :] = g[:0:-1]
        self._host = {
            "eig": scipy.fft.rfft(column),
            "cols": np.ascontiguousarray(self.structure.left_columns),
            "rows": np.ascontiguousarray(self.structure.left_rows),
        }
        self._device: dict[str, dict] = {}

    def _arrays(self, like) -> dict:
        """The strips and symbol in ``like``'s namespace and on its device (cached)."""
        xp = backend.get_namespace(like)
        if xp is np:
            return self._host
        key = f"{xp.__name__}:{getattr(like, 'device', '')}"
        if key not in self._device:
            self._device[key] = {k: backend.from_host(v, like) for k, v in self._host.items()}
        return self._device[key]

    def _toeplitz(self, xp, arrays, x):
        fft = scipy.fft if xp is np else xp.fft
        y = fft.irfft(arrays["eig"] * fft.rfft(x, n=self._fft_len), n=self._fft_len)
        return y[: x.shape[0]]

    def apply(self, x):
        """A x for a 1-D vector of any array-API namespace (returns one of the same kind)."""
        xp = backend.get_namespace(x)
        x = xp.reshape(xp.asarray(x, dtype=xp.float64), (-1,))
        arrays = self._arrays(x)
        p, n = self.structure.degree, self.shape[0]
        b, m = p - 1, n - 2 * (p - 1)
        xc = x[b : b + m]
        y = arrays["cols"] @ x[:b] + xp.flip(arrays["cols"] @ xp.flip(x)[:b])
        y[b : b + m] += self._toeplitz(xp, arrays, xc)
        y[:b] += arrays["rows"] @ xc
        y[n - b :] += xp.flip(arrays["rows"] @ xp.flip(xc))
        return self.factor * y

    def apply_transpose(self, x):
        """Aᵀ x (the Toeplitz block is symmetric; the strips are transposed)."""
        xp = backend.get_namespace(x)
        x = xp.reshape(xp.asarray(x, dtype=xp.float64), (-1,))
        arrays = self._arrays(x)
        p, n = self.structure.degree, self.shape[0]
        b, m = p - 1, n - 2 * (p - 1)
        y = xp.zeros_like(x)
        y[:b] = arrays["cols"].T @ x
        y[n - b :] = xp.flip(arrays["cols"].T @ xp.flip(x))
        y[b : b + m] = (
            self._toeplitz(xp, arrays, x[b : b + m])
            + arrays["rows"].T @ x[:b]
            + xp.flip(arrays["rows"].T @ xp.flip(x)[:b])
        )
        return self.factor * y

    def _matvec(self, x):
        return self.apply(np.asarray(x).reshape(-1))

    def _rmatvec(self, x):
        return self.apply_transpose(np.asarray(x).reshape(-1))

    def _adjoint(self):
        return _Transposed(self)

    def cupy_operator(self, xp):
        """The same operator as a ``cupyx.scipy.sparse.linalg.LinearOperator`` (CuPy only)."""
        linalg = importlib.import_module(xp.__name__ + "x.scipy.sparse.linalg")
        return linalg.LinearOperator(
            self.shape, matvec=self.apply, rmatvec=self.apply_transpose, dtype=np.float64
        )


class _Transposed(LinearOperator):
    def __init__(self, op: CollocationOperator) -> None:
        super().__init__(dtype=np.float64, shape=op.shape)
        self.op = op

    def _matvec(self, x):
        return self.op.apply_transpose(np.asarray(x).reshape(-1))

    def _rmatvec(self, x):
        return self.op.apply(np.asarray(x).reshape(-1))


def collocation_operator(
    intervals: int, alpha: float, degree: int, scaled: bool = False
) -> CollocationOperator:
    """Matrix-free A_n (or Â = h^α A_n with ``scaled=True``): O(p n) memory, O(n log n) product.

    >>> import numpy as np
    >>> op = collocation_operator(64, 1.5, 3)
    >>> x = np.random.default_rng(0).standard_normal(op.shape[0])
    >>> bool(np.allclose(op @ x, collocation_matrix(64, 1.5, 3) @ x, rtol=1e-12, atol=0))
    True
    """
    return CollocationOperator(intervals, alpha, degree, scaled=scaled)
