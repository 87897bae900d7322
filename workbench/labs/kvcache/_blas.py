"""BLAS thread control for the lab's small matrices."""

from __future__ import annotations

import contextlib
import functools
from typing import Any


@functools.cache
def _thread_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return ThreadpoolController()


def single_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS on one thread: every matrix here is at most 128 × 128, and a multi-threaded OpenBLAS
    busy-waiting on a loaded 2-core machine made a stacked (9, 4, 128, 32) @ (…, 32, 128)
    product take 0.58 s instead of 3 ms (measured; same fix as the quadrature lab)."""
    controller = _thread_controller()
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")
