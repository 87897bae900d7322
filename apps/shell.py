"""What every lab page shares: the template, the error alert, exports, URL sync, cleanup.

Objects here are built per session (inside a ``create_app`` call), never at module level.
"""

from __future__ import annotations

import base64
import functools
import html
import importlib.util
import io
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import holoviews as hv
import panel as pn

from workbench.study import StudyInputError, collect_notes

log = logging.getLogger("workbench.apps")

ACCENT = "#0072B2"
_extensions_lock = threading.Lock()
_extensions_loaded = False


def load_extensions() -> None:
    """Load HoloViews' Bokeh backend and Panel's extensions once (not as an import side effect)."""
    global _extensions_loaded
    with _extensions_lock:
        if not _extensions_loaded:
            hv.extension("bokeh", logo=False)
            # KaTeX typesets the explanations (served from Panel's bundle, never a CDN).
            pn.extension("katex", notifications=True)
            _extensions_loaded = True


#: Width below which a page becomes one column (a phone held upright is 360–430 px wide).
PHONE_WIDTH_PX = 720
#: The template on a phone: sidebar above the plots, both full width, header items wrapped.
PHONE_TEMPLATE_CSS = f"""
@media (max-width: {PHONE_WIDTH_PX}px) {{
  #content {{ flex-direction: column !important; height: auto !important; }}
  #sidebar {{ width: 100% !important; min-width: 0 !important; max-width: 100% !important;
             height: auto !important; max-height: none !important; overflow: visible !important;
             position: static !important; box-sizing: border-box !important; }}
  #main {{ width: 100% !important; min-width: 0 !important; max-width: 100% !important;
          padding-left: 4px !important; padding-right: 4px !important;
          box-sizing: border-box !important; overflow-x: hidden !important; }}
  #header {{ height: auto !important; min-height: 56px; flex-wrap: wrap; }}
  #header .title {{ font-size: 1.1em !important; white-space: normal !important; }}
}}
"""
#: A row of panels stacks into a column on a phone (the style lives in the row's shadow root).
ROW_STACKS_ON_PHONE = f"""
@media (max-width: {PHONE_WIDTH_PX}px) {{
  :host {{ flex-direction: column !important; flex-wrap: nowrap !important; }}
  :host > * {{ width: auto !important; max-width: 100% !important; align-self: stretch; }}
}}
"""


def row(*panels: Any) -> pn.Row:
    """Panels side by side on a screen, stacked on a phone."""
    return pn.Row(*panels, sizing_mode="stretch_width", stylesheets=[ROW_STACKS_ON_PHONE])


class HouseTemplate(pn.template.FastListTemplate):
    """FastListTemplate whose page is attached to its document in one freeze, without Panel's
    busy spinner.

    The template adds its ~20 roots one ``add_root`` at a time, and Bokeh walks the whole
    model graph after each (26 walks per lab page). One freeze around the attachment walks it
    once: a criticality page built in 1.6–1.9 s instead of 2.4–2.6 s (2026-11-28, 2 cores), with
    the same model set (tests/test_model_graph.py).

    No busy spinner (``busy_indicator=None``): Panel keeps one process-wide "busy" flag, set
    around every widget event and periodic callback of *any* session, and every page's spinner
    follows it, so with thirty pages open each event in one page wrote its busy value into all
    thirty documents twice, and each was patched out to its browser. Under the 30-session load
    test that bookkeeping was in 12 % of the samples in which the server held the GIL (py-spy
    ``--gil``, 2026-11-29; the event loop held it in 96 % of them), and the
    spinner told a visitor that someone, somewhere, was busy. A page's own status line says
    when its view is being computed (:meth:`StatusLine.computing`).
    """

    def __init__(self, **params: Any) -> None:
        params.setdefault("busy_indicator", None)
        super().__init__(**params)

    def _init_doc(self, doc=None, comm=None, title=None, notebook=False, location=True):
        document = doc if doc is not None else pn.state.curdoc
        if document is None:
            return super()._init_doc(doc, comm, title, notebook, location)
        with document.models.freeze():
            return super()._init_doc(document, comm, title, notebook, location)


def template(title: str, *, sidebar: list, main: list) -> pn.template.FastListTemplate:
    """The house template: knobs in the sidebar, plots in the main area; one column on a phone
    (:data:`PHONE_TEMPLATE_CSS`)."""
    load_extensions()
    return HouseTemplate(
        raw_css=[PHONE_TEMPLATE_CSS],
        title=title,
        sidebar=sidebar,
        main=main,
        accent=ACCENT,
        header_background=ACCENT,
        sidebar_width=340,
        main_layout=None,
        meta_viewport="width=device-width, initial-scale=1",
    )


