"""Gradients of the annotated REML likelihood: exact against finite differences of an independent
dense log-likelihood (sim.reml_loglik), Hutchinson against the exact gradient over probe seeds."""

from __future__ import annotations

import numpy as np
import pytest
from annot_sim import genotypes, phenotype, reml_loglik

from dreml.annotations.likelihood import (
    ExactEvaluator,
    RandomisedEvaluator,
    SolverSettings,
)
from dreml.annotations.maps import LdakMap, LinearMap
from dreml.annotations.variants import DenseVariants, GenotypeVariants


def _data(n=120, m=150, seed=3):
    Z, p = genotypes(n, m, seed)
    rng = np.random.default_rng(seed + 1)
    A = np.column_stack([rng.integers(0, 2, m).astype(float), rng.standard_normal(m)])
    y = phenotype(Z, np.full(m, 0.5 / m), 0.5, seed + 2)
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    return Z, p, A, y, X


def _maps(p, A):
    return {
        "ldak": (LdakMap(p), np.array([np.log(0.004), -0.4])),
        "linear": (LinearMap(A, ("bin", "cont")), np.array([np.log(0.003), 0.5, -0.2])),
    }


def _numpy_sigma2(name, p, A, phi):
    if name == "ldak":
        v = (2 * p * (1 - p)) ** (1 + phi[1])
        return np.exp(phi[0]) * v / v.mean()
    return np.exp(phi[0] + A @ phi[1:])


@pytest.mark.parametrize("name", ["ldak", "linear"])
def test_exact_gradient__matches_finite_differences(name):
    Z, p, A, y, X = _data()
    vmap, phi = _maps(p, A)[name]
    psi = np.append(phi, np.log(0.6))
    point = ExactEvaluator(DenseVariants(Z), vmap, y, X).evaluate(psi)

    def loglik(psi_):
        return reml_loglik(Z, _numpy_sigma2(name, p, A, psi_[:-1]), np.exp(psi_[-1]), y, X)

    assert point.loglik == pytest.approx(loglik(psi), rel=1e-12)
    h = 1e-5
    fd = np.array([(loglik(psi + h * e) - loglik(psi - h * e)) / (2 * h) for e in np.eye(psi.size)])
    np.testing.assert_allclose(point.grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_exact_variant_gradient__matches_finite_differences():
    Z, _p, A, y, X = _data()
    vmap = LinearMap(A, ("bin", "cont"))
    psi = np.array([np.log(0.003), 0.5, -0.2, np.log(0.6)])
    point = ExactEvaluator(DenseVariants(Z), vmap, y, X).evaluate(psi)
    sigma2 = point.sigma2
    h = 1e-7
    for j in (0, 7, 149):
        e = np.zeros_like(sigma2)
        e[j] = h
        fd = (reml_loglik(Z, sigma2 + e, 0.6, y, X) - reml_loglik(Z, sigma2 - e, 0.6, y, X)) / (2 * h)
        assert point.variant_grad[j] == pytest.approx(fd, rel=1e-6)


def test_exact_information__is_fisher_information():
    """AI = 1/2 (dH P y)^T P (dH P y) equals its definition written with dense dH / d psi_a."""
    Z, p, A, y, X = _data(n=60, m=40)
    vmap = LdakMap(p)
    psi = np.array([np.log(0.01), -0.3, np.log(0.5)])
    ev = ExactEvaluator(DenseVariants(Z), vmap, y, X)
    point = ev.evaluate(psi)
    ai = ev.information(point)
    P, Py = point.data["P"], point.data["Py"]
    h = 1e-6
    dsig = [
        (_numpy_sigma2("ldak", p, A, psi[:-1] + h * e) - _numpy_sigma2("ldak", p, A, psi[:-1] - h * e)) / (2 * h)
        for e in np.eye(2)
    ]
    dH = [Z @ np.diag(d) @ Z.T for d in dsig] + [np.exp(psi[-1]) * np.eye(Z.shape[0])]
    ref = np.array([[0.5 * Py @ Da @ P @ Db @ Py for Db in dH] for Da in dH])
    np.testing.assert_allclose(ai, ref, rtol=1e-6)


@pytest.mark.parametrize("control_variates", [False, True])
def test_hutchinson_gradient__unbiased_within_stated_error(control_variates):
    """50 probe seeds: the mean gradient is within 4 standard errors of the exact one and the
    stated Monte Carlo SE matches the spread over seeds."""
    Z, p, A, y, X = _data(n=100, m=120, seed=5)
    vmap, phi = _maps(p, A)["linear"]
    psi = np.append(phi, np.log(0.6))
    exact = ExactEvaluator(DenseVariants(Z), vmap, y, X).evaluate(psi).grad
    settings = SolverSettings(n_probes=30, pcg_tol=1e-10, probe_tol=1e-10, control_variates=control_variates, warm_start=False)
    grads, ses = [], []
    for seed in range(50):
        point = RandomisedEvaluator(DenseVariants(Z), vmap, y, X, settings, seed).evaluate(psi)
        grads.append(point.grad)
        ses.append(np.sqrt(np.diag(point.grad_cov)))
    grads, ses = np.array(grads), np.array(ses)
    spread = grads.std(axis=0, ddof=1)
    assert (np.abs(grads.mean(axis=0) - exact) < 4 * spread / np.sqrt(50)).all()
    ratio = ses.mean(axis=0) / spread
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), ratio


def test_control_variates__reduce_the_error():
    Z, p, A, y, X = _data(n=100, m=120, seed=5)
    vmap, phi = _maps(p, A)["ldak"]
    psi = np.append(phi, np.log(0.6))
    se = {}
    for cv in (False, True):
        settings = SolverSettings(n_probes=40, pcg_tol=1e-8, probe_tol=1e-8, control_variates=cv)
        se[cv] = np.sqrt(np.diag(RandomisedEvaluator(DenseVariants(Z), vmap, y, X, settings, 1).evaluate(psi).grad_cov))
    assert (se[True][:-1] < se[False][:-1]).all()


class _FakeGenotypeOperator:
    """Two components' zt_matmat / z_matmat over column blocks of an explicit Z."""

    def __init__(self, Z, split):
        self.Zs = [Z[:, :split], Z[:, split:]]
        self.m = np.array([split, Z.shape[1] - split])
        self.shape = (Z.shape[0], Z.shape[0])
        self.passes = 0

    def zt_matmat(self, U):
        self.passes += 1
        return [z.T @ U for z in self.Zs]

    def z_matmat(self, B):
        self.passes += 1
        return np.stack([z @ b for z, b in zip(self.Zs, B)])


def test_genotype_variants__products_in_component_order():
    Z, *_ = _data(n=30, m=20)
    ops = GenotypeVariants(_FakeGenotypeOperator(Z, 7))
    rng = np.random.default_rng(0)
    U, B = rng.standard_normal((30, 3)), rng.standard_normal((20, 3))
    np.testing.assert_allclose(ops.zt(U), Z.T @ U, rtol=1e-12)
    np.testing.assert_allclose(ops.z(B), Z @ B, rtol=1e-12)
    np.testing.assert_allclose(ops.explicit(), Z, rtol=1e-12)
    assert ops.m == 20 and ops.n == 30
