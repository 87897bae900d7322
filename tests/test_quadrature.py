"""Quadrature lab: BQ weights against closed forms and SciPy, IntRL policy iteration against the
numbers of the lab brief ``shared/science/quadrature.md`` (Cao & Pan, ICLR 2024).

Tolerances are stated next to each assertion with the reason for their size. Where the brief
prints a number to k digits, the test asks for those digits (or the stated percentage).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.integrate
import xarray as xr

from workbench import sweep
from workbench.labs import quadrature as quad
from workbench.labs import quadrature_rules as qr
from workbench.study import StudyInputError

T = quad.INTERVAL_LENGTH


def final_error(system, n, **kwargs):
    return float(quad.run_policy_iteration(system, n=n, **kwargs).final_weight_error)


# --- exact LQR references -----------------------------------------------------------------------
def test_riccati_gain_and_closed_loop_poles():
    gain, p_matrix = quad.lqr_optimum()
    np.testing.assert_allclose(
        gain.ravel(), [0.904987562112, 1.893095222031, 1.596995960829], rtol=0, atol=1e-9
    )
    poles = np.sort_complex(np.linalg.eigvals(quad.LQRSystem.A - quad.LQRSystem.B @ gain))
    np.testing.assert_allclose(
        poles, np.sort_complex([-0.874619, -0.711188 + 0.802040j, -0.711188 - 0.802040j]), atol=1e-6
    )
    np.testing.assert_allclose(p_matrix, p_matrix.T, atol=1e-12)


def test_kleinman_sequence_matches_the_brief_to_the_printed_digits():
    errors = quad.kleinman(max_iter=8).p_error.values
    printed = [22.87, 10.00, 3.894, 1.286, 0.2667, 1.018e-2]
    assert [float(f"{e:.4g}") for e in errors[:6]] == printed
    assert float(f"{errors[6]:.3g}") == 1.09e-5
    assert errors[7] < 1e-10  # brief: ~1e-11 (quadratic convergence)


def test_van_loan_cost_equals_numerical_integral():
    gain, _ = quad.lqr_optimum()
    closed = quad.LQRSystem.A - quad.LQRSystem.B @ gain
    weight = np.eye(3) + gain.T @ gain
    integrand = lambda s: scipy.linalg.expm(closed.T * s) @ weight @ scipy.linalg.expm(closed * s)  # noqa: E731
    reference, _ = scipy.integrate.quad_vec(integrand, 0.0, T, epsabs=1e-15, epsrel=1e-13)
    np.testing.assert_allclose(quad.van_loan_cost(closed, weight, T), reference, rtol=1e-12)


def test_lqr_samples_equal_an_ode_solution():
    """Matrix-exponential sampling vs DOP853 on ẋ = (A − BK)x (agreement to the ODE tolerance)."""
    gain = np.array([[0.5, 1.0, 1.0]])
    system = quad.LQRSystem()
    segment = system.sample(system.x0, gain, qr.nodes(5, 0.0, T), 3, 0.0, exact=False)
    closed = system.A - system.B @ gain
    solution = scipy.integrate.solve_ivp(
        lambda _t, x: closed @ x, (0, segment.times.max()), system.x0, method="DOP853",
        dense_output=True, rtol=1e-13, atol=1e-13,
    )  # fmt: skip
    reference = solution.sol(segment.times.ravel()).T
    np.testing.assert_allclose(segment.states.reshape(-1, 3), reference, atol=1e-11)


# --- quadrature rules ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3, 7, 16, 30])
@pytest.mark.parametrize("a", [0.05, 0.2, 1.0])
def test_wiener_bq_reproduces_the_trapezoid_weights(n, a):
    weights, _ = qr.bq_weights(n, a, a + T, kernel="wiener")
    np.testing.assert_allclose(weights, qr.trapezoid_weights(n, a, a + T), rtol=0, atol=1e-12)


def test_matern_kernel_mean_example_of_the_brief():
    z = qr.matern_kernel_mean(0.23, 0.2, 0.3, nu=3.5, lengthscale=0.3)
    assert float(z) == pytest.approx(0.0990573247, rel=1e-9)
    assert qr.matern_double_mean(0.2, 0.3, nu=3.5, lengthscale=0.3) == pytest.approx(
        0.00987355866, rel=1e-9
    )


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5, 3.5])
def test_matern_kernel_means_equal_scipy_quad(nu):
    a, b, ell = 0.2, 0.3, 0.3
    for x in (0.2, 0.2000001, 0.23, 0.3):  # both ends, a node next to one, an interior point
        reference, _ = scipy.integrate.quad(
            lambda s, x=x: qr.matern_kernel(s, x, nu, ell), a, b, points=[x], epsabs=0, epsrel=1e-13
        )
        assert float(qr.matern_kernel_mean(x, a, b, nu, ell)) == pytest.approx(reference, rel=1e-12)
    double, _ = scipy.integrate.quad(
        lambda x: float(qr.matern_kernel_mean(x, a, b, nu, ell)), a, b, epsabs=0, epsrel=1e-13
    )
    assert qr.matern_double_mean(a, b, nu, ell) == pytest.approx(double, rel=1e-12)


@pytest.mark.parametrize("nu", [0.5, 3.5])
def test_bq_weights_are_optimal_in_the_rkhs(nu):
    """e(w) of the BQ weights equals √(Z − zᵀK⁻¹z) and is below the trapezoid rule's e(w)."""
    weights, error = qr.bq_weights(6, 0.0, T, nu=nu)
    assert qr.worst_case_error_of(weights, 0.0, T, "matern", nu) == pytest.approx(error, rel=1e-5)
    assert error < qr.worst_case_error_of(qr.trapezoid_weights(6, 0.0, T), 0.0, T, "matern", nu)


