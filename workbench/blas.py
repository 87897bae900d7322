"""One process-wide switch for "BLAS on one thread", safe to use from many threads.

Small matrix work (a 128 × 128 product, a 3 × 3 Riccati solve) runs fastest on one BLAS thread:
a multi-threaded OpenBLAS busy-waits on a loaded 2-core machine and turned millisecond products
into half-second ones (measured in the quadrature and KV-cache labs). But the BLAS thread count
is process-global, and the dashboards compute on a pool of threads: two threads each entering and
leaving ``threadpoolctl``'s limit in an interleaved order leave BLAS pinned at one thread for the
whole server, and every large product (the KDE distance table) then runs single-threaded.

:func:`single_blas_thread` records the original count once and every exit restores that count
(not the count the thread happened to see on entry), so interleaved threads cannot leave BLAS
pinned.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy  # noqa: F401 - loads NumPy's BLAS before threadpoolctl looks for it

_lock = threading.Lock()
_original: int | None = None
_local = threading.local()  # nesting depth per thread: only the outermost block sets/restores


def _controller() -> Any:
    """A controller over the BLAS libraries loaded *now* (SciPy loads its own OpenBLAS after
    NumPy's; a controller made earlier would not see it). Scanning costs about a millisecond."""
    try:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return ThreadpoolController()


@contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run the block with BLAS limited to one thread; on exit this thread's BLAS goes back to
    the process's original count (never to a count another thread had lowered).

    Recent OpenBLAS builds keep the thread count per calling thread, older ones (and MKL) per
    process; restoring to the original count recorded once is right under both: nothing can be
    left pinned at one thread, whatever the order in which threads enter and leave.
    """
    global _original
    depth = getattr(_local, "depth", 0)
    # Nested blocks cost nothing: only the outermost one scans the libraries (about 5 ms) and
    # sets and restores the limit, with the same controller.
    controller = _controller() if depth == 0 else None
    if depth == 0 and controller is not None:
        with _lock:
            if _original is None:
                libs = controller.select(user_api="blas").lib_controllers
                _original = max((lib.num_threads for lib in libs), default=1)
            original = _original
        controller.limit(limits=1, user_api="blas")
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth
        if controller is not None:
            controller.limit(limits=original, user_api="blas")


def blas_threads() -> list[int]:
    """BLAS thread counts as seen from the calling thread (for tests and ``workbench info``)."""
    controller = _controller()
    if controller is None:
        return []
    return [lib.num_threads for lib in controller.select(user_api="blas").lib_controllers]
