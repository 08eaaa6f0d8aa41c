"""Distributed REML benchmark: `dreml.fit` on a store, on a local Dask cluster.

Rows: fit time (shard loading and iterations), AI iterations, passes, PCG iterations per
solve with and without the projected-core preconditioner, peak driver memory, for 1 and 2
CPU workers and G = 1 and 3 components; beside the exact dense path at the same n (K_g
built from the store in float64, Cholesky of H), timed in the same run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

from converters import convert
from dreml.cluster import session
from dreml.fit import ComponentChoice, fit_prepared, prepare_inputs
from dreml.operators import dense_reference
from dreml.reml import FitConfig, fit_reml
from dreml.simulate import SimulationConfig, simulate_cohort

ROOT = Path("bench_out")


class PeakRSS:
    """Peak resident memory of this (driver) process while the block runs, sampled every 50 ms."""

    def __enter__(self) -> "PeakRSS":
        self.peak = psutil.Process().memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _cohort(n: int, m: int) -> Path:
    """Simulated cohort with three chromosome groups, converted once and cached under bench_out/."""
    prefix = ROOT / f"fit_{n}x{m}"
    if not (prefix.with_suffix(".zarr")).exists():
        simulate_cohort(SimulationConfig(n_samples=n, n_variants=m, n_chromosomes=3,
                                         group_variances=(0.2, 0.15, 0.1), seed=11), prefix)
        convert("bed", prefix, prefix.with_suffix(".zarr"))
    return prefix


def _row(report: dict, peak: int) -> dict:
    pcg = [h["pcg"]["iterations"] for h in report["history"] if "pcg" in h]
    return {
        "load_s": report["timings"]["shard_load"], "fit_s": report["timings"]["total"],
        "iterations": report["iterations"], "passes": report["passes"],
        "pcg_per_solve": float(np.mean(pcg)) if pcg else float("nan"),
        "h2_total": report["h2_total"], "driver_peak_GiB": peak / 2**30,
    }


def run(quick: bool, large: bool = False) -> list[dict]:
    """Rows for n = 5,000 x m = 50,000 (1 and 2 workers, with and without the preconditioner,
    and the exact path), or with `large` n = 20,000 on 2 workers with the defaults only (the
    dense K of the exact path would need 3.2 GB per component and ~80 Tflop to build)."""
    n, m = (1000, 4000) if quick else (20000, 50000) if large else (5000, 50000)
    prefix = _cohort(n, m)
    store, pheno, covar = prefix.with_suffix(".zarr"), Path(f"{prefix}.pheno"), Path(f"{prefix}.covar")
    choices = {1: ComponentChoice(), 3: ComponentChoice(by_chromosome=True)}
    rows = []
    paths = [("randomised", FitConfig())]
    if not large:
        paths.append(("randomised, rank 0", replace(FitConfig(), precond_rank=0)))
    for workers in (2,) if large else (1, 2):
        with session(n_workers=workers) as client:
            for G, choice in choices.items():
                inputs = prepare_inputs(store, pheno, covar=covar, components=choice)
                for label, config in paths:
                    with PeakRSS() as peak:
                        report = fit_prepared(inputs, client=client, config=config)
                    rows.append({"n": n, "m": m, "G": G, "workers": workers, "path": label, **_row(report, peak.peak)})
    for G, choice in choices.items() if not large else ():
        inputs = prepare_inputs(store, pheno, covar=covar, components=choice)
        with PeakRSS() as peak:
            t0 = time.perf_counter()
            op = dense_reference(inputs.stores, inputs.spec if G > 1 else None, inputs.data.sample_index)
            t_build = time.perf_counter() - t0
            result = fit_reml(op, inputs.data.y, inputs.data.X, FitConfig(exact=True))
        rows.append({"n": n, "m": m, "G": G, "workers": 0, "path": "exact (dense K)", "load_s": t_build,
                     "fit_s": time.perf_counter() - t0 - t_build, "iterations": result.iterations,
                     "passes": result.passes, "pcg_per_solve": float("nan"), "h2_total": result.h2_total,
                     "driver_peak_GiB": peak.peak / 2**30})
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", action="store_true", help="n = 20,000 on 2 workers (about 15 minutes here)")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, large=args.large)))
