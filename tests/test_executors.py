"""Sweeps on a real Dask scheduler (a ``distributed.LocalCluster`` of 2 worker processes): the
same Dataset as in-process, batched tasks, a worker killed mid-sweep, Ctrl-C in the CLI, and a
sweep killed with SIGKILL that resumes from its disk cache without repeating work."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import xarray as xr

from tests.sweep_toy import SlowProduct, evaluations
from workbench import sweep

distributed = pytest.importorskip("distributed")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GRID = {"a": [1.0, 2.0, 3.0], "b": [1, 2, 3, 4]}
POINTS = [(a, b) for a in GRID["a"] for b in GRID["b"]]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def executor():
    from workbench.executors import DaskExecutor

    with DaskExecutor("local", workers=2) as ex:
        yield ex
    # a cluster it started is gone once the executor is closed
    assert ex.cluster.status.name == "closed"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process sweep every Dask sweep must reproduce."""
    return sweep.run(SlowProduct(), GRID, cache_dir=tmp_path_factory.mktemp("ref"), use_cache=False)


def _cached(cache: Path, study, point: tuple[float, int]) -> Path:
    """Where the sweep caches ``point`` (the key the sweep itself would compute)."""
    values = {**study.values(), "a": point[0], "b": point[1]}
    key = sweep.point_key(study.lab, values, type(study).code_version())
    return cache / study.lab / f"{key}.nc"


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_dask_sweep_equals_the_in_process_one(executor, reference, tmp_path, monkeypatch):
    submitted = []
    submit = executor.client.submit
    monkeypatch.setattr(
        executor.client, "submit", lambda *a, **k: submitted.append(a[2]) or submit(*a, **k)
    )
    on_dask = sweep.run(SlowProduct(), GRID, cache_dir=tmp_path, executor=executor)
    xr.testing.assert_identical(on_dask, reference)
    assert len(list((tmp_path / "sweep-toy").glob("*.nc"))) == 12  # every point cached
    # 12 tasks on 2 workers: batches of ceil(12 / 8) = 2, never one Dask task per point
    assert [len(batch) for batch in submitted] == [2] * 6
    assert sorted(i for batch in submitted for i, _task in batch) == list(range(12))


def test_a_killed_worker_loses_no_finished_point(executor, reference, tmp_path):
    study = SlowProduct(sleep=0.3, log=str(tmp_path / "evaluations.log"))
    cache = tmp_path / "cache"
    client = executor.client
    victim, finished_before_kill = [], {}

    def kill_a_worker_mid_sweep(done, _total):
        if done >= 2 and not victim:  # the first batch is back, the others are running
            victim.append(sorted(client.scheduler_info()["workers"])[0])
            for point in POINTS:
                path = _cached(cache, study, point)
                if path.exists():
                    finished_before_kill[point] = path.stat().st_mtime_ns
            threading.Thread(target=_kill, args=(client, victim[0]), daemon=True).start()

    result = sweep.run(
        study, GRID, cache_dir=cache, executor=executor, progress=kill_a_worker_mid_sweep
    )
    xr.testing.assert_identical(result, reference)
    assert victim and victim[0] not in client.scheduler_info()["workers"]  # it did die
    assert len(finished_before_kill) >= 2
    counts = collections.Counter(evaluations(study.log))
    assert set(counts) == set(POINTS)  # the sweep completed
    for point, mtime in finished_before_kill.items():
        assert counts[point] == 1  # a point finished before the kill never ran again ...
        assert _cached(cache, study, point).stat().st_mtime_ns == mtime  # ... nor was rewritten
    # the nanny restarts the worker; wait so later tests see two workers again
    _wait_for(lambda: executor.workers() == 2, 30, "the worker to restart")


def _kill(client, worker: str) -> None:
    try:
        client.run(os._exit, 1, workers=[worker])
    except Exception:  # the worker dies before it can answer: that is the point
        pass


def _assert_cluster_goes_idle(executor, log) -> None:
    """The scheduler drops every task and no evaluation starts any more."""
    scheduler = executor.cluster.scheduler
    _wait_for(lambda: not scheduler.tasks, 10, "the scheduler to drop the sweep's tasks")
    time.sleep(0.5)  # longer than one point (0.3 s): a cancelled batch stops after it
    started = len(evaluations(log))
    time.sleep(0.5)
    assert len(evaluations(log)) == started


def test_a_failing_task_stops_the_sweep_and_cancels_the_rest(executor, tmp_path):
    study = SlowProduct(sleep=0.3, log=str(tmp_path / "evaluations.log"), fail_at=1.0)
    grid = {"a": [1.0, 2.0, 3.0, 4.0], "b": [1, 2, 3, 4, 5]}  # 20 tasks: batches of 3
    with pytest.raises(RuntimeError, match="toy failure at a=1"):
        sweep.run(study, grid, cache_dir=tmp_path, executor=executor)
    _assert_cluster_goes_idle(executor, study.log)
    assert len(evaluations(study.log)) < 20  # the rest of the grid was never run


