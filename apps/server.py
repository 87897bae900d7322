"""Start the Panel server: landing page at ``/``, each lab at ``/<lab>``."""

from __future__ import annotations

import importlib
import logging
import socket
import threading

import panel as pn

from workbench.labs import registry


def _app_factory(lab: str):
    """Return a per-session builder for ``apps.<lab>`` (imported once, built per session)."""
    module = importlib.import_module(f"apps.{lab}")
    return module.create_app


def routes() -> dict:
    """URL slug -> per-session app builder."""
    from apps.index import create_index

    table = {"/": create_index}
    for lab in registry():
        table[lab] = _app_factory(lab)
    return table


def _warm_caches() -> None:
    """Compute each lab's default view once, so the first visitor does not wait for it."""
    for lab in registry():
        try:
            importlib.import_module(f"apps.{lab}").warm_cache()
        except Exception:  # warming is an optimisation; a failure shows up in the session
            logging.getLogger("workbench.apps").exception("warming %s failed", lab)


def _check_port(address: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise SystemExit(f"workbench serve: --port must be 0..65535, got {port}")
    if port == 0:
        return
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise SystemExit(
                f"workbench serve: cannot listen on {address}:{port} ({exc.strerror}); "
                "is another server running there? Try --port 0 for a free port."
            ) from exc


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False) -> None:
    """Serve every lab until interrupted (blocks)."""
    _check_port(address, port)
    origins = [f"{host}:{port}" for host in {address, "localhost", "127.0.0.1"}] if port else ["*"]
    titles = {"/": "workbench"} | {lab: info.title for lab, info in registry().items()}
    server = pn.serve(
        routes(),
        port=port,
        address=address,
        websocket_origin=origins,
        show=False,
        start=False,
        title=titles,
        threaded=False,
    )
    url = f"http://{'localhost' if address in ('127.0.0.1', '0.0.0.0') else address}:{server.port}/"
    # The URL line is what users (and the browser tests) read to find the server.
    print(f"workbench: serving {len(registry())} labs at {url}", flush=True)
    threading.Thread(target=_warm_caches, name="warm-caches", daemon=True).start()
    if show:
        server.io_loop.add_callback(server.show, "/")
    server.start()
    server.io_loop.start()
