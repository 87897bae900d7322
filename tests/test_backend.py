"""The backend is chosen once, honours WORKBENCH_BACKEND, and never crashes on a missing GPU."""

import os

import numpy as np
import pytest

from workbench import backend


def test_numpy_override_is_respected(numpy_backend):
    assert numpy_backend is np
    assert backend.backend_name() == "numpy"
    assert not backend.is_gpu()


def test_unknown_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORKBENCH_BACKEND", "tpu")
    backend.reset()
    with pytest.raises(ValueError, match="numpy, cupy"):
        backend.get_namespace()
    backend.reset()


def test_cupy_request_without_device_says_so(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_if_working", lambda: None)
    monkeypatch.setenv("WORKBENCH_BACKEND", "cupy")
    backend.reset()
    with pytest.raises(RuntimeError, match="no CUDA device"):
        backend.get_namespace()
    backend.reset()


def test_default_falls_back_to_numpy_when_probe_fails(monkeypatch):
    monkeypatch.delenv("WORKBENCH_BACKEND", raising=False)
    monkeypatch.setattr(backend, "_cupy_if_working", lambda: None)
    backend.reset()
    assert backend.get_namespace() is np
    backend.reset()


def test_to_host_round_trips_values(numpy_backend):
    x = backend.asarray([1.5, 2.5])
    host = backend.to_host(x)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, [1.5, 2.5])


def test_device_description_names_backend_and_device(numpy_backend):
    info = backend.device_description()
    assert info["backend"] == "numpy"
    assert info["device"] == "CPU"
    free = backend.free_memory_bytes()
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < free <= total  # available memory is part of the machine's physical memory


def test_namespace_is_inferred_from_the_inputs(numpy_backend):
    x = np.ones(3)
    assert backend.get_namespace(x) is np
    assert backend.get_namespace(x, 2.0, [1, 2]) is np  # scalars and lists carry none
    assert backend.get_namespace(xp="explicit") == "explicit"


def test_array_api_namespaces_are_inferred_too():
    strict = pytest.importorskip("array_api_strict")
    x = np.ones(3)
    a = strict.asarray([1.0, 2.0])
    assert backend.get_namespace(a) is strict
    with pytest.raises(TypeError, match="different namespaces"):
        backend.get_namespace(a, x)


@pytest.mark.gpu
def test_cupy_backend_runs_on_device(cupy_backend):
    x = cupy_backend.arange(10.0)
    assert type(x).__module__.startswith("cupy")
    assert backend.to_host(x.sum()) == 45.0
    assert "GiB" in backend.device_description()["device"]
