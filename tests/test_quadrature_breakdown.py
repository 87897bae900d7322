"""Policy iteration that runs out of excitation stops in plain words, never with a LinAlgError.

At M = 200 intervals, 40 iterations and tolerance 0 the closed-loop LQR state decays to ~1e-50
along its slowest mode; the least-squares matrix Θ then has numerical rank 5 of 6 and
``pinv`` gave a minimum-norm ω whose policy destabilized the loop: the state overflowed and the
SVD raised ``numpy.linalg.LinAlgError`` at iteration 40 (reproduced on the code before this
fix, through the Study and through the page). The sin system reached |x| ~ 1e-157, its squares
underflowed, ω became NaN and the next ODE solve ran for over 10 minutes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from workbench.labs import quadrature as quad
from workbench.study import StudyInputError

HEAVY = {"intervals": 200, "max_iter": 40, "tol": 0.0}


def _run(**knobs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = quad.QuadratureStudy(**knobs).evaluate()
    notes = [str(w.message) for w in caught if issubclass(w.category, quad.QuadratureWarning)]
    return ds, notes


def test_lqr_run_that_loses_excitation_stops_and_keeps_its_good_iterations():
    ds, notes = _run(system="lqr", rule="trapezoid", **HEAVY)
    # Θ loses rank at iteration 11 (singular values measured: σ₆/σ₁ = 2.7e-13 at 10, 2e-16 at 11)
    assert int(ds.n_iterations) == 10 and int(ds.stopped_early) == 1 and int(ds.converged) == 0
    assert np.all(np.isfinite(ds.weight_error.values))
    # the kept iterations reached the quadrature floor of the brief (2.3246e-4 at N = 10)
    assert float(ds.weight_error.min()) == pytest.approx(2.3246e-4, rel=1e-3)
    (note,) = notes
    assert "stopped at iteration 11 of 40" in note and "numerical rank 5 of 6" in note
    assert "10 iterations before it are kept" in note


def test_sin_run_whose_state_underflows_stops_instead_of_hanging():
    ds, notes = _run(system="sin", rule="exact", **HEAVY)
    assert int(ds.n_iterations) == 23 and int(ds.stopped_early) == 1
    assert float(ds.weight_error[-1]) < 1e-10  # exact integrals: ω* to rounding before the stop
    assert len(notes) == 1 and "underflow" in notes[0]


def test_a_run_that_converges_or_hits_the_cap_is_not_flagged():
    ds, notes = _run(system="lqr", rule="trapezoid")
    assert int(ds.converged) == 1 and int(ds.stopped_early) == 0 and notes == []
    ds, notes = _run(system="lqr", rule="trapezoid", max_iter=3, tol=0.0)
    assert int(ds.n_iterations) == 3 and int(ds.stopped_early) == 0 and notes == []


def test_the_n_sweep_says_it_once_per_rule():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = quad.QuadratureStudy(**HEAVY).evaluate(n=[2, 3, 4, 10])
    notes = [str(w.message) for w in caught if issubclass(w.category, quad.QuadratureWarning)]
    assert ds.stopped_early.values.tolist() == [1, 1, 1, 1]
    assert len(notes) == 1 and "N = 2–4, 10" in notes[0]


@pytest.mark.parametrize("system, needed", [("lqr", 6), ("sin", 3)])
def test_fewer_intervals_than_value_weights_are_refused_before_any_work(system, needed):
    study = quad.QuadratureStudy(system=system)
    with pytest.raises(StudyInputError, match=f"at least {needed}"):
        study.checked_update(intervals=needed - 1)
    assert study.intervals == 0  # nothing half-applied
    study.checked_update(intervals=needed)


def test_the_page_shows_a_note_and_keeps_the_knobs_and_a_finite_view():
    """The request path of the page (inline here: no server session)."""
    from tests.test_model_graph import dashboard_class

    dash = dashboard_class("quadrature")()
    assert dash.request(dict(HEAVY))
    assert {k: getattr(dash.study, k) for k in HEAVY} == HEAVY  # not rolled back
    alert = dash.status.alert
    assert alert.visible and alert.alert_type == "info"  # a note, not an error or a traceback
    assert "policy iteration stopped" in alert.object.lower()
    assert "numerical rank 5 of 6" in alert.object and "Traceback" not in alert.object
    records = dash.run["records"]
    assert 5 <= len(records) < 40
    assert all(np.isfinite(r.weight_error) for r in records)
    assert np.all(np.isfinite(dash.result["sweep"]["weight_error"].values))
