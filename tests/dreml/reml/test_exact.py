"""The exact dense path against independent dense code (np.linalg, scipy.optimize)."""

import dataclasses

import numpy as np
import pytest
from cohort import covariates, dense_operator, genotype_blocks, negative_variance_cases, phenotype
from scipy.optimize import minimize

from dreml.errors import InputError
from dreml.reml import FitConfig, fit_reml
from dreml.reml.exact import ExactEvaluator

N = 400
TIGHT = FitConfig(method="exact", tol_decrement=1e-16, max_iter=50)


@pytest.fixture(scope="module")
def data():
    Z = genotype_blocks(N, 1600, 2, 11)
    rng = np.random.default_rng(5)
    X = covariates(N, rng)
    return dense_operator(Z), phenotype(Z, (0.4, 0.2), 0.4, X, rng), X


def dense_H(K, theta):
    return sum(t * k for t, k in zip(theta[:-1], K)) + theta[-1] * np.eye(K.shape[1])


def dense_parts(K, y, X, theta):
    """Independent dense evaluation: loglik, P (REML, constant omitted)."""
    H = dense_H(K, theta)
    Hi = np.linalg.inv(H)
    A = X.T @ Hi @ X
    P = Hi - Hi @ X @ np.linalg.inv(A) @ X.T @ Hi
    loglik = -0.5 * (np.linalg.slogdet(H)[1] + np.linalg.slogdet(A)[1] + y @ P @ y)
    return loglik, P


