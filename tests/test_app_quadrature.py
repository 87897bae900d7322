"""Quadrature dashboard: server-side tests (the page built and rendered as a session would) that
check what the page shows against independent references (the lab brief's numbers, library runs
made outside the page), and one real-browser test (marker ``ui``)."""

from __future__ import annotations

import html

import numpy as np
import pytest

pytest.importorskip("panel")

from bokeh.document import Document  # noqa: E402
from bokeh.models import ColumnDataSource, Span  # noqa: E402

from apps.quadrature import QuadratureDashboard  # noqa: E402
from workbench.labs import quadrature as quad  # noqa: E402


def _rendered(dashboard):
    dashboard.plots_area.get_root(Document())
    return dashboard


def _columns(pane):
    """Float columns of the Bokeh data sources a pane has sent to the page."""
    out = []
    for _ref, (plot, _model) in pane._plots.items():
        for source in plot.state.select({"type": ColumnDataSource}):
            for values in source.data.values():
                arr = np.asarray(values)
                if arr.dtype.kind == "f":
                    out.append(arr.copy())
    return out


def _title(pane):
    (plot, _model), *_ = pane._plots.values()
    return plot.state.title.text


def _marker_x(pane):
    (plot, _model), *_ = pane._plots.values()
    spans = plot.state.select({"type": Span})
    return [s.location for s in spans]


@pytest.fixture
def dash(cache_dir):
    return _rendered(QuadratureDashboard())


def test_widgets_come_from_the_study_with_names_shown(dash):
    for name, widget in dash.widgets.items():
        p = dash.study.param[name]
        assert widget.name == p.label
        bounds = getattr(p, "bounds", None)
        if bounds and getattr(widget, "start", None) is not None:
            assert bounds[0] <= widget.start and widget.end <= bounds[1]
    assert dash.widgets["rule"].options["Bayesian quadrature"] == "bq"
    assert dash.widgets["nu"].options["7/2"] == 3.5


def _pi_curve(pane, length):
    """The y column of the live PI curve as drawn: the float column of the run's length that is
    not the iteration axis (1, 2, …)."""
    drawn = [c for c in _columns(pane) if c.size == length]
    curves = [c for c in drawn if not np.array_equal(c, np.arange(1, length + 1))]
    assert curves, "the PI curve is not drawn"
    return curves


def test_n_change_redraws_pi_and_moves_markers_to_n_minus_1(dash):
    # references made outside the page: the library's converged runs at N = 10 and N = 5
    runs = {n: quad.run_policy_iteration("lqr", n=n) for n in (10, 5)}
    for n in (10, 5):
        dash.request({"n": n})
        final = float(runs[n].final_weight_error)
        size = runs[n].sizes["iteration"]
        # the PI curve on the page ends at the library's converged error at this N
        assert any(c[-1] == final for c in _pi_curve(dash.panes["pi"], size)), n
        # the dotted floor (from the shared N-sweep) is the same converged error
        assert dash.floor() == final
    # brief: trapezoid 1.1776e-3 (N = 5) vs 2.3246e-4 (N = 10), each to 3 %
    assert float(runs[5].final_weight_error) == pytest.approx(1.1776e-3, rel=0.03)
    assert float(runs[10].final_weight_error) == pytest.approx(2.3246e-4, rel=0.03)
    # the N plots have N − 1 on x: the marker for N = 5 sits at 4 (issue 8: it was drawn at N)
    assert _marker_x(dash.panes["sweep"]) == [4.0]
    assert _marker_x(dash.panes["wce"]) == [4.0]
    dash.request({"n": 30})
    assert _marker_x(dash.panes["sweep"]) == [29.0]  # on the axis (N − 1 = 1..29)
    assert "N = 30" in _title(dash.panes["pi"])  # the live title follows N (it went stale)


def test_rule_change_to_bq_with_the_authors_jitter(dash):
    dash.request({"rule": "bq", "jitter": 1e-8})
    assert not dash.status.alert.visible
    # brief: BQ ν = 7/2, jitter 1e-8, M = 20, N = 10: 6.2e-6 (3 %: two printed digits)
    assert dash.run["records"][-1].weight_error == pytest.approx(6.2e-6, rel=0.03)
    assert "BQ Σw − T" in _title(dash.panes["weights"])


def test_partial_link_is_applied_fully_and_exports_agree(cache_dir):
    d = _rendered(QuadratureDashboard(query={"nu": "0.5", "rule": "bq", "n": "5"}))
    assert not d.status.alert.visible
    assert (d.study.nu, d.study.rule, d.study.n) == (0.5, "bq", 5)
    reference = quad.run_policy_iteration("lqr", rule="bq", nu=0.5, n=5)  # made outside the page
    np.testing.assert_array_equal(
        [r.weight_error for r in d.run["records"]], reference.weight_error
    )
    assert "BQ Matérn ν = 1/2, N = 5" in _title(d.panes["pi"])
    exported = d.dataset()
    assert (exported.attrs["n"], exported.attrs["nu"], exported.attrs["rule"]) == (5, 0.5, "bq")
    assert d.link_values() == {"nu": "0.5", "rule": "bq", "n": "5"}
    other = QuadratureDashboard(query={"rule": "bq", "n": "12"})
    assert other.dataset().attrs["n"] == 12


