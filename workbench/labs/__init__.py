"""The labs: one package per lab, each with a param ``Study`` that describes it.

Labs are discovered, never listed: every module or package directly under ``workbench.labs`` that
defines a :class:`~workbench.study.Study` subclass with a ``lab`` name is a lab, and so is every
entry point in the ``workbench.labs`` group (a lab shipped by another package). The landing page,
``workbench info``, ``workbench sweep`` and the server routes all read :func:`registry`.

>>> from workbench.labs import registry
>>> registry()["kde"].title
'Kernel density estimation in large dimensions'
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import logging
import pkgutil
from dataclasses import dataclass

log = logging.getLogger("workbench.labs")
ENTRY_POINT_GROUP = "workbench.labs"


@dataclass(frozen=True)
class LabInfo:
    """What the landing page and the CLI show about a lab (read from its Study class)."""

    name: str
    title: str
    paper: str
    paper_url: str
    summary: str
    study: type

    @classmethod
    def from_study(cls, study: type) -> LabInfo:
        return cls(
            name=study.lab,
            title=study.title or study.lab,
            paper=study.paper,
            paper_url=study.paper_url,
            summary=study.summary,
            study=study,
        )


def _studies_in(module) -> list[type]:
    from workbench.study import Study

    return [
        obj
        for _name, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Study)
        and obj is not Study
        and obj.lab
        and obj.__module__.startswith(module.__name__)
    ]


@functools.cache
def registry() -> dict[str, LabInfo]:
    """Every lab by name, in a stable order (alphabetical module names, then entry points).

    A lab whose import fails is logged and left out, so one broken lab never takes the others
    (or ``workbench serve``) down with it.
    """
    found: dict[str, LabInfo] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{module_info.name}")
        except Exception:
            log.exception("lab module %s failed to import; it is left out", module_info.name)
            continue
        for study in _studies_in(module):
            found.setdefault(study.lab, LabInfo.from_study(study))
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            study = entry.load()
        except Exception:
            log.exception("lab entry point %s failed to load; it is left out", entry.name)
            continue
        found.setdefault(study.lab, LabInfo.from_study(study))
    return found


def study_class(lab: str) -> type:
    """The Study class of ``lab`` (raises ``KeyError`` with the known names)."""
    labs = registry()
    if lab not in labs:
        raise KeyError(f"unknown lab {lab!r}; choose one of {', '.join(labs)}")
    return labs[lab].study
