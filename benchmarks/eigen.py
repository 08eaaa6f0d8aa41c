"""`dreml eigen` benchmark: top eigenpairs of the GRM, matrix-free on a 2-worker local cluster.

Rows (rank 20, float32 workers, default tol, seed 0):
  compare  at n = 5,000 x m = 50,000: `dreml eigen --method krylov` at oversampling 10, 20 and
           40 (the default's sweep) and `--method subspace` at its default 80, each beside the
           dense alternative built in the same run, K = Z Z^T / m explicitly with NumPy
           (float64, in variant blocks from the store: `dreml.operators.dense_reference`) then
           `numpy.linalg.eigvalsh`: their time ratio (dense_over_ours) and the largest relative
           error of our 20 eigenvalues against eigh's.
  large    `dreml eigen --rank 20` (krylov, default oversampling) at n = 20,000 x m = 50,000:
           wall time (shard loading and iterations), iterations = passes.
Cohorts are simulated with LD blocks (`benchmarks.fit.cohort`) and cached under bench_out/.
`--quick`: n = 1,000 x m = 4,000 for `compare`, n = 2,000 x m = 20,000 for `large`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.fit import ROOT, cohort
from dreml.cli import main as dreml_main
from dreml.cluster import session
from dreml.eigen import DEFAULT_OVERSAMPLING
from dreml.operators import dense_reference

RANK = 20
KRYLOV_SWEEP = (10, 20, 40)


def _dreml_eigen(store: Path, scheduler: str, method: str, oversampling: int, out: str) -> dict:
    """Run `dreml eigen` on the running cluster and return its .eigen.json report."""
    rc = dreml_main(
        [
            "-q",
            "eigen",
            "--store",
            str(store),
            "--rank",
            str(RANK),
            "--method",
            method,
            "--oversampling",
            str(oversampling),
            "--seed",
            "0",
            "--scheduler",
            scheduler,
            "--out",
            str(ROOT / out),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"dreml eigen exited with status {rc}")
    return json.loads((ROOT / f"{out}.eigen.json").read_text())


def _row(label: str, n: int, m: int, report: dict) -> dict:
    t = report["timings"]
    return {
        "case": label,
        "n": n,
        "m": m,
        "method": report["config"]["method"],
        "oversampling": report["config"]["oversampling"],
        "load_s": t["shard_load"],
        "iterations_s": t["iterations"],
        "total_s": t["end_to_end"],
        "passes": report["passes"],
        "s_per_pass": t["iterations"] / report["passes"],
        "converged": report["converged"],
        "max_residual": max(r for r in report["residuals"] if r is not None),
    }


def _dense(store: Path) -> tuple[np.ndarray, float, float]:
    """Top-RANK eigenvalues by explicit K and eigh, with the seconds of each step."""
    t0 = time.perf_counter()
    K = dense_reference(store).K[0]
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    lam = np.linalg.eigvalsh(K)[::-1][:RANK]
    return lam, t_build, time.perf_counter() - t0


def run(quick: bool) -> list[dict]:
    """The rows described in the module docstring."""
    (n_large, m_large), (n, m) = ((2000, 20000), (1000, 4000)) if quick else ((20000, 50000), (5000, 50000))
    small = cohort(n, m, (0.2, 0.15, 0.1)).with_suffix(".zarr")
    large = cohort(n_large, m_large, (0.3, 0.2)).with_suffix(".zarr")
    rows = []
    with session(n_workers=2) as client:
        address = client.scheduler.address
        lam, t_build, t_eigh = _dense(small)
        runs = [("krylov", o) for o in KRYLOV_SWEEP] + [("subspace", DEFAULT_OVERSAMPLING["subspace"])]
        for method, oversampling in runs:
            report = _dreml_eigen(small, address, method, oversampling, f"eigen_{method}_{oversampling}")
            row = _row("compare", n, m, report)
            row.update(
                default=oversampling == DEFAULT_OVERSAMPLING[method],
                dense_build_s=t_build,
                dense_eigh_s=t_eigh,
                dense_over_ours=(t_build + t_eigh) / row["total_s"],
                eigenvalue_rel_err=float(np.max(np.abs(np.array(report["eigenvalues"]) - lam) / lam)),
            )
            rows.append(row)
            print(row, flush=True)
        report = _dreml_eigen(large, address, "krylov", DEFAULT_OVERSAMPLING["krylov"], "eigen_large")
        rows.append(_row("large", n_large, m_large, report))
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    from benchmarks.run import run_standalone

    run_standalone(run, __doc__)
