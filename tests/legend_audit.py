"""Checks a rendered Bokeh figure's legend, lines and title as a page at 1400 px shows them.

Used by tests/test_plots_legends.py. A page 1400 px wide has a 340 px sidebar and two plots per
row, so each plot is about :data:`PLOT_WIDTH` px wide; the plot area (frame) is that less the
axes (:data:`AXES_PX`). Text is measured with the font Chromium uses for Bokeh's "helvetica"
here (Liberation Sans, the metric twin of Helvetica), else estimated at 0.6 em a character.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

#: One plot's canvas width at a 1400 px page, measured in Chromium (two plots a row beside the
#: 340 px sidebar, each with its toolbar outside the canvas): 486 px, the frame 70 px in.
PLOT_WIDTH = 486
#: Chromium draws Bokeh's text wider than Liberation Sans at the nominal size: a 13 px title
#: measured 416 px on screen where the font file gives 359 px (criticality page, 1400 px).
TEXT_SCALE = 416 / 359
#: Plot height when the figure sets none (the labs' min_height).
PLOT_HEIGHT = 320
#: Pixels the axes, ticks and title take from the plot: (horizontal, vertical).
AXES_PX = (70, 75)
#: A title starts over the frame's left edge and is cut at the canvas's right edge.
TITLE_ROOM = PLOT_WIDTH - AXES_PX[0] - 2
#: A colour bar beside the plot: the bar, its tick labels and padding.
COLOUR_BAR_PX = 70
FONTS = ("/usr/share/fonts/truetype/liberation/LiberationSans-{}.ttf",)
#: Glyph types drawn as lines (each must have a legend entry).
LINES = ("Line", "MultiLine", "Step", "Segment")


def _px(size: str) -> float:
    size = str(size)
    if size.endswith("pt"):
        return float(size[:-2]) * 4 / 3
    return float(size.rstrip("px") or 13)


@cache
def _font(px: int, bold: bool):
    from PIL import ImageFont

    path = Path(FONTS[0].format("Bold" if bold else "Regular"))
    return ImageFont.truetype(str(path), px) if path.exists() else None


def text_width(text: str, size: str = "13px", bold: bool = False) -> float:
    """Width in px of ``text`` at a CSS font size."""
    px = _px(size)
    font = _font(round(px), bold)
    if font is None:
        return 0.6 * px * len(text) * TEXT_SCALE
    return float(font.getlength(text)) * TEXT_SCALE


def _frame(fig) -> tuple[float, float]:
    width = fig.width if fig.sizing_mode in (None, "fixed") and fig.width else PLOT_WIDTH
    height = fig.height if fig.height and fig.sizing_mode in (None, "fixed") else None
    height = height or fig.min_height or PLOT_HEIGHT
    outside = [lg for lg in fig.legend if lg in fig.right or lg in fig.left]
    legend_px = sum(legend_size(lg)[0] + 2 * lg.margin for lg in outside)
    bars = [m for m in [*fig.right, *fig.left] if type(m).__name__ == "ColorBar"]
    legend_px += COLOUR_BAR_PX * len(bars)
    below = [lg for lg in fig.legend if lg in fig.below or lg in fig.above]
    height -= sum(legend_size(lg)[1] + 2 * lg.margin for lg in below)
    return width - AXES_PX[0] - legend_px, height - AXES_PX[1]


def frame_width(fig) -> float:
    """Width in px of the plot area at a 1400 px page (the plot less its axes and any legend
    beside it)."""
    return _frame(fig)[0]


def legend_size(legend) -> tuple[float, float]:
    """(width, height) in px of a vertical Bokeh legend."""
    labels = [_label(item) for item in legend.items if item.visible]  # hidden: plots.shown_if
    if not labels:
        return 0.0, 0.0
    size = legend.label_text_font_size
    row = max(legend.glyph_height, _px(size) * 1.25)
    cols = legend.ncols if isinstance(legend.ncols, int) else 1
    if legend.orientation == "horizontal" and not isinstance(legend.ncols, int):
        cols = len(labels)
    rows = -(-len(labels) // cols)
    item = legend.glyph_width + legend.label_standoff
    # Items fill the rows first; each column is as wide as its widest label.
    columns = [labels[c::cols] for c in range(cols)]
    widest = [max(max(text_width(t, size) for t in col), legend.label_width) for col in columns]
    width = 2 * legend.padding + sum(item + w for w in widest)
    width += (cols - 1) * legend.spacing
    height = 2 * legend.padding + rows * row + (rows - 1) * legend.spacing
    return width, height


def _label(item) -> str:
    label = item.label
    if isinstance(label, dict):
        return str(label.get("value", label.get("field", "")))
    return str(getattr(label, "value", label) or "")


def _axis(value, scale) -> np.ndarray:
    v = np.asarray(value, dtype=float)
    if type(scale).__name__ == "LogScale":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
    return v


def _to_frame(fig, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Data → frame fraction (0..1 from left and from bottom)."""
    x0, x1 = _axis([fig.x_range.start, fig.x_range.end], fig.x_scale)
    y0, y1 = _axis([fig.y_range.start, fig.y_range.end], fig.y_scale)
    fx = (_axis(x, fig.x_scale) - x0) / (x1 - x0)
    fy = (_axis(y, fig.y_scale) - y0) / (y1 - y0)
    return fx, fy