def test_exact__loglik_score_ai_match_dense_formulas(data):
    op, y, X = data
    theta = np.array([0.5, 0.1, 0.6])  # not the optimum
    ev = ExactEvaluator(op, y, X)
    point = ev.score(theta)
    der = ev.information(point, loglik=True)
    loglik, P = dense_parts(op.K, y, X, theta)
    assert abs(der.loglik - loglik) < 1e-9 * abs(loglik)
    Ks = list(op.K) + [np.eye(N)]
    ai = np.array([[0.5 * y @ P @ Ki @ P @ Kj @ P @ y for Kj in Ks] for Ki in Ks])
    np.testing.assert_allclose(der.ai, ai, rtol=1e-9)
    h = 1e-5  # central differences of the dense loglik: O(h^2) error
    fd = [(dense_parts(op.K, y, X, theta + h * e)[0] - dense_parts(op.K, y, X, theta - h * e)[0]) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(point.score, fd, rtol=1e-6)


def test_exact__optimum_matches_scipy_and_score_vanishes(data):
    op, y, X = data
    result = fit_reml(op, y, X, TIGHT)
    assert result.converged and result.status == "converged"
    assert np.abs(result.score).max() < 1e-6
    assert not result.at_boundary.any()
    ref = minimize(
        lambda t: -dense_parts(op.K, y, X, t)[0],
        x0=np.full(3, 0.3),
        method="L-BFGS-B",
        bounds=[(0, None)] * 2 + [(1e-6, None)],
        options={"ftol": 1e-15, "gtol": 1e-9},
    )
    np.testing.assert_allclose(result.theta, ref.x, atol=1e-6)
    assert abs(result.loglik - (-ref.fun)) < 1e-8
    # SEs from the inverse AI, h2 by the delta method (independent arithmetic)
    np.testing.assert_allclose(result.se, np.sqrt(np.diag(np.linalg.inv(result.ai))), rtol=1e-12)
    vp = result.theta.sum()
    grad = (np.eye(2, 3) * vp - result.theta[:2, None]) / vp**2
    np.testing.assert_allclose(result.h2_se, np.sqrt(np.diag(grad @ result.covariance @ grad.T)), rtol=1e-12)
    assert result.h2_total == pytest.approx(result.theta[:2].sum() / vp)


def test_exact__true_zero_component_at_boundary(data):
    """A component with no signal ends at 0, flagged; the others equal the fit without it."""
    op, _, X = data
    rng = np.random.default_rng(4)  # seeds 0-7 tried: 4 and 6 end on the boundary (docs/validation.md)
    Z = genotype_blocks(N, 1600, 2, 11)
    y = phenotype(Z[:1], (0.5,), 0.5, X, rng)
    result = fit_reml(op, y, X, TIGHT)
    assert result.theta[1] == 0.0 and result.at_boundary.tolist() == [False, True, False]
    assert np.isfinite(result.se).all() and result.se[1] > 0  # from the full AI, as GCTA
    reduced = fit_reml(dense_operator(Z[:1]), y, X, TIGHT)
    np.testing.assert_allclose(result.theta[[0, 2]], reduced.theta, atol=1e-7)
    np.testing.assert_allclose(result.se[[0, 2]], reduced.se, rtol=1e-6)


def test_exact__non_convergence_is_reported(data):
    op, y, X = data
    result = fit_reml(op, y, X, FitConfig(method="exact", max_iter=1, tol_decrement=1e-30))
    assert not result.converged and result.iterations == 1
    assert result.status.startswith("not converged after 1 iterations")
    assert np.isfinite(result.loglik)  # the final log-likelihood is still computed
    assert len(result.history) == 2 and result.history[1]["iteration"] == 1


def negative_reml(theta, K, y, X):
    """-l(theta) and -s(theta) from `dense_parts` (s_i = -1/2 tr(P K_i) + 1/2 y^T P K_i P y);
    1e6, above any -l here, where H is not positive definite, so that BFGS's line search backs off."""
    try:
        np.linalg.cholesky(dense_H(K, theta))
    except np.linalg.LinAlgError:
        return 1e6, np.zeros_like(theta)
    loglik, P = dense_parts(K, y, X, theta)
    Py = P @ y
    score = [-0.5 * np.sum(P * Ki) + 0.5 * Py @ Ki @ Py for Ki in (*K, np.eye(len(y)))]
    return -loglik, -np.array(score)


def unbounded_optimum(K, y, X):
    """The REML maximum without bounds by SciPy's BFGS on the dense formulas, from a start of our own."""
    ref = minimize(negative_reml, x0=np.array([0.5, 0.0, 0.5]), args=(K, y, X), jac=True, method="BFGS", options={"gtol": 1e-10})
    # at the maximum: "precision loss" stops BFGS short of gtol, but its remaining Newton step is
    # below 1e-7 SE (the decrement with BFGS's inverse Hessian, about cov(theta))
    assert ref.jac @ ref.hess_inv @ ref.jac < 1e-14
    return ref


@pytest.fixture(scope="module")
def negative_cases():
    return negative_variance_cases()


UNCONSTRAINED = FitConfig(method="exact", tol_decrement=1e-16, max_iter=50, constrain=False)


@pytest.mark.parametrize("case", ["noise", "few"])
def test_exact__unconstrained_negative_component_matches_scipy(negative_cases, case):
    op, y, X = negative_cases[case]
    result = fit_reml(op, y, X, UNCONSTRAINED)
    ref = unbounded_optimum(op.K, y, X)
    assert result.converged and result.theta[1] < 0 and not result.at_boundary.any()
    np.testing.assert_allclose(result.theta, ref.x, rtol=1e-6)
    assert abs(result.loglik + ref.fun) < 1e-8 * abs(ref.fun)
    np.testing.assert_allclose(result.se, np.sqrt(np.diag(np.linalg.inv(result.ai))), rtol=1e-9)  # the full AI
    assert result.to_dict()["config"]["constrain"] is False
    halvings = sum(row.get("indefinite_halvings", 0) for row in result.history)
    assert result.indefinite_trials == halvings and (halvings > 0) == (case == "few")


def test_exact__unconstrained_stops_when_every_trial_is_indefinite(negative_cases):
    """ "few": the first full AI step from the start makes H indefinite; with no halvings allowed
    the fit stays at the start and says why."""
    op, y, X = negative_cases["few"]
    result = fit_reml(op, y, X, dataclasses.replace(UNCONSTRAINED, max_step_halvings=0))
    assert not result.converged and result.iterations == 0 and result.indefinite_trials == 1
    assert "H was indefinite at all 1 trial steps of iteration 1" in result.status
    assert result.theta.tolist() == result.history[0]["theta"] and np.isfinite(result.loglik)


@pytest.mark.parametrize("constrain", [True, False])
def test_exact__priors_are_the_start_and_reach_the_same_optimum(data, constrain):
    op, y, X = data
    config = dataclasses.replace(TIGHT, constrain=constrain)
    default = fit_reml(op, y, X, config)
    for priors in ((0.05, 0.9, 0.1), (1.0, 0.02, 0.5)):
        result = fit_reml(op, y, X, dataclasses.replace(config, priors=priors))
        assert result.history[0]["theta"] == list(priors) and result.history[0]["iteration"] == 0
        assert result.converged and result.config.priors == priors
        np.testing.assert_allclose(result.theta, default.theta, rtol=1e-6)


def test_exact__max_iter_reached_is_not_converged(data):
    """One AI iteration from priors far from the optimum cannot pass the default convergence test."""
    op, y, X = data
    result = fit_reml(op, y, X, FitConfig(method="exact", max_iter=1, priors=(0.05, 0.9, 0.1)))
    assert not result.converged and result.iterations == 1 and result.status.startswith("not converged after 1 iterations")
    assert result.to_dict()["config"]["max_iter"] == 1


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            FitConfig(method="exact", priors=(0.3, 0.5)),
            r"priors must give 3 values \(2 genetic variance\(s\), then the residual\), got 2",
        ),
        (FitConfig(method="exact", priors=(0.3, -5.0, 0.5), constrain=False), r"priors \[0.3, -5, 0.5\] make H .* indefinite"),
    ],
)
def test_fit_reml__raise_on_invalid_priors(data, config, match):
    op, y, X = data
    with pytest.raises(InputError, match=match):
        fit_reml(op, y, X, config)
