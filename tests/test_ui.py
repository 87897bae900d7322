"""Real-browser tests: Debian's Chromium driven by Playwright against ``workbench serve``.

The README screenshot (docs/kde-dashboard.png) is regenerated only on request:
``WORKBENCH_SCREENSHOTS=1 python -m pytest tests/test_ui.py -k kde_app``.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.browser import SIGNATURE, plot_signature, serious, wait_for_plots
from tests.conftest import SCREENSHOT_DIR
from workbench.labs import registry

pytestmark = pytest.mark.ui

_wait_for_plots = wait_for_plots
_serious = serious
_plot_signature = plot_signature


def test_landing_page_lists_every_lab(page, server_url):
    page.goto(server_url + "/")
    from apps.shell import lab_pages

    pages = lab_pages()
    for info in registry().values():
        if info.name not in pages:  # a lab without a dashboard has a card but no link
            page.get_by_text(info.title).first.wait_for(timeout=30_000)
            continue
        link = page.get_by_role("link", name=info.title)
        link.wait_for(timeout=30_000)
        assert link.get_attribute("href").rstrip("/").endswith(info.name)
    assert not _serious(page.console_errors)


def test_kde_app_loads_and_bandwidth_slider_redraws(page, server_url):
    page.goto(server_url + "/kde")
    _wait_for_plots(page, 6)
    page.wait_for_timeout(1500)  # let Bokeh finish its first paint
    assert not _serious(page.console_errors), page.console_errors
    before = _plot_signature(page)

    # Drive the real slider: focus its handle and press the arrow keys as a user would.
    handle = page.locator(".noUi-handle").first
    handle.focus()
    for _ in range(8):
        handle.press("ArrowLeft")
    page.wait_for_timeout(300)
    handle.press("ArrowLeft")  # keyboard moves commit value_throttled on release
    page.mouse.click(5, 5)
    page.wait_for_function(f"(before) => ({SIGNATURE})() !== before", arg=before, timeout=60_000)
    # The view is shareable by its link: the URL follows the knob.
    page.wait_for_function("() => window.location.search.includes('bandwidth=')", timeout=30_000)
    assert not _serious(page.console_errors), page.console_errors
    if os.environ.get("WORKBENCH_SCREENSHOTS"):
        SCREENSHOT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / "kde-dashboard.png"), full_page=False)


def test_kde_bad_link_shows_alert_not_traceback(page, server_url):
    page.goto(server_url + "/kde?dim=128&alpha=2.0")
    page.get_by_text(re.compile("data points|at most", re.IGNORECASE)).first.wait_for(
        timeout=60_000
    )
    assert "Traceback" not in page.content()
    _wait_for_plots(page, 6)


def test_quadrature_n_slider_redraws_plots(page, server_url):
    page.goto(server_url + "/quadrature")
    _wait_for_plots(page, 6)
    page.wait_for_timeout(3000)  # the first policy-iteration run streams in over ~1 s
    assert not _serious(page.console_errors), page.console_errors
    before = _plot_signature(page)
    handle = page.locator(".noUi-handle").first  # the N slider is the first slider
    handle.focus()
    for _ in range(5):
        handle.press("ArrowLeft")
    page.mouse.click(5, 5)
    page.wait_for_function(f"(before) => ({SIGNATURE})() !== before", arg=before, timeout=60_000)
    page.wait_for_function("() => window.location.search.includes('n=5')", timeout=30_000)
    assert not _serious(page.console_errors), page.console_errors
