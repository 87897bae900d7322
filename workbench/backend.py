"""Array backend: NumPy, or CuPy when it imports *and* a CUDA device answers.

Compute code infers the namespace from its inputs, as scikit-learn's ``get_namespace(*arrays)``
does: ``xp = get_namespace(query, data)`` is CuPy for CuPy arrays, NumPy for NumPy arrays (and
the namespace of any array-API array, e.g. ``array_api_strict``), so a test or a notebook picks
the device by the arrays it passes, not by flipping a process-global switch. With no array
inputs (data generated inside the lab), ``get_namespace()`` returns the default: CuPy when it
imports and a device answers, else NumPy, chosen once and overridable with
``WORKBENCH_BACKEND=numpy|cupy``. Compute code never imports CuPy itself; results cross to
plots, xarray and files through :func:`to_host`.

Modelled on scikit-learn's ``sklearn/utils/_array_api.py``: one module owns dispatch.

Examples
--------
>>> from workbench import backend
>>> xp = backend.get_namespace()
>>> backend.to_host(xp.arange(3)).tolist()
[0, 1, 2]
"""

from __future__ import annotations

import functools
import os
import platform
from types import ModuleType
from typing import Any

import numpy as np

_ENV_VAR = "WORKBENCH_BACKEND"
_CHOICES = ("numpy", "cupy")


def _cupy_if_working() -> ModuleType | None:
    """Return the cupy module if it imports and a device runs a kernel, else None.

    Every probe is wrapped: a CuPy wheel without a driver, a driver without a device, or a
    device that fails its first kernel all mean "no GPU" rather than an import-time crash.
    """
    try:
        import cupy  # noqa: PLC0415 - optional dependency, probed lazily
    except Exception:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        # A real kernel launch: a device can be counted yet unusable (driver mismatch).
        if int(cupy.arange(4).sum()) != 6:
            return None
    except Exception:
        return None
    return cupy


def get_namespace(*arrays: Any, xp: Any = None) -> Any:
    """The namespace of ``arrays`` (or ``xp`` when given; the default one with no arrays).

    Python scalars and sequences carry no namespace and are ignored. Mixing namespaces (a CuPy
    and a NumPy array) is an error: the caller must move data explicitly.

    >>> import numpy as np
    >>> get_namespace(np.ones(2)) is np
    True
    """
    if xp is not None:
        return xp
    found = {_namespace_of(a) for a in arrays}
    found.discard(None)
    if len(found) > 1:
        names = sorted(getattr(m, "__name__", str(m)) for m in found)
        raise TypeError(f"arrays from different namespaces: {', '.join(names)}")
    if found:
        return found.pop()
    return default_namespace()


def namespace_or_numpy(*arrays: Any, xp: Any = None) -> Any:
    """As :func:`get_namespace`, but NumPy when no input is an array (lists, scalars, xarray
    objects): for functions whose host inputs must stay on the host instead of moving to the
    process default device.

    >>> namespace_or_numpy([1.0, 2.0]) is np
    True
    """
    if xp is not None:
        return xp
    if any(_namespace_of(a) is not None for a in arrays):
        return get_namespace(*arrays)
    return np


def _namespace_of(array: Any) -> Any:
    if isinstance(array, np.ndarray | np.generic):
        return np
    module = type(array).__module__
    if module.startswith("cupy"):
        import cupy  # noqa: PLC0415 - only reached with a CuPy array in hand

        return cupy
    space = getattr(array, "__array_namespace__", None)
    return space() if callable(space) else None


