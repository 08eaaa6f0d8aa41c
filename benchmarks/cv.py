"""Cross-validation benchmark: `dreml.cv` (K = 5) on the cached fit cohort, 2 CPU workers.

Rows: per fold, the passes and seconds of the refit mode (REML on the training rows, the
randomised path, then the prediction pass) and of the fixed-variance mode (one REML fit on
all samples, then per fold one effects solve and the prediction pass), with the fold's h2
and test correlation; per mode a summary row (all folds, the fit on all samples included).
Default: n = 5,000 x m = 50,000 (the cohort of `benchmarks.fit`, bench_out/fit_5000x50000_g3,
all variants as one component, covariates sex and age); `quick`: n = 1,000 x m = 4,000.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.fit import cohort
from dreml.cluster import session
from dreml.cv import CVOptions, cross_validate_prepared
from dreml.fit import prepare_inputs
from dreml.reml import FitConfig

FOLDS = 5
WORKERS = 2
# the fits' defaults, with the path fixed (auto would take the exact one at n_T <= 3,000 in
# the quick run) and no log-likelihood (cross-validation does not use it; `dreml cv` skips it)
CONFIG = FitConfig(method="randomised", seed=0, loglik=False)


def run(quick: bool) -> list[dict]:
    """The rows described in the module docstring."""
    n, m = (1000, 4000) if quick else (5000, 50000)
    prefix = cohort(n, m, (0.2, 0.15, 0.1))
    inputs = prepare_inputs(prefix.with_suffix(".zarr"), Path(f"{prefix}.pheno"), covar=Path(f"{prefix}.covar"))
    rows = []
    with session(n_workers=WORKERS) as client:
        for fixed in (False, True):
            mode = "fixed variance" if fixed else "refit"
            t0 = time.perf_counter()
            result = cross_validate_prepared(
                inputs, CVOptions(folds=FOLDS, seed=0, fixed_variance=fixed), client=client, config=CONFIG
            )
            wall = time.perf_counter() - t0
            base = {"n": len(inputs.data.y), "m": m, "K": FOLDS, "workers": WORKERS, "mode": mode}
            if result.full_fit is not None:
                full = result.full_fit
                rows.append(
                    {
                        **base,
                        "fold": "all samples",
                        "passes": full["passes"],
                        "seconds": full["seconds"],
                        "h2": full["h2"],
                        "converged": full["converged"],
                    }
                )
            for fold in result.folds:
                rows.append(
                    {
                        **base,
                        "fold": str(fold.label),
                        "n_train": fold.n_train,
                        "passes": fold.passes,
                        "seconds": fold.seconds,
                        "h2": fold.h2,
                        "r": fold.metrics.correlation,
                        "converged": fold.converged,
                    }
                )
            rows.append(
                {
                    **base,
                    "fold": "total",
                    "passes": result.passes,
                    "seconds": result.timings["total"],
                    "passes_per_fold": float(np.mean([f.passes for f in result.folds])),
                    "s_per_fold": float(np.mean([f.seconds for f in result.folds])),
                    "r": result.pooled.correlation,
                    "r2": result.pooled.r2,
                    "converged": result.converged,
                    "load_s": result.timings["shard_load"],
                    "end_to_end_s": wall,
                }
            )
    return rows


if __name__ == "__main__":
    from benchmarks.run import run_standalone

    run_standalone(run, __doc__)
