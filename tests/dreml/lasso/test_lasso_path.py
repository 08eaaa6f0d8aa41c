"""The sparse REML path: the alternation's fixed point and the cross-validation predictions,
against dense computations (explicit K, the engine's exact REML, FISTA)."""

from __future__ import annotations

import numpy as np
import pytest

from converters import convert
from dreml.components import Components
from dreml.errors import InputError
from dreml.lasso.metric import PenalisedColumns
from dreml.lasso.path import SparseConfig, _fold_predictions, choose, fit_sparse_reml
from dreml.operators import DenseOperator, StreamingOperator
from dreml.reml import FitConfig, fit_reml
from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from tests.dreml.lasso.lasso_reference import dense_P, fista, whitened
from tests.plink_reference import read_dosage

N, M, S = 200, 400, 80
EXACT = FitConfig(method="exact", tol_decrement=1e-12)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    root = tmp_path_factory.mktemp("lasso_path")
    config = SimulationConfig(n_samples=N, n_variants=M, n_chromosomes=1, group_variances=(0.3,), maf_min=0.02, seed=9)
    simulate_cohort(config, root / "c")
    store = convert("bed", root / "c", root / "c.zarr", variant_chunk=100, sample_chunk=100)
    Z = standardise(read_dosage(root / "c", N, M))[0].T  # shape: (n, m)
    rng = np.random.default_rng(3)
    X = np.column_stack([np.ones(N), rng.standard_normal(N)])
    y = X @ [1.0, 0.3] + Z[:, M - S : M - S + 3] @ [0.4, -0.4, 0.3]
    y += Z[:, : M - S] @ rng.standard_normal(M - S) * np.sqrt(0.3 / (M - S)) + rng.standard_normal(N) * 0.6
    operator = DenseOperator.from_genotypes([Z[:, : M - S]], ["g"])
    columns = PenalisedColumns(StreamingOperator(store, Components(("s",), (np.arange(M - S, M),)), dtype=np.float64))
    return Z, X, y, operator, columns


def test_fit_sparse_reml__each_point_is_the_alternation_fixed_point(problem):
    Z, X, y, operator, columns = problem
    config = SparseConfig(n_lambda=3, lambda_min_ratio=0.2, reml_rounds=10, theta_tol=1e-4, folds=0, seed=1)
    path = fit_sparse_reml(operator, columns, y, X, np.ones(S), config, EXACT)
    assert path.chosen is None and len(path.points) == 3
    assert np.isclose(path.points[0].solution.lam, path.lambda_max) and not path.points[0].solution.active.size
    for point in path.points:
        assert point.converged, point.solution.status
        b = point.solution.b
        # theta is the REML fit of the offset phenotype, to the alternation's tolerance (its
        # last step moved theta by less than theta_tol; the steps shrink geometrically) ...
        theta = fit_reml(operator, y - Z[:, M - S :] @ b, X, EXACT).theta
        assert np.max(np.abs(point.theta - theta)) / np.sum(theta) < 10 * config.theta_tol
        # ... and b the LASSO at that theta
        A, y_w = whitened(Z[:, : M - S], Z[:, M - S :], X, y, point.theta)
        expected = fista(A, y_w, np.full(S, point.solution.lam))
        np.testing.assert_allclose(b, expected, atol=1e-6 * max(1.0, np.max(np.abs(expected))))
    assert len(path.points[-1].solution.active) >= 3


def test_fold_predictions__equal_dense_blup_of_the_test_rows(problem):
    Z, X, y, operator, columns = problem
    theta = np.array([0.3, 0.5])
    train, test = np.arange(0, N, 3), np.setdiff1d(np.arange(N), np.arange(0, N, 3))
    config = SparseConfig(n_lambda=2, lambda_min_ratio=0.3, reml_rounds=0, folds=0, seed=1)
    lambdas = np.array([40.0, 12.0])
    got = _fold_predictions(operator, columns, y, X, theta, lambdas, np.ones(S), train, test, config)
    K = Z[:, : M - S] @ Z[:, : M - S].T / (M - S)
    P = dense_P(Z[train, : M - S], X[train], theta)
    A, y_w = whitened(Z[train, : M - S], Z[train, M - S :], X[train], y[train], theta)
    for k, lam in enumerate(lambdas):
        b = fista(A, y_w, np.full(S, lam))
        r = y[train] - Z[train, M - S :] @ b
        H = theta[0] * K[np.ix_(train, train)] + theta[1] * np.eye(len(train))
        HiX = np.linalg.solve(H, X[train])
        beta = np.linalg.solve(X[train].T @ HiX, HiX.T @ r)
        expected = X[test] @ beta + Z[test, M - S :] @ b + theta[0] * K[np.ix_(test, train)] @ (P @ r)
        np.testing.assert_allclose(got[:, k], expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_lambda": 0}, "--lambda-path must be at least 1 lambda, got 0"),
        ({"lambda_min_ratio": 1.0}, "--lambda-min-ratio must lie in (0, 1), got 1.0"),
        ({"folds": 1}, "--lambda-folds must be 0 (no selection) or at least 2, got 1"),
        ({"kkt_tol": 1e-9}, "need 0 < solve tolerance (1e-08) < KKT tolerance (1e-09) < 1"),
    ],
)
def test_sparse_config__raise_on_bad_settings(settings, message):
    with pytest.raises(InputError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        SparseConfig(**settings)


def test_fit_sparse_reml__raise_on_non_positive_weights(problem):
    Z, X, y, operator, columns = problem
    weights = np.ones(S)
    weights[5] = -1.0
    with pytest.raises(InputError, match="penalty weights must be positive and finite; got -1.0"):
        fit_sparse_reml(operator, columns, y, X, weights, SparseConfig(folds=0, seed=1), EXACT)


def test_choose__min_and_one_standard_error_rules():
    mse = np.array([5.0, 2.5, 2.0, 2.2, 3.0])
    se = np.full(5, 0.6)
    assert choose(mse, se, "min") == 2
    assert choose(mse, se, "1se") == 1  # the largest lambda (first) with MSE <= 2.0 + 0.6
    assert choose(mse, np.zeros(5), "1se") == 2
