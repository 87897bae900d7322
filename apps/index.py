"""Landing page: every lab with a one-paragraph description and a link."""

from __future__ import annotations

import panel as pn

import workbench
from apps.shell import template
from workbench.labs import registry


def lab_card(info) -> pn.viewable.Viewable:
    return pn.pane.Markdown(
        f"### [{info.title}](./{info.name})\n\n{info.summary}\n\n*Paper:* {info.paper}",
        css_classes=["lab-card"],
        sizing_mode="stretch_width",
    )


def create_index():
    intro = pn.pane.Markdown(
        "Each lab reproduces a result from a paper: turn a knob and watch the regime change, "
        "with the theory drawn over the measurement. Open a lab below; every view can be shared "
        "by its URL.",
        sizing_mode="stretch_width",
    )
    cards = [lab_card(info) for info in registry().values()]
    about = pn.pane.Markdown(
        f"**workbench {workbench.__version__}**\n\nLabs: {len(registry())}\n\n"
        "Run `workbench info` for the compute backend and device."
    )
    return template("workbench: labs from papers", sidebar=[about], main=[intro, *cards])
