"""The Study: one lab's knobs (declared with ``param``, with bounds and docs) and its compute.

A lab subclasses :class:`Study`, declares its parameters, and implements :meth:`Study.evaluate`,
which returns an :class:`xarray.Dataset` for the current parameter values. Apps bind widgets to
these parameters, notebooks set them directly, and :mod:`workbench.sweep` runs them over grids.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from typing import Any, ClassVar

import param
import xarray as xr

import workbench


class StudyInputError(ValueError):
    """A parameter value the lab cannot run with; the message is meant for the user."""


class Study(param.Parameterized):
    """Base class for a lab's study.

    Subclasses set :attr:`lab` and implement :meth:`evaluate`. A parameter named in
    :attr:`vectorized` may be passed to :meth:`evaluate` as a 1-D sequence of values; the
    study then returns a Dataset with a dimension of that name, computed in one go (e.g. all
    bandwidths from one distance matrix). Sweeps use this to avoid K separate runs.
    """

    lab: ClassVar[str] = ""
    vectorized: ClassVar[tuple[str, ...]] = ()

    def evaluate(self, **vectorized_values: Any) -> xr.Dataset:
        """Compute the lab's measurements at the current parameter values."""
        raise NotImplementedError

    def values(self) -> dict[str, Any]:
        """Current parameter values, without param's bookkeeping ``name``."""
        return {k: v for k, v in self.param.values().items() if k != "name"}

    @classmethod
    def knob_names(cls) -> list[str]:
        return [k for k in cls.param if k != "name"]

    @classmethod
    def code_version(cls) -> str:
        """Package version plus a hash of the lab's source: a code change invalidates caches."""
        try:
            source = inspect.getsource(inspect.getmodule(cls))
        except (OSError, TypeError):
            source = cls.__qualname__
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        return f"{workbench.__version__}+{digest}"

    def checked_update(self, **values: Any) -> None:
        """Set parameters, turning param's bound/type errors into :class:`StudyInputError`."""
        unknown = sorted(set(values) - set(self.knob_names()))
        if unknown:
            raise StudyInputError(
                f"{self.lab}: unknown parameter(s) {', '.join(unknown)}; "
                f"choose from {', '.join(self.knob_names())}"
            )
        for name, value in values.items():
            # param's bound check reads NaN as out of range; say what is actually wrong.
            if isinstance(value, float) and not math.isfinite(value):
                raise StudyInputError(f"{self.lab}: {name} must be a finite number, got {value}")
        try:
            self.param.update(**values)
        except ValueError as exc:
            raise StudyInputError(f"{self.lab}: {exc}") from exc
