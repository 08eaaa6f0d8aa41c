"""Block PCG, SLQ and the projected-core preconditioner against dense linear algebra."""

import numpy as np
import pytest
from cohort import dense_operator, genotype_blocks

import dreml.reml  # noqa: F401  (x64 on)
from dreml.reml.evaluation import IndefiniteError
from dreml.reml.pcg import block_pcg
from dreml.reml.preconditioner import build_projected_core, range_basis
from dreml.reml.probes import rademacher
from dreml.reml.slq import slq_logdet

N = 400
THETA = np.array([0.3, 0.2, 0.5])


@pytest.fixture(scope="module")
def op():
    return dense_operator(genotype_blocks(N, 1500, 2, 7))


def dense_H(op, theta):
    return np.tensordot(theta[:-1], op.K, axes=1) + theta[-1] * np.eye(N)


def core_for(op, rank, seed=0):
    rng = np.random.default_rng(seed)
    W = rademacher(rng, N, 20)
    Q = range_basis(op, rng.standard_normal((N, rank + 8)), 2)
    return build_projected_core(Q, op.matmat(Q), W, op.matmat(W), rank, op.traces())


def apply_H(op, theta):
    return lambda V: op.matmat(V, weights=theta[:-1]) + theta[-1] * V


def test_block_pcg__matches_dense_solve(op):
    B = np.random.default_rng(1).standard_normal((N, 5))
    result = block_pcg(apply_H(op, THETA), B, solve_M=core_for(op, 32).at(THETA).solve, tol=1e-12, max_iter=500)
    expected = np.linalg.solve(dense_H(op, THETA), B)
    assert result.status == "converged" and result.converged.all()
    np.testing.assert_allclose(result.x, expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())
    assert result.iterations == result.column_iterations.max() > 1  # the iterative path ran


def test_block_pcg__reports_non_convergence(op):
    B = np.random.default_rng(1).standard_normal((N, 3))
    result = block_pcg(apply_H(op, THETA), B, tol=1e-12, max_iter=2)
    assert not result.converged.any() and result.iterations == 2
    assert "3 of 3 columns did not reach" in result.status


def test_preconditioner__woodbury_logdet_sqrt_traces_match_dense(op):
    M = core_for(op, 24).at(THETA)
    U, n = np.asarray(M.U), N
    M_dense = M.d * (np.eye(n) - U @ U.T) + U @ M.core @ U.T
    R = np.random.default_rng(2).standard_normal((n, 4))
    np.testing.assert_allclose(np.asarray(M.solve(R)), np.linalg.solve(M_dense, R), rtol=1e-10, atol=1e-12)
    assert abs(M.logdet() - np.linalg.slogdet(M_dense)[1]) < 1e-10 * n
    S = M.sqrt_apply(np.eye(n))
    np.testing.assert_allclose(S @ S.T, M_dense, atol=1e-10)
    Mi = np.linalg.inv(M_dense)
    expected = [np.sum(Mi * K) for K in op.K] + [np.trace(Mi)]
    np.testing.assert_allclose(M.traces(), expected, rtol=1e-10)
    # with exact traces, tr(M^-1 H) = n: what SLQ's control variate relies on
    assert abs(THETA @ M.traces() - n) < 1e-8


def test_preconditioner__saves_pcg_iterations():
    op = dense_operator(genotype_blocks(1000, 2000, 1, 3))
    theta = np.array([0.6, 0.4])
    B = np.random.default_rng(0).standard_normal((1000, 4))
    n, iters = 1000, {}
    for rank in (0, 64):
        rng = np.random.default_rng(0)
        W = rademacher(rng, n, 8)
        Q = range_basis(op, rng.standard_normal((n, rank + 8 if rank else 0)), 2)
        core = build_projected_core(Q, op.matmat(Q), W, op.matmat(W), rank, op.traces())
        iters[rank] = block_pcg(apply_H(op, theta), B, solve_M=core.at(theta).solve, tol=1e-8, max_iter=500).iterations
    assert iters[64] < iters[0]


@pytest.mark.parametrize("rank", [0, 32])
def test_slq__logdet_within_monte_carlo_bound(op, rank):
    """log|H| = log|M| + SLQ: within 4 Monte Carlo standard errors, which are below 0.5 here."""
    M = core_for(op, rank).at(THETA)
    Z = rademacher(np.random.default_rng(5), N, 40)
    result = block_pcg(apply_H(op, THETA), M.sqrt_apply(Z), solve_M=M.solve, tol=1e-10, max_iter=500)
    slq, se = slq_logdet(result, np.arange(40), float(THETA @ M.traces()))
    exact = np.linalg.slogdet(dense_H(op, THETA))[1]
    assert abs(M.logdet() + slq - exact) < 4 * se
    assert 0 < se < 0.5


def test_block_pcg__warm_start_and_column_tolerances(op):
    """A warm start near the solution needs fewer iterations; each column stops at its own tolerance."""
    B = np.random.default_rng(3).standard_normal((N, 2))
    expected = np.linalg.solve(dense_H(op, THETA), B)
    cold = block_pcg(apply_H(op, THETA), B, tol=np.array([1e-10, 1e-3]), max_iter=500)
    assert cold.converged.all() and cold.residuals[1] <= 1e-3 and cold.column_iterations[1] < cold.column_iterations[0]
    x0 = expected + 1e-6 * np.random.default_rng(4).standard_normal(B.shape)
    warm = block_pcg(apply_H(op, THETA), B, tol=1e-10, max_iter=500, x0=x0, Hx0=dense_H(op, THETA) @ x0)
    np.testing.assert_allclose(warm.x, expected, rtol=1e-8, atol=1e-8 * np.abs(expected).max())
    assert warm.iterations < cold.column_iterations[0]
    np.testing.assert_allclose(warm.r, B - dense_H(op, THETA) @ warm.x, atol=1e-9)  # recursive = true residual


def test_block_pcg__raise_on_x0_without_product(op):
    B = np.ones((N, 1))
    with pytest.raises(ValueError, match="x0 and Hx0 must both be given"):
        block_pcg(apply_H(op, THETA), B, tol=1e-6, max_iter=5, x0=np.zeros((N, 1)))


def test_block_pcg__stops_on_negative_curvature(op):
    """theta_2 < 0 large enough that H has negative eigenvalues: some CG direction has p^T H p <= 0."""
    theta = np.array([0.3, -0.5, 0.2])
    lam = np.linalg.eigvalsh(dense_H(op, theta))
    assert lam[0] < 0 < lam[-1]
    B = np.random.default_rng(6).standard_normal((N, 4))
    result = block_pcg(apply_H(op, theta), B, tol=1e-10, max_iter=500)
    assert result.indefinite and not result.converged.any()
    assert result.status.startswith("H is not positive definite: p^T H p = -")
    assert result.iterations == result.alpha.shape[0] < 500  # stopped early, the breaking pass counted
    assert not block_pcg(apply_H(op, THETA), B, tol=1e-10, max_iter=500).indefinite


def test_preconditioner__raise_on_indefinite_theta(op):
    with pytest.raises(IndefiniteError, match="preconditioner M\\(theta\\) is not positive definite"):
        core_for(op, 24).at(np.array([0.3, -5.0, 0.2]))
