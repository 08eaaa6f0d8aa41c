"""The factor model (`dreml.reml.factors`) against dense NumPy computations written here.

- E-step: the posterior mean of F and the factors' BLUPs from the explicit covariance of the
  observed entries (N_obs x N_obs), and the per-sample covariances C_i from the explicit
  posterior of vec(F) when K_g is replaced by its mean diagonal (1e-8).
- The whole fit (exact path, tight tolerance): its result satisfies the stationarity
  conditions of the algorithm, checked densely: F^ is the dense posterior mean at the final
  parameters, (Lambda, psi) is the dense M-step from it, and each factor's h2 maximises the
  dense profile REML likelihood of its posterior mean (a bounded scalar optimiser).
- SQUAREM (`accelerate`): the same fixed point as the plain EM run to its stopping rule, in far
  fewer EM evaluations; with the extrapolations made absurd, the safeguard falls back and the
  run is the plain EM; the extrapolation coordinates invert and project onto the floors.
- Bad input: one-line `InputError`s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.reml import FitConfig, factors
from dreml.reml.factors import FactorConfig, fit_factor_model, posterior
from dreml.reml.factors_squarem import Coordinates
from tests.dreml.reml.cohort import genotype_blocks


def factor_traits(
    K_g: np.ndarray, h2: np.ndarray, T: int, psi: float, missing: float, seed: int, loadings: np.ndarray | None = None
) -> np.ndarray:
    """Y = F Lambda + E with f_k ~ N(0, h2_k K + (1 - h2_k) I), Lambda ~ N(0, 1) unless given
    (K, T), a share `missing` NaN."""
    rng = np.random.default_rng(seed)
    n = K_g.shape[0]
    w, V = np.linalg.eigh(K_g)
    root = V * np.sqrt(np.maximum(w, 0))
    F = np.column_stack([np.sqrt(h) * root @ rng.standard_normal(n) + np.sqrt(1 - h) * rng.standard_normal(n) for h in h2])
    Lambda = rng.standard_normal((len(h2), T)) if loadings is None else loadings
    Y = F @ Lambda + np.sqrt(psi) * rng.standard_normal((n, T))
    Y[rng.random((n, T)) < missing] = np.nan
    return Y


def dense_posterior(K, R, M, Lambda, psi, theta):
    """F^ (n, K) and U (G, n, K) from the explicit covariance of the observed entries."""
    n, T = R.shape
    Sigma = np.einsum("kg,gij->kij", theta[:, :-1], K) + theta[:, -1, None, None] * np.eye(n)  # (K, n, n)
    obs = np.argwhere(M > 0)  # (N_obs, 2): (sample, trait)
    i, t = obs[:, 0], obs[:, 1]
    # Cov(y_it, y_js) = sum_k lambda_kt lambda_ks Sigma_k[i, j] + [i = j, t = s] psi_t
    V = np.einsum("ka,kb,kab->ab", Lambda[:, t], Lambda[:, t], Sigma[:, i][:, :, i]) + np.diag(psi[t])
    alpha = np.linalg.solve(V, R[i, t])
    W = np.zeros((n, Lambda.shape[0]))
    np.add.at(W, i, alpha[:, None] * Lambda[:, t].T)  # A^T alpha
    F = np.einsum("kij,jk->ik", Sigma, W)
    U = np.einsum("kg,gij,jk->gik", theta[:, :-1], K, W)
    return F, U


def _dense_m_step(Y, M, X, F, C, psi_min):
    """B, Lambda, psi trait by trait: y_t on [X, F^] over its observed samples, E[f f^T] = f^ f^^T + C_i,
    psi_t the expected residual mean square, floored."""
    p = X.shape[1]
    B, Lambda, psi = [], [], []
    for t in range(Y.shape[1]):
        o = M[:, t] > 0
        Z = np.hstack([X[o], F[o]])
        A = Z.T @ Z
        A[p:, p:] += C[o].sum(axis=0)
        coef = np.linalg.solve(A, Z.T @ Y[o, t])
        b, lam = coef[:p], coef[p:]
        rss = ((Y[o, t] - Z @ coef) ** 2).sum() + np.einsum("k,ikl,l->", lam, C[o], lam)
        B.append(b)
        Lambda.append(lam)
        psi.append(max(rss / o.sum(), psi_min[t]))
    return np.array(B).T, np.array(Lambda).T, np.array(psi)


def _dense_reml(K, f):
    """(theta_g, theta_e) maximising the REML likelihood of f ~ N(1 mu, theta_g K + theta_e I):
    a bounded scalar optimiser over h2 of the likelihood profiled over the scale."""
    n = len(f)
    one = np.ones(n)

    def profile(h2):
        V = h2 * K + (1 - h2) * np.eye(n)
        L = np.linalg.cholesky(V)
        Vi1, Vif = np.linalg.solve(V, one), np.linalg.solve(V, f)
        q = f @ Vif - (one @ Vif) ** 2 / (one @ Vi1)
        return 0.5 * (2 * np.log(np.diag(L)).sum() + np.log(one @ Vi1) + (n - 1) * np.log(q)), q / (n - 1)

    h2 = minimize_scalar(lambda h: profile(h)[0], bounds=(1e-6, 1 - 1e-6), method="bounded", options={"xatol": 1e-10}).x
    scale = profile(h2)[1]
    return h2 * scale, (1 - h2) * scale


def _dense_factor_h2(K, R, M, Lambda, psi):
    """Step (R) densely: GLS scores per sample, REML, the mean noise variance removed."""
    h2 = []
    for k in range(Lambda.shape[0]):
        scores, noise = [], []
        for i in range(R.shape[0]):
            o = M[i] > 0
            P = (Lambda[:, o] / psi[o]) @ Lambda[:, o].T
            scores.append(np.linalg.solve(P, (Lambda[:, o] / psi[o]) @ R[i, o])[k])
            noise.append(np.linalg.inv(P)[k, k])
        theta_g, theta_e = _dense_reml(K, np.array(scores))
        h2.append(theta_g / (theta_g + theta_e - np.mean(noise)))
    return np.array(h2)


def test_posterior__equals_dense_posterior():
    """Two components, 3 factors, a quarter of the values missing: F^, U at 1e-8; C_i at 1e-10."""
    Z = genotype_blocks(80, 400, 2, 3)
    op = DenseOperator.from_genotypes(Z)
    rng = np.random.default_rng(1)
    n, T, K = 80, 7, 3
    M = (rng.random((n, T)) > 0.25).astype(float)
    R = M * rng.standard_normal((n, T))
    Lambda, psi = rng.standard_normal((K, T)), rng.uniform(0.2, 1.0, T)
    theta = rng.dirichlet(np.ones(3), K)  # (K, G + 1), rows sum to 1
    post = posterior(op, R, M, Lambda, psi, theta, tol=1e-13, max_iter=500)
    F, U = dense_posterior(op.K, R, M, Lambda, psi, theta)
    assert post.status == "converged"
    np.testing.assert_allclose(post.factors, F, rtol=0, atol=1e-8 * np.abs(F).max())
    np.testing.assert_allclose(post.blups, U, rtol=0, atol=1e-8 * np.abs(U).max())
    # C_i: the exact posterior covariance of f_i when Sigma_k = s_k I (relatives ignored)
    s = theta[:, :-1] @ (np.einsum("gii->g", op.K) / n) + theta[:, -1]
    A = np.zeros((int(M.sum()), n * K))  # vec(F) in (sample, factor) order -> observed entries
    for row, (i, t) in enumerate(np.argwhere(M > 0)):
        A[row, i * K : (i + 1) * K] = Lambda[:, t]
    psi_obs = psi[np.argwhere(M > 0)[:, 1]]
    cov = np.linalg.inv(np.diag(np.tile(1 / s, n)) + A.T @ (A / psi_obs[:, None]))
    blocks = np.stack([cov[i * K : (i + 1) * K, i * K : (i + 1) * K] for i in range(n)])
    np.testing.assert_allclose(post.C, blocks, rtol=0, atol=1e-10)


def _dense_masked_pca(R, M, K, iterations):
    scale = np.sqrt((R**2).sum(axis=0) / M.sum(axis=0))
    Z = R / scale
    filled = Z
    for _ in range(iterations):
        U, S, Vt = np.linalg.svd(filled, full_matrices=False)
        filled = np.where(M > 0, Z, U[:, :K] @ np.diag(S[:K]) @ Vt[:K])
    U, S, Vt = np.linalg.svd(filled, full_matrices=False)
    n = R.shape[0]
    return np.sqrt(n) * U[:, :K], np.diag(S[:K]) @ Vt[:K] / np.sqrt(n) * scale


def _dense_ols(Y, M, X):
    """Each trait's OLS on X over its observed samples, (p, T)."""
    return np.column_stack([np.linalg.lstsq(X[M[:, t] > 0], Y[M[:, t] > 0, t], rcond=None)[0] for t in range(Y.shape[1])])


