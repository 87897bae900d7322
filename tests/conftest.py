"""Shared test fixtures and markers.

``requires_gpu`` / the ``gpu`` marker: skipped unless CuPy imports and a CUDA device answers.
``numpy_backend``: forces the NumPy backend for a test (every compute path is tested under NumPy).
"""

from __future__ import annotations

import pytest

from workbench import backend


def _gpu_available() -> bool:
    return backend._cupy_if_working() is not None


HAS_GPU = _gpu_available()
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA device")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "gpu" in item.keywords and not HAS_GPU:
            item.add_marker(pytest.mark.skip(reason="needs CuPy and a CUDA device"))


@pytest.fixture
def numpy_backend(monkeypatch):
    monkeypatch.setenv("WORKBENCH_BACKEND", "numpy")
    backend.reset()
    yield backend.get_namespace()
    backend.reset()


@pytest.fixture
def cupy_backend(monkeypatch):
    if not HAS_GPU:
        pytest.skip("needs CuPy and a CUDA device")
    monkeypatch.setenv("WORKBENCH_BACKEND", "cupy")
    backend.reset()
    yield backend.get_namespace()
    backend.reset()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private sweep cache so tests never read a stale user cache."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