def _column(source, spec):
    if isinstance(spec, str):
        return source.data.get(spec)
    if isinstance(spec, dict) and "field" in spec:
        return source.data.get(spec["field"])
    if isinstance(spec, dict) and "value" in spec:
        return spec["value"]
    return spec


def data_points(fig, renderer, per_segment: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Frame fractions of what a glyph draws: line vertices and points along each segment
    (a line can cross the legend without a vertex in it), scatter points, bar and image corners
    with their interiors sampled."""
    glyph, src = renderer.glyph, renderer.data_source
    kind = type(glyph).__name__
    xs, ys = [], []
    if kind in ("Line", "Scatter", "Step", "Circle"):
        x, y = _column(src, glyph.x), _column(src, glyph.y)
        fx, fy = _to_frame(fig, np.ravel(x), np.ravel(y))
        if kind in ("Line", "Step") and fx.size > 1:
            t = np.linspace(0, 1, per_segment)[:, None]
            fx = (fx[:-1] + t * np.diff(fx)).ravel()
            fy = (fy[:-1] + t * np.diff(fy)).ravel()
        xs.append(fx)
        ys.append(fy)
    elif kind == "MultiLine":
        for x, y in zip(_column(src, glyph.xs), _column(src, glyph.ys), strict=True):
            fx, fy = _to_frame(fig, np.ravel(x), np.ravel(y))
            t = np.linspace(0, 1, per_segment)[:, None]
            if fx.size > 1:
                xs.append((fx[:-1] + t * np.diff(fx)).ravel())
                ys.append((fy[:-1] + t * np.diff(fy)).ravel())
    elif kind == "Quad":
        sides = [
            np.ravel(_column(src, getattr(glyph, k))) for k in ("left", "right", "bottom", "top")
        ]
        for left, right, bottom, top in zip(*np.broadcast_arrays(*sides), strict=True):
            gx, gy = np.meshgrid(np.linspace(left, right, 5), np.linspace(bottom, top, 5))
            fx, fy = _to_frame(fig, gx.ravel(), gy.ravel())
            xs.append(fx)
            ys.append(fy)
    elif kind in ("Image", "ImageRGBA", "QuadMesh"):
        return np.array([-1.0]), np.array([-1.0])  # fills the plot: flagged by the caller
    if not xs:
        return np.empty(0), np.empty(0)
    return np.concatenate(xs), np.concatenate(ys)


def fills_plot(renderer) -> bool:
    return type(renderer.glyph).__name__ in ("Image", "ImageRGBA", "QuadMesh")


def legend_box(fig, legend) -> tuple[float, float, float, float] | None:
    """The legend's box in frame fractions (x0, x1, y0, y1), or None when it is outside."""
    if legend not in fig.center:
        return None
    fw, fh = _frame(fig)
    w, h = legend_size(legend)
    w, h = (w + legend.margin) / fw, (h + legend.margin) / fh
    loc = legend.location
    if not isinstance(loc, str):
        raise AssertionError(f"legend at fixed coordinates {loc}: put it in a corner or outside")
    vertical, _, horizontal = loc.partition("_") if "_" in loc else (loc, "", loc)
    x = {"left": (0, w), "right": (1 - w, 1), "center": (0.5 - w / 2, 0.5 + w / 2)}[
        horizontal if horizontal in ("left", "right") else "center"
    ]
    y = {"top": (1 - h, 1), "bottom": (0, h), "center": (0.5 - h / 2, 0.5 + h / 2)}[
        vertical if vertical in ("top", "bottom") else "center"
    ]
    return (*x, *y)


def legend_problems(fig) -> list[str]:
    """What is wrong with a rendered figure's legends, lines and title (empty: nothing)."""
    problems = []
    legends = list(fig.legend)
    # Hidden layers (plots.shown_if: a theory of another phase) and their entries are not shown.
    entries = [r for lg in legends for item in lg.items if item.visible for r in item.renderers]
    glyphs = [r for r in fig.renderers if type(r).__name__ == "GlyphRenderer" and r.visible]
    lines = [r for r in glyphs if type(r.glyph).__name__ in LINES]
    spans = [a for a in [*fig.renderers, *fig.center] if type(a).__name__ == "Span" and a.visible]
    if len(lines) + len(spans) > 1:  # a lone line is named by its axis label
        for r in lines:
            if not any(r is e for e in entries):
                problems.append(f"a {type(r.glyph).__name__} {_colour(r)} has no legend entry")
        # A Span has no legend entry of its own: a legend line in its exact style stands in.
        styles = {_style(e.glyph) for e in entries if hasattr(e.glyph, "line_dash")}
        for s in spans:
            if _style(s) not in styles:
                problems.append(f"a Span at {s.location} ({_style(s)}) has no legend entry")
    for lg in legends:
        box = legend_box(fig, lg)
        if box is None:
            continue
        x0, x1, y0, y1 = box
        for r in glyphs:
            if fills_plot(r):
                problems.append(f"legend at {lg.location} lies on an image that fills the plot")
                continue
            fx, fy = data_points(fig, r)
            inside = (fx > x0) & (fx < x1) & (fy > y0) & (fy < y1)
            if inside.any():
                problems.append(
                    f"legend at {lg.location} covers {int(inside.sum())} points of "
                    f"{type(r.glyph).__name__} {_colour(r)}"
                )
    for lg in legends:
        if lg in fig.below or lg in fig.above:
            w = legend_size(lg)[0]
            if w > PLOT_WIDTH - 10:
                problems.append(f"legend under the plot is {w:.0f} px, wider than the plot")
    title = fig.title.text if fig.title is not None else ""
    width = text_width(title, fig.title.text_font_size, bold=True) if title else 0
    if width > TITLE_ROOM:
        problems.append(f"title is {width:.0f} px, over the {TITLE_ROOM} px it has: {title!r}")
    return problems


def _style(line) -> tuple[str, str, float]:
    return (str(line.line_color).upper(), str(line.line_dash), float(line.line_width))


def theory_colour_problems(fig) -> list[str]:
    """With two or more solid curves (a family), each dashed theory/target line takes the colour
    of a curve it belongs to (dotted lines are markers: thresholds, "you are here")."""
    lines = [
        r
        for r in fig.renderers
        if type(r).__name__ == "GlyphRenderer" and type(r.glyph).__name__ == "Line" and r.visible
    ]
    solid = {_colour(r) for r in lines if not r.glyph.line_dash}
    dashed = [r for r in lines if str(r.glyph.line_dash) in ("dashed", "[6]")]
    if len(solid) < 2:
        return []
    return [
        f"dashed line {_colour(r)} matches none of the curves {sorted(solid)}"
        for r in dashed
        if _colour(r) not in solid
    ]


def _colour(renderer) -> str:
    c = getattr(renderer.glyph, "line_color", None) or getattr(renderer.glyph, "fill_color", "")
    return str(c).upper() if isinstance(c, str) else str(c)
