"""Process-wide resources that every lab page's session shares: the compute pool, and the
clean-up of Panel's process-wide registries when a session closes."""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any

import panel as pn

from apps.fair_pool import FairPool

#: Worker threads shared by every session's heavy computations (NumPy/BLAS release the GIL),
#: one of them kept for quick work (apps/fair_pool.py).
POOL_WORKERS = 4
POOL_RESERVED = 1

_pool: FairPool | None = None
_pool_lock = threading.Lock()


def worker_pool() -> FairPool:
    """The process's compute pool, created once under a lock and shut down at exit."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = FairPool(workers=POOL_WORKERS, reserved=POOL_RESERVED)
            atexit.register(_pool.shutdown)
        return _pool


def run_on_session_loop(doc: Any, callback: Callable, *args: Any, what: str = "a result") -> None:
    """Run ``callback(*args)`` on ``doc``'s event loop at its next tick (callable from any
    thread: Bokeh documents may only be changed on their session's loop)."""

    def run() -> None:
        from panel.io.state import set_curdoc

        with set_curdoc(doc):
            callback(*args)

    try:
        doc.add_next_tick_callback(run)
    except Exception:  # the session is gone; nothing to update
        logging.getLogger("workbench.apps").debug(
            "session closed before %s arrived", what, exc_info=True
        )


def forget_js_callbacks(widgets: Any) -> None:
    """Take the page's widgets out of Panel's process-wide registry of JS callbacks.

    ``panel.links.Callback.registry`` maps a widget (weakly) to its callbacks, but a callback
    holds its ``args`` strongly: an ``EditableFloatSlider`` registers its text box with
    ``args={"slider": <its slider>}``, and the slider's watchers lead back to the text box, so
    the entry can never be dropped, and through the widget watchers it kept the closed page and
    its Study alive (found by ``benchmarks/loadtest.py --soak``; tests/test_load.py).
    """
    from panel.links import Callback

    for widget in widgets:
        for part in widget.select(pn.widgets.Widget):  # composites: their inner widgets too
            Callback.registry.pop(part, None)
