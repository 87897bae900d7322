"""Many users on one server (issue 13 §5): concurrent sessions and a soak against the real
``workbench serve``, driven by the browser-like client of ``benchmarks/loadtest.py``.

What is asserted: every change a session makes is taken up by the server and answered with a
plot update, with no error anywhere (server log, error replies, status lines, dropped
sessions); after sessions open and close, the server's diagnostics (a garbage-collected count
of live objects) show no Study or dashboard left behind. Latencies are printed, never asserted.
The fast tests at the top check the diagnostics switch and the two leaks the soak found.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import time
import weakref
from pathlib import Path

import pytest

pytest.importorskip("panel")

from apps import server as app_server  # noqa: E402
from workbench.labs import registry  # noqa: E402


def _load_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "loadtest.py"
    spec = importlib.util.spec_from_file_location("loadtest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("loadtest", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


loadtest = _load_module()


# --- fast: the diagnostics switch, the load plans, the leaks -----------------------------------------
def test_diagnostics_are_off_without_the_variable(monkeypatch):
    monkeypatch.delenv(app_server.DIAGNOSTICS_ENV, raising=False)
    assert app_server._diagnostics_options() == {}
    for value in ("0", "", "yes", "true"):
        monkeypatch.setenv(app_server.DIAGNOSTICS_ENV, value)
        assert app_server._diagnostics_options() == {}, value
    monkeypatch.setenv(app_server.DIAGNOSTICS_ENV, "1")
    options = app_server._diagnostics_options()
    assert options["extra_patterns"] == [
        (app_server.DIAGNOSTICS_PATH, app_server.DiagnosticsHandler)
    ]
    assert loadtest.DIAGNOSTICS_PATH == app_server.DIAGNOSTICS_PATH


@pytest.mark.parametrize("at_start", [None, "true"])
def test_bokehs_serialization_setting_keeps_its_value_from_the_start(monkeypatch, at_start):
    """Read once at start (Bokeh otherwise looks it up in the environment per model)."""
    from bokeh.settings import settings

    setting, name = settings.serialize_include_defaults, "BOKEH_SERIALIZE_INCLUDE_DEFAULTS"
    if at_start is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, at_start)
    before = setting()
    try:
        app_server._pin_bokeh_settings()
        monkeypatch.setenv(name, "1" if at_start is None else "")  # not read any more
        assert setting() == before and bool(before) is (at_start is not None)
    finally:
        setting.unset_value()


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.7", False),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.7", False),
        ("2001:db8::1", False),
        ("", False),
        ("localhost", False),  # a name is not an address: refused
    ],
)
def test_diagnostics_answer_loopback_peers_only(address, loopback):
    assert app_server._is_loopback(address) is loopback


def test_diagnostics_handler_refuses_other_peers():
    """The handler itself answers 403 to a peer that is not a loopback address (as a server
    started with --address 0.0.0.0 would see a visitor from the network)."""
    from unittest import mock

    import tornado.httputil
    import tornado.web

    app = tornado.web.Application([(app_server.DIAGNOSTICS_PATH, app_server.DiagnosticsHandler)])
    start = tornado.httputil.RequestStartLine("GET", app_server.DIAGNOSTICS_PATH, "HTTP/1.1")
    headers = tornado.httputil.HTTPHeaders({"Host": "workbench.example:5006"})
    request = tornado.httputil.HTTPServerRequest(
        connection=mock.MagicMock(), start_line=start, headers=headers
    )
    request.remote_ip = "10.0.0.7"
    handler = app_server.DiagnosticsHandler(app, request)
    with pytest.raises(tornado.web.HTTPError) as refused:
        handler.get()
    assert refused.value.status_code == 403


def test_load_plans_stay_inside_each_study_and_name_its_widgets():
    """The client finds widgets by the label the Study declares and moves them only to values
    the Study accepts (so a refusal during the load test is a fault, never the plan)."""
    from apps.kde import BANDWIDTH_STOPS, KDEDashboard

    studies = registry()
    assert set(loadtest.PLANS) == set(loadtest.LABS)
    for lab, knobs in loadtest.PLANS.items():
        study = studies[lab].study
        for knob in knobs:
            values = knob.values
            assert all(a != b for a, b in zip(values, values[1:] + values[:1], strict=True))
            p = study.param[knob.knob]
            if knob.offsets:  # the KDE bandwidth slider: offsets from the default stop
                assert KDEDashboard.widget_overrides[knob.knob]["label"] == knob.label
                start = BANDWIDTH_STOPS.index(p.default)
                assert all(0 <= start + v < len(BANDWIDTH_STOPS) for v in values)
                continue
            assert p.label == knob.label
            if hasattr(p, "objects") and p.objects:
                allowed = set(p.names or {}) | set(p.objects)
                assert set(values) <= allowed, (lab, knob.knob)
            else:
                lo, hi = p.bounds
                assert all(lo <= v <= hi for v in values), (lab, knob.knob)
                assert p.default in values  # the walk passes through the default


def test_closed_quadrature_page_is_freed():
    """The two leaks the soak found, on the page that had both: its hooks (kept in HoloViews'
    process-wide option store) held the page, and its editable slider's JS callback sat in
    Panel's process-wide registry in a cycle that reached the page through widget watchers."""
    import panel as pn
    from bokeh.document import Document
    from panel.links import Callback

    from apps.quadrature import QuadratureDashboard

    dashboard = QuadratureDashboard()
    root = dashboard.plots_area.get_root(Document())  # renders the "you are here" hooks
    assert any(w in Callback.registry for w in dashboard.widgets["lengthscale"].select())
    dashboard._session_closed()
    assert not any(w in Callback.registry for w in dashboard.widgets["lengthscale"].select())
    # What Panel does for a page when the server destroys its session:
    dashboard.plots_area._cleanup(root)
    pn.state._views.pop(root.ref["id"], None)
    page, study = weakref.ref(dashboard), weakref.ref(dashboard.study)
    del dashboard
    gc.collect()
    assert page() is None
    assert study() is None