def test_worst_case_error_slopes_match_the_brief():
    """The brief's −1, −2.15, −3.19, −4.03 are two-point slopes between N = 3 and N = 11 (we match
    them to 0.01); a least-squares fit over the same nine points is steeper for ν ≥ 5/2 (−3.25,
    −4.19), which the dataset also reports."""
    ds = quad.worst_case_errors(
        ns=range(3, 12), nus=(0.5, 1.5, 2.5, 3.5), lengthscale=0.3, a=0, b=T
    )
    np.testing.assert_allclose(ds.endpoint_slope, [-1.0, -2.15, -3.19, -4.03], atol=0.01)
    np.testing.assert_allclose(ds.slope, [-1.0, -2.157, -3.252, -4.188], atol=0.01)
    assert ds.worst_case_error.dims == ("kernel", "n")
    assert list(ds.kernel.values) == ["matern-0.5", "matern-1.5", "matern-2.5", "matern-3.5"]


def test_zero_mean_prior_biases_the_weight_sum_at_two_nodes():
    weights, _ = qr.bq_weights(2, 0.0, T, nu=3.5, lengthscale=0.3)
    assert weights.sum() - T == pytest.approx(1.2e-3, abs=0.05e-3)  # brief: T + 1.2e-3


def test_singular_kernel_matrix_falls_back_and_warns():
    """ℓ = 10 on an interval of 0.1: K is numerically rank-deficient, Cholesky fails."""
    with pytest.warns(qr.QuadratureWarning, match="Cholesky failed"):
        rule = qr.bq_rule(30, 0.0, T, nu=3.5, lengthscale=10.0)
    assert rule.solver == "eigh" and rule.dropped > 0
    assert np.all(np.isfinite(rule.weights))
    assert rule.weights.sum() == pytest.approx(T, rel=1e-9)
    quad.interval_rule.cache_clear()  # the run below must see the warning too
    with pytest.warns(qr.QuadratureWarning):
        ds = quad.run_policy_iteration("lqr", n=30, rule="bq", lengthscale=10.0)
    assert ds.attrs["bq_solver"] == "eigh" and int(ds.bq_fallback) == 1
    assert float(ds.final_weight_error) < 1e-4


# --- IntRL policy iteration: the brief's numbers ------------------------------------------------
@pytest.mark.parametrize(
    ("system", "references", "scaled"),
    [
        ("lqr", {5: 1.1776e-3, 10: 2.3246e-4, 15: 9.606e-5}, 0.01884),
        ("sin", {5: 1.2876e-4, 10: 2.5437e-5, 15: 1.0513e-5}, 0.002060),
    ],
)
def test_trapezoid_error_is_order_n_minus_2(system, references, scaled):
    for n, reference in references.items():
        error = final_error(system, n, rule="trapezoid")
        assert error == pytest.approx(reference, rel=0.03)
        assert error * (n - 1) ** 2 == pytest.approx(scaled, rel=0.02)


def test_bq_jitter_plateau_on_the_lqr():
    """Brief: ν = 7/2, ℓ = 0.3, jitter 1e-8, M = 20: 5.71e-5, 6.2e-6, 3.3e-6 (plateau)."""
    errors = {n: final_error("lqr", n, rule="bq", jitter=1e-8) for n in (5, 10, 15)}
    assert errors[5] == pytest.approx(5.71e-5, rel=0.03)
    assert errors[10] == pytest.approx(6.2e-6, rel=0.03)
    assert errors[15] == pytest.approx(3.3e-6, rel=0.03)
    assert errors[15] > errors[10] / 3  # plateau: N^-4 would give a factor 5
    exact_bq = final_error("lqr", 10, rule="bq", jitter=0.0)
    # brief: ≈1.2e-6 or lower; we get 1.32e-6, and 1.320e-6 with weights solved in 60-digit
    # arithmetic, so the value is BQ's own error, not rounding
    assert exact_bq < 1.4e-6
    assert exact_bq < errors[10] / 4


