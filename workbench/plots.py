"""HoloViews builders shared by the dashboards and the notebooks.

Each builder takes plain arrays (or an :class:`xarray.Dataset`) and returns a HoloViews
element or overlay, so a notebook figure and a dashboard figure are the same object. The
builders never load a plotting extension: callers do (``hv.extension("bokeh")`` in notebooks,
Panel in apps). HoloViews is imported lazily so ``import workbench`` stays light.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workbench.backend import to_host
from workbench.fit import loglog_slope

#: A colour-blind-safe cycle (Okabe–Ito) so families read the same in every lab.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
THEORY_STYLE = {"line_dash": "dashed", "line_width": 2}
#: Regime colours, from the most condensed to the most spread out (bands and maps agree).
REGIME_COLOURS = ("#F0E442", "#56B4E9", "#009E73")
#: "You are here" markers and current-value lines: a magenta that no data line uses and that
#: stays visible on the light and the dark theme (black vanished on dark backgrounds).
HERE_COLOUR = "#E7298A"
#: Legends sit right of the plot, so they never cover data whatever a knob does to the curves
#: (an inner corner that is empty at one setting is full at another); compact, so the plot keeps
#: most of its width.
LEGEND_OUTSIDE = {
    "legend_position": "right",
    "legend_opts": {
        "label_text_font_size": "12px",
        "glyph_width": 18,
        "label_standoff": 4,
        "padding": 4,
        "spacing": 0,
        "margin": 4,
    },
}
#: Maps (a mesh fills the plot, a colour bar sits beside it): the legend goes under the plot, in
#: three columns, so the mesh keeps its width.
LEGEND_BELOW = {
    "legend_position": "bottom",
    "legend_cols": 3,
    # Bokeh spaces grid columns by label_width, not by the labels: without it they overlapped.
    "legend_opts": {**LEGEND_OUTSIDE["legend_opts"], "label_width": 100, "spacing": 6},
}
#: Per-element: axes follow each new frame when a builder feeds a DynamicMap (HoloViews only
#: rescales overlays whose elements are framewise, not the overlay itself).
FRAMEWISE = {"framewise": True}


def _hv():
    import holoviews as hv  # noqa: PLC0415 - lazy on purpose

    return hv


#: Templates whose options tree new elements share (:func:`styled`), least recently used first.
_STYLE_TEMPLATES: OrderedDict = OrderedDict()
_STYLE_TEMPLATES_MAX = 4096
_STYLE_LOCK = threading.Lock()


def _frozen(value: Any) -> Any:
    """A hashable stand-in for an option value (dicts and lists of plain values)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_frozen(v) for v in value))
    hash(value)  # arrays and other unhashable values raise: no template for them
    return value


def styled(element: Any, **options: Any) -> Any:
    """``element.opts(**options)``, sharing one options tree per (type, group, label, options).

    HoloViews' ``.opts`` builds a new custom options tree for every element it styles: 1.7 ms
    of the 3.2 ms a styled 100-point curve costs (this machine, 2026-11-28), paid again for
    every layer of every frame a knob move draws. Elements with the same type, group, label,
    earlier options and new options get the same tree, so the second and later ones only take
    its id: HoloViews looks options up by ``element.id`` and the element's type.group.label
    path, and keeps a tree while any element with its id is alive (the template is kept here,
    the last :data:`_STYLE_TEMPLATES_MAX` of them). Like ``.opts``, it styles ``element`` in
    place and returns it. Unhashable option values (arrays, unhashable callables) fall back to
    ``.opts``.
    """
    hv = _hv()
    try:
        key = (
            hv.Store.current_backend,
            type(element),
            element.group,
            element.label,
            element.id,
            _frozen(options),
        )
    except TypeError:
        return element.opts(**options)
    with _STYLE_LOCK:
        template = _STYLE_TEMPLATES.get(key)
        if template is not None:
            _STYLE_TEMPLATES.move_to_end(key)
    if template is not None:
        element.id = template.id
        return element
    out = element.opts(**options)  # in place, as HoloViews does: a new tree, a new id
    # The template is a data-free holder of the id that nobody else holds: a later ``.opts``
    # on ``out`` moves ``out`` to yet another tree, and the template must keep this one alive
    # (HoloViews drops a tree when no object with its id is left) without keeping arrays.
    template = hv.core.dimension.LabelledData(None)
    template.id = out.id
    with _STYLE_LOCK:
        _STYLE_TEMPLATES[key] = template
        while len(_STYLE_TEMPLATES) > _STYLE_TEMPLATES_MAX:
            _STYLE_TEMPLATES.popitem(last=False)
    return out


