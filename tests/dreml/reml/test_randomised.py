"""The randomised path against the exact one, reproducibility, G = 10, inputs and results."""

import json

import numpy as np
import pytest

from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.reml import FitConfig, fit_reml

from cohort import covariates, dense_operator, genotype_blocks, phenotype


def simulate(n, m, G, seed):
    Z = genotype_blocks(n, m, G, 1)
    rng = np.random.default_rng(seed)
    X = covariates(n, rng)
    return Z, phenotype(Z, (0.5 / G,) * G, 0.5, X, rng), X


@pytest.mark.parametrize(("G", "m"), [(1, 4000), (3, 6000)])
def test_randomised__matches_exact_with_defaults(G, m):
    """|h2_rand - h2_exact| < 0.1 SE(h2_exact) per component, loglik within 1 unit (n = 2000)."""
    Z, y, X = simulate(2000, m, G, 1000)
    op = dense_operator(Z)
    exact = fit_reml(op, y, X, FitConfig(exact=True))
    passes = op.passes
    rand = fit_reml(op, y, X, FitConfig())
    assert exact.converged and rand.converged
    assert np.all(np.abs(rand.h2 - exact.h2) < 0.1 * exact.h2_se)
    assert abs(rand.h2_total - exact.h2_total) < 0.1 * exact.h2_total_se
    assert abs(rand.loglik - exact.loglik) < 1.0
    np.testing.assert_allclose(rand.se, exact.se, rtol=0.05)
    assert rand.passes == op.passes - passes > 20  # the matrix-free path ran
    row = rand.history[-1]
    assert row["pcg"]["status"] == "converged" and row["pcg_ai"]["status"] == "converged"


def test_randomised__same_seed_same_result_bitwise():
    Z, y, X = simulate(500, 1500, 2, 3)
    op = dense_operator(Z)
    first, second = (fit_reml(op, y, X, FitConfig(seed=9)) for _ in range(2))
    assert first.theta.tobytes() == second.theta.tobytes() and first.loglik == second.loglik
    assert [h["theta"] for h in first.history] == [h["theta"] for h in second.history]
    other = fit_reml(op, y, X, FitConfig(seed=10))
    assert other.theta.tobytes() != first.theta.tobytes()
    assert np.all(np.abs(other.h2 - first.h2) < 0.5 * first.h2_se)  # different probes: Monte Carlo noise only


def test_randomised__ten_components_run():
    Z, y, X = simulate(300, 3000, 10, 4)
    for config in (FitConfig(exact=True), FitConfig()):
        result = fit_reml(dense_operator(Z), y, X, config)
        assert result.theta.shape == (11,) and len(result.names) == 11 and result.names[-1] == "residual"
        assert result.converged and np.all(result.theta >= 0) and np.all(np.isfinite(result.h2_se))


class ProtocolOnly:
    """Only the four members of the protocol: no optional `traces()`."""

    def __init__(self, op: DenseOperator) -> None:
        self.shape, self.n_components, self.component_names = op.shape, op.n_components, op.component_names
        self._op = op

    @property
    def passes(self) -> int:
        return self._op.passes

    def matmat(self, V, weights=None):
        return self._op.matmat(V, weights)


def test_randomised__operator_without_traces_still_fits():
    """Without `traces()` no control variates: a looser agreement (documented in docs/validation.md)."""
    Z, y, X = simulate(1000, 3000, 1, 6)
    op = dense_operator(Z)
    exact = fit_reml(op, y, X, FitConfig(exact=True))
    bare = ProtocolOnly(op)
    assert not hasattr(bare, "traces")
    rand = fit_reml(bare, y, X, FitConfig())
    assert rand.converged and abs(rand.h2[0] - exact.h2[0]) < 0.3 * exact.h2_se[0]


def test_result__to_dict_is_json():
    Z, y, X = simulate(300, 1000, 2, 2)
    result = fit_reml(dense_operator(Z), y, X, FitConfig(exact=True))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["names"] == ["G1", "G2", "residual"] and data["config"]["exact"] is True
    assert data["passes"] == result.passes == 1 and data["history"][0]["iteration"] == 0
    assert FitConfig.from_dict(data["config"]) == result.config


@pytest.mark.parametrize(
    ("y", "X", "match"),
    [
        (np.zeros(299), None, r"y must have shape \(300,\)"),
        (np.full(300, np.nan), None, "y and X must be finite"),
        (np.zeros(300), np.ones((300, 2)), "X is rank deficient"),
        (np.zeros(300), np.ones((200, 1)), r"X must have shape \(300, p\)"),
    ],
)
def test_fit_reml__raise_on_invalid_inputs(y, X, match):
    op = dense_operator(genotype_blocks(300, 1000, 2, 2))
    with pytest.raises(InputError, match=match):
        fit_reml(op, y, X)
