"""The namespace-generic compute paths, run through ``array_api_strict`` on the CPU (issue 12 §4).

No GPU is needed to catch most device mistakes: the strict namespace has no NumPy-only calls
(``einsum``, ``out=``, ``rint``, ``quantile``, array methods such as ``.reshape``), and its
arrays on a second device (``Device("device1")``) refuse ``np.asarray`` and refuse to meet
arrays made on the default device. So a path that passes here made no implicit host transfer
(``np.asarray``, a NumPy scalar on the left of an operator) and created every array where its
inputs live, as it must on CuPy. Each test compares with the NumPy result (exact or ≤ 1e-12
relative unless stated) and checks where the result lives.

Paths that are NumPy/CuPy-specific by design are checked to refuse clearly (TypeError naming
the function): the KDE's binned Laplace path (``bincount``) and GELU's normal CDF.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench import backend
from workbench.labs import criticality as cr
from workbench.labs import fractional as fr
from workbench.labs import kvcache as kv
from workbench.labs.kde import estimator
from workbench.labs.kvcache import data as kvdata

strict = pytest.importorskip("array_api_strict")
DEVICE = strict.Device("device1")  # not the CPU device: np.asarray refuses these arrays


def on_device(array):
    return strict.asarray(array, device=DEVICE)


def assert_on_device(result):
    """The result stayed in the strict namespace, on the inputs' device (no host round trip)."""
    assert backend.get_namespace(result) is strict
    assert result.device == DEVICE


def assert_close(result, expected, rtol=1e-12, atol=0.0):
    np.testing.assert_allclose(backend.to_host(result), expected, rtol=rtol, atol=atol)


# --- the stand-in device and the backend's named boundary ---------------------------------------
def test_the_second_device_refuses_implicit_host_copies():
    x = on_device([1.0, 2.0])
    with pytest.raises(RuntimeError, match="device"):
        np.asarray(x)
    with pytest.raises(ValueError, match="different devices"):
        x + strict.asarray([1.0, 2.0])  # made on the default device


def test_to_host_and_from_host_are_the_named_boundary():
    x = on_device([1.5, 2.5])
    host = backend.to_host(x)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, [1.5, 2.5])
    back = backend.from_host(np.array([3.0, 4.0]), like=x)
    assert_on_device(back)
    np.testing.assert_array_equal(backend.to_host(x + back), [4.5, 6.5])
    assert backend.device_kwargs(x) == {"device": DEVICE}
    assert backend.device_kwargs(np.ones(1)) == {}


def test_host_inputs_stay_on_the_host():
    assert backend.namespace_or_numpy([1.0, 2.0], 3.0) is np
    assert backend.namespace_or_numpy(on_device([1.0])) is strict
    with pytest.raises(TypeError, match="different namespaces"):
        backend.namespace_or_numpy(on_device([1.0]), np.ones(1))


# --- KDE: the exact estimator -----------------------------------------------------------------
@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(3)
    return rng.standard_normal((24, 5)), rng.standard_normal((700, 5))


def test_squared_distances(points):
    query, data = points
    got = estimator.squared_distances(on_device(query), on_device(data))
    assert_on_device(got)
    expected = estimator.squared_distances(query, data)
    assert_close(got, expected, rtol=1e-12, atol=1e-12 * expected.max())


def test_exact_kde_matches_numpy_chunk_by_chunk(points):
    query, data = points
    hs = np.array([0.15, 0.4, 1.0, 3.0])
    chunk = 8 * 24 * 150  # five data chunks, the last one short: the running shift is exercised
    expected = estimator.kde_summary(query, data, hs, method="exact", chunk_bytes=chunk)
    got = estimator.kde_summary(
        on_device(query), on_device(data), hs, method="exact", chunk_bytes=chunk
    )
    for name in ("log_density", "participation_ratio", "nearest_sq_distance"):
        assert isinstance(got[name], np.ndarray)  # the documented return: host arrays
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12)
    # The running state itself stays on the device until the one to_host at the end.
    state = estimator._stream(
        strict, on_device(query), on_device(data), estimator.scales_of(hs), chunk
    )
    for part in (state.dmin, state.s, state.s2):
        assert_on_device(part)


