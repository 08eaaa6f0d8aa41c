"""Sparse REML + weighted LASSO: recovery of rare causal variants against marginal tests, and cost.

Simulation (`dreml.simulate` genotypes with LD blocks, MAF from maf_min up): the penalised set
S is every variant with MAF below RARE (weights 1); CAUSAL of them get effects +-EFFECT on the
standardised scale; the common variants carry a polygenic component (h2 = H2_POLY, all of them
causal); residual variance 1 - H2_POLY - the sparse part. `dreml fit --sparse-maf-below RARE`
(Python: `dreml.lasso.data.fit_sparse`) on a local cluster, lambda chosen by 5-fold CV (the minimum
held-out MSE, and the 1-SE rule from the same fit); the true positive rate and false discovery
rate of the selected variants against the truth,
beside the marginal test of each variant of S (OLS on the covariates, Bonferroni at 0.05 over
|S|; what `dreml gwas marginal` computes), and the true positives among the CAUSAL largest |b_j|
against the CAUSAL smallest marginal p-values (the same number of picks). Rows: time, passes,
theta, the path length.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy import stats

from converters import convert
from dreml.cluster import session
from dreml.fit import prepare_inputs
from dreml.lasso.data import fit_sparse, rare_penalised_set
from dreml.lasso.path import SparseConfig, choose
from dreml.reml import FitConfig
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store, open_store

ROOT = Path("bench_out/lasso")
RARE = 0.01
CAUSAL = 20
EFFECT = 0.12
H2_POLY = 0.3


def cohort(n: int, m: int, seed: int) -> tuple[Store, Path, np.ndarray]:
    """The store, the phenotype file and the causal variants (store indices)."""
    prefix = ROOT / f"c{n}x{m}_s{seed}"
    if not prefix.with_suffix(".zarr").exists():
        config = SimulationConfig(n_samples=n, n_variants=m, n_chromosomes=2, group_variances=(0.2,), maf_min=0.001, seed=seed)
        simulate_cohort(config, prefix)
        convert("bed", prefix, prefix.with_suffix(".zarr"), sparse_below=0.05)
    store = open_store(prefix.with_suffix(".zarr"))
    Z = standardised(store)
    rng = np.random.default_rng(seed)
    maf = store.variant_maf
    rare = np.flatnonzero((maf > 0) & (maf < RARE))
    common = np.flatnonzero(maf >= RARE)
    causal = np.sort(rng.choice(rare, CAUSAL, replace=False))
    g = Z[:, common] @ rng.standard_normal(len(common)) * np.sqrt(H2_POLY / len(common))
    s = Z[:, causal] @ (EFFECT * rng.choice([-1.0, 1.0], CAUSAL))
    y = g + s + rng.standard_normal(n) * np.sqrt(max(0.05, 1 - H2_POLY - np.var(s)))
    pheno = prefix.with_suffix(".sparse.pheno")
    pheno.write_text("FID IID y\n" + "".join(f"{i} {i} {v:.8g}\n" for i, v in zip(store.sample_id, y)))
    return store, pheno, causal


def standardised(store: Store) -> np.ndarray:  # shape: (n, m)
    codes = store.dosage(0, store.n_variants).T.astype(np.float64)
    p = store.variant_allele_frequency
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = (codes - 2 * p) / np.sqrt(2 * p * (1 - p))
    Z[codes < 0] = 0.0
    return np.nan_to_num(Z)


def marginal_p(store: Store, pheno: Path, variants: np.ndarray) -> np.ndarray:
    """OLS p-values (intercept covariate) of `variants`."""
    y = np.array([float(line.split()[2]) for line in pheno.read_text().splitlines()[1:]])
    Z = standardised(store)[:, variants]
    yc = y - y.mean()
    Zc = Z - Z.mean(axis=0)
    beta = Zc.T @ yc / np.sum(Zc**2, axis=0)
    resid = np.sum(yc**2) - beta**2 * np.sum(Zc**2, axis=0)
    se = np.sqrt(resid / (len(y) - 2) / np.sum(Zc**2, axis=0))
    return 2 * stats.t.sf(np.abs(beta / se), len(y) - 2)


def rates(found: np.ndarray, causal: np.ndarray) -> tuple[float, float]:
    """(TPR, FDR) of a set of selected variants."""
    hits = len(np.intersect1d(found, causal))
    return hits / len(causal), (len(found) - hits) / max(1, len(found))


def run(quick: bool) -> list[dict]:
    """Rows for each replicate (see the module docstring)."""
    ROOT.mkdir(parents=True, exist_ok=True)
    n, m, replicates = (1_000, 4_000, 1) if quick else (2_000, 8_000, 3)
    rows = []
    with session(n_workers=2) as client:
        for seed in range(1, replicates + 1):
            store, pheno, causal = cohort(n, m, seed)
            inputs = prepare_inputs(store.path, pheno)
            penalised = rare_penalised_set(store, RARE)
            t0 = time.perf_counter()
            result = fit_sparse(
                inputs,
                penalised,
                client=client,
                config=FitConfig(method="exact", seed=seed),
                sparse=SparseConfig(seed=seed),
            )
            wall = time.perf_counter() - t0
            point = result.path.selected
            assert point is not None
            found = result.variants[point.solution.active]
            tpr, fdr = rates(found, causal)
            mse = np.array([p.cv_mse for p in result.path.points])
            se = np.array([p.cv_mse_se for p in result.path.points])
            sparser = result.path.points[choose(mse, se, "1se")]
            found_1se = result.variants[sparser.solution.active]
            tpr_1se, fdr_1se = rates(found_1se, causal)
            p = marginal_p(store, pheno, penalised.indices)
            m_tpr, m_fdr = rates(penalised.indices[p < 0.05 / len(p)], causal)
            # the same number of picks (CAUSAL) from each: the largest |b| at the selected lambda
            # against the smallest marginal p
            top_lasso = result.variants[np.argsort(-np.abs(point.solution.b))[:CAUSAL]]
            top_marginal = penalised.indices[np.argsort(p)[:CAUSAL]]
            rows.append(
                {
                    "n": n,
                    "m": m,
                    "seed": seed,
                    "penalised": len(result.variants),
                    "causal": CAUSAL,
                    "lambda_index": result.path.chosen,
                    "selected": len(found),
                    "lasso_tpr": tpr,
                    "lasso_fdr": fdr,
                    "selected_1se": len(found_1se),
                    "tpr_1se": tpr_1se,
                    "fdr_1se": fdr_1se,
                    "marginal_tpr": m_tpr,
                    "marginal_fdr": m_fdr,
                    "top20_lasso_tpr": rates(top_lasso, causal)[0],
                    "top20_marginal_tpr": rates(top_marginal, causal)[0],
                    "h2_poly": float(point.theta[0] / point.theta.sum()),
                    "kkt_violations": point.solution.kkt.violations,
                    "passes": result.path.passes,
                    "wall_s": wall,
                    "converged": result.path.converged,
                }
            )
    return rows


if __name__ == "__main__":
    from benchmarks.run import run_standalone

    run_standalone(run, __doc__.splitlines()[0])
