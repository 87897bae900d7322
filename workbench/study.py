"""The Study: one lab's knobs (declared with ``param``, with bounds and docs) and its compute.

A lab subclasses :class:`Study`, declares its parameters, and implements :meth:`Study.evaluate`,
which returns an :class:`xarray.Dataset` for the current parameter values. Apps build their
widgets from these parameter declarations, notebooks set them directly, and
:mod:`workbench.sweep` runs them over grids. The class attributes :attr:`Study.lab`,
:attr:`Study.title`, :attr:`Study.paper`, :attr:`Study.paper_url` and :attr:`Study.summary`
make the lab known to the landing page, the CLI and the server (:mod:`workbench.labs`).

A lab's package lives in ``workbench/labs/<lab>/``; its ``__init__`` re-exports the public
functions and the Study, and its figures live in ``workbench/labs/<lab>/figures.py``.
"""

from __future__ import annotations

import contextvars
import hashlib
import importlib.metadata
import math
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import param
import xarray as xr

import workbench


class StudyInputError(ValueError):
    """A parameter value the lab cannot run with; the message is meant for the user."""


class StudyWarning(UserWarning):
    """A note for the user about the current setting (e.g. a numerical fallback was used).

    Dashboards show these as an informational note; a note never refuses or rolls back a change.
    Raise them with :func:`warn_user`, which also hands them to :func:`collect_notes`.
    """


_notes: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "workbench_notes", default=None
)


def warn_user(message: str, category: type[Warning] | None = None, stacklevel: int = 2) -> None:
    """Tell the user something about the current setting (a :class:`StudyWarning`).

    It is a normal Python warning (notebooks and scripts see it) and, inside
    :func:`collect_notes`, also recorded for the page to show. Collection is per thread and per
    context (a ``ContextVar``), unlike ``warnings.catch_warnings``, which swaps process-wide
    state and is unsafe when several sessions compute at once.
    """
    notes = _notes.get()
    if notes is not None:
        notes.append(str(message))
    warnings.warn(message, category or StudyWarning, stacklevel=stacklevel + 1)


class Cancelled(Exception):  # noqa: N818 - reads as what happened
    """The computation was superseded, timed out or its page closed (see :func:`checkpoint`)."""


_cancel: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "workbench_cancel", default=None
)


def checkpoint() -> None:
    """Stop here if the computation running in this context has been cancelled.

    Long loops in the labs (chunks of a distance table, Monte-Carlo batches, Krylov steps) call
    this between steps. Outside :func:`cancellable` it costs one ContextVar lookup and never
    raises, so notebooks and sweeps are unaffected.
    """
    event = _cancel.get()
    if event is not None and event.is_set():
        raise Cancelled("the computation was cancelled")


@contextmanager
def cancellable(event: threading.Event) -> Iterator[threading.Event]:
    """Run a block whose :func:`checkpoint` calls raise :class:`Cancelled` once ``event`` is set."""
    token = _cancel.set(event)
    try:
        yield event
    finally:
        _cancel.reset(token)


@contextmanager
def collect_notes() -> Iterator[list[str]]:
    """Record the :func:`warn_user` messages raised in this thread/context."""
    notes: list[str] = []
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)


def knob_label(parameterized: Any, name: str) -> str:
    """The label a user sees for a knob (``param``'s ``label``, e.g. "dimension d")."""
    p = parameterized.param[name]
    return p.label or name


def _bounds_text(p: param.Parameter) -> str:
    bounds = getattr(p, "bounds", None)
    if bounds is None:
        objects = getattr(p, "objects", None)
        if objects:
            names = getattr(p, "names", None) or {}
            shown = list(names) if names else [str(o) for o in objects]
            return "one of " + ", ".join(shown)
        return ""
    lo, hi = bounds
    inc_lo, inc_hi = getattr(p, "inclusive_bounds", (True, True))
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}"
    if lo is not None:
        return f"at least {lo:g}" if inc_lo else f"greater than {lo:g}"
    if hi is not None:
        return f"at most {hi:g}" if inc_hi else f"less than {hi:g}"
    return ""


