"""Landing page: every lab with a one-paragraph description, its paper and a link."""

from __future__ import annotations

import html

import panel as pn

import workbench
from apps.shell import lab_pages, template
from workbench.labs import registry


def lab_card(info, has_page: bool) -> pn.viewable.Viewable:
    title = html.escape(info.title)
    heading = f"### [{title}](./{info.name})" if has_page else f"### {title}"
    paper = html.escape(info.paper)
    if info.paper_url:
        paper = f"[{paper}]({info.paper_url})"
    where = (
        ""
        if has_page
        else "\n\n*No dashboard yet: use it from the notebooks and `workbench sweep`.*"
    )
    return pn.pane.Markdown(
        f"{heading}\n\n{html.escape(info.summary)}\n\n*Paper:* {paper}{where}",
        css_classes=["lab-card"],
        sizing_mode="stretch_width",
    )


def create_index():
    labs = registry()
    pages = lab_pages()
    intro = pn.pane.Markdown(
        "Each lab reproduces a result from a paper: turn a knob and watch the regime change, "
        "with the theory drawn over the measurement. Open a lab below; every view can be shared "
        "by its URL.",
        sizing_mode="stretch_width",
    )
    cards = [lab_card(info, name in pages) for name, info in labs.items()]
    about = pn.pane.Markdown(
        f"**workbench {workbench.__version__}**\n\nLabs: {len(labs)}\n\n"
        "Run `workbench info` for the compute backend and device."
    )
    return template("workbench: labs from papers", sidebar=[about], main=[intro, *cards])