def test_kde_default_method_takes_the_exact_path_without_bincount(points):
    query, data = points
    hs = np.geomspace(0.2, 3.0, 6)  # enough bandwidths for "auto" to pick binned on NumPy
    got = estimator.log_density(on_device(query), on_device(data), hs)
    np.testing.assert_allclose(got, estimator.log_density(query, data, hs, method="exact"), 1e-12)


def test_kde_refuses_the_binned_path_and_mixed_inputs(points):
    query, data = points
    with pytest.raises(TypeError, match=r"kde_summary\(method='binned'\).*bincount"):
        estimator.kde_summary(on_device(query), on_device(data), [0.5, 1.0], method="binned")
    with pytest.raises(TypeError, match="different namespaces"):
        estimator.log_density(on_device(query), data, 1.0)


# --- fractional: matrix-free operator, preconditioners, GMRES --------------------------------
@pytest.fixture(scope="module")
def operator():
    op = fr.collocation_operator(256, 1.5, 3)
    x = np.random.default_rng(5).standard_normal(op.shape[0])
    return op, x


@pytest.mark.parametrize("product", ["apply", "apply_transpose"])
def test_operator_products(operator, product):
    op, x = operator
    got = getattr(op, product)(on_device(x))
    assert_on_device(got)
    expected = getattr(op, product)(x)
    assert_close(got, expected, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("name", fr.krylov.PRECONDITIONERS)
def test_preconditioners_and_gmres(operator, name):
    op, x = operator
    pre = fr.Preconditioner(op, name)
    got = pre.inverse(on_device(x))
    assert_on_device(got)
    expected = pre.inverse(x)
    assert_close(got, expected, atol=1e-12 * np.abs(expected).max())
    run = fr.GMRES(op.apply, on_device(x), pre.inverse, tol=1e-10, maxiter=400).run()
    ref = fr.GMRES(op.apply, x, pre.inverse, tol=1e-10, maxiter=400).run()
    assert run.converged and ref.converged
    assert run.iterations == ref.iterations
    np.testing.assert_allclose(run.history, ref.history, rtol=1e-9)  # residuals near 1e-10
    assert_on_device(run.solution)
    assert_close(run.solution, ref.solution, rtol=1e-10, atol=1e-12 * np.abs(ref.solution).max())


def test_dst1_equals_scipy(operator):
    _, x = operator
    got = fr.krylov.dst1(on_device(x))
    assert_on_device(got)
    assert_close(got, fr.krylov.dst1(x), atol=1e-13)


def test_solve_takes_a_namespace():
    """The public entry point: ``solve(..., xp=...)`` builds f(τ) in that namespace."""
    got, ref = fr.solve(64, 1.5, 3, xp=strict), fr.solve(64, 1.5, 3)
    assert int(got.iterations) == int(ref.iterations)
    np.testing.assert_allclose(got.solution, ref.solution, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(float(got.max_error), float(ref.max_error), rtol=1e-9)


# --- criticality: the batched Monte-Carlo ------------------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "relu", "linear", "sigmoid", "silu"])
def test_monte_carlo_on_the_device(activation):
    args = (activation, 1.5, 0.1, 16, 3, 120)
    z, m2, m4 = cr.run_networks(*args, seed=1)
    # On "device1" σ must run where z lives: the old host round trip raises there.
    got = cr.run_networks(*args, seed=1, xp=strict, device=DEVICE)
    np.testing.assert_allclose(got[1], m2, rtol=1e-12)
    np.testing.assert_allclose(got[2], m4, rtol=1e-12)
    np.testing.assert_allclose(got[0], z, rtol=1e-10, atol=1e-12)  # sigmoid: a few ulps


def test_gelu_needs_numpy_or_cupy():
    with pytest.raises(TypeError, match=r"sigma_on\(activation='GELU'\).*ndtr"):
        cr.run_networks("GELU", 1.5, 0.1, 8, 2, 4, xp=strict, device=DEVICE)


# --- KV cache: quantizer, RoPE, attention ------------------------------------------------------
@pytest.fixture(scope="module")
def cache():
    return np.random.default_rng(12).standard_normal((96, 40))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"axis": 0, "group_size": 32},
        {"axis": 1, "symmetric": True},
        {"clip": "mse"},
        {"clip": "percentile", "axis": 0, "group_size": 30},
        {"clip": "percentile", "symmetric": True, "percentile": 97.5},
        {"rounding": "stochastic", "seed": 4},
        {"zero_point": "integer", "axis": 1},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "minmax",
)
def test_quantizer(cache, options):
    got = kv.quantize(on_device(cache), [2, 4, 8], **options)
    assert_on_device(got)
    assert_close(got, kv.quantize(cache, [2, 4, 8], **options), atol=1e-12)
    one = kv.quantize(on_device(cache), 3, **options)  # a scalar bit-width drops the bits axis
    assert tuple(one.shape) == cache.shape


