"""Pages on a phone and on the dark theme, in a real browser (Chromium via Playwright).

A phone held upright (390 × 844) must get one column: no sideways scrolling, the sidebar above
the plots, the plots stacked. On the dark theme the regime map must show the colours of its own
colour bar (an opaque mesh; a translucent one took the page's tint) and the "you are here" marker
must be drawn in its colour (black vanished on the dark background).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from workbench import plots

pytestmark = pytest.mark.ui

PHONE = {"width": 390, "height": 844}


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def _pixels_near(image: np.ndarray, colour: str, tolerance: int = 6) -> int:
    return int((np.abs(image[..., :3].astype(int) - _rgb(colour)).max(axis=-1) <= tolerance).sum())


def _screenshot(page) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB"))


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    page = context.new_page()
    yield page
    context.close()


def test_phone_gets_one_column_with_stacked_plots(phone, server_url):
    from tests.browser import wait_for_plots

    phone.goto(server_url + "/kde", timeout=120_000)
    wait_for_plots(phone, 6)
    phone.wait_for_timeout(1500)  # let the layout settle after the last plot
    assert phone.evaluate("() => document.scrollingElement.scrollWidth") <= PHONE["width"] + 1
    boxes = [b for b in (c.bounding_box() for c in phone.locator(".bk-Canvas").all()) if b]
    assert len(boxes) >= 6
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= PHONE["width"] + 1 for b in boxes)
    lefts = sorted({round(b["x"]) for b in boxes})
    assert len(lefts) == 1, lefts  # one column: every plot starts at the same x
    tops = sorted(b["y"] for b in boxes)
    assert all(later > earlier for earlier, later in zip(tops, tops[1:], strict=False))
    sidebar = phone.locator("#sidebar").bounding_box()
    assert sidebar["width"] >= PHONE["width"] - 20 and sidebar["y"] + 50 < tops[0]


def test_dark_theme_regime_map_matches_its_colour_bar_and_marker_shows(page, server_url):
    from tests.browser import wait_for_plots

    page.goto(server_url + "/kde?theme=dark", timeout=120_000)
    wait_for_plots(page, 6)
    page.wait_for_timeout(1500)
    image = _screenshot(page)
    assert image.mean() < 110  # the dark theme is on (page and plots)
    # The mesh is opaque: each regime's pastel colour appears as a large area (mesh + colour
    # bar), identical to the bar's swatch, not blended with the dark background.
    # (A blended mesh matches no swatch within the tolerance: 0 pixels. The heavy-tailed band is
    # thin at d = 20 and the map shares its 330 px with the legend under it: ~1,600 pixels.)
    for colour in plots.REGIME_COLOURS:
        assert _pixels_near(image, plots.pastel(colour)) > 1200, colour
    assert _pixels_near(image, plots.HERE_COLOUR, tolerance=40) > 30  # markers drawn in magenta
