"""File uploads on a lab page: one widget and one set of safety rules for every lab.

What happens to an upload (issue 13, "Your own data, safely"):

* the browser sends the file's bytes over the session's websocket into a ``FileInput`` of
  this session only (nothing is shared with other sessions);
* a file larger than the lab's cap (plus room for a header) is refused in the browser, before
  it is sent (:data:`GUARD_JS`): the websocket closes on a message over Bokeh's 20 MiB limit,
  which would end the session (measured: a 24 MB .npy dropped the connection, code 1006, and
  the page stopped answering). The browser then sends only the file's name and size, and the
  page says why it was refused. The same check runs again on the server, whatever a client sends;
* otherwise the bytes are written to a fresh private temporary directory (mode 0700, a fixed
  file name ``upload<suffix>`` with the suffix from a whitelist: the visitor's file name never
  becomes a path), handed to the lab's loader (which reads it with
  :func:`workbench.data.load_array` and its stated ``max_bytes``) and deleted at once, whatever
  happened; the widget's copy of the bytes is cleared too;
* in a server session a lab that splits reading from applying (``parse`` / ``apply``) has the
  file written and read on the shared worker pool, so the session's event loop stays free (the
  largest CSV took 0.3 s to parse); the box says "reading …" meanwhile, the result is applied on
  the session's loop, and a newer upload supersedes one still being read;
* a refusal (``ValueError``, which includes :class:`~workbench.study.StudyInputError`) becomes
  an escaped warning on the page's status line and a line in the server log; any other error
  is logged with its traceback and the page shows a plain message. In both cases the page keeps
  the data it had.
"""

from __future__ import annotations

import contextlib
import html
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import panel as pn
import param

from apps import fair_pool, sessions
from apps.knobs import in_session
from apps.sessions import worker_pool
from apps.shell import StatusLine

log = logging.getLogger("workbench.apps")

#: Room for a ``.npy`` or ``.safetensors`` header on top of the data (their headers are capped
#: at 100,000 bytes by :mod:`workbench.data`).
HEADER_ROOM = 200_000
#: Tag of a guarded FileInput's Bokeh model, and the MIME type of "too large, not sent".
GUARD_TAG = "workbench-upload"
TOO_LARGE = "application/x-workbench-too-large"
#: Browser side: wraps each guarded FileInput view's ``load_files`` so that a file over the
#: model's ``max-bytes:`` tag is never read or sent; its name and size go instead (a few bytes).
#: Views can be rebuilt, so new ones are looked for every second.
GUARD_JS = f"""
const install = () => {{
  for (const doc of (Bokeh.documents || [])) {{
    for (const model of doc.all_models) {{
      const tags = model.tags || [];
      if (!tags.includes("{GUARD_TAG}")) continue;
      const cap = Number(String(tags.find((t) => String(t).startsWith("max-bytes:"))).slice(10));
      for (const view of Bokeh.index.find(model)) {{
        if (view.__workbench_guard || view.load_files == null) continue;
        const load = view.load_files.bind(view);
        view.load_files = async (files) => {{
          const big = Array.from(files).find((f) => f.size > cap);
          if (big == null) return load(files);
          view.input_el.value = "";
          model.setv({{value: btoa(String(big.size)), filename: big.name, mime_type: "{TOO_LARGE}"}});
        }};
        view.__workbench_guard = true;
      }}
    }}
  }}
}};
install();
setInterval(install, 1000);
"""


