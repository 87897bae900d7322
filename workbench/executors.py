"""Sweep executors beyond the in-process default: a Dask cluster (an existing scheduler or a
``LocalCluster``).

The executor contract (:class:`workbench.sweep.Executor`): ``map_unordered(fn, tasks)`` yields
``(task_index, fn(tasks[task_index]))`` as tasks finish, in any order. The sweep keys results by
that index and writes each finished point to its disk cache in the client process as it arrives,
so a lost worker or a killed client loses no finished point.

Batch rule
----------
The sweep already makes one task per combination of the non-vectorized knobs (every value of a
vectorized knob goes in one task). :class:`DaskExecutor` groups ``T`` such tasks into Dask tasks
of ``clamp(ceil(T / (4 · W)), 1, 32)`` sweep tasks each, ``W`` being the number of workers:

* about four Dask tasks per worker, so a slow point or a lost worker does not leave the others
  idle (load balancing), and a large sweep never becomes one tiny Dask task per point (the
  scheduler's ~1 ms per-task overhead is paid once per batch);
* at most 32 sweep tasks per Dask task, so the progress bar moves at least every 32 tasks even on
  a 100,000-point sweep, and a worker lost mid-batch costs at most 32 tasks of rework.

Example: 12 tasks on 2 workers → 6 Dask tasks of 2; 1,000 tasks → 32 Dask tasks of 32 (the last
of 8).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from workbench.study import StudyInputError

#: Environment variable read when no scheduler is given (Dask's own name for it).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Dask tasks per worker the batch rule aims for (load balancing).
BATCHES_PER_WORKER = 4
#: The most sweep tasks in one Dask task (progress granularity, rework after a lost worker).
MAX_BATCH = 32
#: Seconds between checks for finished batches and for a recorded Ctrl-C.
POLL_S = 0.05
#: Schemes ``distributed.Client`` accepts for an address.
SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


def batch_size(tasks: int, workers: int) -> int:
    """Sweep tasks per Dask task: ``clamp(ceil(tasks / (4 · workers)), 1, 32)``.

    >>> batch_size(12, 2), batch_size(1000, 2), batch_size(3, 2), batch_size(100, 0)
    (2, 32, 1, 25)
    """
    per_batch = math.ceil(tasks / (BATCHES_PER_WORKER * max(1, workers)))
    return max(1, min(per_batch, MAX_BATCH))


class BatchCancelled(Exception):  # noqa: N818 - reads as what happened
    """Raised on a worker when the batch it is running was cancelled (nobody reads it)."""


def _cancelled_on_worker() -> bool:
    """True when this worker has been told to cancel the Dask task it is running.

    Dask cannot interrupt a running task; checking between sweep tasks makes Ctrl-C stop a batch
    after its current point instead of after the whole batch. Outside a worker, False.
    """
    try:
        from distributed import get_worker  # noqa: PLC0415

        worker = get_worker()
        task = worker.state.tasks.get(worker.get_current_task())
    except Exception:  # not on a worker, or a distributed version without this state
        return False
    return task is not None and task.state == "cancelled"


def _run_batch(fn: Callable[[Any], Any], batch: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """Runs on a worker: the batch's tasks, each result tagged with its task index."""
    results = []
    for index, task in batch:
        if results and _cancelled_on_worker():
            # Raise rather than return a partial batch: a partial result must never reach a
            # sweep as if it were whole.
            raise BatchCancelled(f"cancelled after {len(results)} of {len(batch)} tasks")
        results.append((index, fn(task)))
    return results


def resolve_scheduler(scheduler: str | None) -> str | None:
    """The scheduler to use: ``scheduler`` if given, else ``$DASK_SCHEDULER_ADDRESS``, else None.

    ``"env"`` reads the environment variable explicitly and refuses when it is unset.
    """
    if scheduler == "env":
        value = os.environ.get(SCHEDULER_ENV, "").strip()
        if not value:
            raise StudyInputError(f"--scheduler env: {SCHEDULER_ENV} is not set")
        return value
    if scheduler:
        return scheduler.strip()
    return os.environ.get(SCHEDULER_ENV, "").strip() or None


