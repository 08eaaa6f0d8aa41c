"""Marginal GWAS benchmark: `dreml.gwas.marginal_gwas` on a local Dask cluster, beside the bare GEMMs.

Rows (docs/performance.md, "Marginal GWAS"): n = 20,000 x m = 100,000 (the cached cohort of
`benchmarks.fit --large`, covariates sex and age, so p = 3), 2 CPU workers of 1 thread, for
1 and 10 traits and both missing modes, shards loaded once and reused by the four passes:
- wall_s: `marginal_gwas` end to end (columns, the pass, store-monomorphic variants, statistics);
  pass_s: the pass over the resident shards alone; variants_per_s = m / wall_s.
- gemm_s: the bare NumPy float64 GEMMs of the same shapes on the driver (all its cores), in
  the shard's row blocks: M @ C_obs (k_obs columns), G @ C_dos (k_dos), G2 @ W (T) for m rows
  of n samples, with one random block reused (no decode). ratio = pass_s / gemm_s.
- plink2 --glm (2 threads) on the same .bed when `plink2` is on PATH, else a row saying so.
The 10 traits are trait1 and 9 copies with its observed values permuted among its observed
samples (same missing pattern, hence the same analysed samples), written once under bench_out/.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.fit import ROOT, cohort
from dreml.cluster import session
from dreml.gwas import load_traits, marginal_gwas, union_samples
from dreml.gwas.marginal import MISSING_MODES, build_columns
from dreml.gwas.shard_sums import _BLOCK_BYTES, _MIN_BLOCK_ROWS
from dreml.operators import GenotypeOperator
from dreml.store import open_store

FULL = {"n": 20_000, "m": 100_000, "variances": (0.3, 0.2)}
QUICK = {"n": 1_000, "m": 4_000, "variances": (0.2, 0.15, 0.1)}
N_TRAITS = 10
WORKERS = 2
REPEATS = 2  # each figure: the fastest of this many runs (the machine is shared)


def shuffled_traits(prefix: Path, copies: int = N_TRAITS - 1, seed: int = 3) -> Path:
    """PREFIX.pheno's first trait and `copies` permutations of its observed values (cached)."""
    out = ROOT / f"gwas_{prefix.name}_{copies + 1}traits.pheno"
    if out.exists():
        return out
    lines = Path(f"{prefix}.pheno").read_text().split("\n")
    rows = [line.split() for line in lines[1:] if line.strip()]
    values = [r[2] for r in rows]
    observed = np.array([i for i, v in enumerate(values) if v != "NA"])
    rng = np.random.default_rng(seed)
    columns = [values]
    for _ in range(copies):
        col = list(values)
        for i, j in zip(observed, rng.permutation(observed)):
            col[i] = values[j]
        columns.append(col)
    header = "FID IID " + " ".join(f"trait{t + 1}" for t in range(copies + 1))
    body = [" ".join([r[0], r[1]] + [c[i] for c in columns]) for i, r in enumerate(rows)]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join([header] + body) + "\n")
    tmp.replace(out)
    return out


def gemm_seconds(m: int, n: int, k_obs: int, k_dos: int, T: int) -> float:
    """Seconds of the bare float64 GEMMs of a pass: M @ C_obs, G @ C_dos, G2 @ W over m rows
    of n samples in the shard's row blocks (`dreml.gwas.shard_sums`), one random block reused."""
    rng = np.random.default_rng(0)
    step = max(_MIN_BLOCK_ROWS, _BLOCK_BYTES // max(1, n * 8))
    block = rng.integers(0, 3, size=(step, n)).astype(np.float64)
    C = [rng.standard_normal((n, k)) for k in (k_obs, k_dos, T)]
    block @ C[0]  # warm up BLAS threads
    t0 = time.perf_counter()
    for lo in range(0, m, step):
        rows = block[: min(step, m - lo)]
        for c in C:
            rows @ c
    return time.perf_counter() - t0


def plink2_row(prefix: Path, pheno: Path, covar: Path, n_traits: int, m: int) -> dict:
    """plink2 --glm on the cohort's .bed, or a row saying it is not installed."""
    exe = shutil.which("plink2")
    row = {"tool": "plink2 --glm", "traits": n_traits, "missing": "complete-case"}
    if exe is None:
        return {**row, "note": "plink2 not on PATH: not run"}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [
                exe,
                "--bfile",
                str(prefix),
                "--pheno",
                str(pheno),
                "--covar",
                str(covar),
                "--glm",
                "hide-covar",
                "--threads",
                str(WORKERS),
                "--out",
                f"{tmp}/p",
            ],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
    return {**row, "wall_s": wall, "variants_per_s": m / wall}


def run(quick: bool, trait_counts: tuple[int, ...] = (1, N_TRAITS)) -> list[dict]:
    """The rows described in the module docstring (`quick`: n = 1,000 x m = 4,000);
    `trait_counts`: the numbers of traits measured (trait1 and shuffled copies)."""
    size = QUICK if quick else FULL
    prefix = cohort(size["n"], size["m"], size["variances"])
    store_path, covar = prefix.with_suffix(".zarr"), Path(f"{prefix}.covar")
    store = open_store(store_path)
    sets = {k: Path(f"{prefix}.pheno") if k == 1 else shuffled_traits(prefix, copies=k - 1) for k in trait_counts}
    traits = {k: load_traits(store.sample_id, path, covar=covar) for k, path in sets.items()}
    traits = {k: ts[:k] for k, ts in traits.items()}
    samples = union_samples(traits[trait_counts[0]])
    assert all(np.array_equal(samples, union_samples(ts)) for ts in traits.values())
    n, m = len(samples), store.n_variants
    rows = []
    with session(n_workers=WORKERS) as client:
        t0 = time.perf_counter()
        with GenotypeOperator([store], None, samples, client=client, dtype=np.dtype("float64")) as operator:
            load_s = time.perf_counter() - t0
            for k, ts in traits.items():
                for missing in MISSING_MODES:
                    C_obs, C_dos, W, _ = build_columns(ts, samples, missing)
                    runs = []
                    for _ in range(REPEATS):
                        t0 = time.perf_counter()
                        result = marginal_gwas(operator, ts, missing=missing)
                        runs.append((time.perf_counter() - t0, result.timings["pass"]))
                    wall, pass_s = min(runs)
                    gemm = min(gemm_seconds(m, n, C_obs.shape[1], C_dos.shape[1], W.shape[1]) for _ in range(REPEATS))
                    rows.append(
                        {
                            "tool": "dreml",
                            "n": n,
                            "m": m,
                            "workers": WORKERS,
                            "traits": k,
                            "missing": missing,
                            "k_obs+k_dos+T": f"{C_obs.shape[1]}+{C_dos.shape[1]}+{W.shape[1]}",
                            "load_s": load_s,
                            "wall_s": wall,
                            "pass_s": pass_s,
                            "variants_per_s": m / wall,
                            "gemm_s": gemm,
                            "ratio": pass_s / gemm,
                            "lambda_gc": result.traits[0].lambda_gc,
                        }
                    )
    for k, path in sets.items():
        rows.append(plink2_row(prefix, path, covar, k, m))
    return rows


if __name__ == "__main__":
    import argparse

    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--traits", type=int, nargs="+", default=[1, N_TRAITS], help="numbers of traits measured")
    args = parser.parse_args()
    print(format_table(run(quick=args.quick, trait_counts=tuple(args.traits))))
