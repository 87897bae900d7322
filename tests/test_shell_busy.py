"""One page's events write nothing into another page's document (apps/shell.HouseTemplate).

Panel keeps one process-wide "busy" flag, set around every widget event and periodic callback
of any session, and every template's busy spinner followed it: with thirty pages open, a slider
moved in one wrote into all thirty documents. The house template has no spinner, and a stream's
drain callback does no busy bookkeeping at all.
"""

from __future__ import annotations

import panel as pn
from bokeh.document import Document
from panel.io.state import set_curdoc

from apps import shell


def _served_page() -> tuple[Document, pn.widgets.IntSlider]:
    slider = pn.widgets.IntSlider(label="knob", start=0, end=10, value=1)
    page = shell.template("a page", sidebar=[slider], main=[pn.pane.Markdown("plots")])
    doc = Document()
    with set_curdoc(doc):
        page.server_doc(doc)
    return doc, slider


def test_a_widget_event_in_one_page_changes_nothing_in_another():
    doc_a, slider_a = _served_page()
    doc_b, _ = _served_page()
    changes_b: list = []
    doc_b.on_change(changes_b.append)
    seen: list[int] = []
    slider_a.param.watch(lambda event: seen.append(event.new), "value")
    with set_curdoc(doc_a):
        slider_a._process_events({"value": 7})  # what a browser's slider move arrives as
    assert seen == [7]  # the event was processed (and Panel set its busy flag around it) ...
    assert changes_b == []  # ... and the other page's document saw none of it


def test_the_house_template_has_no_process_wide_busy_spinner():
    page = shell.template("a page", sidebar=[], main=[])
    assert page.busy_indicator is None
