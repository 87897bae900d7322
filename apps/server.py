"""Start the Panel server: landing page at ``/``, each lab with a dashboard at ``/<lab>``.

Routes come from the lab registry (:func:`workbench.labs.registry`) and the dashboard modules
that exist (``apps/<lab>.py``): a lab without a dashboard is simply not served, and a dashboard
module that fails to import is logged and left out instead of taking the server down.

Diagnostics (opt-in): with ``WORKBENCH_DIAGNOSTICS=1`` in the environment the server also answers
``GET /_workbench/diagnostics`` (from loopback addresses only) with JSON counts taken after a
``gc.collect()``: live ``Study`` and ``LabDashboard`` objects, Bokeh sessions and documents, the
server's resident memory and whether the caches are warm (``?objects=0``: the cheap part only). ``benchmarks/loadtest.py`` and
``tests/test_load.py`` read it to check that closed sessions leave nothing behind. In this mode a
closed session is discarded after 1 s instead of Bokeh's 15 s (checked every 1 s instead of
17 s), so a soak sees its memory come back without waiting half a minute. Without the variable
neither the endpoint nor the shorter lifetime exists.
"""

from __future__ import annotations

import gc
import importlib
import ipaddress
import json
import logging
import os
import socket
import threading
from typing import Any

import panel as pn
import tornado.web

from apps.shell import lab_pages

log = logging.getLogger("workbench.apps")

#: Environment variable that turns the diagnostics endpoint on (value "1"); off by default.
DIAGNOSTICS_ENV = "WORKBENCH_DIAGNOSTICS"
#: Where the diagnostics JSON is served when it is on.
DIAGNOSTICS_PATH = "/_workbench/diagnostics"
#: Set once the background warm-up has run (reported by the diagnostics endpoint).
_warm_done = threading.Event()


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


def _pin_bokeh_settings() -> None:
    """Resolve Bokeh's per-model serialization setting once, at start.

    Bokeh reads ``settings.serialize_include_defaults()`` for every model it serializes, and
    each read looks up two environment variables and three config layers (3.6 µs against
    0.4 µs once set). Under the 30-session load test that was 1.9 % of the event loop
    (py-spy, 2026-11-29). Its value from the environment now is kept: the server's own
    environment does not change while it runs.
    """
    from bokeh.settings import settings

    setting = settings.serialize_include_defaults
    setting.set_value(setting())


def _warm_caches() -> None:
    """Compute each lab's default view once, so the first visitor does not wait for it.

    The KDE binning kernel is compiled (or loaded from numba's on-disk cache) first: a cold
    compile takes seconds, and it belongs to the server's start, not to a visitor's first move."""
    try:
        from workbench.labs.kde import binning_kernel

        seconds = binning_kernel.warm()
        log.info("KDE binning kernel ready in %.1f s", seconds)
    except Exception:  # the bincount path still works without it
        log.exception("warming the KDE binning kernel failed")
    for lab, module in _dashboard_modules().items():
        warm = getattr(module, "warm_cache", None)
        if warm is None:
            continue
        try:
            warm()
        except Exception:  # warming is an optimisation; a failure shows up in the session
            log.exception("warming %s failed", lab)
    _warm_done.set()


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


# --- diagnostics (opt-in) -------------------------------------------------------------------------
def diagnostics_enabled() -> bool:
    return os.environ.get(DIAGNOSTICS_ENV, "").strip() == "1"