def shown_name(filename: str | None, limit: int = 60) -> str:
    """The visitor's file name as a message may show it: printable, at most ``limit`` chars
    (escaping for HTML is the status line's job)."""
    text = "".join(c if c.isprintable() else "?" for c in (filename or "upload"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def temporary_upload(data: bytes, filename: str, suffixes: Sequence[str]) -> Iterator[Path]:
    """``data`` in a private temporary file named ``upload<suffix>``, removed on exit.

    Raises ValueError when the suffix of ``filename`` is not one of ``suffixes``.
    """
    suffix = Path(filename or "").suffix.lower()
    if suffix not in suffixes:
        raise ValueError(f"{shown_name(filename)}: use a {' or '.join(suffixes)} file")
    with tempfile.TemporaryDirectory(prefix="workbench-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        yield path


class UploadBox:
    """A titled ``FileInput`` with the caps stated next to it (and optionally a choice of what
    the file holds).

    Two ways to use an upload:

    * ``parse(path, name, choice)`` and ``apply(value, name)``: in a server session ``parse``
      reads and checks the file on the shared worker pool (:func:`apps.sessions.worker_pool`)
      while the box shows "reading …"; ``apply`` then runs on the session's event loop (the
      document's next-tick callback, as lab pages apply their computations). A newer upload
      supersedes one still being read (its result is dropped). Outside a session both run at
      once, in order;
    * ``on_file(path, name)``: reads and applies in one call on the event loop.

    ``parse``, ``apply`` and ``on_file`` refuse a file by raising ValueError; the page then
    keeps its data and view, and the status line says why.
    """

    def __init__(
        self,
        *,
        title: str,
        caps: str,
        suffixes: Sequence[str],
        max_bytes: int,
        status: StatusLine,
        on_file: Callable[[Path, str], None] | None = None,
        parse: Callable[[Path, str, Any], Any] | None = None,
        apply: Callable[[Any, str], None] | None = None,
        choices: dict[str, str] | None = None,
    ) -> None:
        if (on_file is None) == (parse is None or apply is None):
            raise TypeError("give on_file, or parse and apply")
        self.suffixes = tuple(suffixes)
        self.max_file_bytes = int(max_bytes) + HEADER_ROOM
        self.on_file, self.parse, self.apply = on_file, parse, apply
        self.status = status
        self._doc = pn.state.curdoc if in_session() else None
        self._generation = 0  # the newest upload; older reads are dropped when they finish
        self.input = pn.widgets.FileInput(
            accept=",".join(self.suffixes),
            multiple=False,
            sizing_mode="stretch_width",
            tags=[GUARD_TAG, f"max-bytes:{self.max_file_bytes}"],
        )
        self.input.param.watch(self._received, "value")
        _install_guard()
        self.choice = (
            pn.widgets.RadioButtonGroup(options=dict(choices), sizing_mode="stretch_width")
            if choices
            else None
        )
        self.reading = pn.pane.Markdown("", visible=False, margin=(0, 10))
        parts = [pn.pane.Markdown(f"**{title}**\n\n{caps}", sizing_mode="stretch_width")]
        parts += [self.choice] if self.choice is not None else []
        self.view = pn.Column(*parts, self.input, self.reading, sizing_mode="stretch_width")

    def _received(self, event) -> None:
        data = event.new
        if not data:
            return  # the widget was cleared
        try:
            if self.input.mime_type == TOO_LARGE:  # the browser sent only the size
                self.too_large(self.input.filename or "upload", data)
            else:
                self.receive(data, self.input.filename or "upload")
        finally:
            with param.parameterized.discard_events(self.input):
                self.input.param.update(value=None, mime_type=None)  # no copy of the bytes kept
            self.input.clear()  # the browser's input is emptied: the same file can come again

    def too_large(self, filename: str, size_text: bytes) -> None:
        """The browser kept a file over the cap and sent its size instead (untrusted text)."""
        self._generation += 1  # a file still being read is superseded
        self._show_reading(None)
        text = size_text.decode("ascii", "replace")[:20]
        size = f" has {int(text) / 2**20:,.1f} MiB and" if text.isdigit() else ""
        self.status.warn(
            f"{shown_name(filename)}: the file{size} is over the {self.max_file_bytes / 2**20:,.1f}"
            " MiB limit for an upload; it was not sent"
        )
        log.info("upload %r refused in the browser: %s bytes", shown_name(filename), text)

    def receive(self, data: bytes, filename: str) -> bool:
        """Check, store briefly, read and apply one upload. True when it was applied, or (in a
        session, with ``parse``) handed to the worker pool; False when refused."""
        name = shown_name(filename)
        self._generation += 1
        generation = self._generation
        if len(data) > self.max_file_bytes:  # checked before anything is written or read
            return self._refused(
                name,
                ValueError(
                    f"{name}: the file has {len(data) / 2**20:,.1f} MiB, over the "
                    f"{self.max_file_bytes / 2**20:,.1f} MiB limit for an upload"
                ),
            )
        choice = self.choice.value if self.choice is not None else None
        if self.parse is None:
            return self._run(lambda: self._read(data, filename, name, choice), name)
        if self._doc is None:  # a test or a notebook: no loop to keep free
            return self._run(
                lambda: self._apply(self._read(data, filename, name, choice), name), name
            )
        self._show_reading(name)
        future = worker_pool().submit(
            self._read, data, filename, name, choice, owner=fair_pool.owner_key(self)
        )
        future.add_done_callback(lambda f: self._schedule(self._done, f, generation, name))
        return True

    def _read(self, data: bytes, filename: str, name: str, choice: Any) -> Any:
        """The file in a private temporary file, read by ``parse`` (any thread) or ``on_file``."""
        with temporary_upload(data, filename, self.suffixes) as path:
            if self.parse is None:
                return self.on_file(path, name)
            return self.parse(path, name, choice)

    def _apply(self, value: Any, name: str) -> None:
        self.apply(value, name)

    def _done(self, future: Future, generation: int, name: str) -> None:
        """On the event loop: apply a finished read, unless a newer upload superseded it."""
        if generation != self._generation:
            return
        self._show_reading(None)
        error = future.exception()
        if error is not None:
            self._failed(name, error)
            return
        self._run(lambda: self._apply(future.result(), name), name)

    def _run(self, action: Callable[[], Any], name: str) -> bool:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the server must survive any file
            return self._failed(name, exc)
        return True

    def _failed(self, name: str, exc: BaseException) -> bool:
        if isinstance(exc, ValueError):  # load_array's and the lab's refusals: meant for a person
            return self._refused(name, exc)
        log.error("reading the upload %r failed", name, exc_info=exc)
        self.status.error("reading the file failed (the details are in the server log)")
        return False

    def _refused(self, name: str, exc: ValueError) -> bool:
        log.info("upload %r refused: %s", name, exc)
        self.status.warn(str(exc))
        return False

    def _show_reading(self, name: str | None) -> None:
        self.reading.object = f"reading {html.escape(name)} …" if name else ""
        self.reading.visible = bool(name)

    def _schedule(self, callback: Callable, *args: Any) -> None:
        """Run ``callback(*args)`` on the session's event loop (from the worker thread)."""
        sessions.run_on_session_loop(self._doc, callback, *args, what="an upload")


def _install_guard() -> None:
    """Add :data:`GUARD_JS` to this session's document once (in a server session only)."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None or getattr(doc, "_workbench_guard", False):
        return
    from bokeh.models import CustomJS

    doc.js_on_event("document_ready", CustomJS(code=GUARD_JS))
    doc._workbench_guard = True