def _finite(x, y, logx: bool = False, logy: bool = False):
    """Drop points a plot cannot show: NaN/inf, and non-positive values on a log axis."""
    x, y = to_host(x).astype(float), to_host(y).astype(float)
    keep = np.isfinite(x) & np.isfinite(y)
    if logx:
        keep &= x > 0
    if logy:
        keep &= y > 0
    return x[keep], y[keep]


def curve_family(
    x: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    theory: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    logx: bool = False,
    logy: bool = False,
    markers: bool = True,
    title: str = "",
    underlay: Any = None,
    pair: Mapping[str, str] | None = None,
    extra: Any = None,
):
    """Measured curves (solid, with markers) plus theory curves (dashed) over one swept knob.

    ``curves`` maps a legend label to y values on the shared ``x``; ``theory`` maps a label to
    its own ``(x, y)`` so a dense theory line can sit over a sparse measurement. ``pair`` maps a
    theory label to the curve it belongs to, whose colour it then takes (a target line in its
    curve's colour); unpaired theory lines take the next colours. ``extra`` (markers such as
    :func:`vlines`) is drawn on top. ``underlay``
    (e.g. :func:`shaded_regimes`) is drawn beneath; composing it here rather than with ``*``
    afterwards keeps this overlay's axes, scales and title (``a * b`` builds a new overlay
    without ``a``'s options: its log axes, title and legend position are lost).
    """
    hv = _hv()
    layers = list(underlay) if underlay is not None else []
    for i, (label, y) in enumerate(curves.items()):
        xs, ys = _finite(x, y, logx, logy)
        colour = PALETTE[i % len(PALETTE)]
        layers.append(
            styled(hv.Curve((xs, ys), xlabel, ylabel, label=label), color=colour, **FRAMEWISE)
        )
        if markers:
            layers.append(
                styled(
                    hv.Scatter((xs, ys), xlabel, ylabel, label=label),
                    color=colour,
                    size=5,
                    **FRAMEWISE,
                )
            )
    colour_of = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(curves)}
    unpaired = 0
    for label, (tx, ty) in (theory or {}).items():
        xs, ys = _finite(tx, ty, logx, logy)
        if pair and pair.get(label) in colour_of:
            colour = colour_of[pair[label]]
        else:
            colour = PALETTE[(len(curves) + unpaired) % len(PALETTE)]
            unpaired += 1
        layers.append(
            styled(
                hv.Curve((xs, ys), xlabel, ylabel, label=label),
                color=colour,
                **THEORY_STYLE,
                **FRAMEWISE,
            )
        )
    if extra is not None:
        layers += list(extra) if isinstance(extra, hv.Overlay) else [extra]
    return hv.Overlay(layers).opts(
        logx=logx,
        logy=logy,
        title=title,
        xlabel=xlabel,  # explicit: an underlay's dims would otherwise name the axes
        ylabel=ylabel,
        responsive=True,
        min_height=300,
        show_grid=True,
        **LEGEND_OUTSIDE,
    )


def fitted_slope_label(x, y, name: str = "slope") -> tuple[str, float]:
    """``("slope −2.00", −2.00)`` for a log–log least-squares fit; used in legends and titles."""
    slope, _ = loglog_slope(x, y)
    return (f"{name} {slope:+.2f}" if np.isfinite(slope) else f"{name} n/a"), slope


def error_curve(
    x: Sequence[float],
    errors: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str = "error",
    theory_slopes: Mapping[str, float] | None = None,
    anchor: str | None = None,
    title: str = "",
    underlay: Any = None,
):
    """Log–log error curves with the fitted slope of each printed in the title.

    The slopes go in the title, not the legend: a legend label that carries a number changes
    with every knob move, and a live dashboard must then build a new plot instead of patching
    the data (apps/live.py).

    ``theory_slopes`` maps a label (e.g. ``"N^-2"``) to a slope; each is drawn as a dashed
    reference line through the first point of the ``anchor`` curve (default: the first curve),
    so the eye compares slopes, not offsets. A single reference line takes its anchor curve's
    colour (it is that curve's target).
    """
    x = to_host(x).astype(float)
    slopes = []
    for label, y in errors.items():
        text, _ = fitted_slope_label(x, y)
        slopes.append(text if len(errors) == 1 else f"{label}: {text}")
    if slopes:
        title = f"{title}; {', '.join(slopes)}" if title else ", ".join(slopes)
    theory = {}
    if theory_slopes and errors:
        ref = to_host(errors[anchor] if anchor else next(iter(errors.values()))).astype(float)
        ok = np.flatnonzero(np.isfinite(ref) & (ref > 0))
        if ok.size:
            x0, y0 = x[ok[0]], ref[ok[0]]
            for label, slope in theory_slopes.items():
                theory[label] = (x, y0 * (x / x0) ** slope)
    anchored = anchor if anchor else next(iter(errors), None)
    pair = {label: anchored for label in theory} if len(theory) == 1 else None
    return curve_family(
        x,
        dict(errors),
        xlabel=xlabel,
        ylabel=ylabel,
        theory=theory,
        logx=True,
        logy=True,
        title=title,
        underlay=underlay,
        pair=pair,
    )


