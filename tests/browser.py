"""Helpers for the real-browser tests (marker ``ui``): find drawn plots, fingerprint what they
show, move a slider with the keyboard as a user would, and filter benign console noise.

Fixtures (``page``, ``browser``, ``server_url``) live in ``tests/conftest.py``.
"""

from __future__ import annotations

import re

#: Bokeh/Panel log these harmlessly on headless machines with no network (favicons, fonts).
BENIGN = re.compile(r"favicon|Failed to load resource|net::ERR_", re.IGNORECASE)

#: Bokeh renders inside shadow roots, so collect canvases by walking them.
ALL_CANVASES = """() => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS') found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found;
}"""
SIGNATURE = f"""() => ({ALL_CANVASES})()
  .filter(c => c.width > 50 && c.height > 50)
  .map(c => {{ try {{ const d = c.toDataURL(); return d.length + ':' + d.slice(-48); }}
              catch (e) {{ return 'x'; }} }}).join('|')"""


def wait_for_plots(page, count: int, timeout: float = 90_000) -> None:
    """Wait until at least ``count`` plot canvases are drawn."""
    page.wait_for_function(
        f"({ALL_CANVASES})().filter(c => c.width > 50 && c.height > 50).length >= {count}",
        timeout=timeout,
    )


def plot_signature(page) -> str:
    """A fingerprint of what the canvases currently show (pixels, not widget state)."""
    return page.evaluate(SIGNATURE)


def wait_for_redraw(page, before: str, timeout: float = 60_000) -> None:
    page.wait_for_function(f"(before) => ({SIGNATURE})() !== before", arg=before, timeout=timeout)


def press_slider(page, index: int, key: str, times: int) -> None:
    """Move the ``index``-th slider handle with the keyboard; clicking away commits the
    throttled value, as releasing the mouse does."""
    handle = page.locator(".noUi-handle").nth(index)
    handle.focus()
    for _ in range(times):
        handle.press(key)
    page.wait_for_timeout(300)
    page.mouse.click(5, 5)


def serious(errors: list[str]) -> list[str]:
    """Console errors that are not benign offline noise."""
    return [e for e in errors if not BENIGN.search(e)]
