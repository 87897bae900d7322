"""A toy Study importable by Dask workers and subprocesses (sweep and executor tests).

Its knobs ``sleep`` (seconds per evaluation, so a test can act mid-sweep) and ``log`` (a file that
gets one line ``a,b`` per evaluation, so a test can count exactly which points ran) travel with
every task, so they reach worker processes, restarted ones included, without any environment
set-up. Neither changes the result.
"""

from __future__ import annotations

import time

import numpy as np
import param
import xarray as xr

from workbench.study import Study


class SlowProduct(Study):
    lab = "sweep-toy"
    a = param.Number(1.0, bounds=(0, 100), label="a")
    b = param.Integer(1, bounds=(0, 100), label="b")
    sleep = param.Number(0.0, bounds=(0, 5), label="seconds per evaluation")
    log = param.String("", label="evaluation log file")
    fail_at = param.Number(-1.0, label="a value of a that raises")

    def evaluate(self) -> xr.Dataset:
        if self.log:
            with open(self.log, "a") as fh:  # one short append per line: atomic on POSIX
                fh.write(f"{self.a:g},{self.b}\n")
        time.sleep(self.sleep)
        if self.a == self.fail_at:
            raise RuntimeError(f"toy failure at a={self.a:g}")
        ds = xr.Dataset({"y": ((), float(self.a * self.b)), "z": (("k",), np.arange(3.0) * self.b)})
        ds["y"].attrs["units"] = "1"
        ds["z"].attrs["units"] = "1"
        return ds


def evaluations(log) -> list[tuple[float, int]]:
    """The ``(a, b)`` points logged so far, in order."""
    try:
        text = open(log).read()
    except FileNotFoundError:
        return []
    return [(float(a), int(b)) for a, b in (line.split(",") for line in text.splitlines())]
