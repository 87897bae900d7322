"""The dashboard base class (apps/lab_app.py), tested on a toy lab (tests/toy_lab.py).

Server-side tests build the page as a session would. The threaded path is tested twice: here
with a stand-in for the session's Bokeh document (it only queues the callbacks the base hands
to the event loop, so a test can run them deterministically), and for real in a browser at the
end of this file (a Panel server, Chromium, a slider moved with the keyboard).
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("panel")

from apps import lab_app, sessions, shell, streaming  # noqa: E402
from apps.fair_pool import FairPool  # noqa: E402
from tests import toy_lab  # noqa: E402
from tests.toy_lab import ToyDashboard, ToyStudy  # noqa: E402
from workbench.study import StudyInputError  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_logs():
    toy_lab.COMPUTE_THREADS.clear()
    toy_lab.FINISHED.clear()


def test_widgets_come_from_the_study_declarations():
    d = ToyDashboard()
    study = d.study
    for name, widget in d.widgets.items():
        p = study.param[name]
        assert widget.label == p.label
        span = lab_app.widget_range(widget)
        if span is not None:  # a widget can never offer a value the Study refuses
            assert p.bounds[0] <= span[0] and span[1] <= p.bounds[1]
    assert lab_app.widget_range(d.widgets["points"]) == (2, 100)  # soft bounds inside hard ones
    assert d.widgets["kind"].options == {"Sine": "sin", "Cosine": "cos"}


def test_link_values_apply_and_bad_ones_are_refused_escaped():
    d = ToyDashboard(
        query={"scale": "<img src=x onerror=alert(1)>", "points": "50", "kind": "Cosine"}
    )
    assert d.study.points == 50 and d.study.kind == "cos"  # the good values apply
    assert d.study.scale == 1.0  # the bad one keeps its default
    alert = d.status.alert.object
    assert "scale s" in alert and "between 0.1 and 10" in alert
    assert "<img" not in alert and "&lt;img" in alert  # shown as text, never as markup
    assert d.result["x"].size == 50  # what the plots show is what the widgets say


def test_a_linked_slider_shows_the_links_value_not_the_default():
    """Regression: a link set only ``value``, so a slider held two values (/criticality?cw=1.05
    gave value 1.05 and value_throttled 1.0)."""
    d = ToyDashboard(query={"scale": "2.5"})
    slider = d.widgets["scale"]
    assert slider.value == slider.value_throttled == d.study.scale == 2.5
    d.request({"scale": 3.0})
    assert slider.value == slider.value_throttled == 3.0


def test_a_huge_link_value_is_a_clear_message():
    d = ToyDashboard(query={"points": "9" * 5000})
    assert "over 200 characters" in d.status.alert.object
    assert d.study.points == 10


def test_link_text_is_never_evaluated():
    study = ToyStudy()
    with pytest.raises(StudyInputError, match="points n"):
        lab_app.parse_value(study, "points", "__import__('os').getpid()")
    assert lab_app.parse_value(study, "points", "40") == 40
    assert lab_app.parse_value(study, "kind", "cos") == "cos"  # stored value or shown name


def test_refused_value_snaps_back_and_the_warning_stays():
    d = ToyDashboard()
    assert d.request({"points": 80, "scale": 7.0}) is False  # 80 × 7 > 500: all-or-nothing
    assert (d.study.points, d.study.scale) == (10, 1.0)
    assert d.widgets["points"].value == 10 and d.widgets["scale"].value == 1.0
    assert d.status.alert.visible and d.status.alert.alert_type == "warning"
    d.sync_widgets()  # redrawing the widgets does not clear it; only a new accepted change does
    assert d.status.alert.visible
    assert d.request({"points": 20})
    assert not d.status.alert.visible


def test_an_informational_note_never_rolls_a_change_back():
    """Defect 1 of the platform issue: a library warning used to restore the old knobs."""
    d = ToyDashboard()
    assert d.request({"scale": 6.0})
    assert d.status.alert.visible and d.status.alert.alert_type == "info"
    assert "saturate" in d.status.alert.object
    assert d.study.scale == 6.0 and float(d.result["y"].max()) > 5.0  # state, plots agree


def test_an_error_restores_the_last_good_view_and_shows_no_traceback(monkeypatch):
    d = ToyDashboard()
    d.request({"scale": 2.0})
    good = d.result

    def broken(self, study):
        raise RuntimeError("internal detail /srv/secret/path.py line 3")

    monkeypatch.setattr(ToyDashboard, "compute", broken)
    d.request({"scale": 3.0})
    assert d.status.alert.alert_type == "danger"
    assert "secret" not in d.status.alert.object and "Traceback" not in d.status.alert.object
    assert d.study.scale == 2.0 and d.widgets["scale"].value == 2.0  # knobs restored
    assert d.result is good


class QueuedDoc:
    """Stand-in for a session's Bokeh document: queues what the base schedules on the loop."""

    session_context = object()

    def __init__(self):
        self.ticks: queue.Queue = queue.Queue()
        self.timeouts: list = []

    def add_next_tick_callback(self, callback):
        self.ticks.put(callback)

    def add_timeout_callback(self, callback, _ms):
        self.timeouts.append(callback)

    def run_ticks(self, expected: int, timeout: float = 10.0) -> None:
        for _ in range(expected):
            self.ticks.get(timeout=timeout)()


