"""The randomised-vs-exact validation cases of docs/validation.md as a table.

n = 2,000, G = 1 (m = 4,000) and G = 3 (m = 6,000, one chromosome group each), phenotype
seed 1000, the genotypes of tests/dreml/reml/cohort.py; for each probe seed the h2 error of
the randomised fit in units of SE(h2_exact) (exact reference at tol_decrement 1e-12), the
log-likelihood difference, passes and AI iterations. `--sweep 30,60,100` instead reports the
spread of the error over 10 probe seeds and the mean reported Monte Carlo SE per probe count.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dreml.reml import FitConfig, fit_reml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dreml" / "reml"))
from cohort import covariates, dense_operator, genotype_blocks, phenotype  # noqa: E402

CASES = ((1, 4000), (3, 6000))


def _case(G: int, m: int, n: int):
    Z = genotype_blocks(n, m, G, 1)
    rng = np.random.default_rng(1000)
    X = covariates(n, rng)
    y = phenotype(Z, (0.5 / G,) * G, 0.5, X, rng)
    op = dense_operator(Z)
    return op, y, X, fit_reml(op, y, X, FitConfig(method="exact", tol_decrement=1e-12))


def run(quick: bool, sweep: tuple[int, ...] = ()) -> list[dict]:
    """One row per (G, probe seed), or per (G, probe count) with `sweep`."""
    n, seeds = (500, 2) if quick else (2000, 10 if sweep else 5)
    rows = []
    for G, m in CASES:
        op, y, X, exact = _case(G, m if not quick else m // 4, n)
        for B in sweep or (FitConfig.n_probes,):
            fits = [fit_reml(op, y, X, FitConfig(method="randomised", seed=s, n_probes=B)) for s in range(seeds)]
            errors = np.array([(f.h2 - exact.h2) / exact.h2_se for f in fits])  # shape: (seeds, G)
            if sweep:
                rows.append(
                    {
                        "G": G,
                        "n_probes": B,
                        "sd_error_SE": np.round(errors.std(axis=0), 3).tolist(),
                        "mean_mc_se_SE": np.round(np.mean([f.h2_mc_se / exact.h2_se for f in fits], axis=0), 3).tolist(),
                        "max_abs_error_SE": float(np.abs(errors).max()),
                        "mean_passes": float(np.mean([f.passes for f in fits])),
                    }
                )
                continue
            rows += [
                {
                    "G": G,
                    "probe_seed": s,
                    "error_SE": np.round(e, 3).tolist(),
                    "d_loglik": round(f.loglik - exact.loglik, 2),
                    "passes": f.passes,
                    "iterations": f.iterations,
                    "converged": f.converged,
                }
                for s, (f, e) in enumerate(zip(fits, errors))
            ]
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--sweep", type=lambda t: tuple(int(x) for x in t.split(",")), default=(), help="probe counts to sweep, e.g. 30,60,100"
    )
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, sweep=args.sweep)))
