"""Figures drawn once and then updated in place.

Setting ``pane.object = new_figure`` on a HoloViews pane makes Panel build a new Bokeh plot
(figure, axes, tools, glyphs: ~1,500 Bokeh objects for a six-panel page) and ship all of it to
the browser; on this 2-core machine that cost 0.3–0.5 s per panel on the event loop, 3.4 s for one
C_W move in the criticality lab (cProfile, 2026-11-28). A DynamicMap driven by a stream instead
lets HoloViews patch the existing glyphs' data, axes and title: the Bokeh objects stay and only
columns travel.

:class:`LiveFigures` wraps that pattern for a dict of named figures. ``update`` takes the new
figures; one whose structure (element types, labels, dimensions, overlay layers) matches the one
on screen is pushed through its stream, any other replaces the pane's object, because a
DynamicMap cannot add or drop overlay layers in place.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import holoviews as hv
import panel as pn

from apps import live_patch, panel_queue
from apps.knobs import in_session


def structure(obj: Any) -> tuple:
    """What must not change for an in-place update: types, group/label, dims, layers, shape."""
    if isinstance(obj, hv.core.overlay.Overlay | hv.core.layout.Layout | hv.core.layout.NdLayout):
        return (type(obj).__name__, tuple(structure(item) for item in obj))
    if isinstance(obj, hv.core.overlay.NdOverlay | hv.HoloMap):
        return (type(obj).__name__, tuple(obj.keys()), tuple(structure(v) for v in obj.values()))
    if isinstance(obj, hv.core.Dimensioned):
        dims = tuple(d.name for d in obj.dimensions())
        return (type(obj).__name__, obj.group, obj.label, dims)
    return (type(obj).__name__,)


def _framewise(figure: Any) -> Any:
    """Each frame sets its own ranges (a new depth or rank changes the axes).

    Set on the figure itself, in place: ``DynamicMap.opts(...)`` would wrap the map in a dynamic
    operation that clones and re-options every frame, 17 ms a panel update of the 110 ms HoloViews
    spent (cProfile of a criticality C_W move, 2026-11-28); the options alone cost 3-5 ms."""
    figure.opts(framewise=True, axiswise=True, clone=False)
    return figure


def _when_loaded(page: weakref.ref) -> Callable[[], None]:
    """The page's onload callback, holding the page weakly. Panel keeps onload callbacks in a
    ``WeakKeyDictionary`` keyed by the document; a callback that held the page (and through it
    the document) kept the key alive, so a tab closed before its browser said "loaded" leaked
    its whole dashboard (tests/test_load.py's soak, 2026-11-29)."""

    def loaded() -> None:
        live = page()
        if live is not None and not live.closed:
            live._show_next()

    return loaded


class LiveFigures:
    """Named HoloViews panes whose figures update in place when their structure allows.

    ``draw(name)`` builds a figure from the caller's current state; ``panes[name]`` is what the
    layout shows; ``refresh(*names)`` redraws those figures (all when none are named).
    """

    def __init__(
        self,
        draw: Callable[[str], Any],
        names: tuple[str, ...],
        pane_options: Mapping[str, Any] | None = None,
        fast: bool = True,
        defer: bool | None = None,
    ) -> None:
        self.draw = draw
        self.names = tuple(names)
        self.pane_options = dict(pane_options or {})
        #: Write new frames' data straight into the plots when possible (apps/live_patch.py).
        self.fast = fast
        self.counters = {name: hv.streams.Counter() for name in self.names}
        self._pending: dict[str, Any] = {}
        self._structure: dict[str, tuple] = {}
        self.dmaps: dict[str, hv.DynamicMap] = {}
        self.panes: dict[str, pn.pane.HoloViews] = {}
        #: Served pages show each figure on its own tick after the page loaded (:meth:`_show_next`).
        self.deferred = in_session() if defer is None else defer
        self.closed = False
        self._wanted: list[str] = []  # refreshed before shown: shown first
        #: Set by the page when its user moves a knob: the first panel that change refreshes
        #: while still waiting for its turn is shown next (once; streams do not re-hurry).
        self.hurry = False
        for name in self.names:
            self.dmaps[name] = self._dmap(name, draw(name))
            shown = None if self.deferred else self.dmaps[name]
            self.panes[name] = pn.pane.HoloViews(shown, loading=shown is None, **self.pane_options)
        if self.deferred:
            self._doc = pn.state.curdoc
            pn.state.onload(_when_loaded(weakref.ref(self)))

    def _show_next(self) -> None:
        """Queue this page's panels to be shown one per tick (apps/panel_queue.py).

        Building a panel's Bokeh plot costs 0.3-0.5 s of event loop (a lab page: 1.8-3.4 s, on
        this 2-core machine with warm caches, 2026-11-28). Built in one go before the page was
        sent, nothing showed until the last panel was done, and every other session's knob
        waited that long. Here the page (widgets, text, loading panels) goes first, then the
        panels in page order, taking turns with other pages' panels and never more than one
        build ahead of a knob change. In Chromium the knobs then show ~0.8 s sooner and the
        first plot about as soon as when the first panel went out with the page (an A/B on
        this machine, 2026-11-28).
        """
        panel_queue.enqueue(self._doc, self)

    def show_one(self) -> bool:
        """Show the next empty panel, a refreshed one first; True while others are left
        (apps/panel_queue.py)."""
        empty = [name for name in self.names if self.panes[name].object is None]
        self._wanted = [name for name in self._wanted if name in empty]
        if empty:
            self._show(self._wanted.pop(0) if self._wanted else empty[0])
        return len(empty) > 1

    def _show(self, name: str) -> None:
        self.panes[name].object = self.dmaps[name]
        self.panes[name].loading = False

    def _dmap(self, name: str, figure: Any) -> hv.DynamicMap:
        self._pending[name] = _framewise(figure)
        self._structure[name] = structure(figure)
        return hv.DynamicMap(lambda counter, n=name: self._frame(n), streams=[self.counters[name]])

    def _frame(self, name: str) -> Any:
        figure = self._pending.get(name)
        return self.draw(name) if figure is None else figure

    def shown(self, name: str) -> Any:
        """The figure the pane shows now (the DynamicMap's latest frame)."""
        return self._frame(name)

    def refresh(self, *names: str) -> list[str]:
        """Redraw ``names`` (default: all); returns those that were rebuilt, not patched."""
        rebuilt = []
        for name in names or self.names:
            figure = self.draw(name)
            if structure(figure) == self._structure[name]:
                self._pending[name] = _framewise(figure)
                if self.hurry and self.panes[name].object is None and not self.closed:
                    # A knob moved before this panel's turn: show it next, ahead of the
                    # other panels and pages (a class's thirty pages fill in behind it).
                    self.hurry = False
                    self._wanted.append(name)
                    panel_queue.hurry(self)
                if not self._patch(name, figure):
                    self.counters[name].event()
            else:
                self.dmaps[name] = self._dmap(name, figure)
                self._show(name)
                rebuilt.append(name)
        return rebuilt

    def _patch(self, name: str, figure: Any) -> bool:
        """Write ``figure`` into every rendered copy of the panel (:func:`apps.live_patch.patch`);
        False when one cannot be patched, and HoloViews' full update follows."""
        plots = [plot for plot, _ in self.panes[name]._plots.values()]
        if not self.fast or not plots or not all(live_patch.patch(p, figure) for p in plots):
            return False
        # The DynamicMap memoizes its last frame by the stream's value: move the counter on
        # (without triggering) so a later render of the pane asks ``_frame`` for this figure.
        self.counters[name].update()
        return True

    def close(self) -> None:
        """Drop the figures (and the data they hold) when the session ends."""
        self.closed = True
        if self.deferred:
            panel_queue.release(self)  # its scheduled build, if any, will never run
        self._pending.clear()