def _in_session(dashboard) -> QueuedDoc:
    doc = QueuedDoc()
    dashboard._doc = doc
    return doc


def test_heavy_work_runs_off_the_event_loop():
    d = ToyDashboard()
    doc = _in_session(d)
    toy_lab.COMPUTE_THREADS.clear()
    d.request({"scale": 2.0})
    # Said before the work, as text: Panel's loading overlay restyled every figure (shell.py).
    assert d.status.busy and d.status.timing.object == shell.COMPUTING
    assert not d.plots_area.loading
    doc.run_ticks(1)
    assert toy_lab.COMPUTE_THREADS == ["lab-compute_0"] or all(
        name.startswith("lab-compute") for name in toy_lab.COMPUTE_THREADS
    )
    assert not d.status.busy and float(d.result["y"].max()) == pytest.approx(2 * 0.8414709848)


def test_a_newer_change_supersedes_a_stale_computation():
    d = ToyDashboard()
    doc = _in_session(d)
    d.request({"delay": 0.4, "scale": 3.0})  # slow
    d.request({"delay": 0.0, "scale": 4.0})  # newer and fast
    doc.run_ticks(2)  # both computations report back; only the newer one may be drawn
    assert 0.4 not in toy_lab.FINISHED  # the stale one stopped at a checkpoint
    assert d.study.scale == 4.0
    assert float(d.result["y"].max()) == pytest.approx(4 * 0.8414709848)
    assert not d.status.busy


def test_a_computation_past_its_time_budget_is_abandoned():
    d = ToyDashboard()
    doc = _in_session(d)
    d.request({"scale": 2.0})
    previous = d.result
    d.time_budget_s = 0.1
    d.request({"delay": 0.6, "scale": 3.0})
    time.sleep(0.3)
    doc.timeouts[-1]()  # the budget expires before the result arrives
    assert "longer than" in d.status.alert.object
    assert d.study.scale == 1.0 or d.study.scale == 2.0  # back to the last good knobs
    doc.run_ticks(2)
    assert d.result is previous or float(d.result["y"].max()) < 3 * 0.8  # late result dropped


def test_cheap_knobs_update_in_place_without_compute():
    d = ToyDashboard()
    _in_session(d)
    toy_lab.COMPUTE_THREADS.clear()
    d.request({"kind": "cos"})
    assert toy_lab.COMPUTE_THREADS == []  # no recompute, no worker
    assert float(d.result["y"][0]) == pytest.approx(1.0)


def test_closing_the_tab_drops_the_sessions_work():
    d = ToyDashboard()
    doc = _in_session(d)
    d.request({"delay": 0.2, "scale": 5.0})
    d._session_closed()
    time.sleep(0.5)
    assert 0.2 not in toy_lab.FINISHED  # the running computation stopped at a checkpoint
    assert doc.ticks.empty()  # nothing is scheduled on the closed session's loop
    assert float(d.result["y"].max()) < 5 * 0.8  # and nothing was drawn


def test_streaming_without_a_session_delivers_everything_once():
    d = ToyDashboard()
    got = []
    d.start_stream(lambda: iter(range(5)), got.append)
    assert got == [[0, 1, 2, 3, 4]]


def test_export_html_is_self_contained():
    import io

    d = ToyDashboard()
    buttons = lab_app.shell.export_buttons(d.dataset, d.figure, "toy")
    html_button = [w for w in buttons.objects if getattr(w, "filename", "") == "toy.html"][0]
    text = html_button.callback().read()
    import re

    external = re.findall(r'<(?:script|link)[^>]*?(?:src|href)="(https?://[^"]+)"', text)
    # Only the favicon may point outside; no script or stylesheet is fetched from a CDN.
    assert all(re.search(r"\.(png|ico)$", url) for url in external), external
    assert "Bokeh" in text and len(text) > 500_000  # BokehJS inlined
    csv = [w for w in buttons.objects if getattr(w, "filename", "") == "toy.csv"][0]
    assert isinstance(csv.callback(), io.StringIO)


def test_page_csv_starts_with_the_knob_values():
    d = ToyDashboard()
    page_buttons = lab_app.shell.export_buttons(d.dataset, d.figure, "toy", d.study.values)
    csv = [w for w in page_buttons.objects if getattr(w, "filename", "") == "toy.csv"][0]
    lines = csv.callback().read().splitlines()
    knobs = d.study.values()
    assert lines[: len(knobs)] == [f"# {k} = {v}" for k, v in knobs.items()]
    assert not lines[len(knobs)].startswith("#")  # then the table