@functools.cache
def default_namespace() -> ModuleType:
    """The namespace for work with no array inputs (``numpy`` or ``cupy``), chosen once.

    Raises
    ------
    ValueError
        If ``WORKBENCH_BACKEND`` names an unknown backend.
    RuntimeError
        If ``WORKBENCH_BACKEND=cupy`` is requested but no working device is found.
    """
    requested = os.environ.get(_ENV_VAR, "").strip().lower()
    if requested and requested not in _CHOICES:
        raise ValueError(f"{_ENV_VAR}={requested!r}: choose one of {', '.join(_CHOICES)}")
    if requested == "numpy":
        return np
    cupy = _cupy_if_working()
    if requested == "cupy" and cupy is None:
        raise RuntimeError(f"{_ENV_VAR}=cupy but CuPy cannot import or no CUDA device answers")
    return cupy if cupy is not None else np


def reset() -> None:
    """Forget the cached choice (tests use this after changing ``WORKBENCH_BACKEND``)."""
    default_namespace.cache_clear()


def backend_name() -> str:
    """``"numpy"`` or ``"cupy"``: the namespace in use."""
    return default_namespace().__name__.split(".")[0]


def is_gpu() -> bool:
    """True when compute runs on a CUDA device."""
    return backend_name() == "cupy"


def to_host(array: Any) -> np.ndarray:
    """Copy an array (NumPy, CuPy, any array-API array, or a Python scalar/sequence) to a NumPy
    array on the host: the one named device → host boundary of compute code.

    CuPy arrays by ``.get()``; other array-API arrays (e.g. ``array_api_strict`` on a non-CPU
    device, which refuses ``np.asarray``) through DLPack with ``device="cpu"``.
    """
    if hasattr(array, "get") and type(array).__module__.startswith("cupy"):
        return array.get()
    if isinstance(array, np.ndarray | np.generic) or not hasattr(array, "__dlpack__"):
        return np.asarray(array)
    return np.from_dlpack(array, device="cpu")


def device_kwargs(like: Any) -> dict[str, Any]:
    """``{"device": like.device}`` for array-API namespaces that place arrays explicitly, ``{}``
    for NumPy (one host device) and CuPy (arrays are created on the current device, and
    ``cupy.zeros``/``cupy.asarray`` take no ``device`` keyword).

    Compute code writes ``xp.zeros(shape, **device_kwargs(x))`` so a new array lands where its
    inputs live (the array API standard's rule; ``array_api_strict`` refuses to mix devices).
    """
    if isinstance(like, np.ndarray | np.generic) or type(like).__module__.startswith("cupy"):
        return {}
    device = getattr(like, "device", None)
    return {} if device is None else {"device": device}


def from_host(host: Any, like: Any, dtype: Any = None) -> Any:
    """Host data (NumPy array, scalar or sequence) as an array of ``like``'s namespace and
    device: the one named host → device boundary of compute code (no copy under NumPy when the
    dtype matches).

    >>> from_host([1.0, 2.0], np.zeros(1)).tolist()
    [1.0, 2.0]
    """
    xp = get_namespace(like)
    return xp.asarray(host, dtype=dtype, **device_kwargs(like))


def asarray(array: Any, dtype: Any = None) -> Any:
    """Move host data onto the active backend (no copy under NumPy when the dtype matches)."""
    return get_namespace().asarray(array, dtype=dtype)


def device_description() -> dict[str, str]:
    """What ``workbench info`` prints: backend, device, versions."""
    info = {
        "backend": backend_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": f"{platform.machine()} / {os.cpu_count()} CPU cores",
    }
    if is_gpu():
        xp = get_namespace()
        try:
            props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = props["totalGlobalMem"] / 2**30
            info["device"] = f"{name} ({mem:.0f} GiB)"
        except Exception as exc:  # a description must never crash `workbench info`
            info["device"] = f"CUDA device (properties unavailable: {exc})"
        info["cupy"] = xp.__version__
    else:
        info["device"] = "CPU"
    return info


def free_memory_bytes() -> int:
    """Memory available for one array workload: device memory under CuPy, else host RAM.

    Used to cap user-controlled problem sizes with a clear message instead of an OOM kill.
    """
    if is_gpu():
        try:
            free, _total = get_namespace().cuda.runtime.memGetInfo()
            return int(free)
        except Exception:
            pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # conservative default where /proc is absent
