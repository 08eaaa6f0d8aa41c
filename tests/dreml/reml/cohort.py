"""Simulated genotypes for the REML tests: simulate_cohort -> .bed -> pgenlib -> standardised Z.

Cached per (n, m, chromosomes, seed) for the test session; phenotypes are drawn in the tests
from the Z blocks so each test controls its own truth.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from dreml.operators import DenseOperator
from dreml.simulate import SimulationConfig, simulate_cohort, standardise
from tests.plink_reference import read_dosage

_TMP = Path(tempfile.mkdtemp(prefix="dreml-reml-tests-"))


@functools.lru_cache(maxsize=8)
def genotype_blocks(n: int, m: int, n_groups: int, seed: int) -> tuple[np.ndarray, ...]:
    """Standardised Z_g (n x m_g, polymorphic SNPs only), one per chromosome group."""
    prefix = _TMP / f"c{n}_{m}_{n_groups}_{seed}"
    cfg = SimulationConfig(
        n_samples=n,
        n_variants=m,
        n_chromosomes=n_groups,
        group_variances=(0.1,) * n_groups,
        seed=seed,
        phenotype_missing_rate=0.0,
    )
    truth = simulate_cohort(cfg, prefix)
    dosage = read_dosage(prefix, n, m)
    Z, polymorphic = standardise(dosage)
    contig = np.loadtxt(str(prefix) + ".bim", usecols=0, dtype=np.int64)
    groups = [c["chromosomes"] for c in truth["components"]]
    return tuple(Z[np.isin(contig, g) & polymorphic].T.copy() for g in groups)


def phenotype(
    Z: tuple[np.ndarray, ...], variances: tuple[float, ...], residual: float, X: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """y = X 1 + sum_g Z_g beta_g + e with beta_g ~ N(0, variance_g / m_g), e ~ N(0, residual)."""
    n = X.shape[0]
    y = X.sum(axis=1) + rng.standard_normal(n) * np.sqrt(residual)
    for z, v in zip(Z, variances):
        y += z @ rng.standard_normal(z.shape[1]) * np.sqrt(v / z.shape[1])
    return y


def covariates(n: int, rng: np.random.Generator) -> np.ndarray:
    """Intercept and one standard normal covariate, shape (n, 2)."""
    return np.column_stack([np.ones(n), rng.standard_normal(n)])


def dense_operator(Z: tuple[np.ndarray, ...]) -> DenseOperator:
    """K_g = Z_g Z_g^T / m_g as a `DenseOperator`."""
    return DenseOperator.from_genotypes(Z)


def negative_variance_cases() -> dict[str, tuple[DenseOperator, np.ndarray, np.ndarray]]:
    """(operator, y, X) at n = 400 where the unconstrained REML estimate of K_2 is negative; y
    is drawn from Z_1 alone. "noise": K_2 from 1600 unrelated SNPs, its estimate about -1 SE.
    "few": K_2 from 10 SNPs (eigenvalues up to 100), its estimate pinned near the edge of the
    region where H is positive definite, so that full AI steps make H indefinite."""
    Z = genotype_blocks(400, 1600, 2, 11)
    X = covariates(400, np.random.default_rng(5))
    noise = phenotype(Z[:1], (0.5,), 0.5, X, np.random.default_rng(4))
    few = phenotype(Z[:1], (0.5,), 0.5, X, np.random.default_rng(0))
    return {"noise": (dense_operator(Z), noise, X), "few": (dense_operator((Z[0], Z[1][:, :10])), few, X)}