def test_initial_gain_and_tol_are_read_back_from_the_link(cache_dir):
    d = QuadratureDashboard(query={"initial_gain": "0.5,1,1", "tol": "0.0001"})
    assert d.study.initial_gain == (0.5, 1.0, 1.0) and d.study.tol == 1e-4
    assert d.widgets["initial_gain"].value == "0.5, 1, 1" and d.widgets["tol"].value == 1e-4
    reference = quad.run_policy_iteration("lqr", initial_gain=(0.5, 1, 1), tol=1e-4)
    np.testing.assert_array_equal(
        [r.weight_error for r in d.run["records"]], reference.weight_error
    )
    assert d.link_values() == {"initial_gain": "0.5,1,1", "tol": "0.0001"}


def test_old_links_open_the_same_view(cache_dir):
    """Links written before the base class: tuples in parentheses, every knob spelled out."""
    old = {
        "system": "lqr",
        "rule": "bq",
        "kernel": "matern",
        "nu": "3.5",
        "n": "15",
        "lengthscale": "0.3",
        "jitter": "1e-08",
        "intervals": "0",
        "max_iter": "15",
        "initial_gain": "(0.0, 0.0, 0.0)",
    }
    d = QuadratureDashboard(query=old)
    assert not d.status.alert.visible
    assert (d.study.rule, d.study.n, d.study.jitter) == ("bq", 15, 1e-8)
    # brief: BQ ν = 7/2, jitter 1e-8, M = 20, N = 15: 3.3e-6 (plateau), to 3 %
    assert d.run["records"][-1].weight_error == pytest.approx(3.3e-6, rel=0.03)


REFUSED = [
    ("n", 1000, "samples per interval N must be between 2 and 30"),
    ("n", -3, "samples per interval N must be between 2 and 30"),
    ("max_iter", 1000, "max PI iterations must be between 1 and 100"),
    ("nu", 0.7, "Matérn smoothness ν must be one of"),
    ("jitter", -1.0, "jitter on K's diagonal must be between 0 and 0.01"),
    ("rule", "foo", "quadrature rule must be one of"),
]


@pytest.mark.slow
def test_refused_values_alert_stays_through_streaming_and_snaps_back(dash):
    """Issue 8: the alert for a bad value vanished within a tick while PI streamed, and the
    widget kept the refused value."""
    for knob, value, message in REFUSED:
        before = getattr(dash.study, knob)
        assert not dash.request({knob: value})
        shown = html.escape(message)  # every text is escaped before it is shown
        assert dash.status.alert.visible and shown in dash.status.alert.object, knob
        dash.restart()  # streaming ticks (a replay streams a whole run) must not wipe the alert
        assert dash.status.alert.visible and shown in dash.status.alert.object, knob
        assert getattr(dash.study, knob) == before and dash.widgets[knob].value == before
        dash.request({"n": 6 if dash.study.n != 6 else 7})  # a change by the user: alert goes
        assert not dash.status.alert.visible


def test_length_scale_box_rejections_are_explained(dash):
    for typed in (0.0, -1.0, 50.0):
        dash._on_widget("lengthscale", typed)
        assert "length-scale ℓ must be between 0.01 and 10" in dash.status.alert.object
        assert f"got {typed}" in dash.status.alert.object
        assert dash.widgets["lengthscale"].value == 0.3 and dash.study.lengthscale == 0.3


def test_informational_note_never_rolls_back_the_change(dash):
    """Issue 7 §2 defect 1: after rule = Bayesian, N = 30, length-scale 3 the note about the
    Cholesky fallback shows, and the Study (so the URL, titles and exports) keeps those values."""
    dash.request({"rule": "bq"})
    dash.request({"n": 30})
    dash.request({"lengthscale": 3.0})
    assert dash.status.alert.visible and dash.status.alert.alert_type == "info"
    assert "Cholesky failed" in dash.status.alert.object
    assert (dash.study.rule, dash.study.n, dash.study.lengthscale) == ("bq", 30, 3.0)
    # the N plots were redrawn for ℓ = 3 with the marker still at this N (x = N − 1)
    assert dash.result["sweep"].attrs["lengthscale"] == 3.0
    assert _marker_x(dash.panes["sweep"]) == [29.0] and _marker_x(dash.panes["wce"]) == [29.0]
    assert "N = 30" in _title(dash.panes["pi"]) and "N = 30" in _title(dash.panes["weights"])
    assert dash.link_values() == {"rule": "bq", "n": "30", "lengthscale": "3"}
    assert dash.dataset().attrs["lengthscale"] == 3.0
    reference = quad.run_policy_iteration("lqr", rule="bq", n=30, lengthscale=3.0)
    assert dash.run["records"][-1].weight_error == float(reference.final_weight_error)


