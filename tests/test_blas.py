"""The one-BLAS-thread switch survives interleaved use from several threads (defect 4 of the
platform issue: the warm-cache thread and the server loop left BLAS pinned at one thread)."""

from __future__ import annotations

import threading

import pytest

from workbench import blas

pytest.importorskip("threadpoolctl")


def test_interleaved_entries_and_exits_restore_the_original_limits():
    original = blas.blas_threads()
    if not original:
        pytest.skip("no BLAS library visible to threadpoolctl")
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with blas.single_blas_thread():
            a_in.set()
            b_in.wait(5)
        seen["a_after"] = blas.blas_threads()
        a_out.set()  # A leaves while B is still inside

    def second():
        a_in.wait(5)
        with blas.single_blas_thread():
            b_in.set()
            a_out.wait(5)
        seen["b_after"] = blas.blas_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Each thread, whatever the order, is back at the original count, and so is the process.
    assert seen["a_after"] == original and seen["b_after"] == original
    assert blas.blas_threads() == original  # and nothing stays pinned afterwards


def test_nested_use_restores_once():
    original = blas.blas_threads()
    with blas.single_blas_thread():
        with blas.single_blas_thread():
            pass
        if original:
            assert all(n == 1 for n in blas.blas_threads())
    assert blas.blas_threads() == original