def test_cells_and_sqnr(cache):
    got = kv.quantize_cells(on_device(cache), [1, 3])
    assert_on_device(got)
    assert_close(got, kv.quantize_cells(cache, [1, 3]))
    sqnr = kv.sqnr_db(on_device(cache), got)
    np.testing.assert_allclose(sqnr, kv.sqnr_db(cache, kv.quantize_cells(cache, [1, 3])), 1e-12)
    with pytest.raises(TypeError, match="different namespaces"):
        kv.sqnr_db(cache, got)


def test_rope_and_attention():
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal(shape) for shape in ((4, 12, 8), (2, 12, 8), (2, 12, 8)))
    rope = kvdata.apply_rope(on_device(q))
    assert_on_device(rope)
    assert_close(rope, kvdata.apply_rope(q), atol=1e-14)
    mix = kvdata.attention(on_device(q), on_device(k), on_device(v))
    assert_on_device(mix)
    assert_close(mix, kvdata.attention(q, k, v), atol=1e-14)
    with pytest.raises(TypeError, match="different namespaces"):
        kvdata.attention(on_device(q), k, v)


# --- the same paths on CuPy (run where a device is lent; skipped elsewhere) --------------------
@pytest.mark.gpu
def test_generic_paths_on_cupy(cupy_backend):
    """What the strict runs stand in for: every generic path above on a real device, including
    the pieces strict cannot run (GELU through cupyx's ndtr, CuPy's own quantile)."""
    cp = cupy_backend

    def on_gpu(result):
        assert type(result).__module__.startswith("cupy")
        return cp.asnumpy(result)

    for activation in ("tanh", "sigmoid", "silu", "gelu"):
        args = (activation, 1.5, 0.1, 16, 3, 120)
        expected = cr.run_networks(*args, seed=1)
        for got, ref in zip(cr.run_networks(*args, seed=1, xp=cp), expected, strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    op = fr.collocation_operator(256, 1.5, 3)
    x = np.random.default_rng(5).standard_normal(op.shape[0])
    for name in fr.krylov.PRECONDITIONERS:
        pre = fr.Preconditioner(op, name)
        ref = pre.inverse(x)
        np.testing.assert_allclose(
            on_gpu(pre.inverse(cp.asarray(x))), ref, atol=1e-12 * abs(ref).max()
        )
        run = fr.GMRES(op.apply, cp.asarray(x), pre.inverse, tol=1e-10, maxiter=400).run()
        assert run.converged and type(run.solution).__module__.startswith("cupy")
    cache = np.random.default_rng(12).standard_normal((96, 40))
    for options in (
        {"clip": "percentile", "axis": 0},
        {"clip": "mse"},
        {"rounding": "stochastic", "seed": 4},
    ):
        got = on_gpu(kv.quantize(cp.asarray(cache), [2, 4, 8], **options))
        np.testing.assert_allclose(got, kv.quantize(cache, [2, 4, 8], **options), atol=1e-12)
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal(shape) for shape in ((4, 12, 8), (2, 12, 8), (2, 12, 8)))
    mix = on_gpu(kvdata.attention(*(cp.asarray(a) for a in (kvdata.apply_rope(q), k, v))))
    np.testing.assert_allclose(mix, kvdata.attention(kvdata.apply_rope(q), k, v), atol=1e-12)
    query, data = np.random.default_rng(3).standard_normal((2, 300, 5))
    hs = np.array([0.15, 0.4, 1.0, 3.0])
    got = estimator.kde_summary(cp.asarray(query), cp.asarray(data), hs, method="exact")
    ref = estimator.kde_summary(query, data, hs, method="exact")
    np.testing.assert_allclose(got["log_density"], ref["log_density"], rtol=1e-12)