class Study(param.Parameterized):
    """Base class for a lab's study.

    Subclasses set the registry attributes (:attr:`lab`, :attr:`title`, :attr:`paper`,
    :attr:`paper_url`, :attr:`summary`), declare knobs with ``param`` (``label=`` is what a
    widget shows, ``doc=`` its tooltip, ``bounds=`` what it accepts) and implement
    :meth:`evaluate`. Checks that involve several knobs at once (memory and size caps) go in
    :meth:`validate`, which :meth:`checked_update` runs before any work starts.

    A parameter named in :attr:`vectorized` may be passed to :meth:`evaluate` as a 1-D sequence
    of values; the study then returns a Dataset with a dimension of that name, computed in one
    go (e.g. all bandwidths from one distance matrix). Sweeps use this to avoid K separate runs.
    """

    lab: ClassVar[str] = ""
    title: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    paper_url: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    vectorized: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, **vectorized_values: Any) -> xr.Dataset:
        """Compute the lab's measurements at the current parameter values."""
        raise NotImplementedError

    def estimated_seconds(self) -> float | None:
        """Wall time the page's heavy computation at these knobs is expected to take, or None
        when the lab gives no estimate (the default).

        Cheap on purpose: a formula in the sizes, calibrated by a few measurements on the
        machine that serves the pages (each lab's docstring says which and when); a page shows
        a note before work that is expected to take more than a couple of seconds. An
        estimate, not a promise: caches, machine load and the backend all move it.
        """
        return None

    def validate(self) -> None:
        """Raise :class:`StudyInputError` if the current knobs cannot run (e.g. a size cap).

        Called by :meth:`checked_update` after the new values are set (and rolled back when it
        raises), so a page refuses a setting before any heavy work starts. Messages name the
        knob by its label and the bound, e.g. "width n must be at most 4096".
        """

    def values(self) -> dict[str, Any]:
        """Current parameter values, without param's bookkeeping ``name``."""
        return {k: v for k, v in self.param.values().items() if k != "name"}

    @classmethod
    def knob_names(cls) -> list[str]:
        return [k for k in cls.param if k != "name"]

    @classmethod
    def code_version(cls) -> str:
        """Package version plus a hash of every source file the lab's results depend on.

        The lab's own package (all its modules), the shared core (``study.py``, ``sweep.py``,
        ``backend.py``) and the NumPy/SciPy/xarray versions: a change in any of them
        invalidates cached sweep points.
        """
        digest = hashlib.sha256()
        for path in _source_files(cls):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        for dist in ("numpy", "scipy", "xarray"):
            try:
                digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
            except importlib.metadata.PackageNotFoundError:
                pass
        return f"{workbench.__version__}+{digest.hexdigest()[:12]}"

    def checked_update(self, **values: Any) -> None:
        """Set parameters, turning param's bound/type errors into :class:`StudyInputError`.

        All-or-nothing: if any value is refused, or :meth:`validate` refuses the combination,
        every knob keeps its previous value.
        """
        unknown = sorted(set(values) - set(self.knob_names()))
        if unknown:
            raise StudyInputError(
                f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(self.knob_names())}"
            )
        for name, value in values.items():
            # param's bound check reads NaN as out of range; say what is actually wrong.
            if isinstance(value, float) and not math.isfinite(value):
                raise StudyInputError(
                    f"{knob_label(self, name)} must be a finite number, got {value}"
                )
        previous = {name: getattr(self, name) for name in values}
        try:
            for name, value in values.items():
                try:
                    self.param.update(**{name: value})
                except (ValueError, TypeError) as exc:
                    raise StudyInputError(self._refusal(name, value)) from exc
            self.validate()
        except StudyInputError:
            with param.parameterized.discard_events(self):
                self.param.update(**previous)
            raise

    def _refusal(self, name: str, value: Any) -> str:
        """A refusal a student can read: the knob's label, the value and what is allowed."""
        p = self.param[name]
        allowed = _bounds_text(p)
        shown = str(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        kind = {param.Integer: "a whole number", param.Number: "a number"}.get(type(p))
        if allowed:
            text = f"{knob_label(self, name)} must be {allowed}; got {shown}"
        elif kind:
            text = f"{knob_label(self, name)} must be {kind}; got {shown}"
        else:
            text = f"{knob_label(self, name)}: {shown} is not allowed"
        return text


def _source_files(cls: type) -> list[Path]:
    """The lab's package files (or its module) plus the shared core modules, sorted."""
    core = Path(__file__).parent
    files = {core / "study.py", core / "sweep.py", core / "backend.py"}
    module = sys.modules.get(cls.__module__)
    origin = Path(getattr(module, "__file__", "") or "")
    if origin.is_file():
        # A lab package: hash every module in it (helpers included), not only the study's file.
        package_dir = origin.parent
        if (package_dir / "__init__.py").exists() and package_dir != core:
            files.update(package_dir.rglob("*.py"))
        else:
            files.add(origin)
    return sorted(f for f in files if f.is_file())