def spectrum(
    values: Sequence[float],
    *,
    reference: tuple[Sequence[float], Sequence[float]] | None = None,
    xlabel: str = "index",
    ylabel: str = "value",
    logy: bool = False,
    label: str = "computed",
    reference_label: str = "theory",
    title: str = "",
):
    """Sorted spectrum as points, optionally over a reference curve (e.g. a symbol's values)."""
    hv = _hv()
    vals = np.sort(to_host(values).real.astype(float))[::-1]
    idx = np.arange(1, vals.size + 1)
    layers = [
        styled(hv.Scatter((idx, vals), xlabel, ylabel, label=label), size=4, color=PALETTE[0])
    ]
    if reference is not None:
        rx, ry = _finite(*reference)
        layers.append(
            styled(
                hv.Curve((rx, ry), xlabel, ylabel, label=reference_label),
                color=PALETTE[1],
                **THEORY_STYLE,
            )
        )
    return hv.Overlay(layers).opts(logy=logy, title=title, responsive=True, min_height=300)


def distribution(
    samples: Sequence[float],
    *,
    xlabel: str,
    bins: int = 40,
    theory: tuple[Sequence[float], Sequence[float]] | None = None,
    theory_label: str = "theory",
    markers: Mapping[str, float] | None = None,
    title: str = "",
):
    """Normalised histogram of ``samples`` with an optional theory density and vertical markers."""
    hv = _hv()
    data = to_host(samples).astype(float)
    data = data[np.isfinite(data)]
    density, edges = np.histogram(data, bins=bins, density=True)
    layers = [
        styled(
            hv.Histogram((edges, density), kdims=[xlabel], vdims=["density"]),
            alpha=0.6,
            color=PALETTE[0],
            **FRAMEWISE,
        )
    ]
    if theory is not None:
        tx, ty = _finite(*theory)
        layers.append(
            styled(
                hv.Curve((tx, ty), xlabel, "density", label=theory_label),
                color=PALETTE[1],
                **THEORY_STYLE,
            )
        )
    # Markers as two-point curves from 0 to the top of the histogram, not VLines: a Bokeh Span
    # has no legend entry, and every line on a plot must say what it is.
    top = 1.05 * float(density.max()) if density.size else 1.0
    for i, (label, value) in enumerate((markers or {}).items()):
        layers.append(
            styled(
                hv.Curve(
                    [(float(value), 0.0), (float(value), top)], xlabel, "density", label=label
                ),
                color=PALETTE[(i + 2) % len(PALETTE)],
                line_width=2,
            )
        )
    return hv.Overlay(layers).opts(
        title=title, responsive=True, min_height=300, show_legend=True, **LEGEND_OUTSIDE
    )