def test_a_recorded_ctrl_c_stops_the_sweep_even_if_python_swallowed_it(executor, tmp_path):
    """The CLI's SIGINT handler records Ctrl-C in an event; if the KeyboardInterrupt itself was
    lost (raised inside a weakref callback), the executor still stops on the event."""
    study = SlowProduct(sleep=0.3, log=str(tmp_path / "evaluations.log"))
    grid = {"a": [1.0, 2.0, 3.0, 4.0], "b": [1, 2, 3, 4, 5]}
    executor.interrupt = threading.Event()
    try:
        with pytest.raises(KeyboardInterrupt):
            sweep.run(
                study,
                grid,
                cache_dir=tmp_path,
                executor=executor,
                progress=lambda done, _total: done and executor.interrupt.set(),
            )
    finally:
        executor.interrupt = None
    _assert_cluster_goes_idle(executor, study.log)
    assert len(evaluations(study.log)) < 20


TOY_CLI = textwrap.dedent(
    """
    import sys
    from tests.sweep_toy import SlowProduct
    from workbench import cli
    from workbench.labs import LabInfo, registry
    registry()["sweep-toy"] = LabInfo.from_study(SlowProduct)
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def test_ctrl_c_in_the_cli_cancels_the_sweep_on_the_cluster(executor, tmp_path):
    log, cache = tmp_path / "evaluations.log", tmp_path / "cache"
    args = ["sweep", "sweep-toy", "--set", "a=" + ",".join(str(a) for a in range(1, 11))]
    args += ["--set", "b=1,2,3,4", "--set", "sleep=0.3", "--set", f"log={log}"]
    args += ["--out", str(tmp_path / "out.nc"), "--cache-dir", str(cache), "--quiet"]
    args += ["--scheduler", executor.cluster.scheduler_address]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", TOY_CLI, *args], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(lambda: len(list(cache.glob("*/*.nc"))) >= 2, 60, "the first cached points")
        started_at_ctrl_c = len(evaluations(log))
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not (tmp_path / "out.nc").exists()
    scheduler = executor.cluster.scheduler
    _wait_for(lambda: not scheduler.tasks, 10, "the scheduler to drop the sweep's tasks")
    time.sleep(0.7)  # longer than one point: a cancelled batch stops after its current point
    started = len(evaluations(log))
    # 40 points in batches of 5: without cancellation each of the 2 running batches would go
    # on for up to 4 more points; with it, at most one point per worker starts in the race
    # between the signal and the cancel message.
    assert started - started_at_ctrl_c <= 2
    time.sleep(0.5)
    assert len(evaluations(log)) == started  # nothing runs any more for the cancelled sweep


def test_a_sigkilled_sweep_resumes_without_repeating_work(tmp_path, reference):
    log, cache = tmp_path / "evaluations.log", tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from tests.sweep_toy import SlowProduct
        from workbench import sweep
        sweep.run(SlowProduct(sleep=0.2, log={str(log)!r}), {GRID!r}, cache_dir={str(cache)!r})
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT
    )
    try:
        _wait_for(lambda: len(list(cache.glob("*/*.nc"))) >= 4, 60, "the first cached points")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    study = SlowProduct(sleep=0.2, log=str(log))
    cached = {p for p in POINTS if _cached(cache, study, p).exists()}
    assert 4 <= len(cached) < 12
    for point in cached:  # every cache file present is a whole, readable point (atomic writes)
        xr.load_dataset(_cached(cache, study, point), engine="h5netcdf")
    ran_before = len(evaluations(log))

    result = sweep.run(study, GRID, cache_dir=cache)
    rerun = evaluations(log)[ran_before:]
    assert sorted(rerun) == sorted(set(POINTS) - cached)  # only the missing points, once each
    xr.testing.assert_identical(result, reference)


def test_the_scheduler_comes_from_the_flag_then_the_environment(monkeypatch):
    from workbench.executors import SCHEDULER_ENV, DaskExecutor, resolve_scheduler
    from workbench.study import StudyInputError

    monkeypatch.delenv(SCHEDULER_ENV, raising=False)
    assert resolve_scheduler(None) is None  # in-process by default
    with pytest.raises(StudyInputError, match="DASK_SCHEDULER_ADDRESS is not set"):
        resolve_scheduler("env")
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://10.0.0.1:8786")
    assert resolve_scheduler(None) == resolve_scheduler("env") == "tcp://10.0.0.1:8786"
    assert resolve_scheduler("local") == "local"  # the flag wins
    with pytest.raises(StudyInputError, match="tcp://host:8786, got 'nonsense'"):
        DaskExecutor("nonsense")
