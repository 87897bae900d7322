"""A toy lab for testing the dashboard base class (apps/lab_app.py) on its own.

It is not under ``workbench.labs``, so it is never registered or served by ``workbench serve``.
"""

from __future__ import annotations

import threading
import time

import holoviews as hv
import numpy as np
import panel as pn
import param
import xarray as xr

from apps.lab_app import LabDashboard
from workbench.study import Study, StudyInputError, checkpoint, warn_user

#: Names of the threads that ran ``compute`` (tests check it is never the event loop's).
COMPUTE_THREADS: list[str] = []
#: Delays whose computation ran to the end (a superseded one may still finish on its thread).
FINISHED: list[float] = []


class ToyStudy(Study):
    lab = "toy"
    title = "Toy lab"
    scale = param.Number(1.0, bounds=(0.1, 10.0), step=0.1, label="scale s", doc="Multiplies y.")
    points = param.Integer(
        10, bounds=(2, 1000), softbounds=(2, 100), label="points n", doc="Samples of y."
    )
    kind = param.Selector(
        objects={"Sine": "sin", "Cosine": "cos"}, default="sin", label="curve", doc="Which curve."
    )
    delay = param.Number(0.0, bounds=(0.0, 5.0), label="delay (s)", doc="Simulated heavy work.")

    def validate(self) -> None:
        if self.points * self.scale > 500:
            raise StudyInputError("points n × scale s must be at most 500: lower either")

    def evaluate(self) -> xr.Dataset:
        COMPUTE_THREADS.append(threading.current_thread().name)
        deadline = time.perf_counter() + self.delay
        while time.perf_counter() < deadline:  # heavy work in small steps, as lab loops do
            checkpoint()
            time.sleep(0.01)
        FINISHED.append(self.delay)
        x = np.linspace(0.0, 1.0, self.points)
        if self.scale > 5:
            warn_user("scales above 5 saturate the toy detector")
        y = self.scale * getattr(np, self.kind)(x)
        ds = xr.Dataset({"y": (("x",), y)}, coords={"x": x})
        ds["y"].attrs.update(units="1", long_name="toy signal")
        return ds


class ToyDashboard(LabDashboard):
    study_class = ToyStudy
    cheap = ("kind",)
    explanation = "**What you see.** y = s · sin(x) or s · cos(x)."

    def render(self, result: xr.Dataset) -> None:
        self.result = result
        if hasattr(self, "pane"):
            self.pane.object = self.curve()

    def update_cheap(self, changed: set[str]) -> None:
        x = self.result["x"].values
        self.result = self.result.assign(
            y=("x", self.study.scale * getattr(np, self.study.kind)(x))
        )
        self.pane.object = self.curve()

    def curve(self):
        return hv.Curve((self.result["x"].values, self.result["y"].values), "x", "y").opts(
            responsive=True, height=300, title=f"{self.study.kind}, s = {self.study.scale:g}"
        )

    def plots(self):
        self.pane = pn.pane.HoloViews(self.curve(), sizing_mode="stretch_width", height=320)
        return self.pane

    def figure(self):
        return self.curve()


if __name__ == "__main__":  # python -m tests.toy_lab PORT: serve the toy page
    import sys

    pn.serve({"toy": ToyDashboard.create_app}, port=int(sys.argv[1]), show=False)
