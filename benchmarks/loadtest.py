"""Many users on one server: a bounded load test and a soak of ``workbench serve``.

**Load** (default): start ``workbench serve --port 0`` on 127.0.0.1 with
``WORKBENCH_DIAGNOSTICS=1`` (or use a running server: ``--url``), open ``--sessions`` sessions at
once, spread round-robin over the labs, and once every page is built let each session make
``--changes`` knob changes, one after another, like a visitor moving a slider and watching the
plots. Each change is timed from the moment it is sent to the first plot update the server
pushes back for it (a data source, a marker, a range or a new figure: see :data:`PLOT_MODELS`;
how updates are told apart from a previous change's: :meth:`Session._apply`), and to the moment
the session goes quiet (``--quiet`` seconds without a message: streamed runs finished, status
line written). Then the sessions close. The run stops by itself: no change starts later than
``--duration`` seconds (180) after the first; building the pages comes before that (reported
apart: on a 2-core machine 30 pages take minutes, the server builds them one at a time).

**Soak** (``--soak N``): open and close N sessions (round-robin over the labs, ``--concurrency``
at a time); each waits for its page and its first streamed results, then closes. Afterwards the
script waits until the server has discarded every session and reads the server's diagnostics:
resident memory growth (goal < 100 MB) and how many ``Study`` / ``LabDashboard`` objects are
still alive after a garbage collection (goal: back at the baseline taken before the soak).

**Errors** (must be 0): a server exception in its log (a line with ``Traceback`` or ``ERROR``;
only when the script started the server or got ``--server-log``), an ``ERROR`` reply to a
message, a change with no plot update within ``--timeout`` s, a warning or error shown in a
page's status line (every change stays inside the Study's bounds, so any refusal is a fault),
a page that could not be built, and a session the server dropped.

**The client** speaks the Bokeh server protocol a browser speaks (websocket with a session
token, ``ACK``, ``PULL-DOC``, ``PATCH-DOC`` with ``ModelChanged`` events for the widget models,
the ``document_ready`` event Panel waits for before it starts periodic callbacks) but keeps the
document as JSON: model ids are indexed, incoming patches are read, nothing is rebuilt into
Python models. ``bokeh.client.pull_session`` works with Panel pages too (import ``panel.models``
first), but it rebuilds every model in Python: 1.6-9.5 s of client CPU per page on this
2-core machine, CPU the server under test would lose; a browser does that work on its own
machine. Knob changes are addressed by the widget's label, as a user finds them.

Run::

    python benchmarks/loadtest.py                      # 30 sessions x 50 changes, five labs
    python benchmarks/loadtest.py --soak 200           # open/close 200 sessions, memory, leaks
    python benchmarks/loadtest.py --url http://127.0.0.1:5006 --sessions 10 --changes 20
    python benchmarks/loadtest.py --think 5 --changes 20   # a class: a move every ~5 s each

No assertions (``tests/test_load.py`` has the bounded, asserted version).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bokeh.protocol import Protocol
from bokeh.protocol.receiver import Receiver
from bokeh.util.serialization import make_id
from bokeh.util.token import generate_jwt_token, generate_session_id
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, websocket_connect

ROOT = Path(__file__).resolve().parents[1]
DIAGNOSTICS_PATH = "/_workbench/diagnostics"  # apps.server.DIAGNOSTICS_PATH (not imported: Panel)
LABS = ("kde", "quadrature", "criticality", "kvcache", "fractional")

#: Models whose change means the plots were updated: a data source, a marker line, a range or
#: title of a redrawn figure, or (inside a changed layout) a whole new figure.
PLOT_MODELS = frozenset(
    {
        "ColumnDataSource",
        "Span",
        "Figure",
        "Plot",
        "GridPlot",
        "GlyphRenderer",
        "Title",
        "Range1d",
        "DataRange1d",
        "FactorRange",
        "Legend",
        "LegendItem",
        "ColorBar",
    }
)
#: A new value holding one of these is a new (or replaced) figure.
NEW_PLOT_MODELS = frozenset({"Figure", "Plot", "GridPlot", "ColumnDataSource"})
DATA_EVENTS = frozenset({"ColumnDataChanged", "ColumnsStreamed", "ColumnsPatched"})
#: The page URL model: the server writes the knobs into it when it takes a change up.
LOCATION = "panel.models.location.Location"
#: The event Bokeh's browser client sends once the page is rendered (Panel waits for it).
DOCUMENT_READY = {
    "kind": "MessageSent",
    "msg_type": "bokeh_event",
    "msg_data": {"type": "event", "name": "document_ready", "values": {"type": "map"}},
}
SERVER_FAULT = re.compile(r"Traceback|\bERROR\b")


# --- what each session changes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Knob:
    """A widget found by its label and the values a visitor moves it through, in order.

    ``knob`` is the Study parameter behind it (the tests check the values against its bounds).
    ``offsets``: the values are steps from the initial position of a slider over fixed stops
    (a DiscreteSlider sends stop indices, like the arrow keys do). Consecutive values differ,
    and so do the last and the first, so every change is a real change.
    """

    label: str
    knob: str
    values: tuple
    offsets: bool = False


#: Cheap knobs of each lab (the ``cheap`` tuple of ``apps/<lab>.py``; the main slider where it
#: is cheap), used alternately; values near the defaults and inside each Study's bounds.
PLANS: dict[str, tuple[Knob, ...]] = {
    "kde": (
        Knob("bandwidth h (log scale)", "bandwidth", (-1, -2, -3, -2, -1, 0, 1, 2, 1, 0), True),
    ),
    "quadrature": (
        Knob("samples per interval N", "n", (11, 12, 13, 12, 11, 10, 9, 8, 9, 10)),
        Knob("quadrature rule", "rule", ("Bayesian quadrature", "trapezoid")),
    ),
    "criticality": (
        Knob("depth L", "depth", (40, 30, 40, 50, 60, 70, 60, 50)),
        Knob("input correlation ρ₀", "rho0", (0.4, 0.3, 0.4, 0.5, 0.6, 0.7, 0.6, 0.5)),
    ),
    "kvcache": (
        Knob("key rank r_K", "rank_k", (24, 16, 24, 32, 40, 48, 40, 32)),
        Knob("bits b", "bits", (3, 2, 3, 4, 6, 8, 6, 4)),
        Knob("value rank r_V", "rank_v", (24, 16, 24, 32, 40, 48, 40, 32)),
    ),
    "fractional": (Knob("preconditioner", "preconditioner", ("circulant", "laplacian", "tau")),),
}


# --- the server ------------------------------------------------------------------------------------
@dataclass
class Server:
    """A server under test: its URL and, when this script started it, its process and log."""

    url: str
    pid: int | None = None
    log_path: Path | None = None
    _log_offset: int = 0

    def rss_bytes(self) -> int | None:
        """Resident memory of the server process (its own /proc entry; no garbage collection)."""
        if self.pid is None:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        """CPU seconds (user + system) of the server process and its forked workers so far."""
        if self.pid is None:
            return None
        ticks, total = os.sysconf("SC_CLK_TCK"), 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            pid, ppid = int(stat.parent.name), int(fields[1])
            if self.pid in (pid, ppid):
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def mark_log(self) -> None:
        """Count server faults from here on."""
        if self.log_path is not None:
            self._log_offset = self.log_path.stat().st_size

    def log_faults(self) -> list[str]:
        """Lines of the server log (since :meth:`mark_log`) that report an exception."""
        if self.log_path is None:
            return []
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            log.seek(self._log_offset)
            return [line.rstrip() for line in log if SERVER_FAULT.search(line)]

    def diagnostics(self, objects: bool = True, timeout: float = 30.0) -> dict[str, Any] | None:
        """The server's diagnostics JSON, or None when its endpoint is off (404) or absent.
        ``objects=False``: sessions, memory and warm-up only (no garbage collection)."""
        query = "" if objects else "?objects=0"
        try:
            with urllib.request.urlopen(
                self.url + DIAGNOSTICS_PATH + query, timeout=timeout
            ) as reply:
                return json.loads(reply.read())
        except OSError:
            return None


@contextlib.contextmanager
def start_server(startup_timeout: float = 180.0, procs: int = 1) -> Iterator[Server]:
    """``workbench serve --port 0`` with diagnostics on, as a user would start it; stopped after.

    The port is the one the server prints (``--port 0`` lets the server pick it, no race for
    a free port); its log is a file the caller can read (:meth:`Server.log_faults`). With
    ``procs`` > 1 the server forks worker processes (``--procs``): ``pid`` is then the
    supervisor's, and memory and object counts come from whichever worker answers.
    """
    tmp = Path(tempfile.mkdtemp(prefix="workbench-load-"))
    log_path = tmp / "serve.log"
    env = dict(os.environ, WORKBENCH_DIAGNOSTICS="1", WORKBENCH_CACHE=str(tmp / "cache"))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "serve", "--port", "0", "--procs", str(procs)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + startup_timeout
        url = None
        while url is None:
            found = re.search(r"serving \d+ labs at http://[^:/]+:(\d+)/", log_path.read_text())
            if found:
                url = f"http://127.0.0.1:{found.group(1)}"
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"workbench serve did not start:\n{log_path.read_text()}")
            else:
                time.sleep(0.2)
        server = Server(url=url, pid=proc.pid, log_path=log_path)
        while server.diagnostics(objects=False, timeout=5) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"workbench serve does not answer:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_warm(server: Server, timeout: float = 300.0) -> dict[str, Any] | None:
    """Wait for the server's background warm-up (every lab's default view) to finish."""
    deadline = time.monotonic() + timeout
    while True:
        diag = server.diagnostics(objects=False)
        if diag is None or diag.get("warm") or time.monotonic() > deadline:
            return server.diagnostics()
        time.sleep(0.5)


def wait_until_discarded(server: Server, timeout: float = 60.0) -> dict[str, Any] | None:
    """Wait until the server has discarded every closed session (diagnostics mode: ~1-2 s;
    Bokeh's default lifetime: up to ~32 s); returns the diagnostics taken then."""
    deadline = time.monotonic() + timeout
    while True:
        diag = server.diagnostics(objects=False)
        if diag is None or diag["sessions"] == 0 or time.monotonic() > deadline:
            return server.diagnostics()
        time.sleep(0.5)


# --- one browser-like session ----------------------------------------------------------------------
def _objects(tree: Any, into: dict[str, dict]) -> None:
    """Index every serialized model ``{"type": "object", "name", "id", "attributes"}`` by id."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "object" and "id" in item and "name" in item:
                into[item["id"]] = item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _holds_plot(tree: Any) -> bool:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "object" and item.get("name") in NEW_PLOT_MODELS:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


@dataclass
class Control:
    """A resolved widget model: where a change goes and how a knob value becomes model values."""

    knob: Knob
    model_id: str
    attrs: tuple[str, ...]
    encode: dict  # knob value -> model value
    current: Any = None
    cursor: int = -1  # position in knob.values of the last value sent


class SessionError(Exception):
    pass


@dataclass
class Session:
    """One visitor's page: a websocket speaking the Bokeh protocol, the document kept as JSON."""

    base_url: str
    lab: str
    timeout: float = 120.0
    open_timeout: float = 600.0  # sessions arriving together wait for each other's pages
    errors: list[str] = field(default_factory=list)
    notes: int = 0
    build_s: float = float("nan")
    pull_s: float = float("nan")
    latencies: list[float] = field(default_factory=list)
    settled: list[float] = field(default_factory=list)
    sent: int = 0

    def __post_init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.alerts: dict[str, dict] = {}  # status alerts: id -> attributes seen so far
        self.receiver = Receiver(Protocol())
        self.ws: Any = None
        self.reader: asyncio.Task | None = None
        self.plot_update = asyncio.Event()
        self.plot_time = 0.0
        self.taken_up = 0.0  # when the server wrote the page URL for the change in flight
        self.waiting = False
        self.last_message = time.perf_counter()
        self.unanswered: set[str] = set()  # PATCH-DOC messages the server has not yet answered
        self.answered = asyncio.Event()
        self.closing = False
        self.dropped = False
        self.controls: list[Control] = []

    # --- wire ---------------------------------------------------------------------------------
    async def _send(self, msgtype: str, content: dict) -> None:
        header = {"msgid": make_id(), "msgtype": msgtype}
        if msgtype == "PATCH-DOC":
            self.unanswered.add(header["msgid"])
            self.answered.clear()
        for fragment in (header, {}, content):
            await self.ws.write_message(json.dumps(fragment))

    async def _read(self) -> Any:
        while True:
            fragment = await self.ws.read_message()
            if fragment is None:
                return None
            message = await self.receiver.consume(fragment)
            if message is not None:
                return message

    async def open(self) -> None:
        """Connect (the server builds the page before it acknowledges), pull the document and
        tell Panel the page is rendered; raises :class:`SessionError` when any step fails."""
        url = self.base_url.replace("http", "ws", 1).rstrip("/") + f"/{self.lab}/ws"
        token = generate_jwt_token(generate_session_id())
        started = time.perf_counter()
        try:
            self.ws = await asyncio.wait_for(
                websocket_connect(
                    HTTPRequest(url, connect_timeout=self.timeout, request_timeout=self.timeout),
                    subprotocols=["bokeh", token],
                    max_message_size=1 << 30,
                ),
                self.timeout,
            )
            ack = await asyncio.wait_for(self._read(), self.open_timeout)
            if ack is None or ack.msgtype != "ACK":
                raise SessionError(f"{self.lab}: no ACK from the server ({ack!r})")
            self.build_s = time.perf_counter() - started
            await self._send("PULL-DOC-REQ", {})
            while True:  # patches sent before the document are already in it
                reply = await asyncio.wait_for(self._read(), self.open_timeout)
                if reply is None or reply.msgtype == "ERROR":
                    raise SessionError(f"{self.lab}: the document could not be pulled")
                if reply.msgtype == "PULL-DOC-REPLY":
                    break
        except (
            OSError,
            TimeoutError,
            HTTPClientError,
            StreamClosedError,
            WebSocketClosedError,
        ) as exc:
            raise SessionError(f"{self.lab}: opening the page failed: {exc!r}") from None
        self.pull_s = time.perf_counter() - started
        _objects(reply.content["doc"], self.objects)
        for model_id, obj in self.objects.items():
            if "alert" in (obj.get("attributes", {}).get("css_classes") or []):
                self.alerts[model_id] = dict(obj.get("attributes", {}))
        if not self.alerts:
            raise SessionError(f"{self.lab}: the page has no status line (failure page?)")
        self.last_message = time.perf_counter()
        self.reader = asyncio.create_task(self._read_loop())
        await self._send("PATCH-DOC", {"events": [DOCUMENT_READY]})

    async def close(self) -> None:
        """Close like a tab closes, once the server has answered every message sent: closing
        with messages in flight makes Bokeh log an error for each (its own race, not ours)."""
        if self.unanswered and not self.dropped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.answered.wait(), self.timeout)
        if not self.dropped:  # and once its last update has been sent (see _closed_writes)
            await self.settle(1.0, cap=min(self.timeout, 30.0))
        self.closing = True
        if self.ws is not None:
            self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.reader, 10)

    async def _read_loop(self) -> None:
        while True:
            try:
                message = await self._read()
            except Exception as exc:  # a broken frame counts as a dropped session
                message = None
                if not self.closing:
                    self.errors.append(f"{self.lab}: reading from the server failed: {exc!r}")
            if message is None:
                if not self.closing:
                    self.dropped = True
                    self.errors.append(f"{self.lab}: the server dropped the session")
                self.plot_update.set()  # wake a waiting change; it sees the drop
                return
            self.last_message = time.perf_counter()
            if message.msgtype in ("OK", "ERROR"):
                self.unanswered.discard(message.header.get("reqid"))
                if not self.unanswered:
                    self.answered.set()
            if message.msgtype == "ERROR":
                self.errors.append(f"{self.lab}: server replied ERROR: {message.content}")
            elif message.msgtype == "PATCH-DOC":
                self._apply(message.content)

    def _apply(self, patch: dict) -> None:
        """Read a patch: index new models, note plot updates and status-line alerts.

        A plot update counts for the change in flight only once the server has *taken the
        change up*: it writes the new knobs into the page URL (``Location.search``) before any
        work, in the same event-loop step that stops the previous change's streamed run; every
        plot update after that in the session's ordered stream belongs to this change, never
        to a late batch of the previous one.
        """
        for event in patch.get("events", []):
            kind = event.get("kind")
            plot = kind in DATA_EVENTS
            if kind == "ModelChanged":
                new = event.get("new")
                _objects(new, self.objects)
                model_id = (event.get("model") or {}).get("id")
                name = (self.objects.get(model_id) or {}).get("name")
                if name == LOCATION and event.get("attr") == "search" and self.waiting:
                    self.taken_up = self.taken_up or time.perf_counter()
                plot = name in PLOT_MODELS or _holds_plot(new)
                if model_id in self.alerts:
                    self.alerts[model_id][event.get("attr")] = new
                    self._check_alert(self.alerts[model_id])
            if plot and self.waiting and self.taken_up and not self.plot_update.is_set():
                self.plot_time = time.perf_counter()
                self.plot_update.set()

    def _check_alert(self, attrs: dict) -> None:
        if not attrs.get("visible", True):  # Bokeh leaves out a default (visible) value
            return
        classes = attrs.get("css_classes") or []
        text = re.sub(r"<[^>]+>|&lt;[^&]*&gt;", "", str(attrs.get("text") or ""))[:300]
        if "alert-info" in classes:
            self.notes += 1
        elif "alert-warning" in classes or "alert-danger" in classes:
            self.errors.append(f"{self.lab}: status line shows: {text}")

    # --- knobs --------------------------------------------------------------------------------
    def resolve(self, knobs: tuple[Knob, ...]) -> None:
        """Find each knob's widget model by its label, as a visitor finds the widget."""
        self.controls = [self._control(knob) for knob in knobs]

    def _control(self, knob: Knob) -> Control:
        for model_id, obj in self.objects.items():
            attrs = obj.get("attributes", {})
            name = obj["name"]
            if attrs.get("title") == knob.label and name == "Slider":
                lo, hi = attrs["start"], attrs["end"]
                outside = [v for v in knob.values if not lo <= v <= hi]
                if outside:
                    raise SessionError(f"{knob.label}: {outside} outside the slider {lo}..{hi}")
                return Control(
                    knob,
                    model_id,
                    ("value", "value_throttled"),
                    {v: v for v in knob.values},
                    attrs.get("value"),
                )
            if attrs.get("title") == knob.label and name.endswith("Select"):
                keys = [o[0] if isinstance(o, list) else o for o in attrs.get("options", [])]
                missing = [v for v in knob.values if v not in keys]
                if missing:
                    raise SessionError(f"{knob.label}: {missing} not among the options {keys}")
                encode = {v: v for v in knob.values}
                return Control(knob, model_id, ("value",), encode, attrs.get("value"))
            if name.endswith("RadioButtonGroup") and set(knob.values) <= set(
                attrs.get("labels", [])
            ):
                labels = attrs["labels"]
                encode = {v: labels.index(v) for v in knob.values}
                current = labels[attrs.get("active") or 0]
                return Control(knob, model_id, ("active",), encode, current)
            if knob.offsets and name.endswith("Column"):
                slider = self._discrete_slider(attrs.get("children") or [], knob.label)
                if slider is not None:
                    return self._offsets(knob, slider)
        raise SessionError(f"{self.lab}: no widget labelled {knob.label!r} on the page")

    def _discrete_slider(self, children: list, label: str) -> str | None:
        """A DiscreteSlider is a column of a Div (its label and value) and an untitled Slider."""
        found = [self.objects.get(c.get("id")) for c in children if isinstance(c, dict)]
        names = [(o or {}).get("name") for o in found]
        if len(found) != 2 or names != ["Div", "Slider"]:
            return None
        text = str(found[0].get("attributes", {}).get("text", ""))
        return found[1]["id"] if text.startswith(label) else None

    def _offsets(self, knob: Knob, slider_id: str) -> Control:
        attrs = self.objects[slider_id]["attributes"]
        start = attrs.get("value", 0)
        stops = {v: start + v for v in knob.values}
        if not all(attrs["start"] <= s <= attrs["end"] for s in stops.values()):
            raise SessionError(f"{knob.label}: offsets {knob.values} leave the slider's stops")
        return Control(knob, slider_id, ("value", "value_throttled"), stops, 0)

    def next_change(self, k: int) -> tuple[Control, Any]:
        """Change number ``k``: the knobs take turns; each steps through its values in order
        (a value equal to the widget's current one is skipped)."""
        control = self.controls[k % len(self.controls)]
        values = control.knob.values
        control.cursor = (control.cursor + 1) % len(values)
        if values[control.cursor] == control.current:
            control.cursor = (control.cursor + 1) % len(values)
        return control, values[control.cursor]

    # --- one change ---------------------------------------------------------------------------
    async def settle(self, quiet: float, cap: float) -> bool:
        """Wait until no message came for ``quiet`` s (at most ``cap`` s); True when quiet."""
        end = time.perf_counter() + cap
        while True:
            now = time.perf_counter()
            idle = now - self.last_message
            if idle >= quiet:
                return True
            if now >= end:
                return False
            await asyncio.sleep(min(quiet - idle, end - now))

    async def change(self, k: int, quiet: float) -> bool:
        """Make change ``k``; record the time to the first plot update and to quiet."""
        control, value = self.next_change(k)
        model_value = control.encode[value]
        events = [
            {
                "kind": "ModelChanged",
                "model": {"id": control.model_id},
                "attr": a,
                "new": model_value,
            }
            for a in control.attrs
        ]
        before = len(self.errors)
        self.plot_update.clear()
        self.taken_up = 0.0
        self.waiting = True
        started = time.perf_counter()
        await self._send("PATCH-DOC", {"events": events})
        self.sent += 1
        control.current = value
        try:
            await asyncio.wait_for(self.plot_update.wait(), self.timeout)
        except TimeoutError:
            stage = "no plot update" if self.taken_up else "the server did not take the change up"
            self.errors.append(
                f"{self.lab}: {stage} within {self.timeout:g} s after {control.knob.label} = {value}"
            )
            return False
        finally:
            self.waiting = False
        if self.dropped:
            return False
        self.latencies.append(self.plot_time - started)
        await self.settle(quiet, cap=min(self.timeout, 30.0))
        self.settled.append(self.last_message - started)
        return len(self.errors) == before


