"""apps/model_graph.py: the document's model set stays exactly Bokeh's, with fewer walks.

The oracle is Bokeh's own definition: the union of ``root.references()`` over the roots.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
from bokeh.document import Document
from bokeh.document.models import DocumentModelManager
from bokeh.models import ColumnDataSource, Legend, LegendItem
from bokeh.plotting import figure

from apps import model_graph
from apps.shell import lab_pages

warnings.filterwarnings("ignore", category=UserWarning)
model_graph.install()  # as importing apps.lab_app does (a -k selection may not import it)


def bokeh_models(doc: Document) -> set:
    found = set()
    for root in doc.roots:
        found |= root.references()
    return found


def assert_graph_exact(doc: Document) -> None:
    models = set(doc.models)
    assert models == bokeh_models(doc)
    assert all(m.document is doc for m in models)


@pytest.fixture
def counted(monkeypatch):
    """Count full walks of the model graph."""
    calls = []
    recompute = DocumentModelManager.recompute

    def counting(self):
        calls.append(1)
        recompute(self)

    monkeypatch.setattr(DocumentModelManager, "recompute", counting)
    return calls


def dashboard_class(lab: str) -> type:
    from apps.lab_app import LabDashboard

    module = importlib.import_module(f"apps.{lab}")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, LabDashboard) and obj is not LabDashboard
    ]
    return found[0]


def neighbour(widget, current):
    """The next value a key press would give (options or one step)."""
    options = getattr(widget, "options", None)
    if isinstance(options, dict):
        options = list(options.values())
    if isinstance(options, list):
        if current in options:
            i = options.index(current)
        else:
            i = min(range(len(options)), key=lambda k: abs(options[k] - current))
        return options[i + 1 if i + 1 < len(options) else i - 1]
    step = getattr(widget, "step", 1) or 1
    return type(current)(current + step if current + step <= widget.end else current - step)


def small_page():
    plot = figure(width=200, height=200)
    source = ColumnDataSource({"x": [0, 1], "y": [1, 2]})
    line = plot.line("x", "y", source=source, legend_label="a")
    doc = Document()
    doc.add_root(plot)
    return doc, plot, source, line


def test_installed_by_the_dashboards():
    importlib.import_module("apps.lab_app")
    assert DocumentModelManager._workbench_lazy_graph
    assert DocumentModelManager.recompute is model_graph._recompute


def test_reachable_models_equals_bokeh_references():
    doc, plot, *_ = small_page()
    assert model_graph.reachable_models(plot) == plot.references()
    assert_graph_exact(doc)


def test_data_only_change_in_a_freeze_walks_nothing(counted):
    doc, plot, source, _ = small_page()
    counted.clear()  # building the page walked once
    with doc.models.freeze():
        source.data = {"x": [0, 1, 2], "y": [3, 4, 5]}
        plot.title.text = "moved"
    assert counted == []
    assert_graph_exact(doc)


def test_reassigning_the_same_legend_items_walks_nothing(counted):
    doc, plot, *_ = small_page()
    legend = plot.select_one(Legend)
    counted.clear()
    with doc.models.freeze():
        legend.items[:] = list(legend.items)  # what HoloViews does on every update
    assert counted == []
    assert_graph_exact(doc)


def test_a_side_legend_removed_and_added_back_walks_nothing(counted):
    doc, plot, *_ = small_page()
    legend = plot.select_one(Legend)
    counted.clear()
    with doc.models.freeze():  # HoloViews' update for legend_position="right"
        plot.center = [m for m in plot.center if m is not legend]
        plot.add_layout(legend, "right")
    assert len(counted) == 1  # the legend moved from centre to right: one walk
    counted.clear()
    with doc.models.freeze():
        plot.right = [m for m in plot.right if m is not legend]
        plot.add_layout(legend, "right")
    assert counted == []
    assert_graph_exact(doc)


def test_new_and_dropped_models_inside_a_freeze_are_attached_and_detached(counted):
    doc, plot, source, line = small_page()
    legend = plot.select_one(Legend)
    counted.clear()
    with doc.models.freeze():
        extra = plot.scatter("x", "y", source=ColumnDataSource({"x": [1], "y": [1]}))
        legend.items.append(LegendItem(label="b", renderers=[extra]))
    assert len(counted) == 1
    assert extra.document is doc and extra.data_source.document is doc
    assert_graph_exact(doc)
    with doc.models.freeze():
        plot.renderers = [r for r in plot.renderers if r is not extra]
        legend.items = [item for item in legend.items if extra not in item.renderers]
    assert extra.document is None and extra not in set(doc.models)
    assert_graph_exact(doc)


def test_roots_added_and_removed_inside_a_freeze():
    doc, plot, *_ = small_page()
    other = figure(width=100, height=100)
    other.line([0, 1], [0, 1])
    with doc.models.freeze():
        doc.add_root(other)
    assert_graph_exact(doc)
    with doc.models.freeze():
        doc.remove_root(plot)
    assert plot.document is None
    assert_graph_exact(doc)


def test_uninstall_restores_bokeh_and_install_is_idempotent():
    try:
        model_graph.uninstall()
        assert DocumentModelManager.recompute is model_graph._ORIGINAL["recompute"]
        doc, *_ = small_page()
        assert_graph_exact(doc)
    finally:
        assert model_graph.install() and model_graph.install()
    assert DocumentModelManager._pop_freeze is model_graph._pop_freeze


@pytest.mark.parametrize("lab", lab_pages())
def test_every_lab_page_keeps_the_exact_model_set_through_changes(lab):
    """Build the page, move a cheap knob and an expensive one: the same models as Bokeh's walk."""
    dash = dashboard_class(lab)()
    doc = Document()
    doc.add_root(dash.plots_area.get_root(doc))
    assert_graph_exact(doc)
    knobs = [*([dash.main_knob] if dash.main_knob else []), *dash.cheap[:1]]
    expensive = [n for n in dash.widgets if n not in dash.cheap and hasattr(dash.widgets[n], "end")]
    knobs += expensive[:1]
    for knob in dict.fromkeys(knobs):
        assert dash.request({knob: neighbour(dash.widgets[knob], getattr(dash.study, knob))})
        assert_graph_exact(doc)
    assert len(doc.models) > 100  # a whole page, not an empty document


def test_a_whole_templated_page_is_attached_in_one_walk(counted):
    """HouseTemplate attaches the page's ~20 roots inside one freeze: one walk, same models."""
    dash = dashboard_class("criticality")()
    page = dash.page()
    doc = Document()
    counted.clear()
    page.server_doc(doc)
    assert len(doc.roots) > 5
    assert len(counted) == 1
    assert_graph_exact(doc)
