"""Write a new frame's data straight into a rendered HoloViews/Bokeh figure.

A knob move changes a figure's numbers, its title and which theory layers show; it does not
change its element types, labels, dimensions, styles or plot options. HoloViews' own frame
update (``OverlayPlot.update_frame``) re-derives all of those anyway: it looks up and re-applies
every plot and style option of every layer, re-sets each glyph's properties, re-processes the
legend and recomputes the axes. On this 2-core machine that was ~110 ms per panel for a
criticality C_W move, of which the data, axes and title are ~40 % (cProfile, 2026-11-28).

:func:`patch` does only those, through HoloViews' own pieces, so the result is what HoloViews
would draw:

* the axes: ``compute_ranges`` and ``_update_ranges`` of the top plot (padding, log axes,
  ``xlim``/``ylim`` and dimension ranges handled as HoloViews does);
* each layer's columns: the layer plot's ``get_data`` and ``_update_datasource`` (a Span's
  ``location`` for HLine/VLine);
* each layer's ``visible`` style (:func:`workbench.plots.shown_if`) and, when that changed, the
  legend (HoloViews' ``_process_legend``, which lists visible layers only); the title; the hooks.

It refuses (returns False, and the caller takes HoloViews' full update) whenever that would not
be the same picture: a layer of a kind it does not know, a style or plot option other than
``visible``/``title`` that differs from the frame on screen, a glyph mapping that changed, a
figure on an unfamiliar plot class. ``tests/test_live_patch.py`` draws every lab's panels both
ways after each knob move and compares every data column, range, title and visibility.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

import holoviews as hv
import numpy as np

#: Layer plot classes whose whole frame is their data source (or a Span's location).
_DATA_PLOTS = (
    "AreaPlot",
    "CurvePlot",
    "ErrorPlot",
    "HistogramPlot",
    "LabelsPlot",
    "LineAnnotationPlot",
    "PointPlot",
    "QuadMeshPlot",
    "ScatterPlot",
    "SpreadPlot",
    "TextPlot",
)
#: Options a knob move may change without HoloViews' full update.
_FREE_OPTIONS = frozenset({"visible", "title"})


def _unlocked():
    """Panel's ``unlocked``: inside a server callback, send the model changes at once."""
    try:
        from panel.io.document import unlocked
    except ImportError:  # pragma: no cover - Panel always present where apps/ runs
        return contextlib.nullcontext()
    return unlocked()


def _layers(plot: Any, figure: Any) -> list[tuple[Any, Any]] | None:
    """(layer plot, new element) pairs in the overlay's order, or None if they do not match."""
    if isinstance(figure, hv.Overlay):
        subplots = getattr(plot, "subplots", None)
        if not subplots or len(subplots) != len(figure):
            return None
        pairs = []
        for (key, subplot), (new_key, element) in zip(
            subplots.items(), figure.data.items(), strict=True
        ):
            if key != new_key or subplot is None:
                return None
            pairs.append((subplot, element))
        return pairs
    if isinstance(figure, hv.Element):
        return [(plot, figure)]
    return None


#: Per layer plot: (the element whose options were last looked up, those options). The frame
#: on screen was the "new" frame of the previous patch, so its lookup is not repeated.
_LOOKED_UP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _options(plot: Any, element: Any) -> dict:
    """Plot and style options of ``element`` as ``plot`` would apply them, minus the free ones."""
    seen = _LOOKED_UP.get(plot)
    if seen is not None and seen[0] is element:
        return seen[1]
    found = {}
    for group in ("plot", "style"):
        options = plot.lookup_options(element, group).kwargs  # .options refuses cyclic styles
        found[group] = {k: v for k, v in options.items() if k not in _FREE_OPTIONS}
    _LOOKED_UP[plot] = (element, found)
    return found


