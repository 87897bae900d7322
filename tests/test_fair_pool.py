"""apps/fair_pool.py: sessions served in turn, quick work never stuck behind heavy work."""

from __future__ import annotations

import threading
import time

import pytest

from apps.fair_pool import FairPool

WAIT = 10.0


def _blocker(gate: threading.Event, started: list, name: str):
    def run():
        started.append(name)
        assert gate.wait(WAIT)
        return name

    return run


def _until(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def pool_factory():
    pools = []

    def make(**kwargs):
        pools.append(FairPool(**kwargs))
        return pools[-1]

    yield make
    for pool in pools:
        pool.shutdown()


def test_a_session_with_many_tasks_does_not_make_another_wait_for_all_of_them(pool_factory):
    pool = pool_factory(workers=1, reserved=0)
    gate, order = threading.Event(), []
    first = pool.submit(_blocker(gate, order, "A0"), owner="A")
    _until(lambda: order == ["A0"])
    queued_a = [pool.submit(order.append, f"A{k}", owner="A") for k in range(1, 6)]
    queued_b = pool.submit(order.append, "B1", owner="B")
    gate.set()
    for future in [first, *queued_a, queued_b]:
        future.result(WAIT)
    # FIFO would run B1 last (7th); in turn, B1 runs right after A's running task.
    assert order[:3] == ["A0", "A1", "B1"], order
    assert order[3:] == ["A2", "A3", "A4", "A5"]


def test_quick_work_finds_the_reserved_thread_while_heavy_work_fills_the_rest(pool_factory):
    pool = pool_factory(workers=3, reserved=1, quick_seconds=1.0)
    gate, started = threading.Event(), []
    heavy = [pool.submit(_blocker(gate, started, f"H{k}"), owner=f"S{k}") for k in range(4)]
    _until(lambda: len(started) == 2)
    time.sleep(0.1)
    assert len(started) == 2  # heavy work holds at most workers - reserved threads
    quick = pool.submit(lambda: "done", owner="student", seconds=0.2)
    assert quick.result(timeout=2.0) == "done"  # not behind H0..H3
    no_estimate = pool.submit(lambda: "late", owner="other")  # no estimate: heavy
    time.sleep(0.1)
    assert not no_estimate.done()
    gate.set()
    assert [f.result(WAIT) for f in heavy] == ["H0", "H1", "H2", "H3"]
    assert no_estimate.result(WAIT) == "late"


def test_a_future_cancelled_while_it_waits_never_runs(pool_factory):
    pool = pool_factory(workers=1, reserved=0)
    gate, ran = threading.Event(), []
    running = pool.submit(_blocker(gate, ran, "first"), owner="A")
    _until(lambda: ran == ["first"])
    stale = pool.submit(ran.append, "stale", owner="A")
    assert stale.cancel()
    newer = pool.submit(ran.append, "newer", owner="A")
    gate.set()
    running.result(WAIT), newer.result(WAIT)
    assert ran == ["first", "newer"]
    assert pool.waiting() == 0


def test_errors_reach_the_future_and_the_worker_survives(pool_factory):
    pool = pool_factory(workers=1, reserved=0)

    def broken():
        raise ValueError("bad knob")

    with pytest.raises(ValueError, match="bad knob"):
        pool.submit(broken, owner="A").result(WAIT)
    assert pool.submit(lambda: 7, owner="A").result(WAIT) == 7


def test_shutdown_cancels_waiting_work_and_refuses_more(pool_factory):
    pool = pool_factory(workers=1, reserved=0)
    gate, ran = threading.Event(), []
    running = pool.submit(_blocker(gate, ran, "running"), owner="A")
    _until(lambda: ran == ["running"])
    waiting = pool.submit(ran.append, "waiting", owner="B")
    pool.shutdown()
    gate.set()
    assert running.result(WAIT) == "running"  # a running task finishes
    assert waiting.cancelled()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(ran.append, "after", owner="C")


@pytest.mark.parametrize("workers, reserved", [(0, 0), (2, 2), (2, -1)])
def test_bad_sizes_are_refused(workers, reserved):
    with pytest.raises(ValueError, match="workers"):
        FairPool(workers=workers, reserved=reserved)
