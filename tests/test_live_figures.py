"""apps/live.py: figures patched in place when their structure allows, rebuilt otherwise."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource, GlyphRenderer, Legend

from apps import lab_app  # noqa: F401 - installs the model-graph patch, as the server does
from apps.live import LiveFigures, structure

hv.extension("bokeh")


class Curves:
    """Two curves whose data, title and (optionally) labels follow a scale."""

    def __init__(self):
        self.scale, self.label, self.extra = 1.0, "fixed point K*", False

    def draw(self, name):
        x = np.arange(5.0)
        layers = [
            hv.Curve((x, self.scale * x), "x", "y", label="flow"),
            hv.Curve((x, np.full(5, self.scale)), "x", "y", label=self.label),
        ]
        if self.extra:
            layers.append(hv.Curve((x, -x), "x", "y", label="theory"))
        return hv.Overlay(layers).opts(title=f"scale {self.scale:g}")


def rendered(live, name="a"):
    doc = Document()
    doc.add_root(live.panes[name].get_root(doc))
    return doc


def renderers(doc):
    return {m for m in doc.models if isinstance(m, GlyphRenderer)}


def column_values(doc, column="y"):
    return sorted(
        tuple(np.asarray(m.data[column]).tolist())
        for m in doc.models
        if isinstance(m, ColumnDataSource) and column in m.data
    )


def test_same_structure_is_patched_in_place():
    state = Curves()
    live = LiveFigures(state.draw, ("a",))
    doc = rendered(live)
    glyphs, dmap = renderers(doc), live.panes["a"].object
    for scale in (2.0, 3.0, 2.5):
        state.scale = scale
        assert live.refresh() == []
        assert live.panes["a"].object is dmap  # not rebuilt
        assert renderers(doc) == glyphs  # the same Bokeh glyphs, no new ones
        assert (scale,) * 5 in column_values(doc)  # with the new data
        assert tuple(scale * np.arange(5.0)) in column_values(doc)
    titles = [m.text for m in doc.models if type(m).__name__ == "Title" and m.text]
    assert titles == ["scale 2.5"]


class TickDoc:
    """Stand-in for a session's document: keeps next-tick callbacks to run by hand."""

    def __init__(self, ticks):
        self.ticks = ticks

    def add_next_tick_callback(self, callback):
        self.ticks.append(callback)


def test_a_served_page_shows_its_panels_one_per_tick_after_it_loaded(monkeypatch):
    """The page goes out with its panels loading; after the browser says it loaded, each
    tick shows one more panel in page order (LiveFigures._show_next, apps/panel_queue.py)."""
    from apps import live

    loaded, ticks = [], []
    monkeypatch.setattr(live.pn.state, "onload", loaded.append)
    state = Curves()
    figures = LiveFigures(state.draw, ("a", "b", "c"), defer=True)
    figures._doc = TickDoc(ticks)
    assert [figures.panes[n].object for n in "abc"] == [None] * 3
    assert all(figures.panes[n].loading for n in "abc")
    state.scale = 2.0
    figures.refresh("b")  # a knob moved before the panel was shown: it shows the new frame
    assert len(loaded) == 1 and figures.panes["a"].object is None
    loaded.pop()()
    assert len(ticks) == 1 and figures.panes["a"].object is None  # scheduled, not yet run
    ticks.pop()()
    shown = [n for n in "abc" if figures.panes[n].object is not None]
    assert shown == ["a"] and not figures.panes["a"].loading and figures.panes["b"].loading
    ticks.pop()()
    assert figures.panes["b"].object is figures.dmaps["b"]
    assert figures.panes["c"].object is None
    doc = rendered(figures, "b")
    assert (2.0,) * 5 in column_values(doc)
    ticks.pop()()
    assert all(figures.panes[n].object is figures.dmaps[n] for n in "abc")
    assert ticks == []  # nothing left to show: the chain ends


def test_a_page_closed_before_it_loaded_is_not_kept_by_its_onload_callback(monkeypatch):
    """Panel keeps onload callbacks in a WeakKeyDictionary keyed by the document: a callback
    that holds the page (which holds the document) keeps the key, and the page, alive."""
    import gc
    import weakref

    from apps import live

    loaded = []
    monkeypatch.setattr(live.pn.state, "onload", loaded.append)
    figures = LiveFigures(Curves().draw, ("a", "b"), defer=True)
    page = weakref.ref(figures)
    del figures
    gc.collect()
    assert len(loaded) == 1 and page() is None  # the tab closed before "loaded": nothing left
    loaded.pop()()  # a late callback finds no page and does nothing


