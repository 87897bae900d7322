"""Recompute a Bokeh document's model graph only when it changed, and faster.

Bokeh's ``DocumentModelManager`` walks every model reachable from the document's roots each time
the outermost ``models.freeze()`` block ends (``_pop_freeze`` → ``recompute``), whether or not
anything in the block touched a model reference. HoloViews wraps every plot update in such a
block (holoviz/holoviews#6315), so a slider move that only replaces column data in two plots
paid for two full walks of a lab page's ~500 models: 190 ms each on this 2-core machine, 60 % of a
KDE bandwidth move and ~40 % of building a page (measured with ``cProfile``, 2026-11-28).

Two changes, both behind :func:`install`:

* **Walk only when the graph changed.** Bokeh already knows when the graph may have changed:
  ``Model.trigger`` calls ``document.models.invalidate()`` whenever an old or new property value
  holds a model (an in-place list/dict edit goes through the same trigger), and roots change only
  through ``add_root`` / ``remove_root`` (inside a freeze). ``invalidate`` inside a freeze now
  marks the manager dirty, and the outermost ``_pop_freeze`` recomputes only when it is dirty or
  the roots changed. Outside a freeze, and for explicit ``recompute()`` calls, nothing changes.
* **Invalidate only when references changed.** ``Model.trigger`` invalidates when a property's
  old or new value holds any model; it now does so only when the two hold different models,
  and inside a freeze only when a property's models at the end differ from those at its first
  change (a legend removed and re-added in one update is no change).
* **A cheaper walk.** :func:`reachable_models` finds the same set as ``Model.references()``
  without evaluating the defaults of unset properties (see ``_STABLE_DEFAULT``).

The Bokeh maintainers call these internals (bokeh/bokeh#11707), so the patch checks the
methods it relies on and leaves Bokeh alone, with a log line, if they are not what it expects;
``tests/test_model_graph.py`` checks the document's model set against a full recompute after
every kind of change the labs make.
"""

from __future__ import annotations

import logging
from typing import Any

from bokeh.core.has_props import HasProps
from bokeh.document.models import DocumentModelManager
from bokeh.model import Model
from bokeh.model.util import visit_value_and_its_immediate_references
from bokeh.util.datatypes import MultiValuedDict

log = logging.getLogger(__name__)

_ORIGINAL_TRIGGER = Model.trigger
_ORIGINAL = {
    "recompute": DocumentModelManager.recompute,
    "invalidate": DocumentModelManager.invalidate,
    "_push_freeze": DocumentModelManager._push_freeze,
    "_pop_freeze": DocumentModelManager._pop_freeze,
}


#: Per model class: the names of its properties that can hold a model (Bokeh recomputes this
#: dict comprehension on every call).
_REF_PROPERTIES: dict[type, tuple[str, ...]] = {}
#: Per (class, property): True when the default is a fixed value. Bokeh makes every default that
#: can hold a model (an ``Instance``, a container, a callable) "unstable", i.e. created per
#: object and cached in ``_unstable_default_values`` on first access, so a property that is
#: neither set, themed nor cached with a stable default holds no model and can be skipped
#: without evaluating the default (that evaluation is most of Bokeh's own walk).
_STABLE_DEFAULT: dict[tuple[type, str], bool] = {}


def _ref_properties(cls: type[HasProps]) -> tuple[str, ...]:
    names = _REF_PROPERTIES.get(cls)
    if names is None:
        names = _REF_PROPERTIES[cls] = tuple(cls.properties_with_refs())
    return names


def _stable_default(obj: HasProps, name: str) -> bool:
    key = (type(obj), name)
    stable = _STABLE_DEFAULT.get(key)
    if stable is None:
        stable = _STABLE_DEFAULT[key] = not obj.lookup(name).has_unstable_default(obj)
    return stable


def reachable_models(*roots: Model) -> set[Model]:
    """Every model reachable from ``roots``: the set ``Model.references()`` gives, ~3x faster.

    A breadth-first walk over each model's reference-holding properties that reads set values
    and cached defaults from the model's own dicts instead of through the property descriptors.
    """
    found: set[Model] = set()
    queue: list[Model] = []

    def visit(model: Model) -> None:
        if model not in found:
            found.add(model)
            queue.append(model)

    for root in roots:
        visit_value_and_its_immediate_references(root, visit)
    i = 0
    while i < len(queue):
        obj = queue[i]
        i += 1
        values = obj._property_values
        themed = obj.themed_values()
        cached = obj._unstable_default_values
        for name in _ref_properties(type(obj)):
            if name in values:
                value = values[name]
            elif themed and name in themed:
                value = getattr(obj, name)
            elif name in cached:
                value = cached[name]
            elif _stable_default(obj, name):
                continue
            else:
                value = getattr(obj, name)  # creates and caches the per-object default
            visit_value_and_its_immediate_references(value, visit)
    return found


