"""Distributed REML benchmark: `dreml.fit` on a store, on a local Dask cluster.

Rows: fit time (shard loading and iterations), AI iterations, passes in total and by kind
(set-up, score = main block solves and K_g P y, warm starts, AI solves, the final AI + SLQ
solve), PCG iterations per main solve, h2 with its SE and Monte Carlo SE, peak driver memory.
Default: n = 5,000 x m = 50,000 for 1 and 2 CPU workers, G = 1 and 3, without (the default)
and with a rank-64 projected-core preconditioner, beside the exact dense path in the same run.
`--large`: n = 20,000 x m = 100,000 with LD and two components on 2 workers.
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
from dreml.reml import FitConfig
from dreml.simulate import SimulationConfig, simulate_cohort

ROOT = Path("bench_out")
RANDOMISED = FitConfig(method="randomised", seed=0)
KINDS = ("setup", "score", "warm_start", "information", "final", "lrt", "snp_effects")


class PeakRSS:
    """Peak resident memory of this (driver) process while the block runs, sampled every 50 ms."""

    def __enter__(self) -> PeakRSS:
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


def cohort(n: int, m: int, variances: tuple[float, ...]) -> Path:
    """Simulated cohort (LD blocks, one component group per variance), converted once and
    cached under bench_out/."""
    prefix = ROOT / f"fit_{n}x{m}_g{len(variances)}"
    if not (prefix.with_suffix(".zarr")).exists():
        simulate_cohort(
            SimulationConfig(n_samples=n, n_variants=m, n_chromosomes=max(3, len(variances)), group_variances=variances, seed=11),
            prefix,
        )
        convert("bed", prefix, prefix.with_suffix(".zarr"))
    return prefix


def report_row(report: dict, peak: int) -> dict:
    """The benchmark's columns from a fit report."""
    pcg = [h["pcg"]["iterations"] for h in report["history"] if "pcg" in h]
    kinds = report.get("passes_by_kind", {})
    return {
        "load_s": report["timings"]["shard_load"],
        "fit_s": report["timings"]["total"],
        "post_reml_s": report["timings"]["post_reml"],
        "iterations": report["iterations"],
        "passes": report["passes"],
        **{f"p_{k}": kinds.get(k, 0) for k in KINDS},
        "pcg_per_solve": float(np.mean(pcg)) if pcg else float("nan"),
        "h2_total": report["h2_total"],
        "h2_se": report["h2_total_se"],
        "h2_mc_se": report["h2_total_mc_se"],
        "converged": report["converged"],
        "driver_peak_GiB": peak / 2**30,
    }


def _fit(inputs, client, config: FitConfig) -> dict:
    with PeakRSS() as peak:
        report = fit_prepared(inputs, client=client, config=config).to_dict()
    return report_row(report, peak.peak)


def run(quick: bool, large: bool = False) -> list[dict]:
    """The rows described in the module docstring (`quick`: n = 1,000 x m = 4,000)."""
    if large:
        n, m, variances, workers, G_choices = 20000, 100000, (0.3, 0.2), (2,), (2,)
    else:
        (n, m), variances, workers, G_choices = (1000, 4000) if quick else (5000, 50000), (0.2, 0.15, 0.1), (1, 2), (1, 3)
    prefix = cohort(n, m, variances)
    store, pheno, covar = prefix.with_suffix(".zarr"), Path(f"{prefix}.pheno"), Path(f"{prefix}.covar")
    choices = {G: ComponentChoice(spec=Path(f"{prefix}.components.tsv")) if G > 1 else ComponentChoice() for G in G_choices}
    paths = [("randomised", RANDOMISED), ("randomised, rank 64", replace(RANDOMISED, precond_rank=64))]
    if not large:
        paths.append(("exact", replace(RANDOMISED, method="exact")))
    rows = []
    for w in workers:
        with session(n_workers=w) as client:
            for G, choice in choices.items():
                inputs = prepare_inputs(store, pheno, covar=covar, components=choice)
                for label, config in paths:
                    if label == "exact" and w != workers[-1]:
                        continue
                    t0 = time.perf_counter()
                    row = _fit(inputs, client, config)
                    rows.append(
                        {"n": n, "m": m, "G": G, "workers": w, "path": label, **row, "end_to_end_s": time.perf_counter() - t0}
                    )
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--large", action="store_true", help="n = 20,000 x m = 100,000 on 2 workers (about 30 minutes here)")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, large=args.large)))