def test_pages_take_turns_and_only_one_panel_build_is_ever_queued_on_the_loop():
    from apps import panel_queue

    ticks, shown = [], []

    class Page:
        def __init__(self, name, panels):
            self.name, self.left, self.closed = name, panels, False

        def show_one(self):
            shown.append(f"{self.name}{self.left}")
            self.left -= 1
            return self.left > 0

    doc = TickDoc(ticks)
    a, b, c = Page("a", 3), Page("b", 2), Page("c", 2)
    for page in (a, b, c):
        panel_queue.enqueue(doc, page)
    c.closed = True  # the tab closed before its turn
    while ticks:
        assert len(ticks) == 1  # a knob change waits behind one panel build at most
        ticks.pop()()
    assert shown == ["a3", "b2", "a2", "b1", "a1"]
    assert panel_queue.waiting() == 0


def test_a_panel_refreshed_before_its_turn_is_shown_next_ahead_of_other_pages(monkeypatch):
    """Thirty pages fill in panel by panel; a knob moved on one of them changes a panel it
    has not shown yet: that panel is built next, before the other pages' and its own."""
    from apps import live, panel_queue

    monkeypatch.setattr(live.pn.state, "onload", lambda callback: None)
    ticks = []
    doc = TickDoc(ticks)
    pages = []
    for _ in range(3):
        page = LiveFigures(Curves().draw, ("a", "b", "c"), defer=True)
        page._doc = doc
        pages.append(page)
        panel_queue.enqueue(doc, page)
    first, _, last = pages
    ticks.pop()()  # the first page's first panel
    assert first.panes["a"].object is not None
    last.refresh("c")  # a stream's redraw, no knob moved: the page order stands
    assert last._wanted == []
    last.hurry = True  # its user moved a knob (LabDashboard.request)
    last.refresh("c")  # the last page's third panel, while the second page waits for its turn
    ticks.pop()()  # the build already scheduled (the second page's first panel) runs first
    ticks.pop()()
    assert last.panes["c"].object is last.dmaps["c"] and last.panes["a"].object is None
    assert pages[1].panes["b"].object is None
    first.hurry = True
    first.refresh("c")  # hurried while its own build is scheduled: its next one comes first
    ticks.pop()()
    ticks.pop()()
    assert first.panes["c"].object is not None and pages[1].panes["b"].object is None
    while ticks:
        ticks.pop()()
    assert all(p.panes[n].object is not None for p in pages for n in "abc")
    assert panel_queue.waiting() == 0


def test_a_page_closed_while_its_build_is_scheduled_does_not_stall_the_queue():
    """Bokeh drops a destroyed session's next-tick callbacks: the queue must go on without
    the build it scheduled for that page, or every page behind it waits (and leaks) forever."""
    from apps import panel_queue

    ticks, shown = [], []

    class Page:
        def __init__(self, name):
            self.name, self.closed = name, False

        def show_one(self):
            shown.append(self.name)
            return False

    doc = TickDoc(ticks)
    a, b = Page("a"), Page("b")
    panel_queue.enqueue(doc, a)
    panel_queue.enqueue(doc, b)
    dropped = ticks.pop()  # a's build, scheduled; its session is destroyed before it runs
    a.closed = True
    panel_queue.release(a)
    assert len(ticks) == 1  # b's build is scheduled at once
    ticks.pop()()
    dropped()  # had it run after all, it does nothing
    assert shown == ["b"] and ticks == [] and panel_queue.waiting() == 0


def test_a_page_that_fails_to_show_does_not_stop_the_others(caplog):
    from apps import panel_queue

    ticks, shown = [], []

    class Broken:
        closed = False

        def show_one(self):
            raise RuntimeError("no plot for you")

    class Fine:
        closed = False

        def show_one(self):
            shown.append("fine")
            return False

    doc = TickDoc(ticks)
    panel_queue.enqueue(doc, Broken())
    panel_queue.enqueue(doc, Fine())
    while ticks:
        ticks.pop()()
    assert shown == ["fine"] and "deferred panel failed" in caplog.text


def test_outside_a_served_page_every_panel_is_shown_at_once():
    figures = LiveFigures(Curves().draw, ("a", "b"))
    assert not figures.deferred
    assert all(figures.panes[n].object is figures.dmaps[n] for n in "ab")


def test_a_new_label_or_layer_rebuilds_instead_of_piling_up_glyphs():
    state = Curves()
    live = LiveFigures(state.draw, ("a",))
    first = live.panes["a"].object
    state.label = "fixed point K* = 0.3"  # HoloViews would add a glyph per new label
    assert live.refresh("a") == ["a"]
    assert live.panes["a"].object is not first
    doc = rendered(live)
    assert len(renderers(doc)) == 2
    labels = [item.label.value for m in doc.models if isinstance(m, Legend) for item in m.items]
    assert labels == ["flow", "fixed point K* = 0.3"]
    state.extra = True
    assert live.refresh("a") == ["a"]
    assert len(renderers(rendered(live))) == 3


