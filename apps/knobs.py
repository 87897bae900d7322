"""Knob widgets and link text, both made from a Study's ``param`` declarations.

``widget_for`` builds a widget whose range, step, label and tooltip come from the knob's
declaration (so it can never offer a value the Study refuses); ``parse_value`` reads URL or
text-box input by the knob's type (never ``eval``, length-bounded); ``link_text`` writes clean
values back; ``session_query`` reads a page's query string, bounded before it is decoded.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import panel as pn
import param

from workbench.study import Study, StudyInputError, knob_label

#: Longest URL value read for a knob (longer values are refused with a message, unread).
MAX_LINK_VALUE = 200
#: A change expected to take longer than this (seconds) gets a note before the work starts.
#: Not 2 s: the labs' ordinary recomputes take 2–3 s here (quadrature 2.2 s, a new fractional
#: α 2.8 s), and a note on every one of those would be noise next to the loading spinner.
SLOW_NOTE_SECONDS = 3.0
#: Longest URL value decoded for any knob, whatever its own limit (bounds the work per request).
MAX_LINK_TEXT = 4096


def widget_for(study: Study, name: str, **override: Any) -> pn.widgets.Widget:
    """A widget for knob ``name`` made from its declaration (bounds, step, label, doc).

    ``override`` may name a ``widget`` class (e.g. ``pn.widgets.RadioButtonGroup``) and
    ``options`` for a DiscreteSlider (a log scale); any other key is passed to the widget.
    """
    p = study.param[name]
    label = p.label or name
    value = getattr(study, name)
    widget_type = override.pop("widget", None)
    kwargs: dict[str, Any] = {"label": label, "value": value}
    if isinstance(p, param.Selector):
        names = p.names or {str(o): o for o in p.objects}
        widget_type = widget_type or pn.widgets.Select
        kwargs["options"] = dict(names)
    elif isinstance(p, param.Boolean):
        widget_type = widget_type or pn.widgets.Checkbox
    elif isinstance(p, param.Integer | param.Number):
        integer = isinstance(p, param.Integer)
        lo, hi = _widget_range(p)
        if widget_type is pn.widgets.DiscreteSlider:
            options = [v for v in override.pop("options") if _within(p, v)]
            kwargs["options"] = options
            kwargs["value"] = nearest_stop(options, value)
        elif lo is None or hi is None:
            widget_type = widget_type or (pn.widgets.IntInput if integer else pn.widgets.FloatInput)
            kwargs.update({"start": p.bounds[0] if p.bounds else None})
            if p.bounds and p.bounds[1] is not None:
                kwargs["end"] = p.bounds[1]
        else:
            widget_type = widget_type or (
                pn.widgets.IntSlider if integer else pn.widgets.FloatSlider
            )
            kwargs.update({"start": lo, "end": hi})
            if p.step is not None:
                kwargs["step"] = p.step
    elif isinstance(p, param.NumericTuple):
        widget_type = widget_type or pn.widgets.TextInput
        kwargs["value"] = ", ".join(f"{v:g}" for v in value)
        kwargs["max_length"] = MAX_LINK_VALUE
    else:
        widget_type = widget_type or pn.widgets.TextInput
        kwargs["value"] = str(value)
    kwargs.update(override)
    if "description" in widget_type.param and p.doc:
        kwargs.setdefault("description", p.doc)
    return widget_type(**kwargs)


def log_stops(study_class: type[Study], name: str, per_decade: int = 1) -> list[float]:
    """Slider stops for a positive knob spanning decades: ``per_decade`` stops per factor of
    ten over the knob's bounds, each a short decimal (1e-08, 2.2e-05), so the slider offers
    every order of magnitude and the URL carries clean values. A linear slider over
    [1e-14, 1e-2] would offer only its two ends (every other position rounds to ~k · 1e-3).
    """
    lo, hi = _widget_range(study_class.param[name])
    if lo is None or hi is None or lo <= 0:
        raise ValueError(f"{name}: a log scale needs positive finite bounds, not {lo}..{hi}")
    first, last = math.floor(math.log10(lo) * per_decade), math.ceil(math.log10(hi) * per_decade)
    stops = (float(f"{10 ** (k / per_decade):.2g}") for k in range(first, last + 1))
    return sorted({v for v in stops if lo <= v <= hi})


def log_slider(study_class: type[Study], name: str, per_decade: int = 1) -> dict[str, Any]:
    """A ``widget_overrides`` entry showing knob ``name`` on a log scale (see
    :func:`log_stops`); the label says so."""
    p = study_class.param[name]
    return {
        "widget": pn.widgets.DiscreteSlider,
        "options": log_stops(study_class, name, per_decade),
        "label": f"{p.label or name} (log scale)",
    }


def nearest_stop(options: list, value: Any) -> Any:
    """The slider stop a value shows as: nearest on a log scale (linear around 0)."""
    return min(options, key=lambda v: _stop_distance(v, value))


def _stop_distance(stop: float, value: float) -> float:
    """Distance between slider stops: on a log scale where both are positive, else linear
    (a stop of 0, e.g. "no jitter", must not crash the log)."""
    if stop > 0 and value > 0:
        return abs(math.log(stop / value))
    return abs(stop - value)


def _widget_range(p: param.Parameter) -> tuple[Any, Any]:
    """Soft bounds inside hard bounds: what a slider shows can always be accepted."""
    lo, hi = p.bounds or (None, None)
    soft = p.softbounds or (None, None)
    lo = soft[0] if soft[0] is not None and (lo is None or soft[0] >= lo) else lo
    hi = soft[1] if soft[1] is not None and (hi is None or soft[1] <= hi) else hi
    return lo, hi


def _within(p: param.Parameter, value: float) -> bool:
    lo, hi = p.bounds or (None, None)
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def widget_range(widget: pn.widgets.Widget) -> tuple[Any, Any] | None:
    """(lowest, highest) value a numeric widget can offer, or None for a non-numeric one."""
    if isinstance(widget, pn.widgets.DiscreteSlider):
        return min(widget.options), max(widget.options)
    if hasattr(widget, "start") and hasattr(widget, "end"):
        return widget.start, widget.end
    return None


def parse_value(study: Study, name: str, text: str, limit: int = MAX_LINK_VALUE) -> Any:
    """Text from a link or a text box, parsed by the knob's type (never ``eval``).

    Raises StudyInputError with the knob's label and what it accepts; text longer than
    ``limit`` characters is refused unread.
    """
    p = study.param[name]
    label = knob_label(study, name)
    if len(text) > limit:
        raise StudyInputError(f"{label}: the value is over {limit} characters long and was ignored")
    text = text.strip()
    try:
        if isinstance(p, param.Selector):
            names = p.names or {}
            if text in names:
                return names[text]
            for obj in p.objects:
                if str(obj) == text or (isinstance(obj, float) and _float_equal(text, obj)):
                    return obj
            raise ValueError
        if isinstance(p, param.Boolean):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(p, param.Integer):
            value = float(text)
            if not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(p, param.Number):
            return float(text)
        if isinstance(p, param.NumericTuple):
            parts = [float(part) for part in text.replace("(", "").replace(")", "").split(",")]
            return tuple(parts)
    except ValueError:
        raise StudyInputError(study._refusal(name, text)) from None
    return text


def _float_equal(text: str, value: float) -> bool:
    try:
        return math.isclose(float(text), value, rel_tol=1e-12)
    except ValueError:
        return False


def link_text(value: Any) -> str:
    """A knob value as clean URL text: ``2.011`` not ``2.0109999999999997``, tuples as ``a,b``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, tuple | list):
        return ",".join(link_text(v) for v in value)
    return str(value)


