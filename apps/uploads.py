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
* a refusal (``ValueError``, which includes :class:`~workbench.study.StudyInputError`) becomes
  an escaped warning on the page's status line and a line in the server log; any other error
  is logged with its traceback and the page shows a plain message. In both cases the page keeps
  the data it had.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import panel as pn
import param

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
    """A titled ``FileInput`` with the caps stated next to it.

    ``on_file(path, name)`` is called with the temporary file and the visitor's (cleaned) file
    name; it reads the file and applies it, raising ValueError to refuse it.
    """

    def __init__(
        self,
        *,
        title: str,
        caps: str,
        suffixes: Sequence[str],
        max_bytes: int,
        on_file: Callable[[Path, str], None],
        status: StatusLine,
    ) -> None:
        self.suffixes = tuple(suffixes)
        self.max_file_bytes = int(max_bytes) + HEADER_ROOM
        self.on_file = on_file
        self.status = status
        self.input = pn.widgets.FileInput(
            accept=",".join(self.suffixes),
            multiple=False,
            sizing_mode="stretch_width",
            tags=[GUARD_TAG, f"max-bytes:{self.max_file_bytes}"],
        )
        self.input.param.watch(self._received, "value")
        _install_guard()
        self.view = pn.Column(
            pn.pane.Markdown(f"**{title}**\n\n{caps}", sizing_mode="stretch_width"),
            self.input,
            sizing_mode="stretch_width",
        )

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
        text = size_text.decode("ascii", "replace")[:20]
        size = f" has {int(text) / 2**20:,.1f} MiB and" if text.isdigit() else ""
        self.status.warn(
            f"{shown_name(filename)}: the file{size} is over the {self.max_file_bytes / 2**20:,.1f}"
            " MiB limit for an upload; it was not sent"
        )
        log.info("upload %r refused in the browser: %s bytes", shown_name(filename), text)

    def receive(self, data: bytes, filename: str) -> bool:
        """Check, store briefly, load and apply one upload; True when it was applied."""
        name = shown_name(filename)
        try:
            if len(data) > self.max_file_bytes:
                raise ValueError(
                    f"{name}: the file has {len(data) / 2**20:,.1f} MiB, over the "
                    f"{self.max_file_bytes / 2**20:,.1f} MiB limit for an upload"
                )
            with temporary_upload(data, filename, self.suffixes) as path:
                self.on_file(path, name)
        except ValueError as exc:  # load_array's and the lab's refusals: meant for a person
            log.info("upload %r refused: %s", name, exc)
            self.status.warn(str(exc))
            return False
        except Exception:  # the server must survive any file
            log.exception("reading the upload %r failed", name)
            self.status.error("reading the file failed (the details are in the server log)")
            return False
        return True


def _install_guard() -> None:
    """Add :data:`GUARD_JS` to this session's document once (in a server session only)."""
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None or getattr(doc, "_workbench_guard", False):
        return
    from bokeh.models import CustomJS

    doc.js_on_event("document_ready", CustomJS(code=GUARD_JS))
    doc._workbench_guard = True
