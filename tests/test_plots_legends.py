"""Every line on a histogram has a legend entry (Bokeh Spans have none, so markers are curves)."""

from __future__ import annotations

import numpy as np
import pytest

hv = pytest.importorskip("holoviews")


def test_histogram_markers_have_legend_entries_and_span_the_bars():
    from workbench import plots

    hv.extension("bokeh", logo=False)
    samples = np.random.default_rng(0).standard_normal(500)
    fig = plots.distribution(samples, xlabel="x", markers={"theory": 0.1, "sample mean": -0.05})
    rendered = hv.render(fig)
    labels = [item.label["value"] for item in rendered.legend[0].items]
    assert labels == ["theory", "sample mean"]
    density, _ = np.histogram(samples, bins=40, density=True)
    for curve in list(fig)[1:]:
        xs, ys = curve.dframe().iloc[:, 0], curve.dframe().iloc[:, 1]
        assert xs.nunique() == 1 and ys.min() == 0 and ys.max() >= density.max()