def test_structure_sees_types_labels_dimensions_and_layers():
    a = hv.Curve([1, 2], "x", "y", label="a")
    assert structure(a * hv.Curve([3, 4], "x", "y")) == structure(
        hv.Curve([5, 6], "x", "y", label="a") * hv.Curve([0, 0], "x", "y")
    )
    assert structure(a) != structure(a.relabel("b"))
    assert structure(a) != structure(hv.Scatter([1, 2], "x", "y", label="a"))
    assert structure(a) != structure(hv.Curve([1, 2], "x", "z", label="a"))
    assert structure(a * a) != structure(a * a * a)


def test_a_hooked_marker_stays_one_glyph_through_in_place_updates():
    from apps.shell import LiveMarker

    state, marker = Curves(), LiveMarker("point", size=9)
    live = LiveFigures(lambda name: state.draw(name).opts(hooks=[marker.hook]), ("a",))
    doc = rendered(live)
    for scale in (2.0, 3.0, 4.0):
        state.scale = scale
        assert live.refresh() == []
    assert len(renderers(doc)) == 3  # two curves and one marker, not one marker per update
    marker.move(1.5, 2.5)
    assert ((1.5,), (2.5,)) in {
        (tuple(m.data["x"]), tuple(m.data["y"]))
        for m in doc.models
        if isinstance(m, ColumnDataSource) and len(m.data.get("x", [])) == 1
    }


@pytest.mark.parametrize(
    "lab, knob, value",
    [
        ("kde", "bandwidth", 1.1),
        ("kvcache", "rank_k", 17),
        ("kvcache", "bits", 3),
        ("criticality", "depth", 40),
        ("criticality", "rho0", 0.6),
        # Not cheap, but numbers belong in titles there too: every panel keeps its layers.
        ("criticality", "cw", 1.01),
        ("fractional", "degree", 4),
        ("fractional", "alpha", 1.55),
        ("fractional", "intervals", 96),
        ("fractional", "preconditioner", "laplacian"),
        ("quadrature", "n", 11),
        ("quadrature", "rule", "bq"),
        ("quadrature", "nu", 1.5),
        ("quadrature", "kernel", "wiener"),
        ("quadrature", "lengthscale", 0.5),  # a new N-sweep: patched in too
        ("quadrature", "max_iter", 20),
    ],
)
def test_a_cheap_knob_move_patches_every_panel_in_place(lab, knob, value):
    """No panel is rebuilt by its lab's cheap knob: a value in a legend label would do that.

    (Left out on purpose: the KV spectrum view, whose legend carries each tensor's r90,
    effective and stable rank; a head change rebuilds those two panels.)"""
    from tests.test_model_graph import dashboard_class

    dash = dashboard_class(lab)()
    before = {name: pane.object for name, pane in dash.live.panes.items()}
    assert dash.request({knob: value})
    assert getattr(dash.study, knob) == value
    rebuilt = [name for name, pane in dash.live.panes.items() if pane.object is not before[name]]
    assert rebuilt == []


def _legend_labels(pane, doc):
    """Legend labels shown (item visible) in the Bokeh figure a pane renders into ``doc``."""
    from bokeh.models import Plot

    (plot,) = [m for m in doc.models if isinstance(m, Plot) and pane_owns(pane, m)]
    return sorted(
        item.label["value"] for legend in plot.legend for item in legend.items if item.visible
    )


def pane_owns(pane, model):
    return any(model is p.state for p, _ in pane._plots.values())


def test_a_move_across_the_critical_line_patches_the_flows_and_their_legends_follow():
    """tanh at C_b = 0: C_W = 0.99 (ordered, K → 0), 1 (critical, the 1/(2l) law), 1.01
    (chaotic, a fixed point K* > 0). Each phase shows its own theory; none rebuilds a panel."""
    from tests.test_model_graph import dashboard_class

    dash = dashboard_class("criticality")()
    doc = Document()
    doc.add_root(dash.plots_area.get_root(doc))
    before = {name: pane.object for name, pane in dash.live.panes.items()}
    kernel, correlation = dash.live.panes["kernel"], dash.live.panes["correlation"]
    expected = {
        0.99: (["kernel flow K^(l)"], ["1 − ρ^(l)"]),
        1.0: (["1/(2l) (K* = 0 class)", "kernel flow K^(l)"], ["1 − ρ^(l)"]),
        1.01: (
            ["fixed point K*", "kernel flow K^(l)", "linearised approach"],
            ["1 − c*", "1 − ρ^(l)"],  # chaotic: two inputs decorrelate to c* < 1
        ),
    }
    for cw in (0.99, 1.0, 1.01, 0.99, 1.01, 1.0):
        assert dash.request({"cw": cw}) and dash.study.cw == cw
        assert (_legend_labels(kernel, doc), _legend_labels(correlation, doc)) == expected[cw]
    assert [n for n, p in dash.live.panes.items() if p.object is not before[n]] == []