def slow_notes(study: Study) -> list[str]:
    """A note for the page when the Study expects its work at these knobs to take more than
    :data:`SLOW_NOTE_SECONDS` (:meth:`Study.estimated_seconds`), else nothing."""
    seconds = study.estimated_seconds()
    if seconds is None or seconds <= SLOW_NOTE_SECONDS:
        return []
    about = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
    return [
        f"This setting takes about {about} to compute on this server (an estimate from its "
        "sizes); the page stays usable and the plots update when it is done."
    ]


def in_session() -> bool:
    """True inside a browser session served by Panel (not in tests or notebooks)."""
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None


def session_query() -> dict[str, str]:
    """The page URL's query as text (``?dim=40``), each value bounded before it is decoded."""
    if not in_session():
        return {}
    out = {}
    for key, raw in (pn.state.session_args or {}).items():
        if raw:
            value = raw[0]
            # Decode a bounded prefix so a huge value costs nothing; parse_value refuses it.
            text = value[: MAX_LINK_TEXT + 1].decode("utf-8", errors="replace")
            out[str(key)[:64]] = text
    return out


def quote_link(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe=",.-_")


def estimate_seconds(study: Study) -> float | None:
    """The Study's estimate of its heavy computation, None when it has none or fails."""
    try:
        return study.estimated_seconds()
    except Exception:  # noqa: BLE001 - an estimate must never stop the computation
        logging.getLogger("workbench.apps").debug(
            "estimated_seconds failed for %s", type(study).__name__, exc_info=True
        )
        return None
