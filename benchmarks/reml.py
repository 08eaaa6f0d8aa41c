"""REML engine benchmark: fit time, passes and PCG iterations, with and without the preconditioner,
beside the exact dense path at the same n.

`run(quick, operator_factory=...)`: the factory builds an operator from standardised genotype
blocks Z_g (n x m_g); the default is the dense reference with `traces()`. The Dask operator
plugs in the same way (a factory that writes a store and opens a `GenotypeOperator` on it).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pgenlib

from dreml.operators import DenseOperator
from dreml.operators.protocol import GRMOperator
from dreml.reml import FitConfig, fit_reml
from dreml.simulate import SimulationConfig, simulate_cohort, standardise

RANDOMISED = FitConfig(method="randomised", seed=0)
OperatorFactory = Callable[[Sequence[np.ndarray]], GRMOperator]


def dense_factory(Z: Sequence[np.ndarray]) -> GRMOperator:
    return DenseOperator.from_genotypes(Z)


def _genotypes(n: int, m: int, G: int, ld: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """Standardised genotypes split into G blocks: LD-free binomial (MAF uniform on [0.05, 0.5]),
    or the simulator's LD blocks (`dreml.simulate`, AR(1) rho 0.9, mean block 40 SNPs)."""
    if ld:
        with tempfile.TemporaryDirectory() as tmp:
            prefix = str(Path(tmp) / "c")
            simulate_cohort(SimulationConfig(n_samples=n, n_variants=m, seed=int(rng.integers(2**31))), prefix)
            dosage = np.empty((m, n), dtype=np.int8)
            with pgenlib.PgenReader((prefix + ".bed").encode(), raw_sample_ct=n) as reader:
                reader.read_range(0, m, dosage)
        dosage[dosage == -9] = -1
    else:
        dosage = rng.binomial(2, rng.uniform(0.05, 0.5, size=m)[:, None], size=(m, n)).astype(np.int8)
    Z, polymorphic = standardise(dosage)
    return [z.T.copy() for z in np.array_split(Z[polymorphic], G)]


def _fit_row(op: GRMOperator, y, X, config: FitConfig) -> dict:
    t0 = time.perf_counter()
    result = fit_reml(op, y, X, config)
    pcg = [h["pcg"]["iterations"] for h in result.history if "pcg" in h]
    return {
        "time_s": time.perf_counter() - t0,
        "iterations": result.iterations,
        "passes": result.passes,
        **{f"p_{k}": result.passes_by_kind.get(k, 0) for k in ("setup", "score", "warm_start", "information", "final")},
        "pcg_iters_per_solve": float(np.mean(pcg)) if pcg else float("nan"),
        "h2_total": result.h2_total,
        "loglik": result.loglik,
        "converged": result.converged,
    }


def run(quick: bool, operator_factory: OperatorFactory = dense_factory) -> list[dict]:
    """One row per (genotypes, n, G, path): randomised with the preconditioner, without it, exact."""
    sizes = [(1000, 2000)] if quick else [(2000, 8000), (4000, 8000)]
    rows = []
    for (n, m), G, ld in ((size, G, ld) for size in sizes for G in (1, 3) for ld in (False, True)):
        rng = np.random.default_rng(n + G)
        Z = _genotypes(n, m, G, ld, rng)
        X = np.column_stack([np.ones(n), rng.standard_normal(n)])
        y = X.sum(axis=1) + sum(z @ rng.standard_normal(z.shape[1]) * np.sqrt(0.5 / G / z.shape[1]) for z in Z)
        y += rng.standard_normal(n) * np.sqrt(0.5)
        op = operator_factory(Z)
        for label, config in (
            ("randomised", RANDOMISED),
            ("randomised, rank 64", replace(RANDOMISED, precond_rank=64)),
            ("exact", replace(RANDOMISED, method="exact")),
        ):
            rows.append(
                {"genotypes": "LD" if ld else "no LD", "n": n, "m": m, "G": G, "path": label, **_fit_row(op, y, X, config)}
            )
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(format_table(run(quick=parser.parse_args().quick)))