def lab_pages() -> dict[str, str]:
    """Labs that have a dashboard module (``apps/<lab>.py``): name -> title."""
    from workbench.labs import registry

    return {
        name: info.title
        for name, info in registry().items()
        if importlib.util.find_spec(f"apps.{name}") is not None
    }


def nav_bar(current: str) -> pn.pane.Markdown:
    """Links back to the landing page and across to the other labs."""
    links = ["[← all labs](./)"] + [
        f"**{html.escape(title)}**" if name == current else f"[{html.escape(title)}](./{name})"
        for name, title in lab_pages().items()
    ]
    return pn.pane.Markdown(" · ".join(links), sizing_mode="stretch_width", css_classes=["nav"])


def failure_page(title: str) -> pn.viewable.Viewable:
    """What a visitor sees when a page cannot be built: a plain message, never a traceback."""
    return template(
        "workbench",
        sidebar=[],
        main=[
            pn.pane.Alert(
                f"The page {html.escape(title)} could not be built. The error was logged on the "
                "server; the other labs are unaffected. [Back to all labs](./)",
                alert_type="danger",
            )
        ],
    )


#: The status line while a new view is computed.
COMPUTING = "computing the new view … (the plots show the previous one until it is ready)"


class StatusLine:
    """An alert for bad input or failures plus a one-line status ("updated in 42 ms").

    ``with status.guard("changing the bandwidth"):`` shows a :class:`StudyInputError` message
    as a warning and any other exception as an error (logged with its traceback on the server,
    never shown to the browser); the page and earlier results stay. Every text is escaped: user
    input can never become markup. An alert stays until the next successful change or until the
    user dismisses it.
    """

    def __init__(self) -> None:
        load_extensions()  # every page builds its status line first
        self.alert = pn.pane.Alert(
            "", alert_type="warning", visible=False, sizing_mode="stretch_width"
        )
        self.dismiss = pn.widgets.Button(label="Dismiss", color="light", width=90, visible=False)
        self.dismiss.on_click(lambda _e: self.clear())
        self.timing = pn.pane.Markdown("", css_classes=["status-timing"], margin=(0, 10))
        self.view = pn.Row(self.alert, self.dismiss, sizing_mode="stretch_width")
        self.failed = False
        #: True while a new view is computed off the loop (:meth:`computing`).
        self.busy = False

    @contextmanager
    def guard(self, action: str, timed: bool = True, clear: bool = True):
        start = time.perf_counter()
        self.failed = False
        try:
            with collect_notes() as notes:
                yield
        except StudyInputError as exc:
            self.failed = True
            self.warn(str(exc))
        except Exception:  # the server must survive anything a knob can trigger
            self.failed = True
            log.exception("failed while %s", action)
            self.error(f"something went wrong while {action} (the details are in the server log)")
        else:
            if clear:
                self.clear()
            self.note(notes)
            if timed:
                self.timing.object = f"{action}: {1e3 * (time.perf_counter() - start):.0f} ms"

    def computing(self, on: bool) -> None:
        """Say that a new view is being computed while the plots keep showing the previous one.

        A line of text, not Panel's ``loading`` overlay: that restyles every Bokeh figure under
        it on the way in and out, and each restyle made Chromium lay out and repaint the figure,
        1.2-2.4 s a figure on this machine (criticality's C_W, 2026-11-29: a move's first plot
        update 9.1 s after the key press with the overlay on three panels, 0.7 s without).
        """
        self.busy = on
        if on:
            self.timing.object = COMPUTING
        elif self.timing.object == COMPUTING:
            self.timing.object = ""

    def _show(self, text: str, kind: str) -> None:
        self.alert.object = text
        self.alert.alert_type = kind
        self.alert.visible = True
        self.dismiss.visible = True

    def warn(self, message: str) -> None:
        """A refused setting: the message (escaped) stays until the user changes something."""
        self._show(html.escape(message), "warning")

    def error(self, message: str) -> None:
        self._show("**Error:** " + html.escape(message), "danger")

    def note(self, notes: list[str]) -> None:
        """Library warnings as an informational note (never rolls anything back)."""
        notes = sorted(set(notes))
        if not notes:
            return
        more = f" (and {len(notes) - 2} more like these)" if len(notes) > 2 else ""
        self._show("**Note:** " + html.escape(" ".join(notes[:2])) + more, "info")

    def clear(self) -> None:
        self.alert.visible = False
        self.dismiss.visible = False
        self.alert.object = ""


def lab_page(info, *, knobs: list, status: StatusLine, plots, dataset, figure, text: str):
    """A page for dashboards not yet on :class:`apps.lab_app.LabDashboard` (kept while the
    labs move over; new labs use the base class)."""
    sidebar = [
        explanation(text),
        *knobs,
        export_buttons(dataset, figure, info.name),
    ]
    main = [
        nav_bar(info.name),
        pn.Column(status.view, status.timing, plots, sizing_mode="stretch_width"),
    ]
    return template(info.title, sidebar=sidebar, main=main)


