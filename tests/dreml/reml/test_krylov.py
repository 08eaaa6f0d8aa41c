"""Lanczos quadrature for every shift (`dreml.reml.krylov`) against dense linear algebra and
plain CG: the quadratic forms w^T H^-1 w, (K w)^T H^-1 w and w^T log(H) w at several theta
(1e-10), the residual it reports against CG run for as many steps, the indefinite case, and
quadratures that do not depend on how far the run was extended."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dreml.operators import DenseOperator
from dreml.reml.evaluation import IndefiniteError
from dreml.reml.krylov import LanczosProbes
from tests.dreml.reml.cohort import dense_operator, genotype_blocks

N, M = 240, 600
THETAS = [np.array([0.5, 0.5]), np.array([3.0, 0.05]), np.array([0.0, 1.3]), np.array([0.2, 2.0])]


@pytest.fixture(scope="module")
def problem():
    op = dense_operator(genotype_blocks(N, M, 1, 3))
    K = op.matmat(np.eye(N))[0]
    W = np.random.default_rng(1).choice([-1.0, 1.0], size=(N, 12))
    return op, K, W


def _run(problem, max_steps: int = 400) -> LanczosProbes:
    op, K, W = problem
    return LanczosProbes(op, W, K @ W, max_steps, threading.Lock())


@pytest.mark.parametrize("theta", THETAS, ids=str)
def test_quadrature__equals_dense_forms(problem, theta):
    op, K, W = problem
    H = theta[0] * K + theta[1] * np.eye(N)
    HiW = np.linalg.solve(H, W)
    quad = _run(problem).quadrature(theta, 1e-11)
    assert quad.converged and quad.residual <= 1e-11
    np.testing.assert_allclose(quad.wHw, np.einsum("nb,nb->b", W, HiW), rtol=1e-10)
    np.testing.assert_allclose(quad.KwHw, np.einsum("nb,nb->b", K @ W, HiW), rtol=1e-9, atol=1e-10 * N)
    lam, vecs = np.linalg.eigh(H)
    logH = (vecs * np.log(lam)) @ vecs.T
    np.testing.assert_allclose(_run(problem).log_forms(theta, 1e-11), np.einsum("nb,nb->b", W, logH @ W), rtol=1e-9, atol=1e-9)


def test_quadrature__reports_the_residual_of_cg_after_as_many_steps(problem):
    op, K, W = problem
    theta, steps = np.array([3.0, 0.05]), 6
    quad = _run(problem, max_steps=steps).quadrature(theta, 1e-12)
    assert not quad.converged and (quad.steps == steps).all()
    H = theta[0] * K + theta[1] * np.eye(N)
    # plain CG from 0, `steps` iterations, every probe: its residual and w^T x
    x, r = np.zeros_like(W), W.copy()
    p = r.copy()
    for _ in range(steps):
        Hp = H @ p
        a = (r * r).sum(0) / (p * Hp).sum(0)
        x, r_new = x + a * p, r - a * Hp
        p, r = r_new + (r_new * r_new).sum(0) / (r * r).sum(0) * p, r_new
    residual = np.linalg.norm(W - H @ x, axis=0) / np.linalg.norm(W, axis=0)
    assert quad.residual == pytest.approx(residual.max(), rel=1e-6)
    np.testing.assert_allclose(quad.wHw, np.einsum("nb,nb->b", W, x), rtol=1e-9)


def test_quadrature__does_not_depend_on_how_far_the_run_went(problem):
    fresh, extended = _run(problem), _run(problem)
    easy, hard = np.array([0.2, 2.0]), np.array([3.0, 0.05])
    extended.quadrature(hard, 1e-8)
    assert extended.steps > fresh.quadrature(easy, 1e-8).steps.max() == fresh.steps
    a, b = fresh.quadrature(easy, 1e-8), extended.quadrature(easy, 1e-8)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_array_equal(a.wHw, b.wHw)


def test_quadrature__raise_on_indefinite_H_at_its_first_negative_pivot(problem):
    op, K, W = problem
    theta = np.array([-1.0, 0.5])  # theta_e + theta_g lambda_max(K) < 0
    assert np.linalg.eigvalsh(theta[0] * K + theta[1] * np.eye(N)).min() < 0
    run = _run(problem)
    with pytest.raises(IndefiniteError, match="not positive definite"):
        run.quadrature(theta, 1e-8)
    assert run.steps < 40  # stopped at the first negative pivot, not at the step limit (400)


def test_LanczosProbes__raise_on_several_components(problem):
    op, K, W = problem
    two = DenseOperator(np.stack([K, K]), ("a", "b"))
    with pytest.raises(ValueError, match="one genetic component"):
        LanczosProbes(two, W, K @ W, 10, threading.Lock())