def _recompute(self: DocumentModelManager) -> None:
    """Bokeh's ``recompute`` with :func:`reachable_models` for the walk."""
    document = self._document()
    if document is None:
        return
    new_models = reachable_models(*document.roots)
    old_models = set(self._models.values())
    recomputed = {}
    recomputed_by_name = MultiValuedDict()
    for model in new_models:
        recomputed[model.id] = model
        if model.name is not None:
            recomputed_by_name.add_value(model.name, model)
    for model in old_models - new_models:
        self._seen_model_ids.add(model.id)
        model._detach_document()
    for model in new_models - old_models:
        model._attach_document(document)
        self._new_models.add(model)
    self._models = recomputed
    self._models_by_name = recomputed_by_name


def _references(value: Any) -> set[Model]:
    found: set[Model] = set()
    visit_value_and_its_immediate_references(value, found.add)
    return found


def _trigger(
    self: Model, attr: str, old: Any, new: Any, hint: Any = None, setter: Any = None
) -> None:
    """Bokeh's ``Model.trigger``, invalidating only when the referenced models may differ.

    Bokeh invalidates whenever the old or the new value holds any model, so re-assigning a
    legend its same items (HoloViews does ``legend.items[:] = ...`` on every update) cost a
    full walk. The graph's edges out of ``self`` are the same when both values reference the
    same models, so nothing reachable changed. Inside a freeze the first change of each
    (model, property) records the models it referenced before, and the end of the freeze
    compares (HoloViews removes and re-adds a side legend on every update: two changes that
    cancel out).
    """
    descriptor = self.lookup(attr)
    if hint is None and self._document is not None:
        before, after = _references(old), _references(new)
        if before != after:
            manager = self.document.models
            if manager._freeze_count and hasattr(manager, "_touched"):
                manager._touched.setdefault((self, descriptor.name), before)
            else:
                manager.invalidate()
    super(Model, self).trigger(descriptor.name, old, new, hint=hint, setter=setter)


def _roots(manager: DocumentModelManager) -> tuple[int, ...]:
    document = manager._document()
    return () if document is None else tuple(id(root) for root in document.roots)


def _push_freeze(self: DocumentModelManager) -> None:
    if self._freeze_count == 0:
        self._graph_dirty = False
        self._touched = {}
        self._roots_at_freeze = _roots(self)
    self._freeze_count += 1


def _graph_changed(manager: DocumentModelManager) -> bool:
    if getattr(manager, "_graph_dirty", True):
        return True
    if getattr(manager, "_roots_at_freeze", None) != _roots(manager):
        return True
    touched = getattr(manager, "_touched", {})
    return any(_references(getattr(m, name)) != before for (m, name), before in touched.items())


def _pop_freeze(self: DocumentModelManager) -> None:
    self._freeze_count -= 1
    if self._freeze_count == 0:
        changed = _graph_changed(self)
        self._touched = {}
        if changed:
            self.recompute()


def _invalidate(self: DocumentModelManager) -> None:
    if self._freeze_count == 0:
        self.recompute()
    else:
        self._graph_dirty = True


def install() -> bool:
    """Patch ``DocumentModelManager`` once per process; False if Bokeh's internals differ."""
    if getattr(DocumentModelManager, "_workbench_lazy_graph", False):
        return True
    # The fields the patched methods read and write, all set in Bokeh 3.x's __init__.
    fields = ("_freeze_count", "_document", "_models", "_models_by_name", "_new_models")
    fields += ("_seen_model_ids",)
    assigned = DocumentModelManager.__init__.__code__.co_names
    if not all(name in assigned for name in fields) or not hasattr(HasProps, "themed_values"):
        log.warning("Bokeh's DocumentModelManager changed; model-graph patch not installed")
        return False
    Model.trigger = _trigger
    DocumentModelManager.recompute = _recompute
    DocumentModelManager._push_freeze = _push_freeze
    DocumentModelManager._pop_freeze = _pop_freeze
    DocumentModelManager.invalidate = _invalidate
    DocumentModelManager._workbench_lazy_graph = True
    return True


def uninstall() -> None:
    """Restore Bokeh's own methods (tests compare both behaviours)."""
    Model.trigger = _ORIGINAL_TRIGGER
    for name, method in _ORIGINAL.items():
        setattr(DocumentModelManager, name, method)
    DocumentModelManager._workbench_lazy_graph = False
