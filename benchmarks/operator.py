"""Genotype operator benchmark: one pass against the bare GEMMs, Dask latency, worker memory.

Figures (docs/performance.md, "Genotype operator"):
- pass: one `matmat` of an n x k block (k = 64) through the Dask operator on W CPU workers
  (1 thread each; distributed runs BLAS single-threaded in workers). Shards keep the int8
  codes resident and standardise row blocks on the fly (`dreml.operators.shard`); the
  baseline is the bare NumPy float32 GEMM pair of the same shapes (T = Z V, then Z^T T,
  Z variant-major as float32 shards were) run on the same W workers at the same time, each
  on its m / W variants. ratio = pass / GEMM pair (target <= 1.3). The driver's own GEMM
  pair (all cores) is listed for reference.
- memory: resident shard bytes per genotype (the scheduler's `sizeof`, i.e. `Shard.nbytes`),
  the decode blocks counted in the budget, and the peak RSS of each worker after loading
  and one pass, against the resident bytes and the memory budget.
- latency: a pass over many tiny shards: the per-pass floor and the cost per shard task.
Inputs come from `dreml.simulate` + `converters.convert`, cached under bench_out/operator/.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

import numpy as np

from converters import convert
from dreml.cluster import connect
from dreml.operators import GenotypeOperator
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store, open_store

logger = logging.getLogger(__name__)

CACHE = Path("bench_out/operator")
FULL = {"n": 20_000, "m": 50_000, "k": 64}
QUICK = {"n": 2_000, "m": 5_000, "k": 16}
REPEATS = 3


def cohort_store(n: int, m: int, client=None) -> Store:
    """The simulated cohort's store, simulated and converted on first use."""
    out = CACHE / f"n{n}_m{m}.zarr"
    if out.exists():
        return open_store(out)
    prefix = CACHE / f"n{n}_m{m}"
    if not Path(f"{prefix}.bed").exists():
        logger.info("simulating %d samples x %d variants", n, m)
        simulate_cohort(SimulationConfig(n_samples=n, n_variants=m, n_chromosomes=2, seed=11), prefix)
    return convert("bed", prefix, out, client=client, variant_chunk=1024, sample_chunk=8192)


_BASELINE: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def gemm_pair(n: int, m: int, k: int) -> float:
    """Seconds of one float32 GEMM pair T = Z V, Z^T T with Z of shape (m, n).

    The random Z and V are drawn on the first call and kept in this process, so repeated
    calls time only the GEMMs; `drop_baseline` frees them.
    """
    if (n, m, k) not in _BASELINE:
        rng = np.random.default_rng(0)
        _BASELINE.clear()
        _BASELINE[n, m, k] = rng.standard_normal((m, n), dtype=np.float32), rng.standard_normal((n, k), dtype=np.float32)
    Z, V = _BASELINE[n, m, k]
    t0 = time.perf_counter()
    T = Z @ V  # shape: (m, k)
    Z.T @ T  # shape: (n, k)
    return time.perf_counter() - t0


def drop_baseline() -> None:
    _BASELINE.clear()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kiB


def pass_vs_gemm(store: Store, k: int, n_workers: int) -> dict:
    """One configuration: W workers, the operator pass and the bare GEMM pair.

    Passes and GEMM pairs alternate (best of REPEATS each), so load from other processes
    on a shared machine hits both alike.
    """
    n, m = store.n_samples, store.n_variants
    with connect(n_workers=n_workers, threads_per_worker=1, dashboard_address=None) as client:
        t0 = time.perf_counter()
        op = GenotypeOperator(store, client=client)
        load_s = time.perf_counter() - t0
        V = np.random.default_rng(1).standard_normal((n, k))
        op.matmat(V)  # warm-up, and the peak memory of loading plus one pass
        peak = max(client.run(_peak_rss).values())
        resident = op.resident_bytes()
        m_w = -(-m // n_workers)  # every worker multiplies its share at once
        client.run(gemm_pair, n, m_w, k)
        gemm_times = []
        for _ in range(REPEATS):
            op.matmat(V)
            gemm_times.append(max(client.run(gemm_pair, n, m_w, k).values()))
        pass_s, gemm_s = min(op.pass_times[1:]), min(gemm_times)
        client.run(drop_baseline)
        budget, scratch, n_shards, rows = op.memory_budget, op.scratch_bytes, len(op.shards), int(op.m.sum())
        op.close()
        client.cluster.close()
    return {
        "workers": n_workers,
        "n": n,
        "m": m,
        "k": k,
        "shards": n_shards,
        "load_s": load_s,
        "pass_s": pass_s,
        "gemm_pair_s": gemm_s,
        "ratio": pass_s / gemm_s,
        "gflops": 4.0 * n * m * k / pass_s / 1e9,
        "bytes_per_genotype": sum(resident.values()) / (n * rows),
        "peak_rss_gib": peak / 2**30,
        "shards_gib": max(resident.values()) / 2**30,
        "decode_mib": scratch / 2**20,
        "budget_gib": budget / 2**30,
    }


def latency(store: Store, n_workers: int, shard_variants: int) -> dict:
    """Pass time over many tiny shards (k = 1): the Dask per-pass and per-task floor."""
    with connect(n_workers=n_workers, threads_per_worker=1, dashboard_address=None) as client:
        op = GenotypeOperator(store, client=client, shard_variants=shard_variants)
        V = np.random.default_rng(2).standard_normal((store.n_samples, 1))
        for _ in range(REPEATS):
            op.matmat(V)
        pass_s = min(op.pass_times)
        n_shards = len(op.shards)
        op.close()
        client.cluster.close()
    return {
        "workers": n_workers,
        "n": store.n_samples,
        "shards": n_shards,
        "pass_s": pass_s,
        "ms_per_shard": 1e3 * pass_s / n_shards,
    }


def run(quick: bool) -> list[dict]:
    """Benchmark rows (see the module docstring); `quick` uses small sizes."""
    size = QUICK if quick else FULL
    CACHE.mkdir(parents=True, exist_ok=True)
    store = cohort_store(size["n"], size["m"])
    rows = [dict(case="pass", **pass_vs_gemm(store, size["k"], w)) for w in (1, 2)]
    driver = min(gemm_pair(size["n"], size["m"], size["k"]) for _ in range(REPEATS + 1))
    drop_baseline()
    rows.append(dict(case="driver_gemm", workers=0, n=size["n"], m=size["m"], k=size["k"], gemm_pair_s=driver))
    tiny = cohort_store(1_000, 2_000)
    rows += [dict(case="latency", **latency(tiny, w, s)) for w in (1, 2) for s in (2_000, 10)]
    return rows


def main() -> None:
    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(format_table(run(args.quick)))


if __name__ == "__main__":
    main()
