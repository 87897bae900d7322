"""KDE dashboard: server-side tests (the page built and rendered as a session would) checking the
science on the *rendered* data against independent references, and real-browser tests.

References: SciPy (cdist + logsumexp for the estimator, norm.logpdf for the true density) and
the corrected lab brief (shared/science/kde.md): ⟨Y₂⟩ = 0.640 / 0.385 / 0.258 / 0.150 at
h/h_G,eff = 0.6 / 0.8 / 0.9 / 1.0, and median(Z), mean log Z at α = 0.1, d = 100, n = 22,026.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("panel")

from bokeh.document import Document  # noqa: E402
from bokeh.models import ColumnDataSource  # noqa: E402

from apps import lab_app  # noqa: E402
from apps.kde import BANDWIDTH_STOPS, KDEDashboard  # noqa: E402
from tests.dashboards import assert_widgets_within_study  # noqa: E402
from workbench.labs import kde  # noqa: E402
from workbench.labs.kde import estimator  # noqa: E402

#: The brief's finite-d reference point: α = 0.1, d = 100 (n = e^10 = 22,026).
BRIEF_LINK = {"dim": "100", "alpha": "0.1"}


def _rendered(dashboard):
    """Render the plots into a Bokeh document (as the server does); the live markers attach."""
    dashboard.plots_area.get_root(Document())
    return dashboard


def _marker(dashboard, name):
    """(x, y) of a live marker as sent to the page (its Bokeh data source)."""
    model = dashboard.markers[name]._models[-1]
    if dashboard.markers[name].kind == "vline":  # a Bokeh Span
        return model.location, None
    return model.data["x"][0], model.data["y"][0]


def _columns(pane, column):
    out = []
    for _ref, (plot, _model) in pane._plots.items():
        for source in plot.state.select({"type": ColumnDataSource}):
            if column in source.data:
                out.append(np.asarray(source.data[column], dtype=float).copy())
    return out


@pytest.fixture
def dash(cache_dir):
    return _rendered(KDEDashboard())


def test_widgets_come_from_the_study(dash):
    assert_widgets_within_study(dash)
    assert lab_app.widget_range(dash.widgets["alpha"]) == (0.02, 3.0)  # was 0.05-2 in the widget
    assert lab_app.widget_range(dash.widgets["n_queries"]) == (8, 4096)  # was 16-1024
    assert dash.widgets["bandwidth"].options == list(BANDWIDTH_STOPS)
    assert dash.widgets["bandwidth"].value == dash.study.bandwidth == 1.0  # label = plots at start
    ratios = np.diff(np.log(BANDWIDTH_STOPS))
    assert ratios.max() < 0.05  # log scale: every step is under 5 % of h


def test_kl_marker_is_the_kl_of_an_independent_estimate(dash):
    """The marker's y is KL/d at the new h; recomputed here by brute force with SciPy."""
    from scipy.spatial.distance import cdist
    from scipy.special import logsumexp
    from scipy.stats import norm

    before = _columns(dash.panes["distribution"], "top")
    assert dash.request({"bandwidth": 0.6})
    assert not dash.status.alert.visible
    x, y = _marker(dash, "kl")
    s = dash.study
    sample = kde.make_data(s.dim, s.alpha, s.seed, s.n_queries)
    h, n, d = 0.6, len(sample.data), s.dim
    sq = cdist(sample.queries, sample.data, "sqeuclidean")
    log_hat = logsumexp(-sq / (2 * h * h), axis=1) - np.log(n) - d * np.log(h)
    log_hat -= 0.5 * d * np.log(2 * np.pi)
    log_true = norm.logpdf(sample.queries).sum(axis=1)
    assert x == 0.6
    assert y == pytest.approx(np.mean(log_true - log_hat) / d, rel=1e-9)
    # The brief: at d = 20, α = 0.5 the measured KL/d at h = 0.6 (~0.104) is far above the
    # d → ∞ theory (0.027): finite-size corrections dominate in the condensed regime.
    assert y > 2.5 * kde.kl_per_dim(0.6, 0.5)
    after = _columns(dash.panes["distribution"], "top")
    assert before and after and not np.array_equal(before[0], after[0])  # histogram redrawn


