"""Preconditioners for A_n and a GMRES that can be run one iteration at a time.

Preconditioners (P ≈ A_n; GMRES is applied to A P^{−1} y = b, x = P^{−1} y, so the residual it
reports is the true one, ‖b − A x_k‖/‖b‖):

* ``"tau"``: P = S diag(h^{−α} f_{α,p}(jπ/(n+1)))_{j=1..n} S, S the orthonormal DST-I (the τ
  algebra; its eigenvalues are the symbol's samples, lab brief ``shared/science/fractional.md``);
* ``"circulant"``: Strang's circulant of the central row, c_k = g_{min(k, n−k)} (eigenvalues by
  one FFT; Chan & Ng, SIAM Rev. 38, 1996);
* ``"laplacian"``: the α = 2 tridiagonal h^{−α} tridiag(−1, 2, −1) (symbol 2 − 2cos θ; a
  second-order-diffusion preconditioner whose preconditioned symbol behaves like |θ|^{α−2}, so
  its iteration counts keep growing slowly with n);
* ``None``/``"none"``: no preconditioner (counts grow like √cond ~ n^{α/2}).

All apply in O(n log n) (O(n) for the Laplacian). ``tau``, ``circulant`` and ``none`` run in
the vector's own namespace: any array-API namespace with the ``fft`` extension (NumPy, CuPy,
``array_api_strict`` in the tests; the DST-I is an FFT of the odd extension). ``laplacian``
solves its banded system with SciPy on the host: for device vectors it crosses the named
boundary :func:`workbench.backend.to_host` / :func:`workbench.backend.from_host` (two O(n)
copies per application) and returns a vector of the input's namespace and device.
:class:`GMRES` keeps its basis in the namespace of ``b`` and the small Hessenberg problem on
the host (one (j + 1)-vector to the host per iteration).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import scipy.fft
import scipy.linalg

from workbench import backend
from workbench.labs.fractional.matrices import CollocationOperator, toeplitz_row
from workbench.labs.fractional.symbol import symbol
from workbench.study import StudyInputError, checkpoint, warn_user

PRECONDITIONERS = ("none", "tau", "circulant", "laplacian")
#: Memory for the Krylov basis beyond which GMRES restarts (bytes).
BASIS_BYTES = 2**28


def check_preconditioner(name: Any) -> str:
    """``None`` → "none"; anything not in :data:`PRECONDITIONERS` is refused with the list."""
    key = "none" if name is None else str(name).lower()
    if key not in PRECONDITIONERS:
        raise StudyInputError(
            f"preconditioner must be one of {', '.join(PRECONDITIONERS)} (or None); got {name!r}"
        )
    return key


def dst1(v, xp=None):
    """Orthonormal DST-I of a 1-D vector (its own inverse), via an FFT of the odd extension.

    Equals ``scipy.fft.dst(v, type=1, norm="ortho")`` (which NumPy vectors use: a real
    transform of half the length).
    """
    xp = backend.get_namespace(v, xp=xp)
    if xp is np:
        return scipy.fft.dst(v, type=1, norm="ortho")
    n = v.shape[0]
    ext = xp.zeros(2 * (n + 1), dtype=xp.float64, **backend.device_kwargs(v))
    ext[1 : n + 1] = v
    ext[n + 2 :] = -xp.flip(v)
    spectrum = xp.fft.rfft(ext)  # a real input: the half spectrum holds bins 1..n
    return -xp.imag(spectrum[1 : n + 1]) / math.sqrt(2.0 * (n + 1))


class Preconditioner:
    """P^{−1} for one operator: ``inverse(v)`` applies it; ``eigenvalues`` where diagonalised."""

    def __init__(self, op: CollocationOperator, name: Any) -> None:
        self.name = check_preconditioner(name)
        s = op.structure
        n = op.shape[0]
        self.factor = op.factor
        self._xp_cache: dict[str, Any] = {}
        self.eigenvalues: np.ndarray | None = None
        if self.name == "tau":
            theta = np.arange(1, n + 1) * np.pi / (n + 1)
            self.eigenvalues = self.factor * symbol(theta, s.alpha, s.degree)
        elif self.name == "circulant":
            g = toeplitz_row(n // 2 + 1, s.alpha, s.degree)
            k = np.arange(n)
            column = g[np.minimum(k, n - k)]
            lam = self.factor * scipy.fft.fft(column).real
            if lam.min() <= 0:  # the truncated row sum can dip below 0 only if α is near 1
                warn_user(
                    "the Strang circulant has non-positive eigenvalues here; they were "
                    "replaced by the smallest positive one"
                )
                lam = np.where(lam > 0, lam, lam[lam > 0].min())
            self.eigenvalues = lam
            # C^{-1} is the circulant with first column ifft(1/λ). Applying it as a linear
            # convolution of fast length L ≥ 2n − 1 (then folding the wrap-around) avoids FFTs
            # of length n, which can be prime (n = 2^16 + 1 for p = 3) and 5× slower.
            self._fft_len = scipy.fft.next_fast_len(2 * n - 1, real=True)
            self._kernel = scipy.fft.rfft(scipy.fft.ifft(1.0 / lam).real, n=self._fft_len)
        elif self.name == "laplacian":
            band = np.zeros((2, n))
            band[0, 1:] = -1.0
            band[1, :] = 2.0
            self._band = band * self.factor
        self.size = n

    def _device(self, like) -> Any:
        """The eigenvalues (tau) or convolution kernel (circulant) on ``like``'s device."""
        kept = self._kernel if self.name == "circulant" else self.eigenvalues
        if isinstance(like, np.ndarray):
            return kept
        key = f"{backend.get_namespace(like).__name__}:{getattr(like, 'device', '')}"
        if key not in self._xp_cache:
            self._xp_cache[key] = backend.from_host(kept, like)
        return self._xp_cache[key]

    def inverse(self, v):
        """P^{−1} v."""
        if self.name == "none":
            return v
        n = v.shape[0]
        xp = backend.get_namespace(v)
        if self.name == "tau":
            return dst1(dst1(v, xp) / self._device(v), xp)
        if self.name == "circulant":
            fft = scipy.fft if xp is np else xp.fft
            z = fft.irfft(fft.rfft(v, n=self._fft_len) * self._device(v), n=self._fft_len)
            # Fold the wrap-around: C⁻¹v = z[:n] + (z[n:2n−1], 0). Written into a fresh array
            # (array API: no ``.copy()``, and CuPy has no ``concat``); the sums are NumPy's.
            tail = xp.zeros_like(z[:n])
            tail[: n - 1] = z[n : 2 * n - 1]
            return tail + z[:n]
        # The banded Cholesky solve is SciPy's, on the host: the named boundary both ways.
        out = scipy.linalg.solveh_banded(self._band, backend.to_host(v), check_finite=False)
        return backend.from_host(out, like=v)


