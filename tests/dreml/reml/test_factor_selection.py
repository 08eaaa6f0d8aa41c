"""Choosing the number of factors by held-out likelihood (`dreml.reml.factor_selection`).

Reference: the truth of a simulation. n = 300 samples, T = 12 traits from K = 2 factors with
h2 = (0.8, 0.3) and clearly separated loadings (factor 1 on traits 1-6, factor 2 on 7-12), half
of each trait's variance residual, 10% missing; candidates 1..4 on the exact path: K = 2 is
chosen by both rules, and the returned fit is the refit with K = 2 on every entry (equal to the
direct fit with the same seed at 1e-10). The held-out log density is checked against scipy's
normal density, the rules against a hand-made table.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from dreml.errors import InputError
from dreml.operators import DenseOperator
from dreml.reml import FitConfig
from dreml.reml.factor_selection import FactorSelectionConfig, choose, choose_factor_count, heldout_log_densities, heldout_mask
from dreml.reml.factors import FactorConfig, fit_factor_model
from tests.dreml.reml.cohort import genotype_blocks
from tests.dreml.reml.test_factor_model import factor_traits


@pytest.fixture(scope="module")
def simulation():
    op = DenseOperator.from_genotypes(genotype_blocks(300, 600, 1, 5))
    rng = np.random.default_rng(0)
    T = 12
    loadings = np.zeros((2, T))
    loadings[0, :6] = 1 + rng.random(6)
    loadings[1, 6:] = 1 + rng.random(6)
    Y = factor_traits(op.K[0], np.array([0.8, 0.3]), T=T, psi=0.5, missing=0.1, seed=1, loadings=loadings)
    return op, Y


@pytest.mark.parametrize("rule", ["best", "1se"])
def test_choose_factor_count__recovers_the_simulated_count(simulation, rule):
    op, Y = simulation
    config = FactorConfig(n_factors=1, max_iter=20, reml=FitConfig(method="exact", seed=2))
    selection = choose_factor_count(op, Y, None, config, FactorSelectionConfig(candidates=(4, 1, 3, 2), holdout=0.2, rule=rule))
    assert selection.candidates == (1, 2, 3, 4) and selection.chosen == 2 and selection.seed == 2 and selection.rule == rule
    assert selection.scores[1] > selection.scores[0] + 0.1 and selection.score_se[int(np.argmax(selection.scores))] == 0
    observed = int(np.isfinite(Y).sum())
    assert abs(selection.n_heldout - 0.2 * observed) < 4 * np.sqrt(0.16 * observed)  # binomial, 4 SD
    assert selection.passes == 1  # the exact path reads K once for every fit
    direct = fit_factor_model(op, Y, None, FactorConfig(n_factors=2, max_iter=20, reml=FitConfig(method="exact", seed=2)))
    assert selection.result.loadings.shape == (2, 12)
    np.testing.assert_allclose(selection.result.loadings, direct.loadings, rtol=0, atol=1e-10)
    np.testing.assert_allclose(selection.result.h2_total, direct.h2_total, rtol=0, atol=1e-10)
    record = selection.to_dict()
    assert record["chosen"] == 2 and record["heldout_log_density"] == selection.scores and record["seed"] == 2


def test_heldout_log_densities__equal_scipy_normal_log_density(simulation):
    """score = mean of scipy's log N(y; mu, v) with mu, v written out from the fit's arrays."""
    op, Y = simulation
    heldout = heldout_mask(Y, 0.2, 3)
    fit = fit_factor_model(op, np.where(heldout, np.nan, Y), None, FactorConfig(n_factors=2, max_iter=2))
    mu = fit.beta[0] + fit.factors @ fit.loadings
    v = np.array([[lam @ C @ lam for lam in fit.loadings.T] for C in fit.factor_covariance]) + fit.psi
    log_density, squared_error = heldout_log_densities(fit, Y, np.ones((Y.shape[0], 1)), heldout)
    np.testing.assert_allclose(log_density, norm.logpdf(Y[heldout], mu[heldout], np.sqrt(v[heldout])), rtol=1e-12)
    np.testing.assert_allclose(squared_error, (Y - mu)[heldout] ** 2, rtol=1e-12)


def test_choose__best_and_one_standard_error_rules():
    """Candidates 1, 2, 3 over 4 held-out entries: K = 3 is best (mean -1.0); K = 2's paired
    differences from it, (-0.2, 0.1, 0, 0), have mean -0.025 and SE sqrt(0.0475 / 3) / 2 = 0.063,
    so 1se picks K = 2; K = 1, 1.0 below with SE 0, is outside."""
    densities = np.array([[-2.0, -2.0, -2.0, -2.0], [-1.2, -0.9, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    best, chosen, se = choose((1, 2, 3), densities, "best")
    assert best == chosen == 3
    np.testing.assert_allclose(se, [0.0, np.sqrt(0.0475 / 3) / 2, 0.0], rtol=1e-12, atol=1e-15)
    assert choose((1, 2, 3), densities, "1se")[:2] == (3, 2)


def test_choose_factor_count__raise_on_candidate_not_below_trait_count(simulation):
    op, Y = simulation
    with pytest.raises(InputError, match="factor count K = 12 must be at least 1 and smaller than the number of traits T = 12"):
        choose_factor_count(op, Y, None, FactorConfig(n_factors=1), FactorSelectionConfig(candidates=(1, 12)))


def test_factor_selection_config__defaults_to_one_standard_error_rule():
    config = FactorSelectionConfig(candidates=(1, 2))
    assert config.rule == "1se" and config.holdout == 0.1


def test_factor_selection_config__raise_on_invalid_setting():
    with pytest.raises(ValueError, match="candidates must be at least 2 distinct factor counts"):
        FactorSelectionConfig(candidates=(2, 2))
    with pytest.raises(ValueError, match=r"holdout must be in \(0, 0.5\]"):
        FactorSelectionConfig(candidates=(1, 2), holdout=0.6)
    with pytest.raises(ValueError, match="rule must be 'best' or '1se'"):
        FactorSelectionConfig(candidates=(1, 2), rule="min")  # type: ignore[arg-type]