def test_bq_on_the_sin_system():
    """Brief: ν = 7/2, jitter 1e-8: 8.53e-6, 9.40e-7, 4.98e-7."""
    for n, reference in {5: 8.53e-6, 10: 9.40e-7, 15: 4.98e-7}.items():
        assert final_error("sin", n, rule="bq", jitter=1e-8) == pytest.approx(reference, rel=0.03)


@pytest.mark.parametrize("system", ["lqr", "sin"])
def test_bq_loses_at_two_nodes_and_wins_from_three(system):
    m = {"intervals": 20}
    assert final_error(system, 2, rule="bq", **m) > 3 * final_error(
        system, 2, rule="trapezoid", **m
    )
    assert final_error(system, 3, rule="bq", **m) < final_error(system, 3, rule="trapezoid", **m)


def test_exact_rule_converges_quadratically_on_the_sin_system():
    """Brief: 0.644 → 7.9e-4 → 3.9e-10. We reproduce the first two to the printed digits; the
    third is 2.5e-9, the same for ODE tolerances 1e-10 … 1e-14, so it is not integration error
    (see the lab notes: the last step depends on the fitted trajectory data)."""
    errors = quad.run_policy_iteration("sin", n=5, rule="exact").weight_error.values
    assert len(errors) == 3
    assert float(f"{errors[0]:.3g}") == 0.644
    assert float(f"{errors[1]:.2g}") == 7.9e-4
    assert errors[2] < 1e-8
    newton_constant = errors[1] / errors[0] ** 2  # e₂ = C e₁²
    assert errors[2] < 5 * newton_constant * errors[1] ** 2  # e₃ ≲ C e₂² (measured: 2 C e₂²)


def test_exact_rule_on_the_lqr_is_kleinman():
    ds = quad.run_policy_iteration("lqr", n=5, rule="exact")
    kleinman = quad.kleinman(max_iter=ds.sizes["iteration"]).p_error.values
    np.testing.assert_allclose(ds.weight_error.values[:7], kleinman[:7], rtol=1e-6, atol=1e-9)
    assert float(ds.final_weight_error) < 1e-6
    assert int(ds.converged) == 1


def test_error_vs_n_slopes_and_labels():
    labels = ["trapezoid", "bq-matern-3.5", "bq-wiener", "bq-matern-0.5"]
    ds = quad.error_vs_n("sin", labels, ns=range(2, 16))
    assert ds.weight_error.dims == ("rule", "n")
    assert float(ds.slope.sel(rule="trapezoid")) == pytest.approx(-2.0, abs=0.01)
    assert float(ds.slope.sel(rule="bq-matern-3.5")) < -4.0  # O(N^-b) is an upper bound
    # Wiener BQ = trapezoid weights, and both use M = 20 on the sin system
    np.testing.assert_allclose(
        ds.weight_error.sel(rule="bq-wiener"), ds.weight_error.sel(rule="trapezoid"), rtol=1e-7
    )
    np.testing.assert_allclose(ds.theory_order, [2.0, 4.0, 2.0, 1.0])
    at10 = ds.weight_error.sel(n=10)
    # brief: BQ(ν = 7/2) < trapezoid < BQ(ν = ½) on smooth integrands
    assert (
        at10.sel(rule="bq-matern-3.5") < at10.sel(rule="trapezoid") < at10.sel(rule="bq-matern-0.5")
    )
    single = final_error("sin", 10, rule="bq", nu=3.5)
    assert float(at10.sel(rule="bq-matern-3.5")) == pytest.approx(single, rel=1e-12)


# --- streaming, datasets, the Study -------------------------------------------------------------
@pytest.mark.parametrize(("system", "rule"), [("lqr", "trapezoid"), ("sin", "bq")])
def test_stream_equals_the_dataset(system, rule):
    records = list(quad.iter_policy_iteration(system, n=6, rule=rule))
    ds = quad.run_policy_iteration(system, n=6, rule=rule)
    assert [r.iteration for r in records] == list(ds.iteration.values)
    np.testing.assert_array_equal([r.weight_error for r in records], ds.weight_error)
    np.testing.assert_array_equal(np.array([r.weights for r in records]), ds.weights)
    np.testing.assert_array_equal(records[-1].states, ds.trajectory.isel(iteration=-1))
    np.testing.assert_array_equal(records[-1].times, ds.time.isel(iteration=-1))
    assert records[-1].converged and not any(r.converged for r in records[:-1])
    if system == "lqr":
        np.testing.assert_array_equal(np.array([r.gain for r in records]), ds.gain)
        np.testing.assert_array_equal([r.gain_error for r in records], ds.gain_error)
    else:
        assert records[0].gain is None


