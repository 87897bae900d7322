"""A compute pool shared fairly by the sessions of one server, with a lane kept for quick work.

A plain ``ThreadPoolExecutor`` serves its queue first come, first served. In a class of thirty
that let a few long computations (the KDE lab's KL curve at a million points, a quadrature
policy-iteration stream) hold every thread while the quick changes of everyone else queued
behind them: a fractional preconditioner change, whose GMRES solve takes well under a second,
got no plot update in 120 s (``benchmarks/loadtest.py --sessions 30 --think 5``, twice,
2026-11-28).

:class:`FairPool` changes two rules, and nothing else (the work still runs on threads, where
NumPy, BLAS and the compiled kernels release the GIL):

* **One queue per session, served in turn.** A free worker takes the next task of the session
  that has the fewest tasks running, the longest-waiting such session first; so a session that
  queued ten computations gets one thread, not ten, while others wait.
* **A lane for quick work.** A task whose caller estimates more than :attr:`quick_seconds`
  (or gives no estimate) is *heavy*; heavy tasks may hold at most ``workers - reserved``
  threads at once, so a quick task always finds a thread within the time of other quick tasks.

``submit`` returns a :class:`concurrent.futures.Future`. A future cancelled while it waits is
never run (a newer knob change cancels the stale one's future as well as its cancel event).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Task:
    owner: Hashable
    heavy: bool
    fn: Callable[..., Any]
    args: tuple
    future: Future = field(default_factory=Future)


class FairPool:
    """``workers`` threads serving per-owner queues in turn, ``reserved`` of them kept from
    heavy tasks (an estimate over ``quick_seconds``, or none)."""

    def __init__(
        self,
        workers: int = 4,
        reserved: int = 1,
        quick_seconds: float = 1.0,
        name: str = "lab-compute",
    ) -> None:
        if workers < 1 or not 0 <= reserved < workers:
            raise ValueError(
                f"need workers >= 1 and 0 <= reserved < workers, got {workers}, {reserved}"
            )
        self.workers = workers
        self.reserved = reserved
        self.quick_seconds = quick_seconds
        self._lock = threading.Condition()
        #: Owner -> its waiting tasks; the order of keys is the order owners started waiting.
        self._waiting: OrderedDict[Hashable, deque[_Task]] = OrderedDict()
        self._running: dict[Hashable, int] = {}
        self._heavy_running = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{k}", daemon=True)
            for k in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        owner: Hashable = None,
        seconds: float | None = None,
    ) -> Future:
        """Queue ``fn(*args)`` for ``owner`` (a session); ``seconds`` is the caller's estimate."""
        heavy = seconds is None or seconds > self.quick_seconds
        task = _Task(owner, heavy, fn, args)
        with self._lock:
            if self._closed:
                raise RuntimeError("the compute pool is shut down")
            self._waiting.setdefault(owner, deque()).append(task)
            self._lock.notify_all()
        return task.future

    def waiting(self) -> int:
        """Tasks queued and not yet started (diagnostics)."""
        with self._lock:
            return sum(len(queue) for queue in self._waiting.values())

    def shutdown(self) -> None:
        """Cancel what waits and let the threads end (running tasks finish on their own)."""
        with self._lock:
            self._closed = True
            for queue in self._waiting.values():
                for task in queue:
                    task.future.cancel()
            self._waiting.clear()
            self._lock.notify_all()

    # --- the workers --------------------------------------------------------------------------
    def _next(self) -> _Task | None:
        """The task to start now (called with the lock held), or None."""
        heavy_allowed = self._heavy_running < self.workers - self.reserved
        best: tuple[int, int, Hashable, _Task] | None = None
        for order, (owner, queue) in enumerate(self._waiting.items()):
            while queue and queue[0].future.cancelled():
                queue.popleft()  # cancelled while waiting: never run
            task = next((t for t in queue if heavy_allowed or not t.heavy), None)
            if task is None or task.future.cancelled():
                continue
            rank = (self._running.get(owner, 0), order)
            if best is None or rank < best[:2]:
                best = (*rank, owner, task)
        for owner in [o for o, q in self._waiting.items() if not q]:
            del self._waiting[owner]
        if best is None:
            return None
        owner, task = best[2], best[3]
        queue = self._waiting[owner]
        queue.remove(task)
        if queue:
            self._waiting.move_to_end(owner)  # served: it waits behind the others again
        else:
            del self._waiting[owner]
        return task

    def _work(self) -> None:
        while True:
            with self._lock:
                task = self._next()
                while task is None:
                    if self._closed:
                        return
                    self._lock.wait()
                    task = self._next()
                if not task.future.set_running_or_notify_cancel():
                    continue
                self._running[task.owner] = self._running.get(task.owner, 0) + 1
                self._heavy_running += task.heavy
            try:
                result = task.fn(*task.args)
            except BaseException as exc:  # noqa: BLE001 - handed to the future's owner
                task.future.set_exception(exc)
            else:
                task.future.set_result(result)
            finally:
                with self._lock:
                    self._running[task.owner] -= 1
                    if not self._running[task.owner]:
                        del self._running[task.owner]
                    self._heavy_running -= task.heavy
                    self._lock.notify_all()


_owner_ids = itertools.count()


def owner_key(obj: Any) -> Hashable:
    """A key naming ``obj``'s session in the pool without keeping ``obj`` alive."""
    key = getattr(obj, "_pool_owner", None)
    if key is None:
        key = next(_owner_ids)
        try:
            obj._pool_owner = key
        except AttributeError:
            return id(obj)
    return key
