"""Streaming a generator's items into a lab page, a batch per tick (a mixin of LabDashboard).

:meth:`StreamingMixin.start_stream` runs a generator (policy iteration, Krylov iterations, a
layer-by-layer flow) on the shared worker pool and hands the items to the page in batches on a
periodic callback, so a curve grows live without the event loop ever waiting on the
computation. A newer stream, :meth:`StreamingMixin.stop_stream` or a closed tab stops the old
one: its cancel event stops the generator at its next checkpoint, its queued task never starts,
and its drain stops itself. Without a session (tests, notebooks) the items arrive in one batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from panel.io.callbacks import PeriodicCallback

from apps import fair_pool, shell
from apps.sessions import worker_pool
from workbench.study import Cancelled, StudyInputError, cancellable

log = logging.getLogger("workbench.apps")


class StreamingMixin:
    """Needs from the dashboard: ``_doc``, ``_closed``, ``status``, ``stream_period_ms``."""

    _stream_generation: int = 0
    _stream_callback: Any = None

    # --- streaming ----------------------------------------------------------------------------
    def start_stream(
        self,
        items: Callable[[], Iterator[Any]],
        on_items: Callable[[list[Any]], None],
        seconds: float | None = None,
    ) -> None:
        """Run the generator ``items()`` off the loop; ``on_items(batch)`` gets what arrived
        since the last tick (on the loop). A newer stream or a closed tab stops this one.
        ``seconds`` estimates the whole stream (quick streams take the pool's quick lane)."""
        self.stop_stream()
        self._stream_generation += 1
        generation = self._stream_generation
        if self._doc is None:
            with self.status.guard("streaming", timed=False, clear=False):
                on_items(list(items()))
            return
        inbox: queue.Queue = queue.Queue()
        done = object()

        cancel = threading.Event()
        self._stream_cancel = cancel

        def produce() -> None:
            try:
                with shell.collect_notes() as notes, cancellable(cancel):
                    for item in items():
                        if generation != self._stream_generation or self._closed:
                            return
                        inbox.put(item)
                for note in notes:
                    inbox.put(_Note(note))
            except Cancelled:
                return
            except Exception as exc:
                inbox.put(_Failure(exc))
            finally:
                inbox.put(done)

        own: dict[str, Any] = {}

        def drain() -> None:
            if generation != self._stream_generation or self._closed:
                # Stale: stop itself. Panel 1.9 restarts a PeriodicCallback stopped before the
                # page connected, and stop_stream(generation) no longer reaches a stale one.
                return own["callback"].stop()
            batch, finished = [], False
            while True:
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
                if item is done:
                    finished = True
                elif isinstance(item, _Failure) and isinstance(item.error, StudyInputError):
                    self.status.warn(str(item.error))
                elif isinstance(item, _Failure):
                    log.error("stream failed", exc_info=item.error)
                    self.status.error("the live computation failed (details in the server log)")
                elif isinstance(item, _Note):
                    self.status.note([item.text])
                else:
                    batch.append(item)
            if batch and generation == self._stream_generation:
                with self.status.guard("streaming", timed=False, clear=False):
                    on_items(batch)
            if finished:
                self.stop_stream(generation)

        self._stream_future = worker_pool().submit(
            produce, owner=fair_pool.owner_key(self), seconds=seconds
        )
        own["callback"] = self._stream_callback = start_periodic(drain, self.stream_period_ms)

    def stop_stream(self, generation: int | None = None) -> None:
        if generation is not None and generation != self._stream_generation:
            return
        if self._stream_callback is not None:
            self._stream_callback.stop()
            self._stream_callback = None
        if generation is None:
            self._stream_generation += 1
            cancel = getattr(self, "_stream_cancel", None)
            if cancel is not None:
                cancel.set()
            future = getattr(self, "_stream_future", None)
            if future is not None:
                future.cancel()  # still queued: never started


def start_periodic(callback: Callable[[], None], period_ms: int) -> PeriodicCallback:
    """``pn.state.add_periodic_callback`` without Panel's busy bookkeeping on every tick
    (``background``): that flag is process-wide and was followed by every page (see
    :class:`apps.shell.HouseTemplate`). Session-scoped all the same: started inside a session,
    it is a callback of that document, which Bokeh drops when the session ends."""
    periodic = PeriodicCallback(callback=callback, period=period_ms, background=True)
    periodic.start()
    return periodic


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Note:
    def __init__(self, text: str) -> None:
        self.text = text
