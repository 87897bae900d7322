"""The page says in advance when a setting will be slow (issue 8), from each Study's estimate.

:meth:`Study.estimated_seconds` is a formula in the sizes calibrated on the serving machine; the
checks here are of orders of magnitude measured now, not of the calibration's numbers: a setting
the estimate calls ten times slower than the defaults really is several times slower, the
estimated and measured ratios agree within a factor of 2.5, and only the slow one gets a note.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("panel")

from apps.knobs import SLOW_NOTE_SECONDS, slow_notes  # noqa: E402
from workbench.labs import registry  # noqa: E402
from workbench.study import Study  # noqa: E402


def test_a_study_without_an_estimate_gets_no_note():
    class Quiet(Study):
        pass

    assert Quiet().estimated_seconds() is None and slow_notes(Quiet()) == []


@pytest.mark.parametrize("lab", ["kde", "criticality", "fractional", "quadrature", "kvcache"])
def test_every_lab_estimates_its_defaults(lab):
    study = registry()[lab].study()
    seconds = study.estimated_seconds()
    assert isinstance(seconds, float) and 0.1 < seconds < 60


@pytest.mark.parametrize(
    "lab, bigger",
    [
        ("kde", {"alpha": 0.6}),  # n = e^(αd) 7 times larger
        ("kde", {"n_queries": 800}),
        ("criticality", {"networks": 20_000}),
        ("criticality", {"width": 64}),
        ("fractional", {"degree": 8}),
        ("quadrature", {"tol": 0.0, "max_iter": 100}),  # every PI iteration runs
        ("quadrature", {"system": "sin", "tol": 0.0, "max_iter": 60}),
    ],
)
def test_a_bigger_setting_is_estimated_slower(lab, bigger):
    cls = registry()[lab].study
    assert cls(**bigger).estimated_seconds() > cls().estimated_seconds()


@pytest.mark.slow
def test_a_setting_estimated_ten_times_slower_is_announced_and_really_slow():
    """Criticality: the Monte-Carlo dominates (networks × width² × L_mc weights)."""
    from apps.criticality import CriticalityDashboard

    dash = CriticalityDashboard()
    default = dash.study.estimated_seconds()
    assert default < SLOW_NOTE_SECONDS

    start = time.perf_counter()
    assert dash.request({"seed": 1})  # the default sizes, new weights: a full recompute
    fast = time.perf_counter() - start
    assert not dash.status.alert.visible  # no note for a quick change

    slow_knobs = {"networks": 20_000, "mc_depth": 12}  # 12x the weights of the defaults
    estimate = type(dash.study)(**slow_knobs).estimated_seconds()
    assert estimate / default > 10 and estimate > SLOW_NOTE_SECONDS
    start = time.perf_counter()
    assert dash.request(slow_knobs)
    slow = time.perf_counter() - start
    alert = dash.status.alert
    assert alert.visible and alert.alert_type == "info" and "takes about" in alert.object

    measured = slow / fast
    assert measured > 5, (fast, slow)  # really an order of magnitude slower
    assert 1 / 2.5 < measured / (estimate / default) < 2.5, (fast, slow, default, estimate)

    assert dash.request({"networks": 2000, "mc_depth": 8})  # back: quick, and the note goes
    assert not dash.status.alert.visible
