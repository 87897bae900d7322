"""Server-side app tests: build each dashboard as a session would, turn a knob, and check that
the data behind the plots changed the way the science says it should."""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.document import Document

pytest.importorskip("panel")


def _render(dashboard):
    """Render the plots into a Bokeh document, as the server does for a session."""
    return dashboard.plots_area.get_root(Document())


def _rendered_columns(pane, column: str | None = None) -> list[np.ndarray]:
    """Float arrays in the Bokeh data sources a pane has sent to the page (only ``column``'s,
    when given)."""
    from bokeh.models import ColumnDataSource

    out = []
    for _ref, (plot, _model) in pane._plots.items():
        for source in plot.state.select({"type": ColumnDataSource}):
            for name, values in source.data.items():
                arr = np.asarray(values)
                if (column is None or name == column) and arr.dtype.kind == "f":
                    out.append(arr.copy())
    return out


@pytest.fixture
def quad_dashboard():
    from apps.quadrature import QuadratureDashboard

    dashboard = QuadratureDashboard()
    _render(dashboard)
    return dashboard


def test_quadrature_n_change_updates_pi_curve(quad_dashboard):
    d = quad_dashboard
    err_n10 = d.records[-1].weight_error
    drawn_before = _rendered_columns(d.panes["pi"])
    d.apply({"n": 5})
    err_n5 = d.records[-1].weight_error
    drawn_after = _rendered_columns(d.panes["pi"])
    assert any(np.isclose(col, err_n5).any() for col in drawn_after)  # the plot shows the new run
    assert not any(np.isclose(col, err_n5).any() for col in drawn_before)
    # Trapezoid error ∝ (N − 1)^-2: (9/4)² ≈ 5.06 between N = 5 and N = 10 (brief: 1.1776e-3
    # vs 2.3246e-4).
    assert err_n5 / err_n10 == pytest.approx(1.1776e-3 / 2.3246e-4, rel=0.02)
    assert d.n_marker.x == 5.0


def test_quadrature_rule_change_updates_plots(quad_dashboard):
    d = quad_dashboard
    d.apply({"rule": "bq", "jitter": 1e-8})
    assert not d.status.alert.visible
    final = d.records[-1].weight_error
    assert final == pytest.approx(6.2e-6, rel=0.03)  # brief: BQ ν = 7/2, jitter 1e-8, N = 10
    (plot, _model), *_ = d.panes["weights"]._plots.values()
    assert "BQ Σw − T" in plot.state.title.text  # the rendered title reports the BQ weight sum


def test_quadrature_bad_input_keeps_last_run(quad_dashboard):
    d = quad_dashboard
    before = [r.weight_error for r in d.records]
    d.apply({"lengthscale": -1.0})
    assert d.status.alert.visible and "lengthscale" in d.status.alert.object.lower()
    assert d.study.lengthscale == 0.3
    assert [r.weight_error for r in d.records] == before


def test_quadrature_sin_system_streams_weights(quad_dashboard):
    d = quad_dashboard
    d.apply({"system": "sin", "rule": "exact"})
    errors = [r.weight_error for r in d.records]
    assert errors[0] == pytest.approx(0.644, abs=0.001)
    assert errors[-1] < 1e-8  # Newton: quadratic convergence with exact integrals
    weights = d.dmaps["gain"].last
    assert weights is not None


def test_quadrature_non_admissible_gain_is_explained(quad_dashboard):
    from workbench.labs import quadrature as quad

    d = quad_dashboard
    d.initial_gain.value = "0, 0, -5"  # A − BK₀ then has an eigenvalue with positive real part
    assert d.status.alert.visible and "not admissible" in d.status.alert.object
    assert d.study.initial_gain == (0.0, 0.0, 0.0)
    d.initial_gain.value = "1, 1, one"
    assert "three numbers" in d.status.alert.object
    d.initial_gain.value = "1, 1, 1"  # stabilizing: PI starts from it
    assert not d.status.alert.visible
    assert d.records[0].gain_error == pytest.approx(
        np.linalg.norm(np.ravel(d.records[0].gain) - np.ravel(quad.lqr_optimum()[0]))
    )


def test_quadrature_cholesky_fallback_is_a_visible_note(quad_dashboard):
    d = quad_dashboard
    d.apply({"rule": "bq", "jitter": 0.0, "n": 30, "lengthscale": 3.0})
    assert d.status.alert.visible and d.status.alert.alert_type == "info"
    assert "Cholesky failed" in d.status.alert.object
    assert np.isfinite(d.records[-1].weight_error)


def test_sessions_share_the_expensive_panels(cache_dir):
    """A second visitor (or a reloaded demo) reuses the first one's grid computations (the KDE
    lab's version of this test is in tests/test_app_kde.py)."""
    from apps.quadrature import QuadratureDashboard

    q1, q2 = QuadratureDashboard(), QuadratureDashboard()
    assert q1.sweep is q2.sweep and q1.records is not q2.records