def _norm(v) -> float:
    """‖v‖₂ as a host float: √(v · v), the same dot product NumPy's ``linalg.norm`` takes for a
    real vector (so NumPy results are unchanged), in any namespace (the array API has no
    ``linalg.norm``)."""
    return math.sqrt(float(v @ v))


class KrylovStep(NamedTuple):
    """One GMRES iteration: its number and the relative residual ‖b − A x_k‖/‖b‖."""

    iteration: int
    residual: float


class GMRES:
    """Restarted, right-preconditioned GMRES that can be iterated step by step.

    ``for step in run.steps(): ...`` yields a :class:`KrylovStep` per iteration (iteration 0 is
    the starting residual 1), so a page can draw the history as it grows; afterwards
    :attr:`solution`, :attr:`converged`, :attr:`history` hold the result. :meth:`run` drains it.

    Arnoldi with classical Gram–Schmidt done twice (CGS2, as stable as modified GS and two
    matrix–vector products per step instead of j dot products), Givens rotations on the
    Hessenberg matrix (Saad & Schultz 1986; Saad, *Iterative Methods*, §6.5). Vectors live in
    the namespace of ``b`` (NumPy or CuPy).
    """

    def __init__(
        self,
        matvec: Callable[[Any], Any],
        b,
        precondition: Callable[[Any], Any] | None = None,
        tol: float = 1e-10,
        maxiter: int = 2000,
        restart: int | None = None,
    ) -> None:
        self.matvec = matvec
        self.b = b
        self.precondition = precondition or (lambda v: v)
        if not (0 < float(tol) < 1):
            raise StudyInputError(f"GMRES tolerance must lie in (0, 1); got {tol}")
        self.tol = float(tol)
        self.maxiter = int(maxiter)
        n = b.shape[0]
        self.restart = int(restart or max(20, min(self.maxiter, BASIS_BYTES // (8 * n))))
        self.solution = None
        self.converged = False
        self.history: list[float] = []

    @property
    def iterations(self) -> int:
        return len(self.history) - 1

    def run(self) -> GMRES:
        for _ in self.steps():
            pass
        return self

    def steps(self) -> Iterator[KrylovStep]:
        xp = backend.get_namespace(self.b)
        b = xp.asarray(self.b, dtype=xp.float64)
        n = b.shape[0]
        on = backend.device_kwargs(b)
        norm_b = _norm(b)
        x = xp.zeros(n, dtype=xp.float64, **on)
        self.history = [1.0]
        yield KrylovStep(0, 1.0)
        if norm_b == 0.0:
            self.solution, self.converged = x, True
            return
        iteration = 0
        while True:
            r = b - self.matvec(x)
            beta = _norm(r)
            if beta / norm_b <= self.tol:
                self.converged = True
                break
            k_max = min(self.restart, self.maxiter - iteration)
            basis = xp.zeros((k_max + 1, n), dtype=xp.float64, **on)
            basis[0, :] = r / beta
            hess = np.zeros((k_max + 1, k_max))
            cs, sn = np.zeros(k_max), np.zeros(k_max)
            g = np.zeros(k_max + 1)
            g[0] = beta
            j_used = 0
            for j in range(k_max):
                checkpoint()  # a superseded dashboard computation stops here
                w = self.matvec(self.precondition(basis[j, :]))
                h = basis[: j + 1, :] @ w
                w = w - basis[: j + 1, :].T @ h
                h2 = basis[: j + 1, :] @ w  # second pass (CGS2): orthogonal to rounding level
                w = w - basis[: j + 1, :].T @ h2
                column = backend.to_host(h + h2).astype(float)
                norm_w = _norm(w)
                hess[: j + 1, j] = column
                hess[j + 1, j] = norm_w
                if norm_w > 0:
                    basis[j + 1, :] = w / norm_w
                for i in range(j):  # earlier rotations on the new column
                    a, c = hess[i, j], hess[i + 1, j]
                    hess[i, j], hess[i + 1, j] = cs[i] * a + sn[i] * c, -sn[i] * a + cs[i] * c
                denom = math.hypot(hess[j, j], hess[j + 1, j])
                cs[j], sn[j] = hess[j, j] / denom, hess[j + 1, j] / denom
                hess[j, j], hess[j + 1, j] = denom, 0.0
                g[j + 1], g[j] = -sn[j] * g[j], cs[j] * g[j]
                iteration += 1
                j_used = j + 1
                res = abs(g[j + 1]) / norm_b
                self.history.append(res)
                yield KrylovStep(iteration, res)
                if res <= self.tol or norm_w == 0.0:
                    break
            y = scipy.linalg.solve_triangular(hess[:j_used, :j_used], g[:j_used])
            x = x + self.precondition(basis[:j_used, :].T @ backend.from_host(y, like=b))
            if self.history[-1] <= self.tol:
                self.converged = True
                break
            if iteration >= self.maxiter:
                break
        self.solution = x
        if not self.converged:
            warn_user(
                f"GMRES stopped after {iteration} iterations at relative residual "
                f"{self.history[-1]:.1e}, above the tolerance {self.tol:.0e}"
            )