def export_buttons(
    get_dataset: Callable,
    get_figure: Callable,
    basename: str,
    get_knobs: Callable[[], dict] | None = None,
    text: str = "",
) -> pn.viewable.Viewable:
    """Download the current data (CSV, NetCDF) and figure (standalone HTML).

    The CSV starts with the knob values (``# name = value`` lines, from ``get_knobs``); the
    HTML file starts with the explanation ``text`` (typeset, see :func:`figure_html`)."""
    from workbench import sweep

    def csv():
        knobs = get_knobs() if get_knobs is not None else None
        return io.StringIO(sweep.to_csv(get_dataset(), header=knobs))

    def netcdf():
        # h5netcdf needs a real file-like object with seek; BytesIO is enough.
        buf = io.BytesIO(get_dataset().to_netcdf(engine="h5netcdf"))
        return buf

    def html():
        return io.StringIO(figure_html(get_figure(), basename, text))

    kw = {"color": "light", "sizing_mode": "stretch_width", "embed": False}
    return pn.Column(
        pn.pane.Markdown("**Export**", margin=(0, 10)),
        pn.widgets.FileDownload(callback=csv, filename=f"{basename}.csv", label="Data (CSV)", **kw),
        pn.widgets.FileDownload(
            callback=netcdf, filename=f"{basename}.nc", label="Data (NetCDF)", **kw
        ),
        pn.widgets.FileDownload(
            callback=html, filename=f"{basename}.html", label="Figure (HTML)", **kw
        ),
        sizing_mode="stretch_width",
    )


def figure_html(figure: Any, title: str, text: str = "") -> str:
    """A self-contained HTML file of ``figure`` (BokehJS, Panel and KaTeX inlined: it opens
    without a network, e.g. on a lecture-room laptop), after the explanation ``text`` when
    given (its math typeset by KaTeX, as on the page)."""
    buf = io.StringIO()
    if not text:
        hv.save(figure, buf, backend="bokeh", fmt="html", title=title, resources="inline")
    else:
        from bokeh.resources import INLINE

        page = pn.Column(explanation(text), pn.pane.HoloViews(figure), sizing_mode="stretch_width")
        page.save(buf, resources=INLINE, title=title)
    return _inline_panel_css(buf.getvalue())


def _inline_panel_css(text: str) -> str:
    """Panel's own stylesheets (theme, layout, loading) stay links to its CDN even in an inline
    save; the copies Panel ships are put in as ``data:`` URIs, so the file fetches nothing."""
    dist = Path(pn.__file__).parent / "dist"
    cdn = re.escape(f"https://cdn.holoviz.org/panel/{pn.__version__}/dist/")

    def local(match: re.Match) -> str:
        path = dist / match.group(1)
        if ".." in match.group(1) or not path.is_file():
            return match.group(0)
        return "data:text/css;base64," + base64.b64encode(path.read_bytes()).decode()

    return re.sub(cdn + r"([\w./@-]+\.css)(?:\?v=[\w.]+)?", local, text)


def read_query(names: list[str]) -> dict[str, float | int | str]:
    """Knob values given in the page URL (``/kde?bandwidth=0.8&dim=40``), parsed as numbers.

    Values are validated by the caller through the Study (bounds, sizes), so a hand-edited link
    with a bad value gets the same alert as a bad knob setting, not a broken session.
    """
    from workbench.sweep import iter_values

    args = pn.state.session_args if pn.state.curdoc is not None else {}
    found = {}
    for name in names:
        raw = args.get(name)
        if raw:
            text = raw[0].decode(errors="replace")[:64]  # bounded: it is user text
            parsed = list(iter_values(text))
            if len(parsed) == 1:
                found[name] = parsed[0]
    return found


def write_query(values: dict) -> None:
    """Put the current knob values in the URL, so the view can be shared by its link."""
    if pn.state.location is not None:
        pn.state.location.update_query(**{k: v for k, v in values.items()})


def defer(callback: Callable[[], None]) -> None:
    """Run ``callback`` on the next tick so a loading state set before it reaches the browser."""
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        doc.add_next_tick_callback(callback)
    else:
        callback()


def on_session_end(callback: Callable[[], None]) -> None:
    """Free per-session objects when the browser tab goes away."""
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.on_session_destroyed(lambda _ctx: callback())


#: Markdown's own look (lists, paragraphs) for the explanation, which is not a Markdown pane.
EXPLANATION_CSS = """
:host { font-size: 0.95em; line-height: 1.45; }
ul { padding-left: 1.2em; margin: 0.3em 0; }
li { margin: 0.15em 0; }
p { margin: 0.4em 0; }
/* KaTeX writes HTML and MathML; the browser draws the MathML (no KaTeX fonts to load). Panel's
   katex.css says the same, but an exported file would fetch that sheet from a CDN. */
span.katex-html { display: none; }
.math.block { display: block; overflow-x: auto; overflow-y: hidden; margin: 0.4em 0; }
"""


