"""Fixed and random effects (`dreml.reml.effects`) of the randomised path and of `effects_at`
against the exact path at the same theta.

Error bound: a PCG solve stopped at relative residual tau has ||x - x*|| / ||x*|| <= kappa(H) tau,
kappa(H) = (theta_e + sum_g theta_g lambda_max(K_g)) / theta_e. beta, P y and K_g P y are linear
in the solves of H^-1 X and H^-1 y~, so the tests allow a small multiple of kappa tau.
"""

import numpy as np
import pytest
from cohort import covariates, dense_operator, genotype_blocks, phenotype

from dreml.operators import DenseOperator, RestrictedOperator
from dreml.reml import FitConfig, fit_reml
from dreml.reml.effects import effects_at
from dreml.reml.probes import draw_probes
from dreml.reml.randomised import RandomisedEvaluator


@pytest.fixture(scope="module")
def data():
    Z = genotype_blocks(600, 1800, 2, 1)
    rng = np.random.default_rng(5)
    X = covariates(600, rng)
    y = phenotype(Z, (0.3, 0.2), 0.5, X, rng) + 3.0  # a mean far from 0: beta must carry it
    op = dense_operator(Z)
    exact = fit_reml(op, y, X, FitConfig(method="exact", tol_decrement=1e-12))
    return op, y, X, exact


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _kappa(op, theta):
    lam = np.linalg.eigvalsh(np.tensordot(theta[:-1], op.K, axes=1))[-1]
    return (theta[-1] + lam) / theta[-1]


def test_exact_effects__blue_and_blup_identities(data):
    """beta is the GLS estimate, and y = X beta + sum_g u_g + e with e = theta_e P y."""
    op, y, X, exact = data
    theta, eff = exact.theta, exact.effects
    H = np.tensordot(theta[:-1], op.K, axes=1) + theta[-1] * np.eye(len(y))
    HiX, Hiy = np.linalg.solve(H, X), np.linalg.solve(H, y)
    np.testing.assert_allclose(eff.beta, np.linalg.solve(X.T @ HiX, HiX.T @ y), rtol=1e-10)
    np.testing.assert_allclose(eff.beta_covariance, np.linalg.inv(X.T @ HiX), rtol=1e-10)
    np.testing.assert_allclose(eff.Py, Hiy - HiX @ eff.beta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(X @ eff.beta + eff.blup(theta).sum(axis=0) + eff.residual(theta), y, rtol=1e-10)


@pytest.mark.parametrize("tol", [1e-5, 1e-8])
def test_effects_at__within_pcg_tolerance_of_exact(data, tol):
    op, y, X, exact = data
    theta = exact.theta
    got = effects_at(op, y, X, theta, tol=tol)
    bound = 5 * _kappa(op, theta) * tol
    assert got.status == "converged"
    assert _rel(got.beta, exact.effects.beta) <= bound
    assert _rel(got.Py, exact.effects.Py) <= bound
    assert _rel(got.KPy, exact.effects.KPy) <= bound
    np.testing.assert_allclose(got.beta_covariance, exact.effects.beta_covariance, rtol=bound)


def test_effects_at__single_component_without_the_stacked_pass(data):
    op, y, X, _ = data
    one = DenseOperator(op.K[:1])
    exact = fit_reml(one, y, X, FitConfig(method="exact", tol_decrement=1e-12))
    before = one.passes
    got = effects_at(one, y, X, exact.theta, tol=1e-9)
    assert _rel(got.KPy, exact.effects.KPy) <= 5 * _kappa(one, exact.theta) * 1e-9
    # every pass was a PCG iteration: K P y came from the recursive residuals
    assert one.passes - before <= 60


def test_randomised_effects__within_pcg_tolerance_of_exact_at_the_same_theta(data):
    """The fit's effects come from its last score solve (pcg_tol on X and y~)."""
    op, y, X, exact = data
    config = FitConfig(method="randomised", seed=1)
    theta = exact.theta
    probes = draw_probes(len(y), config.n_probes, config.slq_probes, 0, config.seed)
    point = RandomisedEvaluator(op, y, X, config, probes).score(theta)
    eff = point.data["effects"].shifted(np.linalg.lstsq(X, y, rcond=None)[0])
    bound = 5 * _kappa(op, theta) * config.pcg_tol
    assert _rel(eff.beta, exact.effects.beta) <= bound
    assert _rel(eff.Py, exact.effects.Py) <= bound
    assert _rel(eff.KPy, exact.effects.KPy) <= bound


def test_effects_at__on_a_restricted_operator_equals_the_subset_fit(data):
    op, y, X, exact = data
    rows = np.arange(0, len(y), 2)
    sub = DenseOperator(op.K[:, rows][:, :, rows])
    expected = effects_at(sub, y[rows], X[rows], exact.theta, tol=1e-10)
    got = effects_at(RestrictedOperator(op, rows), y[rows], X[rows], exact.theta, tol=1e-10)
    assert _rel(got.Py, expected.Py) < 1e-8 and _rel(got.beta, expected.beta) < 1e-8
