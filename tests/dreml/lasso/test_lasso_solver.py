"""The LASSO at fixed theta through the operators against an independent dense solver.

Reference: the whitened problem written densely (explicit H = theta_1 K + theta_e I from the
independent PLINK reader, its Cholesky factor, the covariates projected out) solved by FISTA
(accelerated proximal gradient, Beck and Teboulle 2009) to 1e-13: another algorithm on
another representation of the same objective.
"""

from __future__ import annotations

import numpy as np
import pytest

from converters import convert
from dreml.components import Components
from dreml.lasso.metric import PenalisedColumns, PMetric
from dreml.lasso.solver import WorkingSet, coordinate_descent, kkt_check, solve_lasso
from dreml.operators import DenseOperator, StreamingOperator
from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from tests.dreml.lasso.lasso_reference import dense_P, fista, whitened
from tests.plink_reference import read_dosage

N, M, S = 240, 500, 120  # the last S variants are penalised, the others the polygenic component


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    root = tmp_path_factory.mktemp("lasso")
    config = SimulationConfig(n_samples=N, n_variants=M, n_chromosomes=1, group_variances=(0.3,), maf_min=0.02, seed=4)
    simulate_cohort(config, root / "c")
    store = convert("bed", root / "c", root / "c.zarr", variant_chunk=128, sample_chunk=100)
    Z, polymorphic = standardise(read_dosage(root / "c", N, M))  # shape: (m, n)
    assert polymorphic.all()
    Z = Z.T  # shape: (n, m)
    rng = np.random.default_rng(5)
    b_true = np.zeros(S)
    b_true[rng.choice(S, 6, replace=False)] = rng.choice([-1, 1], 6) * 0.25
    X = np.column_stack([np.ones(N), rng.standard_normal(N)])
    polygenic = Z[:, : M - S] @ rng.standard_normal(M - S) * np.sqrt(0.3 / (M - S))
    y = X @ [0.5, -0.2] + Z[:, M - S :] @ b_true + polygenic + rng.standard_normal(N) * 0.7
    # H through the dense operator of the reference genotypes (fast passes for the many PCG
    # iterations); the penalised columns through the store
    ops = [
        DenseOperator.from_genotypes([Z[:, : M - S]], ["g"]),
        StreamingOperator(store, Components(("s",), (np.arange(M - S, M),)), dtype=np.float64),
    ]
    return Z, X, y, ops


@pytest.mark.parametrize("theta", [np.array([0.4, 0.6]), np.array([0.0, 1.0])])
def test_solve_lasso__equals_fista_on_the_whitened_problem(problem, theta):
    Z, X, y, (op_g, op_s) = problem
    metric = PMetric(op_g, X, theta, tol=1e-12)
    columns = PenalisedColumns(op_s)
    Py = metric.apply(y)[:, 0]
    lam_max = np.max(np.abs(columns.zt(Py)[:, 0]))
    weights = np.random.default_rng(1).uniform(0.5, 2.0, S)
    A, y_w = whitened(Z[:, : M - S], Z[:, M - S :], X, y, theta)
    assert np.max(np.abs(A.T @ y_w)) == pytest.approx(lam_max, rel=1e-9)
    working = WorkingSet(metric, columns, Py)
    b = np.zeros(S)
    for lam in (0.5 * lam_max, 0.2 * lam_max):
        solution = solve_lasso(working, y, lam, weights, b, np.zeros(S, dtype=bool))
        expected = fista(A, y_w, lam * weights)
        assert solution.converged and solution.kkt.violations == 0
        assert 0 < len(solution.active) < S
        np.testing.assert_allclose(solution.b, expected, atol=1e-6 * np.max(np.abs(expected)))
        b = solution.b


def test_solve_lasso__theta_g_zero_is_ordinary_weighted_lasso(problem):
    # theta_g = 0, theta_e = 1: P = I - X (X^T X)^-1 X^T, an ordinary weighted LASSO on the
    # covariate-residualised problem
    Z, X, y, (op_g, op_s) = problem
    metric = PMetric(op_g, X, np.array([0.0, 1.0]), tol=1e-12)
    columns = PenalisedColumns(op_s)
    Py = metric.apply(y)[:, 0]
    Q = np.linalg.qr(X)[0]
    Zs = Z[:, M - S :] - Q @ (Q.T @ Z[:, M - S :])
    ys = y - Q @ (Q.T @ y)
    weights = np.ones(S)
    lam = 0.3 * np.max(np.abs(Zs.T @ ys))
    solution = solve_lasso(WorkingSet(metric, columns, Py), y, lam, weights, np.zeros(S), np.zeros(S, dtype=bool))
    np.testing.assert_allclose(solution.b, fista(Zs, ys, lam * weights), atol=1e-8)
    # beta: OLS of y - Z_S b on X
    np.testing.assert_allclose(solution.beta, np.linalg.lstsq(X, y - Z[:, M - S :] @ solution.b, rcond=None)[0], atol=1e-8)


def test_kkt_check__fails_when_a_coefficient_is_perturbed(problem):
    Z, X, y, (op_g, op_s) = problem
    metric = PMetric(op_g, X, np.array([0.4, 0.6]), tol=1e-12)
    columns = PenalisedColumns(op_s)
    Py = metric.apply(y)[:, 0]
    weights = np.ones(S)
    lam = 0.3 * np.max(np.abs(columns.zt(Py)[:, 0]))
    solution = solve_lasso(WorkingSet(metric, columns, Py), y, lam, weights, np.zeros(S), np.zeros(S, dtype=bool))
    assert solution.kkt.violations == 0
    b = solution.b.copy()
    j = solution.active[0]
    b[j] *= 1.05
    P = dense_P(Z[:, : M - S], X, np.array([0.4, 0.6]))
    c = Z[:, M - S :].T @ P @ (y - Z[:, M - S :] @ b)
    summary, bad = kkt_check(c, b, lam * weights, 1e-4)
    assert summary.violations >= 1 and bad[j] and summary.worst == j
    # the unperturbed solution passes the same dense check
    c0 = Z[:, M - S :].T @ P @ (y - Z[:, M - S :] @ solution.b)
    assert kkt_check(c0, solution.b, lam * weights, 1e-4)[0].violations == 0


def test_coordinate_descent__equals_fista_on_a_small_quadratic():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((30, 12))
    y = rng.standard_normal(30)
    penalty = rng.uniform(0.5, 3.0, 12)
    b, _ = coordinate_descent(A.T @ A, A.T @ y, penalty)
    np.testing.assert_allclose(b, fista(A, y, penalty), atol=1e-9)


def test_pmetric__pcg_on_the_store_equals_dense_P(problem, tmp_path_factory):
    # the randomised path's metric: block PCG through a genotype operator, not a Cholesky factor
    Z, X, y, (_, op_s) = problem
    store = op_s.layout.stores[0]
    op_g = StreamingOperator(store, Components(("g",), (np.arange(M - S),)), dtype=np.float64)
    theta = np.array([0.4, 0.6])
    metric = PMetric(op_g, X, theta, tol=1e-11)
    B = np.column_stack([y, Z[:, M - S]])
    expected = dense_P(Z[:, : M - S], X, theta) @ B
    np.testing.assert_allclose(metric.apply(B), expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())
    assert metric.converged and metric.passes > 0


def test_coordinate_descent__column_without_information_stays_zero():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((20, 5))
    A[:, 2] = 0.0  # e.g. a rare variant without carriers in a training fold
    b, _ = coordinate_descent(A.T @ A, A.T @ rng.standard_normal(20), np.full(5, 0.1))
    assert b[2] == 0.0 and np.all(np.isfinite(b))
