"""Truth recovery: 20 phenotype replicates at n = 3000 on simulated genotypes (exact path)."""

import numpy as np
import pytest
from cohort import covariates, dense_operator, genotype_blocks, phenotype

from dreml.reml import FitConfig, fit_reml

N, REPLICATES, H2 = 3000, 20, 0.4


@pytest.mark.slow
def test_truth__mean_within_two_se_and_se_matches_spread():
    Z = genotype_blocks(N, 1500, 1, 21)
    op = dense_operator(Z)
    rng = np.random.default_rng(2024)
    X = covariates(N, rng)
    fits = [fit_reml(op, phenotype(Z, (H2,), 1 - H2, X, rng), X, FitConfig(method="exact")) for _ in range(REPLICATES)]
    assert all(f.converged for f in fits)
    h2 = np.array([f.h2[0] for f in fits])
    se = np.array([f.h2_se[0] for f in fits])
    assert abs(h2.mean() - H2) < 2 * se.mean() / np.sqrt(REPLICATES)
    assert abs(se.mean() / h2.std(ddof=1) - 1) < 0.25
