"""The dashboard base class: everything a lab page does that is not the lab's own science.

A lab's dashboard module (``apps/<lab>.py``) subclasses :class:`LabDashboard`, names its Study,
says which knobs are cheap (updated in place on the event loop) and implements four hooks:

``compute(study) -> result``
    The heavy work for the current knobs. Runs on a worker thread (never on the server's event
    loop), on a *snapshot* of the Study, so it must not touch Panel objects. Return anything.
``render(result)``
    Runs on the event loop with the result: update panes, streams and markers in place.
``update_cheap(changed)``
    Optional: a fast in-place update for knobs listed in :attr:`cheap` (e.g. moving a marker).
``plots()``
    The main area (built once, in ``__init__`` after the first render, by :meth:`page`).

and may override ``dataset()`` / ``figure()`` (what the export buttons write) and ``close()``.

What the base does for every lab:

* **Widgets from the Study.** Each knob's widget is made from its ``param`` declaration (label,
  bounds or soft bounds, step, the names of a selector, the doc as a tooltip), so a widget can
  never offer a value the Study refuses. :attr:`widget_overrides` changes the display only
  (a log-scale slider, radio buttons), never the bounds.
* **One state.** A knob change goes through :meth:`request`: the Study validates it
  (:meth:`Study.checked_update`, all-or-nothing, size caps included) *before* any work; a refused
  value leaves a warning that stays until the user changes something or dismisses it, and the
  widget snaps back. Accepted values are written to the URL (clean text, refused values
  dropped), so widgets, plots, URL and exports always agree. An informational note (a library
  warning) never rolls anything back; an *error* in the computation restores the last good knobs
  and keeps the last good view.
* **Off the event loop.** Expensive knobs run ``compute`` on a worker pool behind a loading
  state; the pool serves sessions in turn and keeps a thread for quick work
  (apps/fair_pool.py). A newer change supersedes a stale computation (its result is dropped,
  its queued task never starts), a computation running past :attr:`time_budget_s` (its own
  time, not its wait for a worker) is abandoned with a message, and closing the tab drops the
  session's work. Without a server session (tests, notebooks) everything runs inline.
* **Streaming.** :meth:`start_stream` runs a generator (policy iteration, Krylov iterations, a
  layer-by-layer flow) on the worker pool and hands the items to the page in batches, one batch
  per tick, so a curve grows live without the loop ever waiting on the computation.
* **Links.** ``/<lab>?knob=value`` is parsed by the knob's type and validated like a widget
  change; a bad value gives a plain, escaped alert naming the knob and its allowed range and the
  rest of the page loads; nothing a user typed is ever rendered as HTML; errors are logged, never
  shown as tracebacks.
* **Page.** Header links to the landing page and every other lab; the explanation first, then the
  knobs, "copy link", "reset to defaults" and the exports (CSV, NetCDF, self-contained HTML).

Cancellation: long loops in the library call :func:`workbench.study.checkpoint` between steps;
when a newer change supersedes a computation, its time budget runs out or its tab closes, the
computation stops there (a :class:`~workbench.study.Cancelled` exception the base swallows).

Library notes: a lab tells the user about a setting with :func:`workbench.study.warn_user`
(a ``StudyWarning``); the base shows it as an informational note and never rolls back for it.
A :class:`~workbench.study.StudyInputError` raised by ``compute`` is shown as a warning and the
last good knobs and view are restored; any other exception is logged and shown as a plain error.

Hooks: HoloViews keeps a ``.opts(hooks=[...])`` callable in its process-wide option store until
the element carrying it is freed, so a hook must not hold the dashboard (capture only what it
needs, or use :class:`apps.shell.LiveMarker`): one that closes over ``self`` keeps every closed
page and its Study alive (``tests/test_load.py`` checks every lab after a soak).

Browser tests: ``tests/browser.py`` has the helpers (``wait_for_plots``, ``plot_signature``,
``press_slider``, ``wait_for_redraw``, ``serious``); ``tests/test_lab_app.py`` shows them used.

Minimal example (a complete lab page)::

    class MyDashboard(LabDashboard):
        study_class = MyStudy
        cheap = ("bandwidth",)
        explanation = "**What you see.** ..."

        def compute(self, study):
            return study.evaluate()

        def render(self, result):
            self.result = result
            self.pane.object = figures.main_figure(result)

        def plots(self):
            self.pane = pn.pane.HoloViews(figures.main_figure(self.result))
            return self.pane

    create_app = MyDashboard.create_app
    warm_cache = MyDashboard.warm_cache
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar

import panel as pn
import param
import xarray as xr

from apps import fair_pool, model_graph, sessions, shell
from apps.knobs import (  # noqa: F401 - re-exported: labs and tests use them from here
    MAX_LINK_VALUE,
    estimate_seconds,
    in_session,
    link_text,
    nearest_stop,
    parse_value,
    quote_link,
    session_query,
    slow_notes,
    widget_for,
    widget_range,
)
from apps.sessions import POOL_WORKERS, worker_pool  # noqa: F401 - re-exported
from apps.streaming import StreamingMixin
from workbench.study import Cancelled, Study, StudyInputError, cancellable

log = logging.getLogger("workbench.apps")
# Every page is a Bokeh document: walk its model graph only when it changed (apps/model_graph.py).
model_graph.install()


# --- the dashboard ---------------------------------------------------------------------------------
class LabDashboard(StreamingMixin):
    """One browser session's lab page (see the module docstring for the contract)."""

    study_class: ClassVar[type[Study]]
    #: Knobs whose change is handled by :meth:`update_cheap` on the event loop (no recompute).
    cheap: ClassVar[tuple[str, ...]] = ()
    #: The knob a user turns most (benchmarks/latency.py times it); default: the first cheap one.
    main_knob: ClassVar[str | None] = None
    #: Longest link text per knob where the default limit (MAX_LINK_VALUE) is too short.
    link_limits: ClassVar[dict[str, int]] = {}
    #: Knobs with no widget (set from the URL or programmatically only).
    hidden: ClassVar[tuple[str, ...]] = ()
    #: Display overrides per knob: {"bandwidth": {"widget": pn.widgets.DiscreteSlider, ...}}.
    widget_overrides: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Markdown shown first in the sidebar: what is on screen, with its formulas.
    explanation: ClassVar[str] = ""
    #: A heavy computation running longer than this is abandoned with a message.
    time_budget_s: ClassVar[float] = 120.0
    #: Milliseconds between two batches of a stream reaching the page.
    stream_period_ms: ClassVar[int] = 120
    #: Panels that :meth:`preview` redraws at once after a heavy change, before the full result.
    previewed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, query: dict[str, str] | None = None) -> None:
        self.study = self.study_class()
        self.status = shell.StatusLine()
        self._doc = pn.state.curdoc if in_session() else None
        self._generation = 0
        self._cancel = threading.Event()
        self._future: Future | None = None
        self._preview_future: Future | None = None
        self._rendered = 0  # generation of the last full result drawn
        self._previewed = -1  # generation of the last preview drawn
        #: (generation, time.monotonic()) of the last computation to start on a worker.
        self._started: tuple[int, float] = (0, 0.0)
        self._stream_generation = 0
        self._stream_callback = None
        self._syncing = False
        self._closed = False
        self._last_good = self.study.values()
        self.plots_area = pn.Column(sizing_mode="stretch_width")
        self.widgets = self._make_widgets()
        self._refused_link: list[str] = []
        if query:
            self._apply_link(query)
        # Every figure needs data to lay out. In a session the page is laid out with the
        # default view (computed at server start by warm_cache, so this is a cache hit) and a
        # link's own view is computed on the worker pool behind the loading state: opening a
        # heavy link never blocks the event loop the other visitors share.
        linked = self._doc is not None and self.study.values() != self.study_class().values()
        first = self.study_class() if linked else self._snapshot()
        self.render(self.compute(first))
        self.plots_area = pn.Column(self.plots(), sizing_mode="stretch_width")
        if linked:
            self.recompute()
        else:
            self._last_good = self.study.values()
        self.write_link()

    # --- hooks a lab implements ---------------------------------------------------------------
    def compute(self, study: Study) -> Any:
        """Heavy work for the knobs in ``study`` (a snapshot; runs on a worker thread)."""
        return study.evaluate()

    def render(self, result: Any) -> None:
        """Apply ``compute``'s result to the page (event loop)."""
        self.result = result

    def preview(self, study: Study) -> Any:
        """The quick part of the view for the knobs in ``study`` (a snapshot; runs on a worker
        thread in the pool's quick lane, well under a second), drawn by :meth:`render_preview`
        while :meth:`compute` still runs: the theory moves with the knob, the measurement
        follows. Only called when :attr:`previewed` names panels."""
        return None

    def render_preview(self, preview: Any) -> None:
        """Apply :meth:`preview`'s result to the :attr:`previewed` panels (event loop)."""

    def update_cheap(self, changed: set[str]) -> None:
        """In-place update after a change of knobs in :attr:`cheap` (event loop, fast)."""
        self.recompute()

    def plots(self) -> pn.viewable.Viewable:
        raise NotImplementedError

    def dataset(self) -> xr.Dataset:
        """What the data export writes (default: the last result when it is a Dataset)."""
        result = getattr(self, "result", None)
        if isinstance(result, xr.Dataset):
            return result
        return self.study.evaluate()

    def figure(self) -> Any:
        """What the figure export writes (a HoloViews object)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the session's references (called when the tab closes)."""

    # --- widgets and knob changes -------------------------------------------------------------
    def _make_widgets(self) -> dict[str, pn.widgets.Widget]:
        widgets = {}
        for name in self.study.knob_names():
            if name in self.hidden:
                continue
            widget = widget_for(self.study, name, **dict(self.widget_overrides.get(name, {})))
            event = "value_throttled" if "value_throttled" in widget.param else "value"
            widget.param.watch(lambda e, n=name: self._on_widget(n, e.new), event)
            widgets[name] = widget
        return widgets

    def _on_widget(self, name: str, value: Any) -> None:
        if self._syncing:
            return
        if isinstance(self.widgets[name], pn.widgets.TextInput) and isinstance(value, str):
            try:
                value = parse_value(self.study, name, value, self._link_limit(name))
            except StudyInputError as exc:
                self.status.warn(str(exc))
                self.sync_widgets([name])
                return
        self.request({name: value})

    def request(self, values: dict[str, Any]) -> bool:
        """Validate and apply knob values; False (with a warning shown) when refused."""
        changed = {k for k, v in values.items() if getattr(self.study, k, object()) != v}
        try:
            self.study.checked_update(**values)
        except StudyInputError as exc:
            self.status.warn(str(exc))
            self.sync_widgets(list(values))  # the refused value snaps back
            return False
        self.status.clear()
        self.sync_widgets(list(values))
        self.write_link()
        if not changed:
            return True
        live = getattr(self, "live", None)
        if live is not None and live.deferred:
            live.hurry = True  # a panel this change redraws that is not shown yet goes next
        if changed <= set(self.cheap):
            with self.status.guard(f"changing {', '.join(sorted(changed))}"):
                self.update_cheap(changed)
                self._last_good = self.study.values()
            if self.status.failed:
                self._restore_last_good()
        else:
            self.recompute()
        return True

    def sync_widgets(self, names: list[str] | None = None) -> None:
        """Make widgets show the Study's values (without triggering another change)."""
        self._syncing = True
        try:
            for name in names or list(self.widgets):
                widget = self.widgets.get(name)
                if widget is None:
                    continue
                value = getattr(self.study, name)
                if isinstance(widget, pn.widgets.TextInput):
                    value = link_text(value).replace(",", ", ")
                elif isinstance(widget, pn.widgets.DiscreteSlider):
                    value = nearest_stop(list(widget.options), value)
                widget.value = value
                if "value_throttled" in widget.param:
                    # Keep value_throttled with value: left behind, the widget held two values
                    # (value 1.05, value_throttled 1.0 on a page opened with ?cw=1.05).
                    with param.edit_constant(widget):
                        widget.value_throttled = value
        finally:
            self._syncing = False

    def _restore_last_good(self) -> None:
        with param.parameterized.discard_events(self.study):
            self.study.param.update(**self._last_good)
        self.sync_widgets()
        self.on_restored()
        self.write_link()

    def on_restored(self) -> None:
        """Hook: the knobs went back to the last good values (snap back widgets of your own)."""

    # --- heavy work off the event loop --------------------------------------------------------
    def _snapshot(self) -> Study:
        # A Study carrying per-session data that are not knobs (an uploaded array) copies
        # itself with them: a new Study from the knob values alone would lose them.
        session_copy = getattr(self.study, "session_copy", None)
        if callable(session_copy):
            return session_copy()
        return self.study_class(**self.study.values())

    def recompute(self) -> None:
        """Run ``compute`` for the current knobs off the loop, then ``render`` on it."""
        self._generation += 1
        generation = self._generation
        self._cancel.set()  # a stale computation stops at its next checkpoint
        self._cancel = cancel = threading.Event()
        snapshot = self._snapshot()
        self.status.note(slow_notes(snapshot))  # said before slow work starts (Study estimate)
        if self._doc is None:
            with self.status.guard("computing", clear=False):
                self.render(self.compute(snapshot))
                self._last_good = self.study.values()
            if self.status.failed:
                self._restore_last_good()
            return
        self.status.computing(True)
        started = time.perf_counter()
        if self._future is not None:
            self._future.cancel()  # still queued: never started (apps/fair_pool.py)
        if self._preview_future is not None:
            self._preview_future.cancel()
        if self.previewed:
            preview = self._preview_future = worker_pool().submit(
                self.preview, snapshot, owner=fair_pool.owner_key(self), seconds=0.1
            )
            preview.add_done_callback(lambda f: self._schedule(self._finish_preview, f, generation))
        future = self._future = worker_pool().submit(
            self._compute_with_notes,
            snapshot,
            cancel,
            generation,
            owner=fair_pool.owner_key(self),
            seconds=estimate_seconds(snapshot),
        )
        future.add_done_callback(lambda f: self._schedule(self._finish, f, generation, started))
        self._arm_budget(generation, self.time_budget_s)

    def _compute_with_notes(
        self, snapshot: Study, cancel: threading.Event, generation: int
    ) -> tuple[Any, list[str]]:
        self._started = (generation, time.monotonic())
        with shell.collect_notes() as notes, cancellable(cancel):
            result = self.compute(snapshot)
        return result, notes

    def _finish_preview(self, future: Future, generation: int) -> None:
        if generation != self._generation or self._closed or self._rendered == generation:
            return  # superseded, closed, or the full result is already drawn
        if future.cancelled() or future.exception() is not None:
            if not future.cancelled():  # the full computation reports it to the page
                log.warning("preview of %s failed", self.study.lab, exc_info=future.exception())
            return
        try:
            self.render_preview(future.result())
            self._previewed = generation
        except Exception:
            log.exception("drawing the preview of %s failed", self.study.lab)

    def preview_drawn(self) -> bool:
        """In :meth:`render`: the :attr:`previewed` panels already show this result's knobs
        (drawn by :meth:`render_preview` from the same snapshot), so they need no redraw."""
        return self._previewed == self._generation

    def _finish(self, future: Future, generation: int, started: float) -> None:
        if generation != self._generation or self._closed:
            return  # superseded by a newer change (or the tab closed): drop the stale result
        self._rendered = generation
        self.status.computing(False)
        error = future.exception()
        if isinstance(error, Cancelled):
            return
        if error is not None:
            if isinstance(error, StudyInputError):
                self.status.warn(str(error))
            else:
                log.error("computing %s failed", self.study.lab, exc_info=error)
                self.status.error("computing this view failed (the details are in the server log)")
            self._restore_last_good()
            return
        result, notes = future.result()
        with self.status.guard("drawing", timed=False, clear=False):
            self.render(result)
            self._last_good = self.study.values()
        if self.status.failed:
            self._restore_last_good()
            return
        self.status.note(notes)
        self.status.timing.object = f"updated in {1e3 * (time.perf_counter() - started):.0f} ms"

    def _arm_budget(self, generation: int, seconds: float) -> None:
        self._doc.add_timeout_callback(
            lambda: self._over_budget(generation), max(1, int(1000 * seconds))
        )

    def _over_budget(self, generation: int) -> None:
        if generation != self._generation or self._closed:
            return
        # The budget counts the computation's own time, not its wait for a free worker while
        # a class shares the server: until it starts, and until its budget is spent, re-arm.
        generation_started, at = self._started
        if generation_started != generation:
            return self._arm_budget(generation, self.time_budget_s)
        left = self.time_budget_s - (time.monotonic() - at)
        if left > 0.01:
            return self._arm_budget(generation, left)
        self._generation += 1  # the late result will be dropped
        self._cancel.set()  # and the computation stops at its next checkpoint
        self.status.computing(False)
        self.status.warn(
            f"This setting took longer than {self.time_budget_s:.0f} s and was abandoned; "
            "the previous view stays. Try a smaller size."
        )
        self._restore_last_good()

    def _schedule(self, callback: Callable, *args: Any) -> None:
        """Run ``callback(*args)`` on the session's event loop (from any thread)."""
        if self._doc is not None and not self._closed:
            sessions.run_on_session_loop(self._doc, callback, *args)

    # --- links --------------------------------------------------------------------------------
    def _apply_link(self, query: dict[str, str]) -> None:
        """Apply ``?knob=value`` text; each bad value is refused with a message, the rest apply."""
        messages = []
        together = {}
        for name in self.study.knob_names():
            if name in query:
                try:
                    together[name] = self._snap(
                        name, parse_value(self.study, name, query[name], self._link_limit(name))
                    )
                except StudyInputError:
                    together = {}
                    break
        try:
            # Knobs that are only valid together (d = 100 with α = 0.1) apply in one step.
            if together:
                self.study.checked_update(**together)
                query = {}
        except StudyInputError:
            pass
        for name in self.study.knob_names():
            if name not in query:
                continue
            try:
                value = parse_value(self.study, name, query[name], self._link_limit(name))
                self.study.checked_update(**{name: self._snap(name, value)})
            except StudyInputError as exc:
                messages.append(str(exc))
                self._refused_link.append(name)
        self.sync_widgets()
        if messages:
            self.status.warn(
                "This link had settings that cannot be used; defaults are shown "
                "for them. " + " ".join(messages)
            )

    def _link_limit(self, name: str) -> int:
        return self.link_limits.get(name, MAX_LINK_VALUE)

    def link_values(self) -> dict[str, str]:
        """The knobs a link must carry: those that differ from their defaults (a default is
        implied, so links stay short), as clean text within each knob's link limit."""
        out = {}
        for name, value in self.study.values().items():
            if value == self.study.param[name].default:
                continue
            text = link_text(value)
            if len(text) <= self._link_limit(name):
                out[name] = text
        return out

    def _snap(self, name: str, value: Any) -> Any:
        """A knob shown on fixed stops (N = 2^k, tol = 10^-k, h on the log stops) takes the
        stop its slider shows from a link, so widget, plots and URL agree (``?tol=5e-9`` is
        1e-8 everywhere; it was 5e-9 in the Study while the slider showed 1e-9)."""
        widget = self.widgets.get(name)
        if isinstance(widget, pn.widgets.DiscreteSlider) and isinstance(value, int | float):
            return nearest_stop(list(widget.options), value)
        return value

    def write_link(self) -> None:
        """The current knobs in the URL (clean text), so the view can be shared by its link."""
        if self._doc is None or pn.state.location is None:
            return
        query = "&".join(f"{k}={quote_link(v)}" for k, v in self.link_values().items())
        pn.state.location.search = "?" + query if query else ""

    def reset(self) -> None:
        """Every knob back to its default."""
        defaults = {k: self.study.param[k].default for k in self.study.knob_names()}
        self.request(defaults)

    # --- the page -----------------------------------------------------------------------------
    def knob_widgets(self) -> list[pn.viewable.Viewable]:
        """The sidebar's knobs, in declaration order, each with its doc as a tooltip."""
        out = []
        for name, widget in self.widgets.items():
            doc = self.study.param[name].doc
            if doc and "description" not in widget.param:
                out.append(pn.Row(widget, pn.widgets.TooltipIcon(value=doc, margin=(28, 0, 0, -8))))
            else:
                out.append(widget)
        return out

    def sidebar_extras(self) -> list[pn.viewable.Viewable]:
        """Extra sidebar items under the knobs (size notes, players, buttons)."""
        return []

    def page(self) -> pn.template.BaseTemplate:
        info = self.study_class
        copy_link = pn.widgets.Button(label="Copy link", color="light", width=140)
        copy_link.js_on_click(code="navigator.clipboard.writeText(window.location.href)")
        reset = pn.widgets.Button(label="Reset to defaults", color="light", width=140)
        reset.on_click(lambda _e: self.reset())
        paper = f"*From:* [{html.escape(info.paper)}]({info.paper_url})" if info.paper_url else ""
        sidebar = [
            shell.explanation(self.explanation + ("\n\n" + paper if paper else "")),
            *self.knob_widgets(),
            *self.sidebar_extras(),
            pn.Row(copy_link, reset),
            shell.export_buttons(
                self.dataset, self.figure, info.lab, self.study.values, text=self.explanation
            ),
        ]
        main = [
            shell.nav_bar(info.lab),
            pn.Column(
                self.status.view, self.status.timing, self.plots_area, sizing_mode="stretch_width"
            ),
        ]
        return shell.template(info.title, sidebar=sidebar, main=main)

    def _session_closed(self) -> None:
        self._closed = True
        self._generation += 1
        self._cancel.set()
        for future in (self._future, self._preview_future):
            if future is not None:
                future.cancel()  # queued work of a closed tab never starts
        self.stop_stream()
        live = getattr(self, "live", None)
        if live is not None:
            live.close()  # its panels still waiting to be shown are dropped
        try:
            self.close()
        except Exception:
            log.exception("closing the %s page failed", self.study.lab)
        sessions.forget_js_callbacks(self.widgets.values())

    # --- entry points -------------------------------------------------------------------------
    @classmethod
    def create_app(cls) -> pn.viewable.Viewable:
        """Build one session's page (``panel serve`` calls this per visitor). Never raises:
        a failure is logged and the visitor gets a plain message, not a traceback."""
        try:
            dashboard = cls(query=session_query())
            if dashboard._doc is not None:
                pn.state.on_session_destroyed(lambda _ctx: dashboard._session_closed())
            return dashboard.page()
        except Exception:
            log.exception("building the %s page failed", cls.study_class.lab)
            return shell.failure_page(cls.study_class.title or cls.study_class.lab)

    @classmethod
    def warm_cache(cls) -> None:
        """Compute the default view once (``workbench serve`` calls this in the background)."""
        dashboard = cls.__new__(cls)
        dashboard.status = shell.StatusLine()
        dashboard.compute(cls.study_class())