# --- the load test ---------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lo = int(position)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


@dataclass
class LoadResult:
    sessions: list[Session]
    changes_planned: int
    open_s: float
    change_s: float
    budget_s: float | None
    client_cpu_s: float
    server_cpu_s: float | None  # the server's CPU seconds during the changes (with its workers)
    server_faults: list[str]
    rss_before: int | None
    rss_open: int | None
    rss_peak: int | None
    rss_after: int | None
    diag_before: dict | None
    diag_after: dict | None
    failed_opens: list[str]

    @property
    def errors(self) -> list[str]:
        found = [e for s in self.sessions for e in s.errors]
        return self.failed_opens + found + self.server_faults

    @property
    def changes_observed(self) -> int:
        return sum(len(s.latencies) for s in self.sessions)

    @property
    def changes_sent(self) -> int:
        return sum(s.sent for s in self.sessions)


async def _sample_rss(server: Server, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        rss = server.rss_bytes()
        if rss is not None:
            peak.append(max(peak[-1] if peak else 0, rss))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _load(
    server: Server,
    sessions: int,
    changes: int,
    labs: tuple[str, ...],
    timeout: float,
    quiet: float,
    budget_s: float | None,
    think_s: float = 0.0,
) -> LoadResult:
    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    diag_before = await loop.run_in_executor(None, wait_until_warm, server)
    rss_before = server.rss_bytes() or (diag_before or {}).get("rss_bytes")
    server.mark_log()
    peak: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(server, peak, stop))

    pages = [Session(server.url, labs[i % len(labs)], timeout=timeout) for i in range(sessions)]
    failed: list[str] = []

    async def open_one(session: Session) -> None:
        try:
            await session.open()
            session.resolve(PLANS[session.lab])
            await session.settle(quiet, cap=min(timeout, 30.0))  # first streamed results
        except SessionError as exc:
            failed.append(str(exc))
            session.dropped = True

    t0 = time.perf_counter()
    await asyncio.gather(*(open_one(s) for s in pages))
    open_s = time.perf_counter() - t0
    rss_open = server.rss_bytes()

    t1, server_cpu = time.perf_counter(), server.cpu_seconds()
    deadline = t1 + budget_s if budget_s else float("inf")

    async def drive(session: Session, seed: int) -> None:
        # A person watches the plots between moves: with ``think_s``, each session waits an
        # exponential time of that mean (seeded per session, so runs repeat) before each change,
        # starting at a random point of its first wait so thirty sessions do not move at once.
        pause = random.Random(seed)
        for k in range(changes):
            if think_s > 0:
                await asyncio.sleep(pause.expovariate(1.0 / think_s))
            if session.dropped or time.perf_counter() >= deadline:
                return
            await session.change(k, quiet)

    await asyncio.gather(*(drive(s, i) for i, s in enumerate(pages) if not s.dropped))
    change_s = time.perf_counter() - t1
    if server_cpu is not None:
        server_cpu = server.cpu_seconds() - server_cpu
    await asyncio.gather(*(s.close() for s in pages))
    stop.set()
    await sampler
    diag_after = await loop.run_in_executor(None, wait_until_discarded, server)
    return LoadResult(
        sessions=pages,
        changes_planned=sessions * changes,
        open_s=open_s,
        change_s=change_s,
        budget_s=budget_s,
        client_cpu_s=time.process_time() - cpu0,
        server_cpu_s=server_cpu,
        server_faults=server.log_faults(),
        rss_before=rss_before,
        rss_open=rss_open,
        rss_peak=peak[-1] if peak else None,
        rss_after=server.rss_bytes() or (diag_after or {}).get("rss_bytes"),
        diag_before=diag_before,
        diag_after=diag_after,
        failed_opens=failed,
    )


