"""Mixed-model (LOCO) GWAS benchmark: `dreml gwas mixed` against `dreml gwas marginal` on a
cohort whose genetic variance sits on some chromosomes only, 2 CPU workers.

Cohort: n = 5,000 (quick: 1,000) x m = 20,000, 4 chromosomes in two groups: chromosomes 1-2
carry h2 = 0.5 (infinitesimal: every variant has an effect), chromosomes 3-4 none. One
component (all variants) is fitted (`method` auto, seed 0); then the marginal test (plink2
--glm, complete-case) and the mixed test (calibrated, R = 30, seed 0; and with exact
denominators in the quick run) on the fitted trait.

Rows, per test: lambda_GC over the variants of the null chromosomes (3-4: should be ~1), over
all variants, and the mean chi2 over the variants of the chromosomes with genetic variance
(1-2: the mixed test's gain in power shows as a larger mean chi2, since conditioning on the
other chromosomes' polygenic signal removes residual variance), with passes and seconds and,
for the mixed test, the calibration factors and their Monte Carlo SEs per chromosome.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.fit import ROOT
from benchmarks.fit import cohort as fit_cohort
from converters import convert
from dreml.cluster import session
from dreml.fit import fit_prepared, prepare_inputs
from dreml.gwas import (
    MixedConfig,
    check_fit_inputs,
    load_traits,
    loco_layout,
    loco_operator,
    marginal_gwas,
    mixed_gwas,
    union_samples,
)
from dreml.gwas.marginal import CHI2_MEDIAN
from dreml.operators import GenotypeOperator
from dreml.reml import FitConfig
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import open_store

WORKERS = 2
M = 20_000
NULL_CHROMOSOMES = ("3", "4")


def cohort(n: int, m: int) -> Path:
    """The simulated cohort (module docstring), converted once and cached under bench_out/."""
    prefix = ROOT / f"gwas_mixed_{n}x{m}"
    if not prefix.with_suffix(".zarr").exists():
        simulate_cohort(
            SimulationConfig(
                n_samples=n, n_variants=m, n_chromosomes=4, group_variances=(0.5, 0.0), phenotype_missing_rate=0.0, seed=21
            ),
            prefix,
        )
        convert("bed", prefix, prefix.with_suffix(".zarr"))
    return prefix


def _summary(chrom: np.ndarray, chisq: np.ndarray) -> dict:
    ok = ~np.isnan(chisq)
    null = ok & np.isin(chrom, NULL_CHROMOSOMES)
    causal = ok & ~np.isin(chrom, NULL_CHROMOSOMES)
    return {
        "lambda_gc_null_chr": float(np.median(chisq[null]) / CHI2_MEDIAN),
        "lambda_gc_all": float(np.median(chisq[ok]) / CHI2_MEDIAN),
        "mean_chi2_causal_chr": float(chisq[causal].mean()),
        "mean_chi2_null_chr": float(chisq[null].mean()),
    }


def run(quick: bool) -> list[dict]:
    """The rows described in the module docstring."""
    n = 1000 if quick else 5000
    prefix = cohort(n, M)
    zarr, pheno, covar = prefix.with_suffix(".zarr"), Path(f"{prefix}.pheno"), Path(f"{prefix}.covar")
    inputs = prepare_inputs(zarr, pheno, covar=covar)
    rows = []
    with session(n_workers=WORKERS) as client:
        t0 = time.perf_counter()
        fitted = fit_prepared(inputs, client=client, config=FitConfig(seed=0))
        state = fitted.state
        base = {"n": len(inputs.data.y), "m": M, "workers": WORKERS, "h2_fit": fitted.h2_total}
        rows.append({**base, "test": f"fit ({fitted.method})", "passes": fitted.passes, "seconds": time.perf_counter() - t0})
        store = open_store(zarr)
        traits = load_traits(store.sample_id, pheno, pheno_names=[inputs.data.phenotype_name], covar=covar)
        t0 = time.perf_counter()
        with GenotypeOperator([store], None, union_samples(traits), client=client) as op:
            marginal = marginal_gwas(op, traits)
            passes = op.passes
        trait = marginal.traits[0]
        with np.errstate(invalid="ignore"):
            chisq = np.where(trait.p > 0, stats.chi2.isf(np.where(trait.p > 0, trait.p, 1.0), 1), trait.t_stat**2)
        chisq[np.isnan(trait.p)] = np.nan
        rows.append(
            {**base, "test": "marginal", "passes": passes, "seconds": time.perf_counter() - t0, **_summary(marginal.chrom, chisq)}
        )
        check_fit_inputs(state, [store], traits)
        layout = loco_layout(state, [store])
        configs = [("mixed calibrated", MixedConfig(seed=0))]
        if quick:
            configs.append(("mixed exact", MixedConfig(exact_denominator=True, seed=0)))
        for name, config in configs:
            t0 = time.perf_counter()
            with loco_operator([store], layout, traits[0].sample_index, client=client) as op:
                mixed = mixed_gwas(op, state, layout, traits, config=config)
            factors = (
                ", ".join(f"{c.contig}:{c.calibration_factor:.4g}+-{c.calibration_se:.2g}" for c in mixed.chromosomes)
                if not config.exact_denominator
                else ""
            )
            rows.append(
                {
                    **base,
                    "test": name,
                    "passes": mixed.passes,
                    "seconds": time.perf_counter() - t0,
                    **_summary(mixed.chrom, mixed.traits[0].chisq),
                    "calibration": factors,
                }
            )
    return rows


def run_large() -> list[dict]:
    """LOCO at n = 20,000 x m = 100,000 (the `benchmarks/fit.py --large` cohort, 3 chromosomes,
    one fitted component): the fit, then passes and seconds per chromosome of one trait and of
    10 traits (the trait and 9 shuffled copies, sharing the passes)."""
    prefix = fit_cohort(20000, 100000, (0.3, 0.2))
    zarr, pheno, covar = prefix.with_suffix(".zarr"), Path(f"{prefix}.pheno"), Path(f"{prefix}.covar")
    inputs = prepare_inputs(zarr, pheno, covar=covar)
    many = ROOT / "gwas_mixed_large_10traits.pheno"
    y = np.full(inputs.stores[0].n_samples, np.nan)
    y[inputs.data.sample_index] = inputs.data.y
    rng = np.random.default_rng(0)
    observed = np.flatnonzero(~np.isnan(y))
    columns = [y]
    for _ in range(9):  # the trait's values shuffled among its own samples: the same sample set
        copy = y.copy()
        copy[observed] = y[rng.permutation(observed)]
        columns.append(copy)
    store = open_store(zarr)
    rows_text = ["FID IID " + " ".join(f"t{k}" for k in range(10))]
    for i, (fid, iid) in enumerate(zip(store.sample_family_id, store.sample_id)):
        rows_text.append(f"{fid} {iid} " + " ".join("NA" if np.isnan(c[i]) else f"{c[i]:.10g}" for c in columns))
    many.write_text("\n".join(rows_text) + "\n")
    rows = []
    with session(n_workers=WORKERS) as client:
        t0 = time.perf_counter()
        fitted = fit_prepared(inputs, client=client, config=FitConfig(seed=0, method="randomised"))
        rows.append(
            {
                "n": len(inputs.data.y),
                "m": 100000,
                "test": "fit",
                "traits": 1,
                "passes": fitted.passes,
                "seconds": time.perf_counter() - t0,
            }
        )
        layout = loco_layout(fitted.state, [store])
        for names, path in ((["t0"], many), ([f"t{k}" for k in range(10)], many)):
            traits = load_traits(store.sample_id, path, pheno_names=names, covar=covar)
            check_fit_inputs(fitted.state, [store], traits)
            t0 = time.perf_counter()
            with loco_operator([store], layout, traits[0].sample_index, client=client) as op:
                t_load = time.perf_counter() - t0
                mixed = mixed_gwas(op, fitted.state, layout, traits, config=MixedConfig(seed=0))
            seconds = time.perf_counter() - t0 - t_load
            for c in mixed.chromosomes:
                rows.append(
                    {
                        "n": len(inputs.data.y),
                        "m": 100000,
                        "test": f"mixed chr {c.contig}",
                        "traits": len(names),
                        "passes": c.passes,
                        "calibration": f"{c.calibration_factor:.4g}+-{c.calibration_se:.2g}",
                    }
                )
            rows.append(
                {
                    "n": len(inputs.data.y),
                    "m": 100000,
                    "test": "mixed total",
                    "traits": len(names),
                    "passes": mixed.passes,
                    "seconds": seconds,
                    "load_s": t_load,
                    "lambda_gc": mixed.traits[0].lambda_gc,
                }
            )
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", action="store_true", help="n = 20,000 x m = 100,000: passes and seconds per chromosome")
    args = parser.parse_args()
    print(format_table(run_large() if args.large else run(quick=args.quick)))
