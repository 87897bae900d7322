"""Checks shared by the dashboard tests (server-side; no browser)."""

from __future__ import annotations

from apps import lab_app


def assert_widgets_within_study(dash) -> None:
    """Every numeric widget offers only values its Study accepts (the bounds live in one place:
    the param declarations)."""
    for name, widget in dash.widgets.items():
        span = lab_app.widget_range(widget)
        if span is None:  # selectors, text boxes
            continue
        lo, hi = dash.study.param[name].bounds
        assert lo is None or lo <= span[0], (name, span, lo)
        assert hi is None or span[1] <= hi, (name, span, hi)
