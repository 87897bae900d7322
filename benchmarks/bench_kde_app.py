"""Benchmark: server-side cost of moving the KDE dashboard's bandwidth slider.

Builds the dashboard (:class:`apps.kde.KDEDashboard`, on the LabDashboard base) as a browser
session would (rendered into a Bokeh document), then moves the bandwidth through 22 slider stops
through the same path as a slider move (``request``: validate, URL, ``update_cheap``) and times
each full update: evaluate the new h on the cached distance tables, move the live markers,
re-render the two per-h panels. For comparison it times the naive alternative a dashboard author
would first write: rebuild every HoloViews figure and hand it to the panes on each move. Budget
(issue): under 100 ms server-side at the default sizes.
Run: ``python benchmarks/bench_kde_app.py``. No assertions: this is a measurement.
"""

from __future__ import annotations

import os
import platform
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")


def main() -> None:
    from bokeh.document import Document

    from apps.kde import BANDWIDTH_STOPS, KDEDashboard
    from workbench import backend

    start = time.perf_counter()
    dashboard = KDEDashboard()
    dashboard.plots_area.get_root(Document())
    build = time.perf_counter() - start
    stops = [h for h in BANDWIDTH_STOPS if 0.3 <= h <= 2.5][::2][:24]
    dashboard.request({"bandwidth": stops[0]})  # warm caches the way a first move would

    def timed(fn, values):
        out = []
        for h in values:
            t0 = time.perf_counter()
            fn(h)
            out.append(1e3 * (time.perf_counter() - t0))
        return np.array(out)

    ours = timed(lambda h: dashboard.request({"bandwidth": h}), stops)

    def naive(h):
        dashboard.study.bandwidth = h
        dashboard.result.update(dashboard.study.at_bandwidth())
        for name in dashboard.panes:
            dashboard.panes[name].object = dashboard._figure(name)

    rebuilt = timed(naive, stops[:8])
    s = dashboard.study
    print(
        f"KDE dashboard, bandwidth move (d = {s.dim}, alpha = {s.alpha}, "
        f"n = {round(np.exp(s.alpha * s.dim)):,}, {s.n_queries} queries)"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores; backend: {backend.backend_name()}"
    )
    print(f"session build + first render                 {1e3 * build:8.0f} ms")
    print(
        f"bandwidth move (in-place markers)  median {np.median(ours):6.0f} ms   "
        f"p90 {np.percentile(ours, 90):6.0f} ms   over {ours.size} moves"
    )
    print(
        f"rebuild every figure (naive)       median {np.median(rebuilt):6.0f} ms   "
        f"p90 {np.percentile(rebuilt, 90):6.0f} ms   over {rebuilt.size} moves"
    )
    print(f"ratio naive / ours (median)        {np.median(rebuilt) / np.median(ours):6.1f}x")


if __name__ == "__main__":
    main()
