"""Many traits in shared passes: each trait's fit equals its own fit run alone (same seed,
same operator products) to 1e-10, and T fits cost the passes of the longest one."""

from __future__ import annotations

import numpy as np
import pytest

from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.operators.shared import SharedPasses
from dreml.operators.subset import RestrictedOperator
from dreml.reml import FitConfig, fit_reml
from dreml.reml.traits import fit_reml_traits, trait_seeds

N, M = 300, 400


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    Z = [rng.standard_normal((N, M)), rng.standard_normal((N, M // 2))]
    op = DenseOperator.from_genotypes(Z)
    X = np.column_stack([np.ones(N), rng.standard_normal(N)])
    ys = []
    for h in (0.5, 0.2, 0.0):
        g = Z[0] @ rng.standard_normal(M) * np.sqrt(h / M)
        ys.append(1.0 + 0.3 * X[:, 1] + g + rng.standard_normal(N) * np.sqrt(1 - h))
    rows = [None, np.sort(rng.choice(N, 220, replace=False)), None]
    return op, X, ys, rows


def _inputs(X, ys, rows):
    return [y if r is None else y[r] for y, r in zip(ys, rows)], [X if r is None else X[r] for r in rows]


@pytest.mark.parametrize("method", ["randomised", "exact"])
def test_fit_reml_traits__each_trait_equals_its_own_fit(problem, method):
    op, X, ys, rows = problem
    yt, Xt = _inputs(X, ys, rows)
    config = FitConfig(method=method, seed=11)
    together = fit_reml_traits(op, yt, Xt, rows, config)
    assert together.method == method and together.seed == 11
    alone_passes = []
    for t, seed in enumerate(trait_seeds(11, 3)):
        view = op if rows[t] is None else RestrictedOperator(op, rows[t])
        before = op.passes
        alone = fit_reml(view, yt[t], Xt[t], FitConfig(method=method, seed=seed))
        alone_passes.append(op.passes - before)
        got = together.results[t]
        assert got.seed == seed and got.converged == alone.converged
        np.testing.assert_allclose(got.theta, alone.theta, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.se, alone.se, rtol=1e-8)
        if method == "randomised":
            assert got.passes == alone.passes
    # exact: K read once for all traits; randomised: the longest fit's passes
    assert together.passes == (1 if method == "exact" else max(alone_passes))


def test_fit_reml_traits__a_failing_trait_does_not_stop_the_others(problem):
    op, X, ys, rows = problem
    constant = np.full(N, 2.0)
    fits = fit_reml_traits(op, [ys[0], constant], [X, X], [None, None], FitConfig(method="randomised", seed=1))
    assert isinstance(fits.results[1], InputError) and fits.results[0].converged


def test_SharedPasses__weighted_and_stacked_requests_in_one_pass(problem):
    op = problem[0]
    shared = SharedPasses(op, 1)
    V = np.random.default_rng(0).standard_normal((N, 3))
    member = shared.member(0)
    np.testing.assert_allclose(member.matmat(V), op.matmat(V), rtol=1e-13)
    np.testing.assert_allclose(
        member.matmat(V[:, 0], weights=np.array([0.3, 2.0])), op.matmat(V[:, 0], weights=np.array([0.3, 2.0])), rtol=1e-13
    )
    assert shared.passes == member.passes == 2
    member.leave()


def test_SharedPasses__a_failing_pass_reaches_every_waiting_fit(problem):
    op = problem[0]

    class Broken:
        shape, n_components, component_names, passes = op.shape, op.n_components, op.component_names, 0

        def matmat(self, V, weights=None):
            raise RuntimeError("worker lost")

    shared = SharedPasses(Broken(), 1)
    with pytest.raises(RuntimeError, match="worker lost"):
        shared.member(0).matmat(np.ones((N, 1)))
