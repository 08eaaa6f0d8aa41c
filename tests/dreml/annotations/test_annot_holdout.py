"""Held-out chromosomes (`heldout_loglik`), exact path against an independent dense computation:
the training fit's one-component REML (`fit_reml` on `DenseOperator`), the prediction written out
in NumPy, and max over theta_e of the REML log-likelihood by an eigendecomposition and Brent's
method; `map.predict` against the maps' own sigma2 on the fitted variants."""

from __future__ import annotations

import numpy as np
import pytest
from annot_sim import genotypes, phenotype
from scipy.linalg import null_space
from scipy.optimize import minimize_scalar

from dreml.annotations import AnnotConfig
from dreml.annotations.holdout import heldout_loglik, parse_chromosomes
from dreml.annotations.maps import LdakMap, LinearMap, MlpMap
from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.reml import FitConfig, fit_reml

EXACT = AnnotConfig(method="exact", tol_decrement=1e-13, max_iter=100, seed=1)


def profile_reml_loglik(Z: np.ndarray, sigma2: np.ndarray, y: np.ndarray, X: np.ndarray) -> tuple[float, float]:
    """max over theta_e of -1/2 [log|H| + log|X^T H^-1 X| + y^T P y], H = Z diag(sigma2) Z^T + theta_e I.

    With Q an orthonormal basis of X's null space and Q^T Z diag(sigma2) Z^T Q = U diag(lam) U^T,
    log|H| + log|X^T H^-1 X| = sum log(lam + theta_e) + log|X^T X| and y^T P y = sum (U^T Q^T y)^2 / (lam + theta_e).
    """
    Q = null_space(X.T)
    lam, U = np.linalg.eigh(Q.T @ (Z * sigma2) @ Z.T @ Q)
    u2 = (U.T @ Q.T @ y) ** 2
    logdet_xx = np.linalg.slogdet(X.T @ X)[1]

    def neg(log_t):
        t = np.exp(log_t)
        return 0.5 * (np.sum(np.log(lam + t)) + logdet_xx + np.sum(u2 / (lam + t)))

    best = minimize_scalar(neg, bounds=(-8, 3), method="bounded", options={"xatol": 1e-12})
    return -best.fun, float(np.exp(best.x))


def _data():
    n, m = 150, 180
    Z, _ = genotypes(n, m, seed=61)
    rng = np.random.default_rng(62)
    A = np.column_stack([rng.integers(0, 2, m), rng.standard_normal(m)]).astype(float)
    y = phenotype(Z, 0.6 * np.exp(A[:, 1]) / np.exp(A[:, 1]).sum(), 0.4, seed=63)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    return Z, A, y, X, np.repeat(["1", "2", "3"], [50, 70, 60])


def test_heldout_loglik__exact_equals_dense_reference():
    Z, A, y, X, chrom = _data()
    out = heldout_loglik(Z, y, X, chromosomes=chrom, holdout=["2"], annotations=A, columns=("b", "c"), config=EXACT)
    (h,) = out
    test = chrom == "2"
    assert (h.chromosome, h.m_train, h.m_test) == ("2", 110, 70)
    assert h.train["converged"], h.train["status"]
    tau = np.array(h.train["params"])
    sigma2 = np.exp(tau[0] + A[test] @ tau[1:])
    ref, theta_e = profile_reml_loglik(Z[:, test], sigma2, y, X)
    assert h.vg_test == pytest.approx(sigma2.sum(), rel=1e-12)
    assert abs(h.loglik - ref) < 1e-8
    assert h.theta_e == pytest.approx(theta_e, rel=1e-5)
    one = fit_reml(DenseOperator.from_genotypes([Z[:, ~test]]), y, X, FitConfig(method="exact", tol_decrement=1e-20, seed=1))
    grouped = np.full(70, one.theta[0] / 110)
    assert h.vg_test_grouped == pytest.approx(grouped.sum(), rel=1e-6)
    assert abs(h.loglik_grouped - profile_reml_loglik(Z[:, test], grouped, y, X)[0]) < 1e-6
    assert h.difference == pytest.approx(h.loglik - h.loglik_grouped, abs=1e-12)
    assert h.loglik_se == 0 and h.passes > 0


def test_heldout_loglik__randomised_within_monte_carlo_error():
    """The randomised path: its held-out logL (SLQ) at its own prediction equals the dense
    profile likelihood there within 4 Monte Carlo SEs (theta_e's MC error enters at second order)."""
    Z, A, y, X, chrom = _data()
    config = AnnotConfig(method="randomised", seed=3, pcg_tol=1e-8, probe_tol=1e-6, slq_tol=1e-6)
    (h,) = heldout_loglik(Z, y, X, chromosomes=chrom, holdout=["3"], annotations=A, config=config)
    tau, test = np.array(h.train["params"]), chrom == "3"
    ref, _ = profile_reml_loglik(Z[:, test], np.exp(tau[0] + A[test] @ tau[1:]), y, X)
    assert 0 < h.loglik_se < 1
    assert abs(h.loglik - ref) < 4 * h.loglik_se
    assert h.passes > 0


def test_predict__equals_sigma2_on_the_fitted_variants():
    rng = np.random.default_rng(7)
    A, p = rng.standard_normal((40, 2)), rng.uniform(0.05, 0.5, 40)
    for vmap, phi in (
        (LdakMap(p), np.array([-3.0, -0.3])),
        (LinearMap(A, ("a", "b")), np.array([-3.0, 0.4, -0.2])),
        (MlpMap(A, ("a", "b"), (3,), seed=2), None),
    ):
        phi = phi if phi is not None else vmap.init(0.01) + 0.3 * rng.standard_normal(len(vmap.names))
        np.testing.assert_allclose(vmap.predict(phi, A, p), np.asarray(vmap.sigma2(phi)), rtol=1e-12)


def test_heldout_loglik__raise_on_absent_chromosome():
    Z, _ = genotypes(30, 20, seed=1)
    with pytest.raises(InputError, match="no fitted variant is on chromosome 7"):
        heldout_loglik(Z, np.arange(30.0), chromosomes=np.repeat(["1", "2"], 10), holdout=["7"], annotations=np.arange(20.0))


def test_heldout_loglik__raise_on_only_chromosome():
    Z, _ = genotypes(30, 20, seed=1)
    with pytest.raises(InputError, match="every fitted variant is on chromosome 1"):
        heldout_loglik(Z, np.arange(30.0), chromosomes=np.repeat("1", 20), holdout=["1"], annotations=np.arange(20.0))


def test_parse_chromosomes__raise_on_repeat():
    with pytest.raises(InputError, match="a chromosome is repeated in 1,2,1"):
        parse_chromosomes("1,2,1")
