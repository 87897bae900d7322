"""Real-browser tests: Debian's Chromium driven by Playwright against ``workbench serve``.

The KDE lab's browser tests are in tests/test_app_kde.py; the README screenshot
(docs/kde-dashboard.png) is regenerated only on request:
``WORKBENCH_SCREENSHOTS=1 python -m pytest tests/test_app_kde.py -m ui -k slider``.
"""

from __future__ import annotations

import pytest

from tests.browser import plot_signature, serious, wait_for_plots
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
