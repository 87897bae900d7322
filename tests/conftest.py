"""Shared test fixtures and markers.

``requires_gpu`` / the ``gpu`` marker: skipped unless CuPy imports and a CUDA device answers.
``numpy_backend``: forces the NumPy backend for a test (every compute path is tested under NumPy).
"""

from __future__ import annotations

import pytest

from workbench import backend


def _gpu_available() -> bool:
    return backend._cupy_if_working() is not None


HAS_GPU = _gpu_available()
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA device")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(pytest.mark.skip(reason="needs CuPy and a CUDA device"))


@pytest.fixture
def numpy_backend(monkeypatch):
    monkeypatch.setenv("WORKBENCH_BACKEND", "numpy")
    backend.reset()
    yield backend.get_namespace()
    backend.reset()


@pytest.fixture
def cupy_backend(monkeypatch):
    if not HAS_GPU:
        pytest.skip("needs CuPy and a CUDA device")
    monkeypatch.setenv("WORKBENCH_BACKEND", "cupy")
    backend.reset()
    yield backend.get_namespace()
    backend.reset()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private sweep cache so tests never read a stale user cache."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- real-browser fixtures (marker ``ui``) -------------------------------------------------------
# Debian's Chromium driven by Playwright through ``executable_path``: Playwright's own browser
# download cannot work on these offline machines. Locally the ui tests skip without Chromium;
# in CI (CI=true) a missing browser is a failure, so the browser tests can never silently vanish.

import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_DIR = Path(__file__).resolve().parents[1] / "docs"


def chromium_path() -> str | None:
    for name in (os.environ.get("WORKBENCH_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (found := shutil.which(name)):
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """``workbench serve`` on a free port, as a user would start it; stopped after the session."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    env = dict(os.environ, WORKBENCH_CACHE=str(tmp_path_factory.mktemp("cache")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"workbench serve did not come up:\n{log_path.read_text()}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def browser():
    exe = chromium_path()
    if exe is None:
        message = "Chromium not found (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: browser tests are required in CI")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.console_errors = []
    page.on(
        "console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None
    )
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    yield page
    context.close()
