"""apps/live_patch.py: a panel patched in place shows exactly what HoloViews' full update shows.

Two copies of a lab page take the same knob moves; one writes the new frames straight into its
plots (the fast path), the other lets HoloViews update every layer. After each move every panel
must agree: each data column, each range, the title, which renderers and legend items show, and
each Span's location. A move the fast path refuses (HoloViews then updates) must still agree.
"""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource, GlyphRenderer, Plot, Range1d, Span

from apps import live_patch
from apps.live import LiveFigures

hv.extension("bokeh")


def _page(lab: str, fast: bool):
    from tests.test_model_graph import dashboard_class

    dash = dashboard_class(lab)()
    dash.live.fast = fast
    doc = Document()
    doc.add_root(dash.plots_area.get_root(doc))
    return dash


def _figure_of(pane):
    (plot,) = [p for p, _ in pane._plots.values()]
    return plot.state


def _columns(source: ColumnDataSource) -> dict:
    return {k: np.asarray(v) for k, v in source.data.items()}


def _close(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return bool(
            np.allclose(a.astype(float), b.astype(float), rtol=1e-9, atol=0, equal_nan=True)
        )
    if a.dtype == object:
        return all(_close(x, y) for x, y in zip(a.ravel(), b.ravel(), strict=True))
    return bool(np.array_equal(a, b))


def picture(fig: Plot) -> dict:
    """What a reader sees of a Bokeh figure: data, ranges, title, visible layers and legend."""
    glyphs = [r for r in fig.renderers if isinstance(r, GlyphRenderer)]
    spans = [a for a in [*fig.renderers, *fig.center] if isinstance(a, Span)]
    ranges = {}
    for axis in ("x_range", "y_range"):
        r = getattr(fig, axis)
        ranges[axis] = (r.start, r.end) if isinstance(r, Range1d) else type(r).__name__
    return {
        "title": fig.title.text if fig.title is not None else None,
        "ranges": ranges,
        "glyphs": [(type(r.glyph).__name__, r.visible, _columns(r.data_source)) for r in glyphs],
        "spans": [(s.visible, s.location) for s in spans],
        # Shown entries only: HoloViews' full update drops a hidden layer's item, the patch
        # leaves it hidden too; a reader sees the same legend.
        "legend": [
            getattr(item.label, "value", item.label)
            for legend in fig.legend
            for item in legend.items
            if item.visible and any(r.visible for r in item.renderers)
        ],
    }


def assert_same_picture(fast: Plot, full: Plot, where: str) -> None:
    a, b = picture(fast), picture(full)
    assert a["title"] == b["title"], where
    for axis in ("x_range", "y_range"):
        ra, rb = a["ranges"][axis], b["ranges"][axis]
        assert type(ra) is type(rb), (where, axis, ra, rb)
        if isinstance(ra, tuple):
            assert _close(np.array(ra, dtype=float), np.array(rb, dtype=float)), (
                where,
                axis,
                ra,
                rb,
            )
    assert len(a["glyphs"]) == len(b["glyphs"]), where
    for (ta, va, ca), (tb, vb, cb) in zip(a["glyphs"], b["glyphs"], strict=True):
        assert (ta, va) == (tb, vb), (where, ta, va, vb)
        assert set(ca) == set(cb), (where, ta, sorted(ca), sorted(cb))
        for column in ca:
            assert _close(ca[column], cb[column]), (where, ta, column)
    assert len(a["spans"]) == len(b["spans"]), where
    for (sa, la), (sb, lb) in zip(a["spans"], b["spans"], strict=True):
        assert sa == sb and _close(np.array(la, dtype=float), np.array(lb, dtype=float)), where
    assert a["legend"] == b["legend"], where


MOVES = {
    "kde": [("bandwidth", 1.1), ("bandwidth", 0.3), ("bandwidth", 3.0)],
    "criticality": [
        ("cw", 0.99),
        ("cw", 1.0),
        ("cw", 1.01),
        ("depth", 40),
        ("rho0", 0.6),
        ("activation", "relu"),
        ("cw", 2.0),
        ("cb", 0.1),
    ],
    "kvcache": [("rank_k", 17), ("bits", 3), ("rank_k", 5), ("bits", 8), ("layer", 2)],
    "fractional": [
        ("degree", 3),
        ("intervals", 96),
        ("alpha", 1.4),
        ("preconditioner", "laplacian"),
    ],
}


@pytest.mark.parametrize("lab", sorted(MOVES))
def test_a_patched_panel_shows_what_holoviews_full_update_shows(lab, monkeypatch):
    calls = {"patched": 0, "refused": 0}
    original = live_patch.patch

    def counted(plot, figure):
        ok = original(plot, figure)
        calls["patched" if ok else "refused"] += 1
        return ok

    monkeypatch.setattr(live_patch, "patch", counted)
    fast, full = _page(lab, True), _page(lab, False)
    for knob, value in MOVES[lab]:
        for dash in (fast, full):
            assert dash.request({knob: value}), (lab, knob, value)
        for name in fast.live.names:
            assert_same_picture(
                _figure_of(fast.live.panes[name]),
                _figure_of(full.live.panes[name]),
                f"{lab} {knob}={value}: {name}",
            )
    assert calls["patched"] > 0  # the fast path was taken, not only refused


def test_a_refused_patch_changes_nothing_and_holoviews_updates():
    """A new style (not a data change) is refused before any model changes."""

    state = {"colour": "red", "scale": 1.0}

    def draw(_name):
        x = np.arange(5.0)
        return hv.Overlay(
            [hv.Curve((x, state["scale"] * x), "x", "y", label="flow").opts(color=state["colour"])]
        ).opts(title=f"scale {state['scale']:g}")

    live = LiveFigures(draw, ("a",))
    doc = Document()
    doc.add_root(live.panes["a"].get_root(doc))
    fig = _figure_of(live.panes["a"])
    (plot,) = [p for p, _ in live.panes["a"]._plots.values()]
    state.update(colour="blue", scale=2.0)
    before = picture(fig)
    assert not live_patch.patch(plot, draw("a"))
    after = picture(fig)
    assert after["title"] == before["title"]
    assert _close(after["glyphs"][0][2]["y"], before["glyphs"][0][2]["y"])
    live.refresh()  # HoloViews' full update draws the new colour and data
    (renderer,) = [r for r in fig.renderers if isinstance(r, GlyphRenderer)]
    assert renderer.glyph.line_color == "blue"
    assert _close(renderer.data_source.data["y"], 2.0 * np.arange(5.0))
    assert fig.title.text == "scale 2"
