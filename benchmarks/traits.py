"""Many traits in shared passes: `dreml.fit.fit_traits_prepared` for T traits beside one trait.

Rows (docs/performance.md, "Many traits"): a simulated cohort with one component (n x m
below) and max(T) traits, each an independent draw of the same model (h2 = 0.4), observed on
every sample (so that the traits can share their probes), covariates sex and age, 2 CPU
workers of 1 thread, float32 workers, randomised path, master seed 0; a first one-trait fit
warms the JIT up and is not recorded. For each T, with the probes shared (one Lanczos run for
the traits, `dreml.reml.shared_probes`) and with per-trait probes (`--per-trait-probes`):
- passes: passes of the T fits together (shard load excluded), against those of T = 1;
- fits_s: wall time of the fits (SNP effects and shard load excluded);
- alone_s: T x the one-trait time, what T separate fits on resident shards would cost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.fit import ROOT
from benchmarks.run import format_table
from converters import convert
from dreml.cluster import session
from dreml.fit import fit_traits_prepared, prepare_inputs
from dreml.phenotypes import CovariateFile
from dreml.reml import FitConfig
from dreml.simulate import SimulationConfig, simulate_cohort

FULL = {"n": 5_000, "m": 20_000, "variances": (0.4,)}
QUICK = {"n": 800, "m": 2_000, "variances": (0.4,)}
ISSUE = {"n": 20_000, "m": 100_000, "variances": (0.4,)}  # the size of issue 13's target
TRAIT_COUNTS = (1, 10, 30, 100)
PER_TRAIT_COUNTS = (10, 30)
WORKERS = 2


def traits_cohort(n: int, m: int, variances: tuple[float, ...], traits: int) -> Path:
    """Simulated cohort with `traits` traits, converted once and cached under bench_out/."""
    prefix = ROOT / f"traits_{n}x{m}_t{traits}_complete"
    if not prefix.with_suffix(".zarr").exists():
        simulate_cohort(
            SimulationConfig(
                n_samples=n,
                n_variants=m,
                n_chromosomes=3,
                group_variances=variances,
                n_traits=traits,
                phenotype_missing_rate=0.0,
                seed=11,
            ),
            prefix,
        )
        convert("bed", prefix, prefix.with_suffix(".zarr"))
    return prefix


def run(
    quick: bool,
    trait_counts: tuple[int, ...] | None = None,
    per_trait_counts: tuple[int, ...] | None = None,
    size: dict | None = None,
) -> list[dict]:
    size = size or (QUICK if quick else FULL)
    trait_counts = trait_counts or ((1, 5) if quick else TRAIT_COUNTS)
    per_trait_counts = per_trait_counts if per_trait_counts is not None else ((5,) if quick else PER_TRAIT_COUNTS)
    prefix = traits_cohort(size["n"], size["m"], size["variances"], max(trait_counts + per_trait_counts))
    rows, base = [], None

    def fit(T: int, client, share: bool = True):
        inputs = [
            prepare_inputs(
                prefix.with_suffix(".zarr"),
                prefix.with_suffix(".pheno"),
                pheno_name=f"trait{t + 1}",
                covar=CovariateFile(prefix.with_suffix(".covar")),
            )
            for t in range(T)
        ]
        return fit_traits_prepared(inputs, client=client, config=FitConfig(method="randomised", seed=0), share_probes=share)

    with session(n_workers=WORKERS, threads_per_worker=1) as client:
        fit(1, client)  # JIT warm-up
        runs = [(T, True) for T in trait_counts] + [(T, False) for T in per_trait_counts]
        for T, share in runs:
            outcome = fit(T, client, share)
            h2 = np.array([r.h2_total for r in outcome.results])
            row = {
                "n": size["n"],
                "m": size["m"],
                "traits": T,
                "probes": "shared" if outcome.probe_groups else "per trait",
                "passes": outcome.passes - 1,
                "fits_s": outcome.timings["fits"],
                "converged": sum(r.converged for r in outcome.results),
                "h2_mean": float(h2.mean()),
                "h2_sd": float(h2.std(ddof=1)) if T > 1 else float("nan"),
            }
            base = base or row
            row.update(
                {
                    "passes_ratio": row["passes"] / base["passes"],
                    "time_ratio": row["fits_s"] / base["fits_s"],
                    "alone_s": T * base["fits_s"],
                }
            )
            rows.append(row)
            print(format_table([row]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--traits", type=int, nargs="+", help=f"numbers of traits, shared probes (default {TRAIT_COUNTS})")
    parser.add_argument(
        "--per-trait", type=int, nargs="*", help=f"numbers of traits, per-trait probes (default {PER_TRAIT_COUNTS})"
    )
    parser.add_argument("--issue-size", action="store_true", help=f"the issue's size, n x m = {ISSUE['n']} x {ISSUE['m']}")
    args = parser.parse_args()
    traits = tuple(args.traits) if args.traits else None
    per_trait = tuple(args.per_trait) if args.per_trait is not None else None
    size = ISSUE if args.issue_size else None
    print(format_table(run(quick=args.quick, trait_counts=traits, per_trait_counts=per_trait, size=size)))


if __name__ == "__main__":
    main()