def regime_map(
    x: Sequence[float],
    y: Sequence[float],
    regime: np.ndarray,
    *,
    xlabel: str,
    ylabel: str,
    regime_names: Sequence[str],
    boundaries: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    current: tuple[float, float] | None = None,
    logy: bool = False,
    title: str = "",
    colours: Sequence[str] = REGIME_COLOURS,
):
    """A 2-D parameter plane coloured by regime index with theory boundary curves on top.

    ``regime[j, i]`` is the integer regime at ``(x[i], y[j])``; ``regime_names[k]`` names
    regime ``k`` (shown in the hover and the colour bar ticks); ``current`` marks the point
    the user is at.
    """
    hv = _hv()
    from bokeh.models import FixedTicker  # noqa: PLC0415 - lazy, like HoloViews

    x = to_host(x).astype(float)
    y = to_host(y).astype(float)
    regime = to_host(regime).astype(float)
    # Opaque pastel colours rather than alpha: a translucent mesh takes the page background's
    # tint (it no longer matched its colour bar on the dark theme); boundary curves stay legible.
    mesh = styled(
        hv.QuadMesh((x, y, regime), [xlabel, ylabel], "regime"),
        cmap=[pastel(c) for c in colours[: len(regime_names)]],
        colorbar=True,
        clim=(-0.5, len(regime_names) - 0.5),
        color_levels=len(regime_names),
        colorbar_opts={
            "major_label_overrides": {i: n for i, n in enumerate(regime_names)},
            "ticker": FixedTicker(ticks=list(range(len(regime_names)))),
        },
        tools=["hover"],
    )
    layers = [mesh]
    for i, (label, (bx, by)) in enumerate((boundaries or {}).items()):
        bx, by = _finite(bx, by)
        layers.append(
            styled(
                hv.Curve((bx, by), xlabel, ylabel, label=label),
                color=PALETTE[i % 5],
                line_width=2.5,
            )
        )
    if current is not None:
        layers.append(
            styled(
                hv.Points([current], [xlabel, ylabel], label="you are here"),
                color=HERE_COLOUR,
                size=12,
                marker="x",
                line_width=3,
            )
        )
    return hv.Overlay(layers).opts(
        logy=logy, title=title, responsive=True, min_height=320, **LEGEND_BELOW
    )


def pastel(colour: str, weight: float = 0.45) -> str:
    """``colour`` (#RRGGBB) mixed with white: weight · colour + (1 − weight) · white."""
    rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    mixed = [round(weight * c + (1.0 - weight) * 255) for c in rgb]
    return "#" + "".join(f"{c:02X}" for c in mixed)


def shaded_regimes(
    edges: Sequence[float], names: Sequence[str], *, colours: Sequence[str] | None = None
) -> Any:
    """Vertical bands between consecutive ``edges`` (e.g. 0, h_G, h_CLT, ∞) labelled by regime."""
    hv = _hv()
    colours = colours or REGIME_COLOURS
    bands = []
    for k, name in enumerate(names):
        lo, hi = float(edges[k]), float(edges[k + 1])
        bands.append(
            styled(hv.VSpan(lo, hi, label=name), color=colours[k % len(colours)], alpha=0.12)
        )
    return hv.Overlay(bands)


def vlines(values: Mapping[str, float], colours: Sequence[str] | None = None) -> Any:
    """Labelled vertical marker lines (thresholds, the current knob value), each with a legend
    entry (see :func:`marker_line`)."""
    hv = _hv()
    colours = colours or PALETTE
    return hv.Overlay(
        [
            marker_line(float(v), k, color=colours[i % len(colours)], line_dash="dotted")
            for i, (k, v) in enumerate(values.items())
        ]
    )


def compose(figure: Any, *others: Any) -> Any:
    """``figure * other * …`` keeping ``figure``'s plot options (log axes, title, legend
    position): ``*`` builds a new overlay (or DynamicMap) without them, so a marker composed onto
    a log–log plot silently turned it linear and untitled."""
    out = figure
    for other in others:
        out = out * other
    kept = figure.opts.get("plot").kwargs
    return out.opts(**kept) if kept else out


def marker_line(value: float, label: str, *, vertical: bool = True, **style: Any) -> Any:
    """A labelled line across the whole plot at ``value`` (x for a vertical line, else y).

    Drawn as a Bokeh Span, which spans the plot whatever the axes do but has no legend entry;
    an empty curve in the same style carries the label, so the legend says what the line is.
    """
    hv = _hv()
    style = {"line_width": 2, **style}  # the same width on both, so the legend shows the line
    line = styled((hv.VLine if vertical else hv.HLine)(float(value)), **style)
    # NaN points, not none: Bokeh draws no legend glyph for a line with no data at all (two,
    # so the proxy never looks like a one-point "you are here" marker source).
    return line * styled(hv.Curve(([np.nan] * 2, [np.nan] * 2), label=label), **style)


def shown_if(present: bool, *layers: Any) -> list[Any]:
    """Layers a figure always carries but shows only when ``present`` (a theory curve or marker
    that applies in one phase only, drawn from NaN data otherwise).

    Keeping the layer in both states keeps the overlay's structure fixed, so a live dashboard
    patches the figure in place when a knob crosses a phase boundary instead of building a new
    Bokeh plot (apps/live.py: a rebuild cost ~0.5 s of event loop per panel). HoloViews leaves a
    hidden layer out of the legend, so a phase's legend names only what it shows.
    """
    return [styled(layer, visible=bool(present)) for layer in layers]