# --- the same page in a real browser ----------------------------------------------------------
@pytest.fixture(scope="module")
def toy_url():
    from tests.conftest import _free_port

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.toy_lab", str(port)])
    url = f"http://127.0.0.1:{port}/toy"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the toy server did not start")
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.ui
def test_browser_link_markup_is_text_and_slider_redraws(page, toy_url):
    from tests.browser import plot_signature, press_slider, serious, wait_for_plots, wait_for_redraw

    dialogs = []
    page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))
    page.goto(toy_url + "?scale=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&points=40")
    wait_for_plots(page, 1)
    page.get_by_text("between 0.1 and 10").first.wait_for(timeout=30_000)
    assert "<img src=x" in page.get_by_text("between 0.1 and 10").first.inner_text()
    assert "Traceback" not in page.content()
    before = plot_signature(page)
    press_slider(page, 0, "ArrowRight", 5)  # scale s: 1.0 -> 1.5
    wait_for_redraw(page, before)
    page.wait_for_function("() => window.location.search.includes('scale=1.5')", timeout=30_000)
    assert "points=40" in page.evaluate("window.location.search")
    assert dialogs == []  # the injected onerror never ran
    assert not serious(page.console_errors), page.console_errors


@pytest.mark.ui
def test_one_heavy_view_does_not_stall_another_session(browser, toy_url):
    """Session A opens a link whose view takes 5 s to compute; session B, opened meanwhile,
    changes a knob. B's plot must update while A's computation is still running (it runs off
    the event loop); before the base class it queued behind A's work on the single loop. The
    check is an ordering (A's "updated in" line appears only when A's work ends), not a timing
    threshold, so a loaded machine cannot make it flaky."""
    from tests.browser import plot_signature, wait_for_plots, wait_for_redraw

    a = browser.new_page()
    b = browser.new_page()
    try:
        b.goto(toy_url)
        wait_for_plots(b, 1)
        before = plot_signature(b)
        a.goto(toy_url + "?delay=5&scale=2")  # the page answers at once; 5 s of work follows
        wait_for_plots(a, 1)
        b.locator("select").first.select_option(label="Cosine")
        wait_for_redraw(b, before, timeout=30_000)
        assert a.get_by_text("updated in").count() == 0, "B waited for A's computation"
        a.get_by_text("updated in").first.wait_for(timeout=60_000)  # A gets its view in the end
    finally:
        a.close()
        b.close()


def test_a_superseded_stream_drain_stops_its_own_callback(monkeypatch):
    """Panel 1.9 restarts a PeriodicCallback stopped before the page connected (its deferred
    start runs later); the stale drain must then stop itself, not poll until the tab closes."""

    class Callback:
        def __init__(self):
            self.running = True

        def stop(self):
            self.running = False

    made = []

    def start_periodic(function, period):
        made.append((function, Callback()))
        return made[-1][1]

    monkeypatch.setattr(streaming, "start_periodic", start_periodic)
    d = ToyDashboard()
    d._doc = object()  # served: streams run on the pool and drain on periodic callbacks
    d.start_stream(lambda: iter([1, 2]), lambda batch: None)
    stale_drain, stale_callback = made[-1]
    d.start_stream(lambda: iter([3]), lambda batch: None)  # supersedes the first stream
    assert not stale_callback.running
    stale_callback.running = True  # what Panel's deferred start does
    stale_drain()
    assert not stale_callback.running
    live_drain, live_callback = made[-1]
    assert live_callback.running  # the current stream's callback is left alone


def test_waiting_for_a_free_worker_does_not_use_up_the_time_budget(monkeypatch):
    """A class shares the pool: the budget counts a computation's own time, not its queue."""
    pool = FairPool(workers=2, reserved=1)
    monkeypatch.setattr(sessions, "_pool", pool)
    gate = threading.Event()
    other = pool.submit(gate.wait, 10.0, owner="another session")  # holds the heavy thread
    try:
        d = ToyDashboard()
        doc = _in_session(d)
        d.time_budget_s = 0.05
        d.request({"scale": 3.0})  # no estimate: heavy, so it waits for ``other``
        time.sleep(0.2)
        armed = len(doc.timeouts)
        doc.timeouts[-1]()  # the budget's time has passed, all of it in the queue
        assert "longer than" not in str(d.status.alert.object)
        assert len(doc.timeouts) == armed + 1  # re-armed for when it runs
        gate.set()
        doc.run_ticks(1)
        assert d.study.scale == 3.0
        assert float(d.result["y"].max()) == pytest.approx(3 * 0.8414709848)
    finally:
        gate.set()
        other.result(10.0)
        pool.shutdown()
