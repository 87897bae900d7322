"""Sweep executors beyond the in-process default: a Dask cluster (an existing scheduler or a
``LocalCluster``).

The executor contract (:class:`workbench.sweep.Executor`): ``map_unordered(fn, tasks)`` yields
``(task_index, fn(tasks[task_index]))`` as tasks finish, in any order. The sweep keys results by
that index and writes each finished point to its disk cache as it arrives, so a lost worker or a
killed client loses no finished point.

Batch rule: the sweep already makes one task per combination of the non-vectorized knobs (all
values of a vectorized knob go in one task). :class:`DaskExecutor` groups those tasks into
``ceil(len(tasks) / (4 · workers))``-sized batches, so every worker gets about four Dask tasks:
enough for load balancing and a moving progress bar, never one tiny Dask task per point.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from workbench.study import StudyInputError

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
BATCHES_PER_WORKER = 4


def _run_batch(fn: Callable[[Any], Any], batch: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    return [(index, fn(task)) for index, task in batch]


class DaskExecutor:
    """Run sweep tasks on Dask; use as a context manager so a cluster it started is closed.

    ``scheduler``: ``"tcp://host:8786"`` connects to a running ``dask scheduler``; ``"local"``
    starts a ``LocalCluster`` (processes, ``workers`` of them, one thread each, no dashboard);
    ``None`` reads ``DASK_SCHEDULER_ADDRESS`` and falls back to a local cluster.
    """

    def __init__(self, scheduler: str | None = None, workers: int = 2) -> None:
        try:
            from distributed import Client, LocalCluster  # noqa: PLC0415 - optional
        except ImportError as exc:
            raise StudyInputError(
                "Dask sweeps need the distributed package: pip install 'dask[distributed]'"
            ) from exc
        if scheduler in (None, "env"):
            scheduler = os.environ.get(SCHEDULER_ENV) or "local"
        address = scheduler
        self.cluster = None
        if address == "local":
            self.cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = Client(self.cluster)
        else:
            if not address.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
                raise StudyInputError(
                    f"--scheduler must be 'local' or an address like tcp://host:8786, got {address!r}"
                )
            try:
                self.client = Client(address, timeout="10s")
            except OSError as exc:
                raise StudyInputError(
                    f"cannot reach the Dask scheduler at {address}: {exc}"
                ) from exc

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def batch_size(self, tasks: int) -> int:
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        return max(1, math.ceil(tasks / (BATCHES_PER_WORKER * workers)))

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed  # noqa: PLC0415 - optional

        indexed = list(enumerate(tasks))
        size = self.batch_size(len(indexed))
        batches = [indexed[i : i + size] for i in range(0, len(indexed), size)]
        futures = [self.client.submit(_run_batch, fn, batch, pure=False) for batch in batches]
        try:
            for future in as_completed(futures):
                yield from future.result()
        except (KeyboardInterrupt, GeneratorExit):
            self.client.cancel(futures)  # Ctrl-C: nothing keeps running on the cluster
            raise