def test_wiener_kernel_runs_and_equals_the_trapezoid_rule(dash):
    """Issue 8: the Wiener kernel always failed ("needs a > 0"). Its BQ weights are the
    trapezoid's (brief), so PI must match a trapezoid run with the same M = 20 (rtol 1e-6: the
    least-squares fit amplifies 1e-11 weight differences by cond(Θ))."""
    dash.request({"rule": "bq", "kernel": "wiener"})
    assert not dash.status.alert.visible
    assert dash.widgets["kernel"].value == "wiener" and dash.study.kernel == "wiener"
    trapezoid = quad.run_policy_iteration("lqr", rule="trapezoid", intervals=20)
    np.testing.assert_allclose(
        [r.weight_error for r in dash.run["records"]], trapezoid.weight_error, rtol=1e-6
    )


def test_initial_gain_box(dash):
    dash.widgets["initial_gain"].value = "0, 0, -5"  # A − BK₀ has an unstable eigenvalue
    assert "not admissible" in dash.status.alert.object
    assert dash.study.initial_gain == (0.0, 0.0, 0.0)
    assert dash.widgets["initial_gain"].value == "0, 0, 0"  # snapped back
    dash.widgets["initial_gain"].value = "<script>alert(1)</script>"
    assert "<script>" not in dash.status.alert.object  # escaped, never markup
    dash.widgets["initial_gain"].value = "1, 1, 1"
    assert not dash.status.alert.visible and dash.study.initial_gain == (1.0, 1.0, 1.0)
    first = dash.run["records"][0]
    gain_star = quad.lqr_optimum()[0].ravel()
    assert first.gain_error == pytest.approx(np.linalg.norm(first.gain - gain_star))


@pytest.mark.slow
def test_sin_system_gains_target_the_known_optimum(dash):
    dash.request({"system": "sin", "rule": "exact"})
    errors = [r.weight_error for r in dash.run["records"]]
    assert errors[0] == pytest.approx(0.644, abs=0.0005)  # brief: 0.644 → 7.9e-4 → rounding
    assert errors[1] == pytest.approx(7.9e-4, abs=0.05e-4) and errors[-1] < 1e-8
    drawn = _columns(dash.panes["gain"])
    for target in (0.5, 0.0, 1.0):  # brief: ω* = [0.5, 0, 1] (V* = ½x₁² + x₂²)
        assert any(np.allclose(col, target) for col in drawn if col.size == 2)


@pytest.mark.slow
def test_sessions_share_the_sweep_and_exports_round_trip(cache_dir, tmp_path):
    import holoviews as hv
    import xarray as xr

    first, second = QuadratureDashboard(), QuadratureDashboard()
    assert first.result["sweep"] is second.result["sweep"]
    assert first.run is not second.run
    # issue 7 §2 defect 6: what sessions share is read-only, so one cannot corrupt another's view
    for shared in (first.result["sweep"], first.result["reference"]):
        for name, var in shared.data_vars.items():
            assert not var.values.flags.writeable, name
    with pytest.raises(ValueError, match="read-only"):
        first.result["sweep"]["weight_error"].values[0, 0] = 0.0
    ds = first.dataset()
    ds.to_netcdf(tmp_path / "q.nc", engine="h5netcdf")
    back = xr.load_dataset(tmp_path / "q.nc", engine="h5netcdf")
    np.testing.assert_array_equal(back["weight_error"], ds["weight_error"])
    hv.save(_rendered(first).figure(), tmp_path / "q.html", backend="bokeh")
    assert "Bokeh" in (tmp_path / "q.html").read_text()[:20000]


@pytest.mark.ui
def test_browser_n_slider_redraws_and_updates_the_link(page, server_url):
    from tests.browser import plot_signature, press_slider, serious, wait_for_plots, wait_for_redraw

    page.goto(server_url + "/quadrature", timeout=120_000)  # the server may still be warming
    wait_for_plots(page, 6)
    page.wait_for_timeout(3000)  # the first policy-iteration run streams in
    assert not serious(page.console_errors), page.console_errors
    before = plot_signature(page)
    press_slider(page, 0, "ArrowLeft", 5)  # N is the first slider
    wait_for_redraw(page, before)
    page.wait_for_function("() => /[?&]n=5(&|$)/.test(window.location.search)", timeout=30_000)
    assert "Traceback" not in page.content()
    assert not serious(page.console_errors), page.console_errors
