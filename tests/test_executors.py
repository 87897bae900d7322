"""Sweeps on a real Dask scheduler (distributed.LocalCluster, 2 worker processes), and a sweep
killed with SIGKILL that resumes from its disk cache."""

from __future__ import annotations

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

from tests.sweep_toy import SlowProduct
from workbench import sweep

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

GRID = {"a": [1.0, 2.0, 3.0], "b": [1, 2, 3, 4]}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def executor():
    from workbench.executors import DaskExecutor

    with DaskExecutor("local", workers=2) as ex:
        yield ex


def test_dask_sweep_equals_the_in_process_one(executor, tmp_path):
    reference = sweep.run(SlowProduct(), GRID, cache_dir=tmp_path / "ref", use_cache=False)
    on_dask = sweep.run(SlowProduct(), GRID, cache_dir=tmp_path / "dask", executor=executor)
    xr.testing.assert_identical(on_dask, reference)
    assert len(list((tmp_path / "dask" / "sweep-toy").glob("*.nc"))) == 12  # every point cached


def test_tasks_are_batched_never_one_per_point(executor):
    assert executor.batch_size(12) == 2  # 12 tasks, 2 workers x 4 batches each
    assert executor.batch_size(1000) == 125


def test_a_killed_worker_loses_no_point(executor, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_TOY_SLEEP", "0.3")
    reference = sweep.run(SlowProduct(), GRID, cache_dir=tmp_path / "ref", use_cache=False)
    monkeypatch.delenv("SWEEP_TOY_SLEEP")
    client = executor.client
    client.run(lambda: os.environ.__setitem__("SWEEP_TOY_SLEEP", "0.3"))
    seen = []

    def kill_one_worker(done, _total):
        seen.append(done)
        if len(seen) == 2:  # the first points are back: kill a worker mid-sweep
            victim = sorted(client.scheduler_info()["workers"])[0]
            threading.Thread(target=_kill, args=(client, victim), daemon=True).start()

    result = sweep.run(
        SlowProduct(), GRID, cache_dir=tmp_path / "c", executor=executor, progress=kill_one_worker
    )
    xr.testing.assert_identical(result, reference)
    assert seen[-1] == 12
    client.run(lambda: os.environ.pop("SWEEP_TOY_SLEEP", None))


def _kill(client, worker: str) -> None:
    try:
        client.run(os._exit, 1, workers=[worker])
    except Exception:  # the worker dies before it can answer: that is the point
        pass


def test_a_sigkilled_sweep_resumes_without_repeating_work(tmp_path):
    log = tmp_path / "evaluations.log"
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        from tests.sweep_toy import SlowProduct
        from workbench import sweep
        sweep.run(SlowProduct(), {GRID!r}, cache_dir={str(cache)!r})
        """
    )
    env = dict(os.environ, SWEEP_TOY_LOG=str(log), SWEEP_TOY_SLEEP="0.25", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not (cache / "sweep-toy").exists() or len(list((cache / "sweep-toy").glob("*.nc"))) < 4:
        assert time.monotonic() < deadline and proc.poll() is None, "the sweep did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = log.read_text().splitlines()
    cached = list((cache / "sweep-toy").glob("*.nc"))
    assert 4 <= len(cached) < 12
    for path in cached:  # every file present is a whole, readable point (atomic writes)
        xr.load_dataset(path, engine="h5netcdf")
    os.environ["SWEEP_TOY_LOG"] = str(log)
    try:
        result = sweep.run(SlowProduct(), GRID, cache_dir=cache)
    finally:
        del os.environ["SWEEP_TOY_LOG"]
    rerun = log.read_text().splitlines()[len(before) :]
    done_before = {tuple(line.split(",")) for line in before[: len(cached)]}
    assert len(rerun) == 12 - len(cached)  # only the missing points ran
    assert not done_before & {tuple(line.split(",")) for line in rerun}
    reference = sweep.run(SlowProduct(), GRID, cache_dir=tmp_path / "ref", use_cache=False)
    xr.testing.assert_identical(result, reference)