def test_lower_bandwidth_spreads_log_density(dash):
    """Condensation: at small h each estimate rests on a few points, so log ρ̂ varies much more
    across query points than at a CLT-regime h (where ρ̂ ≈ ρ ∗ K_h)."""
    assert dash.request({"bandwidth": 2.0})
    wide = np.std(dash.result["samples"][0])
    assert dash.request({"bandwidth": 0.4})
    narrow = np.std(dash.result["samples"][0])
    assert narrow > 2 * wide


def test_bandwidth_move_computes_no_new_distances(dash, monkeypatch):
    calls = []
    original = estimator.squared_distances
    monkeypatch.setattr(
        estimator, "squared_distances", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    for h in (1.3, 0.8, BANDWIDTH_STOPS[10]):
        assert dash.request({"bandwidth": h})
    assert calls == []
    assert _marker(dash, "heavy_tail")[0] == BANDWIDTH_STOPS[10]
    assert dash.player.value == BANDWIDTH_STOPS.index(BANDWIDTH_STOPS[10])  # player follows


def test_player_animates_the_bandwidth(dash):
    dash.player.value = BANDWIDTH_STOPS.index(1.0) - 6
    h = BANDWIDTH_STOPS[BANDWIDTH_STOPS.index(1.0) - 6]
    assert dash.study.bandwidth == h and dash.widgets["bandwidth"].value == h
    assert _marker(dash, "kl")[0] == h


@pytest.mark.slow
def test_participation_marker_matches_the_brief():
    """⟨Y₂⟩ at h/h_G,eff = 0.6/0.8/0.9/1.0, α = 0.1, d = 100: the brief's 0.640/0.385/0.258/0.150.

    One dataset with 200 queries scatters by about ± 0.02 (brief; measured here ± 0.015 over
    seeds 0-3), so the marker is averaged over three seeds (± 0.009) and compared within 0.03.
    """
    ratios, brief = (0.6, 0.8, 0.9, 1.0), (0.640, 0.385, 0.258, 0.150)
    d = _rendered(KDEDashboard(query=BRIEF_LINK))
    h_g_eff = float(kde.regime_thresholds(0.1, 100)["h_g"])  # SciPy ncx2 path, per the brief
    assert h_g_eff == pytest.approx(1.495, abs=5e-4)
    got = []
    for seed in (0, 1, 2):
        assert d.request({"seed": seed})
        row = []
        for r in ratios:
            assert d.request({"bandwidth": r * h_g_eff})
            x, y = _marker(d, "participation")
            assert x == pytest.approx(r * h_g_eff)
            row.append(y)
        got.append(row)
    np.testing.assert_allclose(np.mean(got, axis=0), brief, atol=0.03)


@pytest.mark.slow
def test_heavy_tail_panel_shows_median_and_mean_log_z():
    """The corrected brief at α = 0.1, d = 100, 600 datasets. Tolerances: 4 standard deviations
    of one 600-dataset estimate, measured here over 10 seeds (median: 0.005/0.023/0.013/0.0015
    at h/h_G,eff = 0.8/1.0/1.2/2.0; mean log Z: 0.052/0.024/0.009/0.0005), plus the rounding of
    the brief's printed digits."""
    d = _rendered(KDEDashboard(query=BRIEF_LINK))
    heavy = d.result["heavy"]
    at = {round(float(r), 2): i for i, r in enumerate(heavy["bandwidth_ratio"].values)}
    expect = {  # ratio: (median, sd, mean log Z, sd)
        0.8: (0.083, 0.005, -2.25, 0.052),
        1.0: (0.68, 0.023, -0.28, 0.024),
        1.2: (0.950, 0.013, -0.024, 0.009),
        2.0: (1.000, 0.0015, 0.0, 0.0005),
    }
    for ratio, (median, sd_m, mean_log, sd_l) in expect.items():
        i = at[ratio]
        assert heavy["z_median"][i] == pytest.approx(median, abs=4 * sd_m + 5e-4), ratio
        assert heavy["z_mean_log"][i] == pytest.approx(mean_log, abs=4 * sd_l + 5e-3), ratio
    # What the page shows is that Dataset: its median curve is among the rendered sources.
    rendered = _all_y(d.panes["heavy_tail"])
    for name in ("z_median", "z_mean_log"):
        want = heavy[name].values
        assert any(c.shape == want.shape and np.allclose(c, want) for c in rendered), name


def _all_y(pane):
    out = []
    for _ref, (plot, _model) in pane._plots.items():
        for source in plot.state.select({"type": ColumnDataSource}):
            for values in source.data.values():
                arr = np.asarray(values)
                if arr.dtype.kind == "f" and arr.ndim == 1:
                    out.append(arr)
    return out


def test_data_knob_recomputes_and_an_oversize_is_refused_before_any_work(dash, monkeypatch):
    before = np.asarray(dash.result["sweep"]["kl_per_dim"]).copy()
    assert dash.request({"alpha": 0.3})
    assert dash.result["sweep"].attrs["alpha"] == 0.3
    assert not np.allclose(dash.result["sweep"]["kl_per_dim"], before)
    drawn = []
    monkeypatch.setattr(kde.data, "_data", lambda *a: drawn.append(a))
    # α = 0.7, d = 20 is n = 1.2 million (the issue: refused only after 83 s): now at once.
    assert not dash.request({"alpha": 0.7})
    alert = dash.status.alert.object
    assert "1.2 million" in alert and f"{kde.max_points(20, 200):,}" in alert
    assert "lower α or d" in alert
    assert drawn == []  # refused before any data was drawn
    assert dash.study.alpha == 0.3 and dash.widgets["alpha"].value == 0.3  # snapped back
    assert dash.result["sweep"].attrs["alpha"] == 0.3


def test_old_links_open_the_same_view(cache_dir):
    """Links made before the refactor: ``bandwidth`` and ``dim`` keep their names. A bandwidth
    between the slider's stops (0.8) opens at the stop the slider shows (0.8078), in the Study,
    the plots, the widget and the URL alike (one state; it used to be 0.8 in the Study while
    the slider showed 0.8078)."""
    d = _rendered(KDEDashboard(query={"bandwidth": "0.8", "dim": "16"}))
    assert not d.status.alert.visible
    h = _stop_near(d, 0.8)
    assert (d.study.dim, d.study.bandwidth) == (16, h)
    assert d.result["sweep"].attrs["dim"] == 16 and _marker(d, "kl")[0] == h
    assert d.link_values() == {"dim": "16", "bandwidth": lab_app.link_text(h)}


def _stop_near(d, value):
    """The slider's stop for a link value between stops (within 2 %), shown by the widget."""
    h = d.widgets["bandwidth"].value
    assert abs(h / value - 1) < 0.02 and h in d.widgets["bandwidth"].options
    return h


def test_old_oversized_link_is_refused_as_before_and_the_rest_applies(cache_dir):
    """``/kde?bandwidth=0.8&dim=40`` at the default α = 0.5 is n = e^20 = 485 million points: the
    old page refused d then too. Now the alert names the knobs and the cap, h = 0.8 applies (at
    the slider stop 0.8078) and d keeps its default; the URL drops the refused value."""
    d = _rendered(KDEDashboard(query={"bandwidth": "0.8", "dim": "40"}))
    alert = d.status.alert.object
    assert d.status.alert.visible and "485 million" in alert and "dimension d = 40" in alert
    assert f"{kde.max_points(40, 200):,}" in alert and "lower α or d" in alert
    h = _stop_near(d, 0.8)
    assert (d.study.dim, d.study.bandwidth) == (20, h)
    assert _marker(d, "kl")[0] == h and d.link_values() == {"bandwidth": lab_app.link_text(h)}


@pytest.mark.parametrize(
    ("query", "label"),
    [
        ({"dim": "abc"}, "dimension d"),
        ({"seed": "-5"}, "seed"),
        ({"bandwidth": "<img src=x onerror=alert(1)>"}, "bandwidth h"),
    ],
)
def test_bad_links_give_a_plain_alert(cache_dir, query, label):
    d = KDEDashboard(query=query)
    page = d.page()
    assert page is not None
    alert = d.status.alert.object
    assert d.status.alert.visible and label in alert
    assert "Traceback" not in alert and "<img" not in alert and "<script" not in alert
    assert d.study.values() == kde.KDEStudy().values()  # the rest loads with defaults


def test_shared_arrays_are_read_only(cache_dir):
    first, second = _rendered(KDEDashboard()), KDEDashboard()
    assert first.result["sweep"] is second.result["sweep"]  # shared across sessions
    assert first.study is not second.study
    shared = [
        first.result["sweep"]["kl_per_dim"].values,
        first.result["sweep"]["bandwidth"].values,
        first.result["heavy"]["z_median"].values,
        first.result["regimes"]["h_g"].values,
        first.result["slice"]["t"].values,
        first.result["samples"][0],
    ]
    for array in shared:
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0.0


def test_exports_data_and_figure(dash, tmp_path):
    import holoviews as hv
    import xarray as xr

    dash.request({"bandwidth": 0.9})
    ds = dash.dataset()
    ds.to_netcdf(tmp_path / "kde.nc", engine="h5netcdf")
    back = xr.load_dataset(tmp_path / "kde.nc", engine="h5netcdf")
    np.testing.assert_allclose(back["kl_per_dim"], ds["kl_per_dim"])
    assert back.attrs["current_bandwidth"] == 0.9
    hv.save(dash.figure(), tmp_path / "kde.html", backend="bokeh")
    assert "Bokeh" in (tmp_path / "kde.html").read_text()[:20000]


def test_regime_of_follows_the_stable_index():
    """μ < 1 condensed, 1 ≤ μ < 2 heavy-tailed, μ ≥ 2 CLT (brief); at h_G μ = 1 exactly."""
    t = kde.regime_thresholds(0.5)
    mu = kde.stable_index(np.array([0.99, 1.01, 1.42]) * t["h_g"], 0.5)
    assert kde.regime_of(mu).tolist() == [0, 1, 2]


# --- real browser -----------------------------------------------------------------------------
@pytest.mark.ui
def test_browser_bandwidth_slider_redraws_and_updates_the_link(page, server_url):
    from tests.browser import plot_signature, press_slider, serious, wait_for_plots, wait_for_redraw

    page.goto(server_url + "/kde", timeout=120_000)  # the server may still be warming its caches
    wait_for_plots(page, 6)
    page.wait_for_timeout(1500)  # let Bokeh finish its first paint
    before = plot_signature(page)
    press_slider(page, 0, "ArrowLeft", 8)  # the bandwidth slider comes first in the sidebar
    wait_for_redraw(page, before)
    page.wait_for_function("() => window.location.search.includes('bandwidth=')", timeout=30_000)
    assert "Traceback" not in page.content()
    assert not serious(page.console_errors), page.console_errors
    if os.environ.get("WORKBENCH_SCREENSHOTS"):
        from tests.conftest import SCREENSHOT_DIR

        SCREENSHOT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "kde-dashboard.png"), full_page=False)


@pytest.mark.ui
@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("dim=abc", "dimension d"),
        ("bandwidth=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E", "<img src=x"),
        ("alpha=0.7", "over this server"),
    ],
)
def test_browser_bad_links_give_a_plain_alert(page, server_url, link, expected):
    from tests.browser import wait_for_plots

    dialogs = []
    page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
    page.goto(server_url + "/kde?" + link, timeout=120_000)
    page.get_by_text("cannot be used").first.wait_for(timeout=60_000)  # only the link alert
    assert expected in page.get_by_text("cannot be used").first.inner_text()
    wait_for_plots(page, 6)  # the rest of the page loads with defaults
    assert "Traceback" not in page.content()
    assert dialogs == []  # no injected script ran


def test_exported_panels_keep_their_axes_and_titles(dash):
    """The export composes each sweep panel with its marker without losing its plot options
    (``fig * marker`` dropped log axes, title and legend place)."""
    from apps.kde import STATIC

    exported = dash.figure()
    for name, panel in zip(STATIC, exported, strict=False):
        own = dash._figure(name).opts.get("plot").kwargs
        kept = panel.opts.get("plot").kwargs
        assert own, name
        for key in ("logx", "logy", "title"):
            assert kept.get(key) == own.get(key), (name, key)
