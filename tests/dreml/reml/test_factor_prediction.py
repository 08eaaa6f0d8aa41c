"""Factors of samples outside the fit (`dreml.reml.factor_prediction`) against the Gaussian
conditional mean written densely here: F^_N = Cov(f[N], y_obs) Var(y_obs)^-1 (y_obs - X B), with
both covariances built entry by entry from the fit's parameters (1e-8)."""

from __future__ import annotations

import numpy as np
import pytest

from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.reml import FitConfig
from dreml.reml.factor_prediction import predict_factors
from dreml.reml.factors import FactorConfig, fit_factor_model
from tests.dreml.reml.cohort import genotype_blocks
from tests.dreml.reml.test_factor_model import factor_traits


def _dense_new_sample_posterior(K, Y, X, fitted, new, result):
    """F^ (|N|, K) and U (G, |N|, K) of the samples `new` given the observed entries of the
    samples `fitted` (rows of Y, X), from the explicit covariances."""
    Lambda, psi, theta = result.loadings, result.psi, result.theta
    n = K.shape[1]
    Sigma = np.einsum("kg,gij->kij", theta[:, :-1], K) + theta[:, -1, None, None] * np.eye(n)  # (K, n, n)
    obs = np.argwhere(np.isfinite(Y))  # (N_obs, 2): (row of Y, trait)
    i, t = fitted[obs[:, 0]], obs[:, 1]
    r = (Y - X @ result.beta)[obs[:, 0], t]
    # Var(y_obs)[a, b] = sum_k lambda_k,t_a lambda_k,t_b Sigma_k[i_a, i_b] + [a = b] psi_t_a
    V = np.einsum("ka,kb,kab->ab", Lambda[:, t], Lambda[:, t], Sigma[:, i][:, :, i]) + np.diag(psi[t])
    alpha = np.linalg.solve(V, r)
    # Cov(f_k[j], y_a) = Sigma_k[j, i_a] lambda_k,t_a;  Cov(u_gk[j], y_a) = theta_gk K_g[j, i_a] lambda_k,t_a
    F = np.einsum("kja,ka,a->jk", Sigma[:, new][:, :, i], Lambda[:, t], alpha)
    U = np.einsum("kg,gja,ka,a->gjk", theta[:, :-1], K[:, new][:, :, i], Lambda[:, t], alpha)
    return F, U


def test_predict_factors__equals_dense_conditional_mean_for_unphenotyped_samples():
    """Two components, 3 factors, 20 of 110 samples with no trait at all (left out of the fit),
    the fit's samples in shuffled order, a covariate: F^ and U of the new samples at 1e-8, and
    the fitted samples' F^ reproduced."""
    Z = genotype_blocks(110, 400, 2, 3)
    full = DenseOperator.from_genotypes(Z)
    rng = np.random.default_rng(4)
    order = rng.permutation(110)
    fitted, new = order[:90], np.sort(order[90:])
    Y = factor_traits(full.K.mean(axis=0), np.array([0.8, 0.5, 0.3]), T=7, psi=0.3, missing=0.2, seed=5)[fitted]
    X = np.column_stack([np.ones(110), rng.standard_normal(110)])
    Y += X[fitted] @ rng.standard_normal((2, 7))
    config = FactorConfig(n_factors=3, max_iter=2, e_step_tol=1e-12, reml=FitConfig(method="exact", seed=1))
    result = fit_factor_model(DenseOperator(full.K[:, fitted][:, :, fitted]), Y, X[fitted], config)

    before = full.passes
    factors, blups = predict_factors(full, fitted, result)
    assert full.passes - before == 1
    F, U = _dense_new_sample_posterior(full.K, Y, X[fitted], fitted, new, result)
    np.testing.assert_allclose(factors[new], F, rtol=0, atol=1e-8 * np.abs(F).max())
    np.testing.assert_allclose(blups[:, new], U, rtol=0, atol=1e-8 * np.abs(U).max())
    np.testing.assert_allclose(factors[fitted], result.factors, rtol=0, atol=1e-8 * np.abs(result.factors).max())
    np.testing.assert_allclose(blups[:, fitted], result.factor_blups, rtol=0, atol=1e-8 * np.abs(U).max())


def test_predict_factors__raise_on_samples_not_matching_the_fit():
    Z = genotype_blocks(40, 200, 1, 3)
    op = DenseOperator.from_genotypes(Z)
    Y = factor_traits(op.K[0], np.array([0.5]), T=4, psi=0.3, missing=0.0, seed=1)[:30]
    result = fit_factor_model(DenseOperator(op.K[:, :30, :30]), Y, None, FactorConfig(n_factors=1, max_iter=1))
    with pytest.raises(InputError, match="fitted must be the fit's 30 samples as distinct indices into the operator's 40"):
        predict_factors(op, np.arange(29), result)
