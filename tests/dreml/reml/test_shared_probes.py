"""Traits sharing their probes (`dreml.reml.shared_probes`, G = 1).

References: the score, average information and log-likelihood of `SharedProbeEvaluator`
equal the same estimators written densely with the same probes (explicit P, the Hutchinson
samples (K w)^T P w and w^T P w, SLQ replaced by the exact w^T log(H) w) to 1e-7; the fits
agree with exact REML within their Monte Carlo error; a trait's fit does not depend on the
traits beside it (1e-10).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dreml.errors import InputError
from dreml.reml import FitConfig, fit_reml
from dreml.reml.evaluation import residualise
from dreml.reml.hutchinson import hutchinson
from dreml.reml.probes import draw_probes
from dreml.reml.shared_probes import SharedProbeEvaluator, probe_group
from dreml.reml.traits import fit_reml_traits
from tests.dreml.reml.cohort import covariates, dense_operator, genotype_blocks, phenotype

N, M = 400, 1_000
H2 = (0.6, 0.3, 0.1)


@pytest.fixture(scope="module")
def problem():
    Z = genotype_blocks(N, M, 1, 5)
    rng = np.random.default_rng(2)
    X = covariates(N, rng)
    ys = [phenotype(Z, (h,), 1 - h, X, rng) for h in H2]
    return dense_operator(Z), X, ys


def test_SharedProbeEvaluator__equals_the_dense_estimators_with_the_same_probes(problem):
    op, X, ys = problem
    config = FitConfig(method="randomised", pcg_tol=1e-11, probe_tol=1e-11, ai_tol=1e-11, n_probes=30)
    probes = draw_probes(N, config.n_probes, 0, 0, 9)
    y_res = [residualise(y, X) for y in ys]
    group = probe_group(op, y_res, probes, config, threading.Lock())
    evaluator = SharedProbeEvaluator(op, ys[1], X, config, group, 1)
    theta = np.array([0.4, 0.7])
    point = evaluator.score(theta)
    info = evaluator.information(point, loglik=True)

    K = op.matmat(np.eye(N))[0]
    H = theta[0] * K + theta[1] * np.eye(N)
    Hi = np.linalg.inv(H)
    P = Hi - Hi @ X @ np.linalg.solve(X.T @ Hi @ X, X.T @ Hi)
    W, y = probes.W, ys[1]
    controls = np.einsum("nb,nb->b", W, K @ W)[None] - np.trace(K)
    traces, _ = hutchinson(np.vstack([np.einsum("nb,nb->b", K @ W, P @ W), np.einsum("nb,nb->b", W, P @ W)]), controls)
    Py = P @ y
    V = np.column_stack([K @ Py, Py])
    np.testing.assert_allclose(point.score, -0.5 * traces + 0.5 * Py @ V, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(info.ai, 0.5 * V.T @ P @ V, rtol=1e-7)
    lam, vecs = np.linalg.eigh(H)
    logdet, _ = hutchinson(np.einsum("nb,nb->b", W, (vecs * np.log(lam)) @ vecs.T @ W)[None], controls)
    loglik = -0.5 * (logdet[0] + np.linalg.slogdet(X.T @ Hi @ X)[1] + y @ Py)
    assert info.loglik == pytest.approx(loglik, rel=1e-8)
    assert point.stats["lanczos_steps"] == evaluator.group.lanczos.steps


def test_fit_reml_traits__shared_probes_agree_with_exact_reml(problem):
    op, X, ys = problem
    fits = fit_reml_traits(op, ys, [X] * 3, [None] * 3, FitConfig(method="randomised", seed=3))
    assert fits.probe_groups == ((0, 1, 2),)
    for y, got in zip(ys, fits.results):
        exact = fit_reml(op, y, X, FitConfig(method="exact"))
        assert got.converged and got.seed == 3 and "probes shared" in got.method_reason
        # Monte Carlo error of the traces (mc_se) plus the solves' tolerance
        assert np.all(np.abs(got.theta - exact.theta) <= 4 * got.mc_se + 1e-4)
        assert abs(got.loglik - exact.loglik) <= 4 * got.loglik_se + 1e-3


def test_fit_reml_traits__a_trait_does_not_depend_on_the_traits_beside_it(problem):
    op, X, ys = problem
    rows = np.arange(20, N)
    cut = [y[rows] for y in ys]
    config = FitConfig(method="randomised", seed=8)
    three = fit_reml_traits(op, cut, [X[rows]] * 3, [rows] * 3, config)
    two = fit_reml_traits(op, cut[1:], [X[rows]] * 2, [rows] * 2, config)
    assert three.probe_groups == ((0, 1, 2),) and two.probe_groups == ((0, 1),)
    for a, b in zip(three.results[1:], two.results):
        np.testing.assert_allclose(a.theta, b.theta, rtol=1e-10)
        assert a.loglik == pytest.approx(b.loglik, rel=1e-10)


def test_fit_reml_traits__a_bad_trait_leaves_its_group_and_fails_alone(problem):
    op, X, ys = problem
    fits = fit_reml_traits(op, [ys[0], np.full(N, 2.0), ys[2]], [X] * 3, [None] * 3, FitConfig(method="randomised", seed=1))
    assert fits.probe_groups == ((0, 2),)
    assert isinstance(fits.results[1], InputError) and fits.results[0].converged and fits.results[2].converged
