"""Deferred panels of every session, built one at a time on the server's event loop.

A served lab page goes out with its panels loading (:class:`apps.live.LiveFigures`); each
panel's Bokeh plot is built later, 0.3-0.5 s of event loop apiece on this 2-core machine. When
every page scheduled its own panels, thirty pages opened together put ~180 such builds in the
loop's queue, and a knob change waited behind all of them (``benchmarks/loadtest.py --think 5``:
p95 86 s, 2026-11-28).

Here one process-wide queue holds the pages with panels still to show, and at most one build
is scheduled on the loop at any time: a knob change waits for one panel build at most, the
pages take turns (everyone's first panel before anyone's second), and a page that closed is
dropped.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

from panel.io.state import set_curdoc

log = logging.getLogger("workbench.apps")


class Deferred(Protocol):
    """A page with panels to show: ``show_one()`` shows one, True while more are left."""

    closed: bool

    def show_one(self) -> bool: ...


_waiting: deque[tuple[Any, Deferred]] = deque()  # (document, page)
_scheduled: Deferred | None = None  # the page whose build is scheduled
_urgent: set[int] = set()  # id() of pages hurried while their build was scheduled


def enqueue(doc: Any, page: Deferred) -> None:
    """Queue ``page`` (whose document is ``doc``); call on the event loop."""
    _waiting.append((doc, page))
    _schedule_next()


def hurry(page: Deferred) -> None:
    """Show ``page``'s next panel before the other pages' (call on the event loop): a knob
    moved on it changed a panel it has not shown yet, and its user is waiting for it."""
    for i, (doc, queued) in enumerate(_waiting):
        if queued is page:
            del _waiting[i]
            _waiting.appendleft((doc, queued))
            return
    _urgent.add(id(page))  # its build is scheduled now: it goes first again after it


def release(page: Deferred) -> None:
    """``page`` closed (call on the event loop): if its build is the one scheduled, go on with
    the next page. Bokeh drops a destroyed session's pending next-tick callbacks, so that
    build would never run and the queue would wait for it forever, holding every page queued
    behind it (found as dashboards left alive by tests/test_load.py's soak, 2026-11-29)."""
    global _scheduled
    _urgent.discard(id(page))  # its id may be reused by a page opened later
    if _scheduled is page:
        _scheduled = None
        _schedule_next()


def _schedule_next() -> None:
    global _scheduled
    while _waiting and _scheduled is None:
        doc, page = _waiting.popleft()
        if page.closed:
            continue

        def run(doc: Any = doc, page: Deferred = page) -> None:
            global _scheduled
            if _scheduled is not page:
                return  # released meanwhile: its page closed (never queued again), queue moved on
            _scheduled = None
            try:
                with set_curdoc(doc):
                    more = not page.closed and page.show_one()
            except Exception:  # noqa: BLE001 - one page's failure must not stop the others
                log.exception("showing a deferred panel failed")
                more = False
            if more and id(page) in _urgent:
                _waiting.appendleft((doc, page))
            elif more:
                _waiting.append((doc, page))
            _urgent.discard(id(page))
            _schedule_next()

        try:
            doc.add_next_tick_callback(run)
        except Exception:  # noqa: BLE001 - the session is gone: drop its page
            log.debug("session closed before its panels were shown", exc_info=True)
            continue
        _scheduled = page


def waiting() -> int:
    """Pages with panels still to show (diagnostics and tests)."""
    return len(_waiting) + (_scheduled is not None)