def _same(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return bool(np.array_equal(a, b))
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable option values: not the same
        return False


def _same_options(old: dict, new: dict) -> bool:
    return old.keys() == new.keys() and all(_same(old[k], new[k]) for k in old)


def _unchanged(plot: Any, old: Any, new: Any) -> bool:
    """Plot and style options (``visible``/``title`` aside) equal on the frame on screen."""
    if old is None:
        return False
    if (
        type(old) is type(new)
        and old.id == new.id
        and (old.group, old.label) == (new.group, new.label)
    ):
        # One options tree (workbench.plots.styled) on the same type.group.label path: the
        # lookup would give the same options.
        return True
    before, after = _options(plot, old), _options(plot, new)
    return all(_same_options(before[group], after[group]) for group in ("plot", "style"))


def patch(plot: Any, figure: Any) -> bool:
    """Update a rendered HoloViews Bokeh ``plot`` to ``figure`` in place; False if it cannot.

    ``figure`` must have the structure of the frame on screen (:func:`apps.live.structure`);
    anything else this function checks itself before it changes a model, so a False return
    leaves the figure untouched.
    """
    pairs = _layers(plot, figure)
    if pairs is None or type(plot).__name__ not in ("OverlayPlot", *_DATA_PLOTS):
        return False
    if not _unchanged(plot, plot.current_frame, figure):
        return False
    updates = []
    for subplot, element in pairs:
        if type(subplot).__name__ not in _DATA_PLOTS or not _unchanged(
            subplot, subplot.current_frame, element
        ):
            return False
        updates.append((subplot, element))
    state = plot.state
    document = state.document
    freeze = document.models.freeze() if document is not None else contextlib.nullcontext()
    with _unlocked(), freeze:
        hold, state.hold_render = state.hold_render, True
        try:
            return _apply(plot, figure, updates)
        finally:
            state.hold_render = hold


def _apply(plot: Any, figure: Any, updates: list[tuple[Any, Any]]) -> bool:
    from holoviews.core import util

    key = plot.current_key
    # The new frames first: compute_ranges reads the layers' current frames, not only ``figure``.
    plot.prev_frame, plot.current_frame = plot.current_frame, figure
    for subplot, element in updates:
        subplot.prev_frame, subplot.current_frame = subplot.current_frame, element
    ranges = plot.compute_ranges(figure, key, None)
    shown_changed = False
    for subplot, element in updates:
        style = subplot.lookup_options(element, "style")[subplot.cyclic_index]
        layer_ranges = util.match_spec(element, ranges)
        data, mapping, style = subplot.get_data(element, layer_ranges, style)
        if not _write(subplot, data, mapping):
            return False  # nothing written yet for this layer; HoloViews redraws the figure
        renderer = subplot.handles.get("glyph_renderer") or subplot.handles.get("glyph")
        visible = bool(style.get("visible", True))
        if renderer is not None and getattr(renderer, "visible", visible) != visible:
            renderer.visible = visible
            shown_changed = True
        subplot.current_ranges = layer_ranges
    plot._apply_plot_opts(plot.lookup_options(figure, "plot").options)
    plot._update_ranges(figure, ranges)
    plot._update_title(key, plot.state, figure)
    if shown_changed and hasattr(plot, "_process_legend"):
        # HoloViews lists only visible layers: a theory shown or hidden joins or leaves it.
        plot._process_legend(figure)
    plot._execute_hooks(figure)
    for subplot, element in updates:
        if subplot is not plot and subplot.hooks:
            subplot._execute_hooks(element)
    return True


def _write(subplot: Any, data: dict, mapping: dict) -> bool:
    """Put one layer's new data in its model: a Span's location, else the data source."""
    glyph = subplot.handles.get("glyph")
    if type(subplot).__name__ == "LineAnnotationPlot":
        location = mapping.get("location")
        if glyph is None or not hasattr(glyph, "location"):
            return False
        if not _same(glyph.location, location):
            glyph.location = location
        return True
    source = subplot.handles.get("source")
    if source is None or glyph is None:
        return False
    for name, spec in mapping.items():
        # A field must exist in the new columns; a literal value must be the one drawn.
        field = spec.get("field") if isinstance(spec, dict) else spec
        if isinstance(field, str) and field in data:
            continue
        current = getattr(glyph, name, None) if hasattr(glyph, name) else None
        if not _same(_literal(current), _literal(spec)):
            return False
    subplot._update_datasource(source, data)
    return True


def _literal(value: Any) -> Any:
    """A Bokeh property value or a mapping entry as a plain value for comparison."""
    if isinstance(value, dict):
        return value.get("value", value)
    return getattr(value, "value", value)
