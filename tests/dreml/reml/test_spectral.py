"""The spectral exact path (one component, `dreml.reml.spectral`) against independent dense
formulas (np.linalg.inv, slogdet) and against the Cholesky path (`ExactEvaluator`) on the same
data: score, average information, log-likelihood, effects and whole fits to 1e-9."""

import numpy as np
import pytest
from cohort import covariates, dense_operator, genotype_blocks, phenotype

from dreml.operators import DenseOperator
from dreml.operators.subset import RestrictedOperator
from dreml.reml import FitConfig, fit_reml
from dreml.reml.evaluation import IndefiniteError
from dreml.reml.spectral import SpectralEvaluator

N = 300


@pytest.fixture(scope="module")
def data():
    Z = genotype_blocks(N, 900, 1, 13)
    rng = np.random.default_rng(8)
    X = covariates(N, rng)
    return dense_operator(Z), phenotype(Z, (0.5,), 0.5, X, rng), X


@pytest.mark.parametrize("theta", [np.array([0.6, 0.4]), np.array([0.0, 1.2]), np.array([-0.05, 1.0])], ids=str)
def test_SpectralEvaluator__matches_dense_formulas(data, theta):
    op, y, X = data
    K = op.K[0]
    Hi = np.linalg.inv(theta[0] * K + theta[1] * np.eye(N))
    A = X.T @ Hi @ X
    P = Hi - Hi @ X @ np.linalg.inv(A) @ X.T @ Hi
    Py = P @ y
    V = np.column_stack([K @ Py, Py])
    score = -0.5 * np.array([np.trace(P @ K), np.trace(P)]) + 0.5 * Py @ V
    loglik = -0.5 * (np.linalg.slogdet(theta[0] * K + theta[1] * np.eye(N))[1] + np.linalg.slogdet(A)[1] + y @ Py)
    evaluator = SpectralEvaluator(op, y, X)
    point = evaluator.score(theta)
    info = evaluator.information(point, loglik=True)
    np.testing.assert_allclose(point.score, score, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(info.ai, 0.5 * V.T @ P @ V, rtol=1e-9)
    assert info.loglik == pytest.approx(loglik, rel=1e-11)
    effects = point.data["effects"]
    np.testing.assert_allclose(effects.Py, Py, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(effects.KPy[0], K @ Py, rtol=1e-8, atol=1e-12)
    # the evaluators' beta is that of y~ = y residualised on X: GLS(y) - OLS(y)
    ols = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(effects.beta + ols, np.linalg.solve(A, X.T @ Hi @ y), rtol=1e-9)


def test_fit_reml__spectral_equals_the_cholesky_path(data):
    op, y, X = data
    config = FitConfig(method="exact", tol_decrement=1e-14)
    spectral = fit_reml(op, y, X, config)
    cholesky = fit_reml(RestrictedOperator(op, np.arange(N)), y, X, config)  # not a DenseOperator
    np.testing.assert_allclose(spectral.theta, cholesky.theta, rtol=1e-9)
    np.testing.assert_allclose(spectral.se, cholesky.se, rtol=1e-8)
    assert spectral.loglik == pytest.approx(cholesky.loglik, rel=1e-12)
    assert spectral.iterations == cholesky.iterations and spectral.converged


def test_SpectralEvaluator__raise_on_indefinite_H(data):
    op, y, X = data
    with pytest.raises(IndefiniteError, match="not positive definite"):
        SpectralEvaluator(op, y, X).score(np.array([-1.0, 0.5]))


def test_DenseOperator_eigh__kept_and_one_component_only(data):
    op = data[0]
    assert op.eigh() is op.eigh()
    with pytest.raises(ValueError, match="one component"):
        DenseOperator(np.stack([op.K[0], op.K[0]])).eigh()