# --- slow: the real server ---------------------------------------------------------------------------
# Sizes: on this 2-core machine the server builds a lab page in ~4-8 s of CPU (Bokeh document
# assembly, one page at a time on its event loop) and spends ~0.3-1 s of loop time per knob
# change, so the module keeps to eight pages and 18 changes (~90 s); the two tests together
# open every lab. ``python benchmarks/loadtest.py`` (30 x 50) and ``--soak 200`` are the full
# runs.
@pytest.fixture(scope="module")
def server():
    with loadtest.start_server() as running:
        yield running


@pytest.fixture(scope="module")
def idle(server):
    """The server's diagnostics before any session: warmed up, nothing open."""
    loadtest.wait_until_warm(server)
    diag = loadtest.wait_until_discarded(server)
    assert diag["sessions"] == 0 and diag["warm"]
    return diag


def _assert_nothing_left(server, after, baseline):
    """No session, dashboard or Study beyond the idle baseline, after garbage collection.

    A computation of a just-closed page may hold its Study snapshot until its next checkpoint;
    a leak never goes away, so a surplus is given a few seconds before it counts.
    """
    deadline = time.monotonic() + 30
    while after["live_studies"] > baseline["live_studies"] and time.monotonic() < deadline:
        time.sleep(1)
        after = server.diagnostics()
    assert after["sessions"] == 0
    assert after["live_dashboards"] == 0, after
    assert after["live_studies"] <= baseline["live_studies"], after


@pytest.mark.slow
def test_concurrent_sessions_every_change_is_observed(server, idle):
    labs = ("kde", "criticality", "quadrature")
    result = loadtest.run_load(server, sessions=6, changes=3, labs=labs, timeout=120.0)
    loadtest.print_load(result)
    assert result.errors == []
    assert not any(s.dropped for s in result.sessions)
    assert {s.lab for s in result.sessions} == set(labs)
    assert result.changes_sent == 18
    assert result.changes_observed == 18  # each one answered by a plot update of its own
    _assert_nothing_left(server, result.diag_after, idle)


@pytest.mark.slow
def test_soak_leaves_no_study_alive(server, idle):
    """Pages of the other labs opened and closed: with the test above, every lab's page has
    come and gone, and nothing of any of them may be left in the server."""
    labs = ("fractional", "kvcache")
    result = loadtest.run_soak(server, count=len(labs), labs=labs, concurrency=2)
    loadtest.print_soak(result)
    assert result.errors == []
    assert result.opened == len(labs)
    _assert_nothing_left(server, result.diag_after, idle)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )


@pytest.mark.slow
def test_worker_processes_share_the_port_serve_sessions_and_end_with_the_server():
    """``workbench serve --procs 2``: two worker processes answer on one port (the diagnostics
    name their pids), sessions on them take every change, and stopping the server (its pid is
    the supervisor's) ends the workers too instead of leaving them holding the port."""
    with loadtest.start_server(procs=2) as server:
        pids: set[int] = set()
        deadline = time.monotonic() + 180
        while len(pids) < 2 and time.monotonic() < deadline:
            diag = server.diagnostics(objects=False, timeout=5)
            if diag:
                pids.add(diag["pid"])
        assert len(pids) == 2 and server.pid not in pids, pids
        result = loadtest.run_load(
            server, sessions=4, changes=2, labs=("kde", "criticality"), timeout=120.0
        )
        loadtest.print_load(result)
        assert result.errors == []
        assert result.changes_sent == result.changes_observed == 8
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("procs", [-1, 2 * (os.cpu_count() or 1) + 1])
def test_procs_out_of_range_is_refused_with_the_bound(procs):
    cores = os.cpu_count() or 1
    with pytest.raises(SystemExit, match=rf"--procs must be 0 \(one per core\) \.\. {2 * cores}"):
        app_server._check_procs(procs)
    assert app_server._check_procs(0) == cores  # 0: one worker per core
