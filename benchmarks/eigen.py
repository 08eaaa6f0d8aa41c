"""`dreml eigen` benchmark: top eigenpairs of the GRM, matrix-free on a 2-worker local cluster.

Rows:
  large   `dreml eigen --rank 20` at n = 20,000 x m = 50,000 (whole-genome GRM, float32
          workers, default tol): wall time (shard loading and iterations), iterations = passes.
  dense   at n = 5,000 x m = 50,000: the same command beside the dense alternative in the same
          run, K = Z Z^T / m built explicitly with NumPy (float64, in variant blocks from the
          store: `dreml.operators.dense_reference`) then `numpy.linalg.eigh`; their time ratio
          and the largest relative error of our 20 eigenvalues against eigh's.
  sweep   the same n = 5,000 run at oversampling 10, 20, 40, 80 (the `dense` row: the
          default), 120: the passes and time behind the default `--oversampling`.
Cohorts are simulated with LD blocks (`benchmarks.fit.cohort`) and cached under bench_out/.
`--quick`: n = 2,000 x m = 20,000 for `large`, n = 1,000 x m = 4,000 for the others.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.fit import ROOT, cohort
from dreml.cli import main as dreml_main
from dreml.cluster import session
from dreml.eigen import EigenConfig
from dreml.operators import dense_reference

RANK = 20


def _dreml_eigen(store: Path, scheduler: str, oversampling: int, out: str) -> dict:
    """Run `dreml eigen` on the running cluster and return its .eigen.json report."""
    rc = dreml_main(["-q", "eigen", "--store", str(store), "--rank", str(RANK), "--oversampling", str(oversampling),
                     "--seed", "0", "--scheduler", scheduler, "--out", str(ROOT / out)])
    if rc != 0:
        raise RuntimeError(f"dreml eigen exited with status {rc}")
    return json.loads((ROOT / f"{out}.eigen.json").read_text())


def _row(label: str, n: int, m: int, report: dict) -> dict:
    t = report["timings"]
    return {"case": label, "n": n, "m": m, "rank": RANK, "oversampling": report["config"]["oversampling"],
            "load_s": t["shard_load"], "iterations_s": t["iterations"], "total_s": t["end_to_end"],
            "passes": report["passes"], "converged": report["converged"],
            "max_residual": max(r for r in report["residuals"] if r is not None)}


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
    large = cohort(n_large, m_large, (0.3, 0.2)).with_suffix(".zarr")
    small = cohort(n, m, (0.2, 0.15, 0.1)).with_suffix(".zarr")
    rows = []
    with session(n_workers=2) as client:
        address = client.scheduler.address
        rows.append(_row("large", n_large, m_large, _dreml_eigen(large, address, EigenConfig.oversampling, "eigen_large")))
        lam, t_build, t_eigh = _dense(small)
        for oversampling in (10, 20, 40, 80, 120):
            report = _dreml_eigen(small, address, oversampling, f"eigen_{oversampling}")
            row = _row("sweep", n, m, report)
            if oversampling == EigenConfig.oversampling:
                row.update(case="dense", dense_build_s=t_build, dense_eigh_s=t_eigh,
                           dense_over_ours=(t_build + t_eigh) / row["total_s"],
                           eigenvalue_rel_err=float(np.max(np.abs(np.array(report["eigenvalues"]) - lam) / lam)))
            rows.append(row)
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick)))