def _rss_bytes() -> int | None:
    """Resident memory of this process (Linux /proc; psutil elsewhere when installed)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def diagnostics(tornado_app: Any, objects: bool = True) -> dict[str, Any]:
    """Counts of what is alive in the server, after a full garbage collection.

    Objects are counted by a walk over ``gc.get_objects()`` (every container the collector
    tracks), so any Study alive for any reason is seen, however it was made. The collection
    and the walk hold the event loop for a fraction of a second, which is why they run only
    on request, only in diagnostics mode, and not at all with ``objects=False`` (sessions,
    memory and warm-up only: what a client polls while it waits).
    """
    sessions = sum(len(tornado_app.get_sessions(path)) for path in tornado_app.app_paths)
    report: dict[str, Any] = {
        "sessions": sessions,
        "pid": os.getpid(),  # with --procs: which worker process answered
        "rss_bytes": _rss_bytes(),
        "threads": threading.active_count(),
        "warm": _warm_done.is_set(),
    }
    if not objects:
        return report

    from bokeh.document import Document

    from apps.lab_app import LabDashboard
    from workbench.study import Study

    gc.collect()
    studies: dict[str, int] = {}
    dashboards = documents = 0
    for obj in gc.get_objects():
        if isinstance(obj, Study):
            lab = type(obj).lab or type(obj).__name__
            studies[lab] = studies.get(lab, 0) + 1
        elif isinstance(obj, LabDashboard):
            dashboards += 1
        elif isinstance(obj, Document):
            documents += 1
    report.update(
        live_studies=sum(studies.values()),
        live_studies_by_lab=studies,
        live_dashboards=dashboards,
        live_documents=documents,
        rss_bytes=_rss_bytes(),
    )
    return report


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


class DiagnosticsHandler(tornado.web.RequestHandler):
    """``GET`` the :func:`diagnostics` JSON (``?objects=0``: without the object counts);
    refused (403) unless the peer is a loopback address.

    The peer is the socket's own address (the server does not trust X-Forwarded-For), so a
    server started with ``--address 0.0.0.0`` still answers only its own machine.
    """

    def get(self) -> None:
        if not _is_loopback(self.request.remote_ip or ""):
            raise tornado.web.HTTPError(403)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        objects = self.get_argument("objects", "1") != "0"
        self.finish(json.dumps(diagnostics(self.application, objects=objects)))


def _diagnostics_options() -> dict[str, Any]:
    """Extra ``pn.serve`` options in diagnostics mode (none otherwise)."""
    if not diagnostics_enabled():
        return {}
    return {
        "extra_patterns": [(DIAGNOSTICS_PATH, DiagnosticsHandler)],
        "check_unused_sessions_milliseconds": 1000,
        "unused_session_lifetime_milliseconds": 1000,
    }


#: Most worker processes ``--procs`` accepts per CPU core (more only adds switching).
PROCS_PER_CORE = 2


def _check_procs(procs: int) -> int:
    """Worker processes to fork (0: one per core); exits with a message when out of range."""
    cores = os.cpu_count() or 1
    if not 0 <= procs <= PROCS_PER_CORE * cores:
        raise SystemExit(
            f"workbench serve: --procs must be 0 (one per core) .. {PROCS_PER_CORE * cores} "
            f"({PROCS_PER_CORE} per core on this {cores}-core machine), got {procs}"
        )
    return procs or cores


def _die_with_parent() -> None:
    """In a forked worker: end when the supervising process ends (Linux ``PR_SET_PDEATHSIG``).

    Tornado's ``fork_processes`` leaves the parent waiting on its children and forwards no
    signal, so a ``kill`` of the server's pid would orphan the workers, still holding the port."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: Ctrl-C still reaches the process group
        return
    if os.getppid() == 1:  # the parent ended before the call took effect
        os._exit(0)


def serve(port: int = 5006, address: str = "127.0.0.1", show: bool = False, procs: int = 1) -> None:
    """Serve every lab until interrupted (blocks).

    ``procs`` > 1 forks that many worker processes sharing the port (Bokeh's ``num_procs``; 0:
    one per core). A session lives in one process and the event loop of each serves only its
    own sessions, so a class's knob moves spread over the cores instead of queueing on one
    loop. Caches (glassllm weights, the labs' memoised grids) are per process: memory grows
    with ``procs``; the diagnostics endpoint reports on whichever process answers.
    """
    port = _check_port(address, port)
    procs = _check_procs(procs)
    table = routes()
    titles = {"/": "workbench"} | {lab: title for lab, title in lab_pages().items()}
    options = _diagnostics_options()
    server = pn.serve(
        table,
        port=port,
        address=address,
        websocket_origin=allowed_origins(address, port),
        show=False,
        start=False,
        title={k: v for k, v in titles.items() if k in table},
        threaded=False,
        num_procs=procs,  # > 1: Bokeh forks here; what follows runs in each worker
        **options,
    )
    worker = 0
    if procs > 1:
        import tornado.process

        _die_with_parent()
        worker = tornado.process.task_id() or 0
    url = f"http://{'localhost' if address in ('127.0.0.1', '0.0.0.0') else address}:{server.port}/"
    if worker == 0:
        # The URL line is what users (and the browser tests) read to find the server.
        workers = f" with {procs} worker processes" if procs > 1 else ""
        print(f"workbench: serving {len(table) - 1} labs at {url}{workers}", flush=True)
        if options:
            print(f"workbench: diagnostics at {url.rstrip('/')}{DIAGNOSTICS_PATH}", flush=True)
    _preload_lazy_modules()
    _pin_bokeh_settings()
    threading.Thread(target=_warm_caches, name="warm-caches", daemon=True).start()
    if show:
        server.io_loop.add_callback(server.show, "/")
    server.start()
    server.io_loop.start()