def test_fit_factor_model__equals_the_dense_alternating_algorithm():
    """Three EM iterations on the exact path, with a covariate, against the algorithm written
    densely here: OLS start, masked PCA, REML of each factor by a bounded scalar optimiser of the
    profile likelihood, the E-step from the explicit covariance, the M-step trait by trait (y_t
    on [X, F^]); then the final E-step."""
    Z = genotype_blocks(120, 500, 1, 5)
    op = DenseOperator.from_genotypes(Z)
    K_g = op.K[0]
    n, T, K = 120, 8, 2
    rng = np.random.default_rng(7)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    Y = factor_traits(K_g, np.array([0.8, 0.5]), T=T, psi=0.2, missing=0.15, seed=2) + X @ rng.standard_normal((2, T))
    reml = FitConfig(method="exact", seed=3, tol_decrement=1e-14, max_iter=60)
    config = FactorConfig(n_factors=K, max_iter=3, tol=1e-12, e_step_tol=1e-12, pca_iter=20, reml=reml)
    result = fit_factor_model(op, Y, X, config)
    assert not result.converged and "no convergence in 3 iterations" in result.status and result.iterations == 3

    M = np.isfinite(Y).astype(float)
    Y0 = np.where(M > 0, Y, 0.0)
    B = _dense_ols(Y0, M, X)
    R = M * (Y0 - X @ B)
    assert (M.sum(axis=1) >= K).all()  # every sample has GLS scores
    F, Lambda = _dense_masked_pca(R, M, K, 20)
    floor = 1e-3 * (R**2).sum(axis=0) / M.sum(axis=0)
    psi = np.maximum(((R - M * (F @ Lambda)) ** 2).sum(axis=0) / M.sum(axis=0), floor)
    h2 = _dense_factor_h2(K_g, R, M, Lambda, psi)
    for _ in range(3):
        theta = np.column_stack([h2, 1 - h2])
        F, _ = dense_posterior(op.K, R, M, Lambda, psi, theta)
        s = h2 * np.trace(K_g) / n + 1 - h2  # the prior variances' mean diagonal
        C = np.linalg.inv(np.einsum("kt,it,lt->ikl", Lambda, M / psi, Lambda) + np.diag(1 / s))
        B, Lambda, psi = _dense_m_step(Y0, M, X, F, C, floor)
        R = M * (Y0 - X @ B)
        h2 = _dense_factor_h2(K_g, R, M, Lambda, psi)
    F, U = dense_posterior(op.K, R, M, Lambda, psi, np.column_stack([h2, 1 - h2]))
    sign = np.sign(Lambda[np.arange(K), np.abs(Lambda).argmax(axis=1)])
    np.testing.assert_allclose(result.h2_total, h2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.loadings, Lambda * sign[:, None], rtol=0, atol=1e-6 * np.abs(Lambda).max())
    np.testing.assert_allclose(result.psi, psi, rtol=1e-6)
    np.testing.assert_allclose(result.beta, B, rtol=0, atol=1e-6 * np.abs(B).max())
    np.testing.assert_allclose(result.factors, F * sign, rtol=0, atol=1e-6 * np.abs(F).max())
    scale = np.abs(Y[M > 0]).max()
    np.testing.assert_allclose(result.predicted(X), X @ B + F @ Lambda, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(result.genetic_values(), U.sum(axis=0) @ Lambda, rtol=0, atol=1e-6 * scale)


def test_fit_factor_model__covariate_effects_are_gls_at_the_fixed_point():
    """Run to (near) the fixed point (400 iterations, K = 1, n = 100, a covariate): B equals the
    dense GLS estimate (X_A^T V^-1 X_A)^-1 X_A^T V^-1 y at the final (Lambda, psi, theta), V the
    explicit covariance of the observed entries, to 1e-5, while OLS differs by far more."""
    n, T = 100, 5
    op = DenseOperator.from_genotypes(genotype_blocks(n, 300, 1, 5))
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    Y = factor_traits(op.K[0], np.array([0.7]), T=T, psi=0.5, missing=0.2, seed=1) + X @ rng.standard_normal((2, T))
    reml = FitConfig(method="exact", seed=1, tol_decrement=1e-12)
    result = fit_factor_model(op, Y, X, FactorConfig(n_factors=1, max_iter=400, tol=1e-7, e_step_tol=1e-12, reml=reml))
    assert result.history[-1]["remaining_beta"] < 1e-6

    obs = np.argwhere(np.isfinite(Y))
    i, t = obs[:, 0], obs[:, 1]
    Lambda, theta = result.loadings, result.theta
    Sigma = np.einsum("kg,gij->kij", theta[:, :-1], op.K) + theta[:, -1, None, None] * np.eye(n)
    V = np.einsum("ka,kb,kab->ab", Lambda[:, t], Lambda[:, t], Sigma[:, i][:, :, i]) + np.diag(result.psi[t])
    p = X.shape[1]
    XA = np.zeros((len(obs), p * T))  # vec B (trait-major) -> observed entries of X B
    for row, (sample, trait) in enumerate(obs):
        XA[row, trait * p : (trait + 1) * p] = X[sample]
    solved = np.linalg.solve(V, np.column_stack([XA, Y[i, t]]))
    gls = np.linalg.solve(XA.T @ solved[:, :-1], XA.T @ solved[:, -1]).reshape(T, p).T
    np.testing.assert_allclose(result.beta, gls, rtol=0, atol=1e-5 * np.abs(gls).max())
    assert np.abs(_dense_ols(np.where(np.isfinite(Y), Y, 0.0), np.isfinite(Y), X) - gls).max() > 1e-3 * np.abs(gls).max()


def test_fit_factor_model__randomised_within_monte_carlo_error_of_exact():
    """The same two iterations on the randomised path: h2 within 3 Monte Carlo SEs of the exact
    path's, the loadings within 1% (the E-step solves are the same; only REML is randomised)."""
    Z = genotype_blocks(120, 500, 1, 5)
    op = DenseOperator.from_genotypes(Z)
    Y = factor_traits(op.K[0], np.array([0.8, 0.5]), T=8, psi=0.2, missing=0.15, seed=2)
    fits = {
        method: fit_factor_model(op, Y, None, FactorConfig(n_factors=2, max_iter=2, reml=FitConfig(method=method, seed=3)))
        for method in ("exact", "randomised")
    }
    exact, randomised = fits["exact"], fits["randomised"]
    assert randomised.method == "randomised" and randomised.passes > exact.passes == 1
    assert (randomised.h2_mc_se > 0).all() and (exact.h2_mc_se == 0).all()
    assert (np.abs(randomised.h2_total - exact.h2_total) < 3 * randomised.h2_mc_se).all()
    np.testing.assert_allclose(randomised.loadings, exact.loadings, rtol=0, atol=1e-2 * np.abs(exact.loadings).max())


def test_fit_factor_model__raise_on_factor_count_not_below_trait_count():
    op = DenseOperator(np.eye(20))
    with pytest.raises(InputError, match="factor count K = 3 must be at least 1 and smaller than the number of traits T = 3"):
        fit_factor_model(op, np.zeros((20, 3)), None, FactorConfig(n_factors=3))


def test_fit_factor_model__raise_on_no_traits():
    op = DenseOperator(np.eye(20))
    with pytest.raises(InputError, match=r"no traits left to fit \(T = 0"):
        fit_factor_model(op, np.zeros((20, 0)), None, FactorConfig(n_factors=1))


def test_fit_factor_model__raise_on_trait_with_too_few_observations():
    op = DenseOperator(np.eye(20))
    Y = np.random.default_rng(0).standard_normal((20, 4))
    Y[2:, 1] = np.nan
    with pytest.raises(InputError, match="trait 1 has too few observed samples"):
        fit_factor_model(op, Y, None, FactorConfig(n_factors=2))


def test_factor_config__raise_on_invalid_setting():
    with pytest.raises(ValueError, match="n_factors must be at least 1"):
        FactorConfig(n_factors=0)


def _gls_problem():
    """K = 1, n = 100, T = 5 with a covariate, a fifth missing (the GLS test's problem)."""
    n, T = 100, 5
    op = DenseOperator.from_genotypes(genotype_blocks(n, 300, 1, 5))
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    Y = factor_traits(op.K[0], np.array([0.7]), T=T, psi=0.5, missing=0.2, seed=1) + X @ rng.standard_normal((2, T))
    return op, Y, X


def test_fit_factor_model__accelerated_reaches_the_plain_fixed_point_in_fewer_iterations():
    """SQUAREM against the plain EM run to its stopping rule (exact path, tol 1e-6): both meet the
    rule, the accelerated run in at most a quarter of the EM evaluations (measured: 38 against
    285), with extrapolations of |alpha| > 1 accepted; the same fixed point. Tolerances: the rule
    bounds each run's changes and estimated remaining distances of Lambda (relative), h2 and B
    (on the residuals' scale) by tol, so the runs differ by a few tol; 10 tol. psi is not in the
    rule and follows Lambda (measured 1e-5 relative here): 100 tol."""
    op, Y, X = _gls_problem()
    tol = 1e-6
    reml = FitConfig(method="exact", seed=1, tol_decrement=1e-12)
    fits = {
        accelerate: fit_factor_model(
            op, Y, X, FactorConfig(n_factors=1, max_iter=600, tol=tol, e_step_tol=1e-12, accelerate=accelerate, reml=reml)
        )
        for accelerate in (False, True)
    }
    plain, fast = fits[False], fits[True]
    assert plain.converged and fast.converged
    assert 4 * fast.iterations <= plain.iterations
    steps = [h for h in fast.history if h["step"] == "stabilise"]
    assert any(h["accepted"] and h["alpha"] < -1 for h in steps)
    assert len(fast.history) == fast.iterations and {h["step"] for h in fast.history} == {"em", "stabilise"}
    np.testing.assert_allclose(fast.h2_total, plain.h2_total, rtol=0, atol=10 * tol)
    np.testing.assert_allclose(fast.loadings, plain.loadings, rtol=0, atol=10 * tol * np.linalg.norm(plain.loadings))
    np.testing.assert_allclose(fast.psi, plain.psi, rtol=100 * tol)
    fit_scale = np.linalg.norm(X @ plain.beta)
    assert np.linalg.norm(X @ (fast.beta - plain.beta)) < 10 * tol * fit_scale


def test_fit_factor_model__accelerated_falls_back_to_the_plain_point(monkeypatch):
    """With every extrapolation replaced by a point far along the cycle's direction (alpha = -4,
    u' = u0 + 1e3 (u2 - u0)), the safeguard rejects each one, so the run after 8 EM evaluations
    (cycles: 2 plain steps, a rejected stabilising step) is the plain EM after 6 steps, to
    rounding; the history records the rejections."""
    op, Y, X = _gls_problem()
    monkeypatch.setattr(factors, "extrapolate", lambda u0, u1, u2, step_max: (-4.0, u0 + 1e3 * (u2 - u0)))
    reml = FitConfig(method="exact", seed=1)
    config = FactorConfig(n_factors=1, max_iter=8, tol=1e-12, e_step_tol=1e-12, reml=reml)
    fast = fit_factor_model(op, Y, X, dataclasses.replace(config, accelerate=True))
    plain = fit_factor_model(op, Y, X, dataclasses.replace(config, max_iter=6))
    steps = [h["step"] for h in fast.history]
    assert steps == ["em", "em", "stabilise"] * 2 + ["em", "em"] and fast.iterations == 8
    rejected = [h for h in fast.history if h["step"] == "stabilise"]
    assert all(h["accepted"] is False and h["residual"] > 10 * h["plain_residual"] for h in rejected)
    for name in ("h2_total", "loadings", "psi", "beta", "factors"):
        np.testing.assert_allclose(getattr(fast, name), getattr(plain, name), rtol=1e-12, atol=1e-14, err_msg=name)
    assert [h["h2"] for h in fast.history if h["step"] == "em"] == [h["h2"] for h in plain.history]


def test_squarem_coordinates__round_trip_and_projection():
    """u -> parameters inverts parameters -> u (1e-12); out of range values go to the floors:
    psi to psi_min, a negative theta_g to 0, theta_e to at least 1e-3 (theta_g scaled down)."""
    rng = np.random.default_rng(0)
    p, T, K = 2, 4, 2
    psi_min = np.full(T, 0.01)
    coords = Coordinates(np.array([1.0, 2.0]), np.array([1.0, 0.5, 3.0, 2.0]), psi_min, K, 1)
    delta, Lambda, psi = rng.standard_normal((p, T)), rng.standard_normal((K, T)), rng.uniform(0.1, 1, T)
    theta = np.array([[0.3, 0.7], [0.6, 0.4]])
    *back, projected = coords.parameters(coords.vector(delta, Lambda, psi, theta))
    assert not projected
    for a, b in zip(back, (delta, Lambda, psi, theta)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    u = coords.vector(delta, Lambda, np.array([1e-4, 0.5, 0.5, 0.5]), theta)
    u[-2:] = [-0.2, 1.5]  # theta_g of the two factors
    _, _, psi2, theta2, projected = coords.parameters(u)
    assert projected
    np.testing.assert_allclose(psi2, [0.01, 0.5, 0.5, 0.5], rtol=1e-12)
    np.testing.assert_allclose(theta2, [[0.0, 1.0], [1 - 1e-3, 1e-3]], rtol=1e-12)
