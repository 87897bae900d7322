"""One process-wide switch for "BLAS on one thread", safe to use from many threads.

Small matrix work (a 128 × 128 product, a 3 × 3 Riccati solve) runs fastest on one BLAS thread:
a multi-threaded OpenBLAS busy-waits on a loaded 2-core machine and turned millisecond products
into half-second ones (measured in the quadrature and KV-cache labs). But the BLAS thread count
is process-global, and the dashboards compute on a pool of threads: two threads each entering and
leaving ``threadpoolctl``'s limit in an interleaved order leave BLAS pinned at one thread for the
whole server, and every large product (the KDE distance table) then runs single-threaded.

:func:`single_blas_thread` is reference-counted under a lock: the first thread in applies the
limit, the last thread out restores the original, whatever the order of entries and exits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy  # noqa: F401 - loads NumPy's BLAS before threadpoolctl looks for it

_lock = threading.Lock()
_depth = 0
_limiter: Any = None


def _controller() -> Any:
    """A controller over the BLAS libraries loaded *now* (SciPy loads its own OpenBLAS after
    NumPy's; a controller made earlier would not see it). Scanning costs about a millisecond and
    happens only when the outermost limit is entered."""
    try:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return ThreadpoolController()


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run the block with BLAS limited to one thread (nested and concurrent use is safe)."""
    global _depth, _limiter
    controller = _controller()
    if controller is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _limiter = controller.limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None


def blas_threads() -> list[int]:
    """Current thread counts of the loaded BLAS libraries (for tests and ``workbench info``)."""
    controller = _controller()
    if controller is None:
        return []
    return [lib.num_threads for lib in controller.select(user_api="blas").lib_controllers]
