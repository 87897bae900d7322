"""A toy Study importable by Dask workers and subprocesses (sweep and executor tests).

Each evaluation appends a line to ``$SWEEP_TOY_LOG`` (when set), so tests can count exactly which
points ran, and sleeps ``$SWEEP_TOY_SLEEP`` seconds so a test can act mid-sweep.
"""

from __future__ import annotations

import os
import time

import numpy as np
import param
import xarray as xr

from workbench.study import Study


class SlowProduct(Study):
    lab = "sweep-toy"
    a = param.Number(1.0, bounds=(0, 100), label="a")
    b = param.Integer(1, bounds=(0, 100), label="b")

    def evaluate(self) -> xr.Dataset:
        log = os.environ.get("SWEEP_TOY_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{self.a},{self.b}\n")
        time.sleep(float(os.environ.get("SWEEP_TOY_SLEEP", "0")))
        ds = xr.Dataset({"y": ((), float(self.a * self.b)), "z": (("k",), np.arange(3.0) * self.b)})
        ds["y"].attrs["units"] = "1"
        ds["z"].attrs["units"] = "1"
        return ds
