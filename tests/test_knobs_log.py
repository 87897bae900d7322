"""Knobs spanning many decades are shown on a log scale (server-side, no browser).

The fractional lab's GMRES tolerance runs over [1e-14, 1e-2]: a linear slider there offered only
its two ends (every step of 1e-2/100 away from 1e-14 is already above 1e-4).
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("panel")

import panel as pn  # noqa: E402
import param  # noqa: E402

from apps.fractional import FractionalDashboard  # noqa: E402
from apps.knobs import link_text, log_stops  # noqa: E402
from workbench.labs import fractional as fr  # noqa: E402


def test_log_stops_cover_every_decade_within_the_bounds():
    stops = log_stops(fr.FractionalStudy, "tol")
    lo, hi = fr.FractionalStudy.param["tol"].bounds
    assert stops[0] == lo and stops[-1] == hi
    exponents = [math.log10(v) for v in stops]
    assert exponents == pytest.approx(list(range(-14, -1)), abs=1e-12)  # one stop per decade
    two = log_stops(fr.FractionalStudy, "tol", per_decade=2)
    assert len(two) == 2 * len(stops) - 1 and set(stops) <= set(two)
    assert all(
        b / a == pytest.approx(10**0.5, rel=0.05) for a, b in zip(two, two[1:], strict=False)
    )

    class Jitter(param.Parameterized):
        jitter = param.Number(0.0, bounds=(0.0, 1.0))

    with pytest.raises(ValueError, match="positive"):
        log_stops(Jitter, "jitter")  # a log scale cannot reach 0


def test_tolerance_slider_offers_decades_and_a_move_applies_that_tol():
    dash = FractionalDashboard()
    widget = dash.widgets["tol"]
    assert isinstance(widget, pn.widgets.DiscreteSlider)
    assert "log scale" in widget.name
    assert {1e-8, 1e-6, 1e-12} <= set(widget.options)
    assert widget.value == fr.FractionalStudy.param["tol"].default == 1e-10
    # Every stop is written to the URL as short, exact text.
    assert [link_text(v) for v in widget.options][4:8] == ["1e-10", "1e-09", "1e-08", "1e-07"]

    _release(widget, 1e-6)
    assert dash.study.tol == 1e-6
    assert dash.link_values()["tol"] == "1e-06"
    # The live solve restarted at the new tolerance: it stops at the first residual <= 1e-6,
    # so its last residual is below 1e-6 and the one before it above.
    assert dash.history[-1] <= 1e-6 < dash.history[-2]
    loose = len(dash.history)
    _release(widget, 1e-12)
    assert dash.study.tol == 1e-12 and dash.history[-1] <= 1e-12
    assert len(dash.history) > loose  # a tighter tolerance takes more iterations


def _release(slider, value):
    """What a released slider handle sends: value, then value_throttled (constant to Python)."""
    slider.value = value
    with param.edit_constant(slider):
        slider.value_throttled = value


@pytest.mark.parametrize("text, stop", [("5e-9", 1e-8), ("2e-9", 1e-9), ("1e-6", 1e-6)])
def test_a_link_between_stops_takes_the_stop_the_slider_shows(text, stop):
    """One state: ``?tol=5e-9`` is 1e-8 in the Study, the slider and the URL (it was 5e-9 in
    the Study while the slider showed 1e-9)."""
    dash = FractionalDashboard(query={"tol": text})
    assert dash.study.tol == stop
    assert dash.widgets["tol"].value == stop
    assert dash.link_values()["tol"] == link_text(stop)