def test_trajectory_continues_across_iterations():
    records = list(quad.iter_policy_iteration("sin", n=4, rule="trapezoid"))
    for before, after in zip(records, records[1:], strict=False):
        assert after.times[0] == pytest.approx(before.times[-1])
        np.testing.assert_array_equal(after.states[0], before.states[-1])
    assert len(records[0].times) == 20 * 3 + 1  # M(N − 1) + 1 distinct samples


def test_non_convergence_is_flagged_not_raised():
    ds = quad.run_policy_iteration("lqr", n=5, max_iter=2)
    assert int(ds.converged) == 0 and ds.attrs["converged"] == 0
    assert ds.sizes["iteration"] == 2


def test_dataset_attrs_are_netcdf_safe(tmp_path):
    ds = quad.run_policy_iteration("lqr", n=5, rule="bq", initial_gain=[0.1, 0.2, 0.3])
    assert all(isinstance(v, str | int | float) for v in ds.attrs.values())
    path = sweep.to_netcdf(ds, tmp_path / "run.nc")
    xr.testing.assert_identical(xr.load_dataset(path, engine="h5netcdf"), ds)


def test_study_vectorized_n_matches_single_runs():
    study = quad.QuadratureStudy(system="sin", rule="bq")
    ds = study.evaluate(n=[3, 8])
    assert ds.final_weight_error.dims == ("n",)
    assert "optimal_weights" in ds and "n" not in ds.optimal_weights.dims
    for n in (3, 8):
        single = quad.run_policy_iteration("sin", n=n, rule="bq")
        row = ds.sel(n=n).dropna("iteration", how="all")
        np.testing.assert_array_equal(row.weight_error, single.weight_error)
    assert study.evaluate().attrs["n"] == 10


def test_sweep_over_n_gives_an_n_dim(tmp_path):
    ds = sweep.run(quad.QuadratureStudy(), {"n": [5, 10]}, cache_dir=tmp_path)
    assert "n" in ds.final_weight_error.dims
    np.testing.assert_allclose(ds.final_weight_error, [1.1776e-3, 2.3246e-4], rtol=0.03)


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"n": 1}, "n (nodes"),
        ({"n": 2.5}, "n (nodes"),
        ({"lengthscale": 0.0, "rule": "bq"}, "lengthscale"),
        ({"lengthscale": -1.0}, "lengthscale"),
        ({"jitter": -1e-9}, "jitter"),
        ({"system": "pendulum"}, "system"),
        ({"rule": "simpson"}, "rule"),
        ({"nu": 1.0}, "nu"),
        ({"kernel": "rbf"}, "kernel"),
        ({"max_iter": 0}, "max_iter"),
        ({"intervals": -3}, "intervals"),
        ({"tol": -1.0}, "tol"),
        ({"system": "sin", "initial_gain": [1, 1, 1]}, "initial_gain"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, names):
    with pytest.raises(StudyInputError, match=names.replace("(", r"\(")):
        quad.run_policy_iteration(**kwargs)
    with pytest.raises(StudyInputError, match=names.replace("(", r"\(")):
        quad.iter_policy_iteration(**kwargs)  # raised at the call, before the first record


def test_non_admissible_initial_gain_names_the_unstable_eigenvalue():
    # K₀ = [−1, 0, 0] makes the characteristic polynomial s³ + 0.7s² + 0.5s − 0.9: a root s > 0
    with pytest.raises(StudyInputError, match=r"initial_gain.*unstable eigenvalue 0\.65"):
        quad.run_policy_iteration("lqr", initial_gain=[-1.0, 0.0, 0.0])
    ds = quad.run_policy_iteration("lqr", n=10, initial_gain=[0.5, 1.0, 1.0])
    assert float(ds.final_weight_error) < 1e-3


def test_bad_sweep_labels_and_study_values():
    with pytest.raises(StudyInputError, match="rule label"):
        quad.error_vs_n("lqr", ["simpson"], ns=[5])
    with pytest.raises(StudyInputError, match="nu"):
        quad.parse_rule_label("bq-matern-1")
    with pytest.raises(StudyInputError, match=r"(?i)length-?scale.*between 0\.001 and 10"):
        quad.QuadratureStudy().checked_update(lengthscale=-1.0)
    with pytest.raises(StudyInputError, match=r"between 2 and 30; got 1$"):
        quad.QuadratureStudy().checked_update(n=1)
    with pytest.raises(StudyInputError, match="a > 0"):
        qr.bq_weights(5, 0.0, T, kernel="wiener")


def test_no_warnings_on_the_default_path():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quad.run_policy_iteration("lqr", n=30, rule="bq")
