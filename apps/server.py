"""Start the Panel server: landing page at ``/``, each lab with a dashboard at ``/<lab>``.

Routes come from the lab registry (:func:`workbench.labs.registry`) and the dashboard modules
that exist (``apps/<lab>.py``): a lab without a dashboard is simply not served, and a dashboard
module that fails to import is logged and left out instead of taking the server down.
"""

from __future__ import annotations

import importlib
import logging
import socket
import threading

import panel as pn

from apps.shell import lab_pages

log = logging.getLogger("workbench.apps")


def _dashboard_modules() -> dict:
    modules = {}
    for lab in lab_pages():
        try:
            modules[lab] = importlib.import_module(f"apps.{lab}")
        except Exception:
            log.exception("the %s dashboard failed to import; it is not served", lab)
    return modules


def routes() -> dict:
    """URL slug -> per-session app builder."""
    from apps.index import create_index

    table = {"/": create_index}
    for lab, module in _dashboard_modules().items():
        table[lab] = module.create_app
    return table


def _preload_lazy_modules() -> None:
    """Import what xarray would otherwise import lazily at its first Dataset.

    xarray imports ``dask.array`` on first use; when that first use is on the warm-cache thread
    while a visitor's page runs SciPy (which looks ``dask.array`` up), the page fails with
    "partially initialized module 'dask.array'". Importing it before any thread starts removes
    the race for every lab.
    """
    import xarray as xr

    xr.namedarray.pycompat.array_type("dask")


def _warm_caches() -> None:
    """Compute each lab's default view once, so the first visitor does not wait for it."""
    for lab, module in _dashboard_modules().items():
        warm = getattr(module, "warm_cache", None)
        if warm is None:
            continue
        try:
            warm()
        except Exception:  # warming is an optimisation; a failure shows up in the session
            log.exception("warming %s failed", lab)


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def _check_port(address: str, port: int) -> int:
    """The port to serve on (a free one for 0); exits with a message when it is unusable."""
    if not 0 <= port <= 65535:
        raise SystemExit(f"workbench serve: --port must be 0..65535, got {port}")
    if port == 0:
        # Resolve 0 to a concrete port now, so the allowed websocket origins can name it
        # (an origin list of "*" would let any web page open sessions on this server).
        return _free_port(address)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise SystemExit(
                f"workbench serve: cannot listen on {address}:{port} ({exc.strerror}); "
                "is another server running there? Try --port 0 for a free port."
            ) from exc
    return port


def allowed_origins(address: str, port: int) -> list[str]:
    return sorted({f"{host}:{port}" for host in (address, "localhost", "127.0.0.1")})


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False) -> None:
    """Serve every lab until interrupted (blocks)."""
    port = _check_port(address, port)
    table = routes()
    titles = {"/": "workbench"} | {lab: title for lab, title in lab_pages().items()}
    server = pn.serve(
        table,
        port=port,
        address=address,
        websocket_origin=allowed_origins(address, port),
        show=False,
        start=False,
        title={k: v for k, v in titles.items() if k in table},
        threaded=False,
    )
    url = f"http://{'localhost' if address in ('127.0.0.1', '0.0.0.0') else address}:{server.port}/"
    # The URL line is what users (and the browser tests) read to find the server.
    print(f"workbench: serving {len(table) - 1} labs at {url}", flush=True)
    _preload_lazy_modules()
    threading.Thread(target=_warm_caches, name="warm-caches", daemon=True).start()
    if show:
        server.io_loop.add_callback(server.show, "/")
    server.start()
    server.io_loop.start()
