"""Notebooks render their figures without a network (issue: a lecture-room laptop on bad Wi-Fi
got blank outputs because ``hv.extension`` loaded BokehJS from a CDN).

JupyterLab is started on loopback over a scratch copy of the notebooks; Debian's Chromium opens
each notebook with every request that leaves 127.0.0.1 aborted (no network), runs all cells
through JupyterLab's own command, and must find a drawn plot canvas in the outputs and no error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import ALL_CANVASES

pytestmark = [pytest.mark.ui, pytest.mark.slow]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.fixture(scope="module")
def jupyter_url(tmp_path_factory):
    from tests.conftest import _free_port

    root = tmp_path_factory.mktemp("notebooks")
    for name in NOTEBOOKS:
        shutil.copy(NOTEBOOK_DIR / name, root / name)
    port = _free_port()
    log = open(root / "jupyter.log", "w")  # noqa: SIM115 - lives as long as the server
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / ".jupyter"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",  # CI containers run as root
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "/api/status", timeout=5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("JupyterLab did not start:\n" + (root / "jupyter.log").read_text())
            time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _offline(route, request, blocked: list[str]) -> None:
    host = request.url.split("/")[2].split(":")[0] if "://" in request.url else ""
    if request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        blocked.append(request.url)
        route.abort()  # no network: a CDN resource fails as it would on a laptop offline


def _notebook_js(name: str, body: str) -> str:
    """A page function over the notebook panel of ``name``, found by path (not ``currentWidget``:
    JupyterLab restores its workspace, so an earlier test's notebook can become current)."""
    return (
        "() => { const w = Array.from(window.jupyterapp.shell.widgets('main'))"
        f".find(x => x.context && x.context.path === {name!r});"
        " const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel;"
        f" {body} }}"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_draws_offline(browser, jupyter_url, name):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    blocked: list[str] = []
    context.route("**/*", lambda route, req: _offline(route, req, blocked))
    page = context.new_page()
    try:
        # A workspace of its own, reset: only this notebook opens (CI once found an earlier
        # test's notebook restored and current, its session not yet started).
        workspace = "t-" + name.removesuffix(".ipynb")
        page.goto(f"{jupyter_url}/lab/workspaces/{workspace}/tree/{name}?reset")
        page.wait_for_function("() => window.jupyterapp !== undefined", timeout=90_000)
        page.wait_for_function(
            _notebook_js(name, "return !!(k && k.status === 'idle');"), timeout=120_000
        )
        page.evaluate(
            _notebook_js(
                name,
                "window.jupyterapp.shell.activateById(w.id);"
                " return window.jupyterapp.commands.execute('notebook:run-all-cells');",
            )
        )
        page.wait_for_timeout(1000)
        page.wait_for_function(
            _notebook_js(
                name,
                "const busy = !k || k.status !== 'idle';"
                " const pending = [...w.node.querySelectorAll('.jp-InputPrompt')]"
                "   .some(e => e.textContent.includes('*'));"
                " return !busy && !pending;",
            ),
            timeout=300_000,
        )
        errors = page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        )
        tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
        assert not tracebacks, tracebacks[:1]
        # JupyterLab draws no canvases of its own: every sizeable one is a Bokeh plot.
        count = f"() => ({ALL_CANVASES})().filter(c => c.width > 50 && c.height > 50).length"
        # BokehJS lays a figure out and paints it after the kernel went idle, and JupyterLab
        # skips the layout of cells out of view: bring the last output into view and wait for
        # a canvas (a single sample once failed on the loaded 2-core CI machine).
        page.evaluate(
            "() => { const outs = document.querySelectorAll('.jp-OutputArea-output');"
            " if (outs.length) outs[outs.length - 1].scrollIntoView(); }"
        )
        try:
            page.wait_for_function(f"() => ({count})() >= 1", timeout=60_000)
        except PlaywrightTimeout:
            pass  # the assertion below reports it
        drawn = page.evaluate(count)
        assert drawn >= 1, f"{name}: no figure was drawn offline (blocked: {blocked[:3]})"
    finally:
        # End the kernels this test started, so the next notebook does not share the CPU with
        # them (through JupyterLab's own client: the REST API wants its XSRF token).
        try:
            page.evaluate("() => window.jupyterapp.serviceManager.sessions.shutdownAll()")
        except Exception:  # noqa: BLE001 - the page may be gone; the server ends them at exit
            pass
        context.close()
