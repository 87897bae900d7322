"""``workbench.plots.styled``: elements share an options tree instead of building one each."""

from __future__ import annotations

import gc

import holoviews as hv
import numpy as np
import pytest

from workbench import plots

hv.extension("bokeh")


def _style(element):
    return hv.Store.lookup_options("bokeh", element, "style").kwargs


def _curve(label="a curve"):
    x = np.linspace(0.0, 1.0, 5)
    return hv.Curve((x, x**2), "x", "y", label=label)


def test_second_element_takes_the_first_ones_tree_and_the_same_options():
    options = {"color": "#123456", "line_width": 3, "framewise": True}
    first = plots.styled(_curve(), **options)
    second = plots.styled(_curve(), **options)
    assert second.id == first.id is not None
    assert _style(second) == _style(_curve().opts(**options))
    assert _style(second)["color"] == "#123456"
    assert hv.Store.lookup_options("bokeh", second, "norm").kwargs["framewise"] is True


def test_the_tree_outlives_the_elements_a_caller_drops():
    options = {"color": "#654321", "line_dash": "dotted"}
    plots.styled(_curve("kept alive"), **options)
    gc.collect()
    again = plots.styled(_curve("kept alive"), **options)
    gc.collect()
    assert _style(again)["color"] == "#654321"
    assert _style(again)["line_dash"] == "dotted"


@pytest.mark.parametrize(
    "other",
    [
        {"color": "#000001", "line_width": 3},  # another value
        {"color": "#123456", "line_width": 4},
        {"color": "#123456"},  # fewer options
    ],
)
def test_other_options_or_labels_get_their_own_tree(other):
    base = plots.styled(_curve(), color="#123456", line_width=3)
    changed = plots.styled(_curve(), **other)
    assert changed.id != base.id
    assert _style(changed)["color"] == other["color"]
    relabelled = plots.styled(_curve("another label"), color="#123456", line_width=3)
    assert relabelled.id != base.id


def test_restyling_an_element_leaves_its_template_alone():
    """``.opts`` works in place: hiding a layer styled from a template must not hide the
    template, or every later layer with that style would be hidden too."""
    hidden = plots.shown_if(False, plots.styled(_curve(), color="#0000AA"))[0]
    visible = plots.shown_if(True, plots.styled(_curve(), color="#0000AA"))[0]
    plain = plots.styled(_curve(), color="#0000AA")
    assert _style(hidden)["visible"] is False and _style(visible)["visible"] is True
    assert "visible" not in _style(plain)
    assert _style(hidden)["color"] == _style(visible)["color"] == _style(plain)["color"]
    assert len({hidden.id, visible.id, plain.id}) == 3


def test_unhashable_option_values_fall_back_to_opts():
    styled = plots.styled(_curve(), color="#ABCDEF", hooks=[lambda plot, element: None])
    assert _style(styled)["color"] == "#ABCDEF"
    assert len(hv.Store.lookup_options("bokeh", styled, "plot").kwargs["hooks"]) == 1


def test_the_template_store_is_bounded(monkeypatch):
    monkeypatch.setattr(plots, "_STYLE_TEMPLATES_MAX", 8)
    for k in range(20):
        plots.styled(_curve(f"label {k}"), color="#111111")
    assert len(plots._STYLE_TEMPLATES) <= 8