@functools.cache
def _math_markdown():
    """Markdown with ``$…$`` / ``$$…$$`` kept out of Markdown's hands (``_`` and ``*`` inside a
    formula are TeX, not emphasis) and handed to KaTeX as ``\\(…\\)`` / ``\\[…\\]``."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    def tex(content: str, options: dict) -> str:
        # The plugin wraps this in <span class="math inline"> or <div class="math block">.
        # KaTeX's auto-render reads text nodes, so an escaped "<" reaches it as "<".
        if options.get("display_mode"):
            return f"\\[{html.escape(content)}\\]"
        return f"\\({html.escape(content)}\\)"

    return MarkdownIt("commonmark", {"html": False}).use(
        dollarmath_plugin, allow_space=True, allow_digits=False, double_inline=True, renderer=tex
    )


def math_html(markdown: str) -> str:
    """The explanation's Markdown as HTML with its math left for KaTeX (see :func:`explanation`).

    ``allow_digits=False``: a ``$`` with a digit on its outer side ("costs 5$", "$6 each") is not
    a delimiter, so prices never turn into math. Raw HTML in the text is escaped (Markdown's
    ``html`` option off): the explanation is ours, but nothing in it may become markup by accident.
    """
    return _math_markdown().render(markdown)


class _Explanation(pn.pane.LaTeX):
    """The LaTeX pane without Panel's one-rule katex.css: :data:`EXPLANATION_CSS` carries that
    rule inline, and an exported file would otherwise fetch the sheet from Panel's CDN."""

    _stylesheets: ClassVar[list[str]] = []


def explanation(markdown: str) -> pn.viewable.Viewable:
    """The page's explanation: Markdown with ``$…$`` and ``$$…$$`` formulas typeset by KaTeX.

    Panel's Markdown pane typesets ``$$`` through Bokeh's MathJax bundle, not KaTeX; the
    LaTeX pane's KaTeX model (``renderer="katex"``) runs KaTeX's auto-render over whatever HTML
    it is given, so the Markdown is rendered to HTML here (math untouched) and KaTeX does the
    rest in the browser. KaTeX ships with Panel (``panel/dist/bundled/katex``) and is served
    by the Panel server or inlined into an exported file: no CDN, so it works offline. Panel's
    KaTeX stylesheet shows KaTeX's MathML output (drawn by the browser with its own fonts), so
    KaTeX's web fonts are not needed either.
    """
    return _Explanation(
        math_html(markdown),
        renderer="katex",
        sizing_mode="stretch_width",
        css_classes=["explanation"],
        stylesheets=[EXPLANATION_CSS],
    )


class LiveMarker:
    """A point or vertical line drawn into a rendered Bokeh figure and moved in place.

    HoloViews re-processes every layer of an overlay on each update (~4 ms a layer), so a
    "you are here" marker on top of static curves would cost tens of milliseconds per knob move.
    Instead a HoloViews ``hooks`` callback adds one glyph with its own data source when the
    figure is rendered, and :meth:`move` edits that source: one tiny model change per move.
    """

    def __init__(self, kind: str = "point", **style) -> None:
        if kind not in ("point", "vline"):
            raise ValueError(f"kind must be 'point' or 'vline', not {kind!r}")
        self.kind = kind
        self.style = style
        self.x, self.y = float("nan"), float("nan")
        self._models: list = []
        self._figure = lambda: None  # the Bokeh figure holding the marker (a weak reference)

    def hook(self, plot, _element) -> None:
        from bokeh.models import ColumnDataSource, Span

        figure = plot.state
        if self._models and self._figure() is figure:
            return  # an in-place update re-runs hooks on the same figure: one marker is enough
        if self.kind == "point":
            model = ColumnDataSource({"x": [self.x], "y": [self.y]})
            figure.scatter("x", "y", source=model, **self.style)
        else:
            model = Span(location=self.x, dimension="height", **self.style)
            figure.add_layout(model)
        # Only the newest figure's glyph is live: a marker belongs to one pane, and editing a
        # glyph of a figure the pane has replaced would send the browser a patch for a model
        # it has already dropped ("reference ... isn't known").
        self._models = [model]
        self._figure = weakref.ref(figure)

    def move(self, x: float, y: float | None = None) -> None:
        self.x, self.y = float(x), float("nan") if y is None else float(y)
        for model in self._models:
            if self.kind == "point":
                model.data = {"x": [self.x], "y": [self.y]}
            else:
                model.location = self.x