class DaskExecutor:
    """Run sweep tasks on Dask; use it as a context manager so a cluster it started is closed.

    Parameters
    ----------
    scheduler
        ``"tcp://host:8786"``: connect to a running ``dask scheduler``. ``"local"``: start a
        ``distributed.LocalCluster`` (worker processes, one thread each, no dashboard), closed
        by :meth:`close`. ``None`` or ``"env"``: ``$DASK_SCHEDULER_ADDRESS``, else ``"local"``.
    workers
        Worker processes of a local cluster (ignored for an existing scheduler).
    connect_timeout
        Seconds to wait for an existing scheduler before giving up with a message.
    interrupt
        An event a Ctrl-C handler sets: the sweep then stops as if interrupted, even when
        Python swallowed the KeyboardInterrupt itself (see :mod:`workbench.cli`).
    """

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int = 2,
        connect_timeout: float = 10.0,
        interrupt: threading.Event | None = None,
    ) -> None:
        self.interrupt = interrupt
        try:
            from distributed import Client, LocalCluster  # noqa: PLC0415 - heavy, import late
        except ImportError as exc:
            raise StudyInputError(
                "Dask sweeps need the distributed package: pip install 'dask[distributed]'"
            ) from exc
        address = resolve_scheduler(scheduler) or "local"
        self.cluster = None
        if address == "local":
            if not 1 <= workers <= (os.cpu_count() or 1) * 4:
                raise StudyInputError(
                    f"a local Dask cluster takes 1 to {(os.cpu_count() or 1) * 4} workers, "
                    f"got {workers}"
                )
            self.cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            try:
                self.client = Client(self.cluster)
            except BaseException:
                self.cluster.close()
                raise
            return
        if not address.startswith(SCHEMES):
            raise StudyInputError(
                f"--scheduler must be 'local' or an address like tcp://host:8786, got {address!r}"
            )
        try:
            self.client = Client(address, timeout=f"{connect_timeout}s")
        except (OSError, TimeoutError) as exc:
            raise StudyInputError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect (the scheduler then drops this client's work) and stop a local cluster."""
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def workers(self) -> int:
        """Workers connected to the scheduler now."""
        return len(self.client.scheduler_info().get("workers", {}))

    def batch_size(self, tasks: int) -> int:
        """:func:`batch_size` for the workers connected now."""
        return batch_size(tasks, self.workers())

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(task_index, fn(task))`` as batches finish on the cluster.

        A batch lost with its worker is rerun by Dask on another worker. Leaving early (an
        exception in a task or in the caller, Ctrl-C, closing the generator) cancels every
        batch still queued or running, so nothing keeps computing for a sweep that is gone.
        """
        from distributed import as_completed  # noqa: PLC0415 - heavy, import late

        indexed = list(enumerate(tasks))
        size = self.batch_size(len(indexed))
        batches = [indexed[i : i + size] for i in range(0, len(indexed), size)]
        pending = {self.client.submit(_run_batch, fn, batch, pure=False) for batch in batches}
        finished = as_completed(list(pending))
        try:
            while not finished.is_empty():
                if self.interrupt is not None and self.interrupt.is_set():
                    raise KeyboardInterrupt  # Ctrl-C seen by the CLI's signal handler
                arrived = finished.next_batch(block=False)
                if not arrived:
                    time.sleep(POLL_S)  # polled, so a recorded Ctrl-C is seen within POLL_S
                    continue
                for future in arrived:
                    results = future.result()  # a task's error is raised here
                    pending.discard(future)
                    future.release()  # the cluster may free the batch's results now
                    yield from results
        finally:
            if pending:
                self.client.cancel(list(pending))