def _run(coroutine):
    """``asyncio.run`` on this thread, or on a fresh one when this thread already runs an event
    loop (Playwright's sync API keeps one running in a test process)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_load(
    server: Server,
    sessions: int = 30,
    changes: int = 50,
    labs: tuple[str, ...] = LABS,
    timeout: float = 120.0,
    quiet: float = 0.3,
    budget_s: float | None = None,
    think_s: float = 0.0,
) -> LoadResult:
    """``sessions`` concurrent sessions over ``labs``, ``changes`` knob changes each.

    Every page is built before the first change (all sessions are then open at once); with
    ``budget_s``, no change starts later than that many seconds after the first one. With
    ``think_s`` > 0 each session pauses a random time of that mean before each change (a person
    reading the plots); 0 sends each change as soon as the previous one settled (saturation).
    """
    return _run(_load(server, sessions, changes, labs, timeout, quiet, budget_s, think_s))


# --- the soak --------------------------------------------------------------------------------------
@dataclass
class SoakResult:
    opened: int
    errors: list[str]
    seconds: float
    diag_before: dict | None
    diag_first_round: dict | None
    diag_after: dict | None
    rss_before: int | None
    rss_first_round: int | None
    rss_after: int | None
    checkpoints: list[tuple[int, int | None]]


async def _soak(
    server: Server,
    count: int,
    labs: tuple[str, ...],
    concurrency: int,
    timeout: float,
    progress: bool,
) -> SoakResult:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, wait_until_warm, server)
    diag_before = await loop.run_in_executor(None, wait_until_discarded, server)
    rss_before = server.rss_bytes() or (diag_before or {}).get("rss_bytes")
    server.mark_log()
    errors: list[str] = []
    checkpoints: list[tuple[int, int | None]] = []
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def visit(i: int) -> None:
        nonlocal done
        async with gate:
            session = Session(server.url, labs[i % len(labs)], timeout=timeout)
            try:
                await session.open()
                await session.settle(0.5, cap=min(timeout, 15.0))
            except SessionError as exc:
                errors.append(str(exc))
            await session.close()
            errors.extend(session.errors)
            done += 1
            if done % max(count // 10, 1) == 0:
                checkpoints.append((done, server.rss_bytes()))
                if progress:
                    elapsed = time.perf_counter() - started
                    print(f"  {done}/{count} pages opened and closed, {elapsed:.0f} s", flush=True)

    started = time.perf_counter()
    first = min(len(labs), count)  # one page of each lab fills the lazily built caches
    await asyncio.gather(*(visit(i) for i in range(first)))
    diag_first, rss_first = None, None
    if count > first:
        diag_first = await loop.run_in_executor(None, wait_until_discarded, server)
        rss_first = server.rss_bytes() or (diag_first or {}).get("rss_bytes")
    await asyncio.gather(*(visit(i) for i in range(first, count)))
    seconds = time.perf_counter() - started
    diag_after = await loop.run_in_executor(None, wait_until_discarded, server)
    errors.extend(server.log_faults())
    return SoakResult(
        opened=done,
        errors=errors,
        seconds=seconds,
        diag_before=diag_before,
        diag_first_round=diag_first,
        diag_after=diag_after,
        rss_before=rss_before,
        rss_first_round=rss_first,
        rss_after=server.rss_bytes() or (diag_after or {}).get("rss_bytes"),
        checkpoints=checkpoints,
    )


def run_soak(
    server: Server,
    count: int = 200,
    labs: tuple[str, ...] = LABS,
    concurrency: int = 4,
    timeout: float = 120.0,
    progress: bool = False,
) -> SoakResult:
    """Open and close ``count`` sessions; then memory and the objects still alive."""
    return _run(_soak(server, count, labs, concurrency, timeout, progress))


# --- reports ---------------------------------------------------------------------------------------
def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MB"


def _growth(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return "n/a"
    return f"{(after - before) / 2**20:+.0f} MB"


def _machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ""
    with contextlib.suppress(OSError, AttributeError):
        load = ", load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} cores, {model or 'unknown CPU'}{load}"


def print_load(result: LoadResult) -> None:
    rows = []
    labs = sorted({s.lab for s in result.sessions}, key=LABS.index)
    for lab in [*labs, "all"]:
        group = [s for s in result.sessions if lab in ("all", s.lab)]
        first = [1e3 * t for s in group for t in s.latencies]
        settled = [1e3 * t for s in group for t in s.settled]
        builds = [s.build_s for s in group if s.build_s == s.build_s]
        errors = sum(len(s.errors) for s in group) + (
            len(result.failed_opens) + len(result.server_faults) if lab == "all" else 0
        )
        rows.append(
            (
                lab,
                len(group),
                len(first),
                errors,
                _percentile(first, 50),
                _percentile(first, 95),
                _percentile(settled, 50),
                _percentile(settled, 95),
                _percentile(builds, 50),
            )
        )
    print(
        f"\n{'lab':<12}{'sessions':>9}{'changes':>9}{'errors':>7}{'p50 [ms]':>10}{'p95 [ms]':>10}"
        f"{'quiet p50':>10}{'quiet p95':>10}{'page [s]':>9}"
    )
    for lab, n, seen, errors, p50, p95, q50, q95, build in rows:
        print(
            f"{lab:<12}{n:>9}{seen:>9}{errors:>7}{p50:>10.0f}{p95:>10.0f}{q50:>10.0f}{q95:>10.0f}"
            f"{build:>9.1f}"
        )
    cut = result.changes_planned - result.changes_sent
    budget = f" ({cut} not started: the {result.budget_s:g} s budget ran out)" if cut else ""
    print(
        f"\nchanges: {result.changes_sent} of {result.changes_planned} made{budget}, "
        f"{result.changes_observed} observed; errors: {len(result.errors)} (server log faults: "
        f"{len(result.server_faults)}, sessions dropped or not built: "
        f"{sum(s.dropped for s in result.sessions)})"
    )
    rate = result.changes_sent / result.change_s if result.change_s else float("nan")
    print(
        f"opening {len(result.sessions)} sessions at once: {result.open_s:.0f} s; changes: "
        f"{result.change_s:.0f} s ({rate:.1f} changes/s); client CPU {result.client_cpu_s:.0f} s"
    )
    if result.server_cpu_s is not None and result.change_s:
        # Under 1 core while every session waits: the CPU is not what sets the rate.
        print(
            f"server CPU during the changes: {result.server_cpu_s:.0f} s, "
            f"{result.server_cpu_s / result.change_s:.2f} of {os.cpu_count()} cores"
        )
    print(
        f"server RSS: before {_mb(result.rss_before)}, all sessions open {_mb(result.rss_open)}, "
        f"peak {_mb(result.rss_peak)}, after closing {_mb(result.rss_after)} "
        f"({_growth(result.rss_before, result.rss_after)})"
    )
    if result.diag_before and result.diag_after:
        print(
            f"live Studies: {result.diag_before['live_studies']} before, "
            f"{result.diag_after['live_studies']} after closing "
            f"(sessions left: {result.diag_after['sessions']})"
        )
    for error in result.errors[:20]:
        print("  error:", error)


def print_soak(result: SoakResult) -> None:
    before, first, after = result.diag_before, result.diag_first_round, result.diag_after
    print(f"\nsoak: {result.opened} sessions opened and closed in {result.seconds:.0f} s")
    print(f"errors: {len(result.errors)}")
    print(f"{'':<26}{'RSS':>10}{'live Studies':>14}{'dashboards':>12}{'sessions':>10}")
    for name, rss, diag in (
        ("before (warm)", result.rss_before, before),
        ("after one page per lab", result.rss_first_round, first),
        ("after the soak", result.rss_after, after),
    ):
        diag = diag or {}
        print(
            f"{name:<26}{_mb(rss):>10}{diag.get('live_studies', 'n/a'):>14}"
            f"{diag.get('live_dashboards', 'n/a'):>12}{diag.get('sessions', 'n/a'):>10}"
        )
    print(
        f"memory growth: {_growth(result.rss_before, result.rss_after)} over the soak, "
        f"{_growth(result.rss_first_round, result.rss_after)} after the first round (goal < 100 MB)"
    )
    trail = ", ".join(f"{n}: {_mb(rss)}" for n, rss in result.checkpoints)
    if trail:
        print(f"RSS while soaking (sessions done: RSS): {trail}")
    if after:
        print(f"live Studies by lab after the soak: {after.get('live_studies_by_lab')}")
    for error in result.errors[:20]:
        print("  error:", error)


# --- command line ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30, help="concurrent sessions (30)")
    parser.add_argument("--changes", type=int, default=50, help="knob changes per session (50)")
    parser.add_argument("--soak", type=int, default=0, help="open and close N sessions instead")
    parser.add_argument("--concurrency", type=int, default=4, help="soak: sessions at a time (4)")
    parser.add_argument("--labs", default=",".join(LABS), help="comma-separated labs (all five)")
    parser.add_argument("--url", help="a running server (http://127.0.0.1:PORT) instead of one")
    parser.add_argument("--server-log", type=Path, help="with --url: its log, checked for faults")
    parser.add_argument("--timeout", type=float, default=120.0, help="s per step (120)")
    parser.add_argument("--quiet", type=float, default=0.3, help="s without messages = settled")
    parser.add_argument(
        "--procs", type=int, default=1, help="worker processes of the server it starts (1)"
    )
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean s a session waits before each change (exponential; 0: back to back)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=180.0,
        help="s: no change starts later than this after the first (180; 0: no limit)",
    )
    args = parser.parse_args(argv)
    labs = tuple(lab.strip() for lab in args.labs.split(",") if lab.strip())
    unknown = sorted(set(labs) - set(PLANS))
    if unknown:
        parser.error(f"unknown lab(s) {', '.join(unknown)}; choose from {', '.join(PLANS)}")

    print(f"machine: {_machine()}")
    with contextlib.ExitStack() as stack:
        if args.url:
            server = Server(url=args.url.rstrip("/"), log_path=args.server_log)
            if server.diagnostics() is None:
                print("(no diagnostics endpoint: start the server with WORKBENCH_DIAGNOSTICS=1)")
        else:
            t0 = time.perf_counter()
            server = stack.enter_context(start_server(procs=args.procs))
            print(
                f"server: {server.url} (pid {server.pid}), up in {time.perf_counter() - t0:.0f} s"
            )
        started = time.perf_counter()
        if args.soak:
            result = run_soak(
                server, args.soak, labs, args.concurrency, args.timeout, progress=True
            )
            print_soak(result)
            failed = bool(result.errors)
        else:
            budget = args.duration or None
            result = run_load(
                server,
                args.sessions,
                args.changes,
                labs,
                args.timeout,
                args.quiet,
                budget,
                think_s=args.think,
            )
            if args.think:
                print(f"(each session waited ~{args.think:g} s, exponential, before each change)")
            print_load(result)
            if args.procs != 1 and not args.url:
                print("(--procs: memory and object counts are one worker's, whichever answered)")
            failed = bool(result.errors) or result.changes_observed < result.changes_sent
        print(f"elapsed: {time.perf_counter() - started:.0f} s (after the server was up)")
    return 1 if failed else 0


if __name__ == "__main__":
    threading.current_thread().name = "loadtest"
    sys.exit(main())
