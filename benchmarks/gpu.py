"""GPU benchmark (CUDA machines only): the operator pass on a Dask-CUDA worker, and whole fits.

Figures (docs/performance.md, "GPU"), all from one run on one machine:
- store: a synthetic cohort drawn chunk by chunk inside the conversion tasks (no PLINK file):
  per variant a MAF uniform on [0.05, 0.5], Hardy-Weinberg genotypes, 0.5% missing calls,
  two contigs; converted by a CPU LocalCluster (one worker per core).
- pass: one `matmat` of an n x k block (k = 64, float32 workers) through `GenotypeOperator`
  on a `LocalCUDACluster` (one worker, int8 codes resident on the GPU), against
  (a) the bare CuPy float32 GEMM pair of the same shapes on the same GPU (T = Z V,
  Z^T T; Z is drawn in slices of at most GEMM_SLICE variants and the time scaled by m over
  the slice, so the baseline fits beside nothing else on the device), and
  (b) the same pass on NumPy workers, one per CPU core, on the same machine.
  `rel_diff` is the GPU pass against a float64 NumPy pass of the same block.
- fit: `fit_prepared` (randomised path, seed 0, two components = the two contigs) on the
  GPU worker; the phenotype is y = Z_1 b_1 + Z_2 b_2 + e drawn through the operator
  itself (b_g ~ N(0, h2_g / m_g) on the standardised scale, h2 = 0.3 and 0.2), so the truth
  is the model the fit assumes. Rows: load, fit time, passes, AI iterations, seconds per pass,
  h2 with SE against the truth.
- sparse: a rare-variant store (benchmarks.sparse's generator, format 1.1) through the GPU
  worker with sparse (cupyx.scipy.sparse) and dense int8 shards.
`python -m benchmarks.gpu [--quick]`; rows are empty without CUDA and dask-cuda.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from benchmarks.sparse import rare_store, synthetic_source
from converters.convert import write_store
from dreml.backend import array_module_of, cuda_available
from dreml.cluster import connect
from dreml.fit import ComponentChoice, fit_prepared, prepare_inputs
from dreml.operators import GenotypeOperator
from dreml.operators.shard import _DEVICE_SCRATCH_BYTES as DEVICE_SCRATCH_BYTES
from dreml.reml import FitConfig
from dreml.store import Store, open_store

logger = logging.getLogger(__name__)

CACHE = Path("bench_out/gpu")
FULL = ({"n": 20_000, "m": 100_000}, {"n": 100_000, "m": 100_000})
QUICK = ({"n": 2_000, "m": 10_000},)
K = 64
REPEATS = 5
GEMM_SLICE = 20_000
H2 = (0.3, 0.2)
MISSING = 0.005
VARIANT_CHUNK = 1024


@dataclass(frozen=True)
class CommonReader:
    """Common-variant ALT dosages drawn chunk by chunk (a picklable `GenotypeReader`)."""

    n_samples: int
    n_variants: int
    seed: int = 5

    def read(self, start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, start, stop])
        r, n = stop - start, self.n_samples
        p = rng.uniform(0.05, 0.5, size=(r, 1)).astype(np.float32)
        block = (rng.random((r, n), dtype=np.float32) < p).astype(np.int8)
        block += rng.random((r, n), dtype=np.float32) < p
        block[rng.random((r, n), dtype=np.float32) < MISSING] = -1
        return block

    def for_chunk(self, start: int, stop: int) -> CommonReader:
        return self


def common_store(n: int, m: int, cpu_client) -> tuple[Store, float]:
    out = CACHE / f"common_n{n}_m{m}.zarr"
    if out.exists():
        return open_store(out), float("nan")
    t0 = time.perf_counter()
    source = synthetic_source(CommonReader(n, m), n, m, contigs=2)
    store = write_store(source, out, client=cpu_client, variant_chunk=VARIANT_CHUNK)
    return store, time.perf_counter() - t0


def cupy_gemm_pair(n: int, m: int, k: int) -> float:
    """Seconds of the float32 GEMM pair T = Z V, Z^T T on this process's GPU (Z: m x n, sliced)."""
    import cupy

    rows = min(m, GEMM_SLICE)
    Z = cupy.random.standard_normal((rows, n), dtype=cupy.float32)
    V = cupy.random.standard_normal((n, k), dtype=cupy.float32)
    times = []
    for _ in range(REPEATS + 1):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        Z.T @ (Z @ V)
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    del Z, V
    cupy.get_default_memory_pool().free_all_blocks()
    return min(times[1:]) * m / rows


class _Unfused:
    """CuPy without ElementwiseKernel: the shard decode falls back to its four array operations."""

    def __init__(self, xp) -> None:
        self._xp = xp

    def __getattr__(self, name: str):
        if name == "ElementwiseKernel":
            raise AttributeError(name)
        return getattr(self._xp, name)


def block_rows(store: Store, rows: int = 20_000) -> list[dict]:
    """One shard of `rows` variants on this process's GPU (no Dask): `shard_matmat` seconds
    by decode block size, with the fused decode kernel and without, against the GEMM pair."""
    import cupy

    from dreml.operators import shard as shard_module

    n = store.n_samples
    spec = shard_module.plan_shards(
        [str(store.path)], [np.arange(rows)], [0], np.array([rows]), [store.variant_allele_frequency], rows
    )[0]
    shard = shard_module.load_shard(spec, None, "float32", "cupy")
    V = np.random.default_rng(4).standard_normal((n, K)).astype(np.float32)
    gemm_s = cupy_gemm_pair(n, rows, K)
    table, reference = [], None
    for mib in (32, 128, 512, 2048):
        for fused in (True, False):
            shard_module._DEVICE_SCRATCH_BYTES = mib * 2**20
            shard_module.array_module_of = (lambda x: cupy) if fused else (lambda x: _Unfused(cupy))
            times = []
            for _ in range(REPEATS + 1):
                t0 = time.perf_counter()
                out = shard_module.shard_matmat(shard, V)[0]
                times.append(time.perf_counter() - t0)
            reference = out if reference is None else reference
            table.append(
                {
                    "case": "block sweep",
                    "n": n,
                    "m": rows,
                    "k": K,
                    "block_mib": mib,
                    "block_rows": min(rows, mib * 2**20 // (4 * n)),
                    "fused": fused,
                    "pass_s": min(times[1:]),
                    "gemm_pair_s": gemm_s,
                    "vs_gemm": min(times[1:]) / gemm_s,
                    "rel_diff": float(np.linalg.norm(out - reference) / np.linalg.norm(reference)),
                }
            )
    shard_module.array_module_of = array_module_of
    shard_module._DEVICE_SCRATCH_BYTES = DEVICE_SCRATCH_BYTES
    del shard
    cupy.get_default_memory_pool().free_all_blocks()
    return table


def timed_passes(op: GenotypeOperator, V: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(load-free) best pass seconds over REPEATS after a warm-up, the warm-up's seconds, K V."""
    KV = op.matmat(V)
    for _ in range(REPEATS):
        op.matmat(V)
    return min(op.pass_times[-REPEATS:]), op.pass_times[-REPEATS - 1], KV


def pass_rows(store: Store, gpu_client, cpu_client) -> list[dict]:
    n, m = store.n_samples, store.n_variants
    V = np.random.default_rng(1).standard_normal((n, K))
    rows = []
    t0 = time.perf_counter()
    gpu = GenotypeOperator(store, client=gpu_client)
    load_s = time.perf_counter() - t0
    pass_s, first_s, KV = timed_passes(gpu, V)
    resident = sum(gpu.resident_bytes().values())
    shards = len(gpu.shards)
    gpu.close()
    gemm_s = cupy_gemm_pair(n, m, K)
    rows.append(
        {
            "case": "pass gpu",
            "n": n,
            "m": m,
            "k": K,
            "shards": shards,
            "load_s": load_s,
            "first_pass_s": first_s,
            "pass_s": pass_s,
            "gemm_pair_s": gemm_s,
            "vs_gemm": pass_s / gemm_s,
            "tflops": 4.0 * n * m * K / pass_s / 1e12,
            "resident_gib": resident / 2**30,
        }
    )
    t0 = time.perf_counter()
    cpu = GenotypeOperator(store, client=cpu_client, backend="numpy")
    cpu_load = time.perf_counter() - t0
    cpu_pass, _, _ = timed_passes(cpu, V)
    cpu.close()
    reference = GenotypeOperator(store, client=cpu_client, backend="numpy", dtype=np.float64)
    exact = reference.matmat(V)
    reference.close()
    rel = float(np.linalg.norm(KV - exact) / np.linalg.norm(exact))
    rows[0]["rel_diff"] = rel
    rows.append(
        {
            "case": f"pass cpu x{len(cpu_client.scheduler_info()['workers'])}",
            "n": n,
            "m": m,
            "k": K,
            "load_s": cpu_load,
            "pass_s": cpu_pass,
            "vs_gpu": cpu_pass / pass_s,
        }
    )
    return rows


def simulated_phenotype(store: Store, gpu_client, path: Path) -> dict:
    """y = sum_g Z_g b_g + e through the operator (b_g ~ N(0, h2_g / m_g)); writes FID IID y."""
    op = GenotypeOperator(store, ComponentChoice(by_chromosome=True).resolve([store]), client=gpu_client, dtype=np.float64)
    rng = np.random.default_rng(3)
    B = [rng.standard_normal((int(m_g), 1)) * np.sqrt(h / m_g) for h, m_g in zip(H2, op.m)]
    g = op.z_matmat(B).sum(axis=0)[:, 0]
    op.close()
    e = rng.standard_normal(store.n_samples) * np.sqrt(1 - sum(H2))
    y = g + e
    ids = store.sample_id
    path.write_text("FID IID y\n" + "".join(f"{i} {i} {v:.8g}\n" for i, v in zip(ids, y)))
    return {"h2_realised": float(np.var(g) / np.var(y))}


def fit_row(store: Store, gpu_client) -> dict:
    pheno = CACHE / f"common_n{store.n_samples}_m{store.n_variants}.pheno"
    truth = simulated_phenotype(store, gpu_client, pheno)
    inputs = prepare_inputs(store.path, pheno, components=ComponentChoice(by_chromosome=True))
    t0 = time.perf_counter()
    report = fit_prepared(inputs, client=gpu_client, config=FitConfig(method="randomised", seed=0)).to_dict()
    wall = time.perf_counter() - t0
    fit_s = report["timings"]["total"]  # shard loading excluded
    return {
        "case": "fit gpu",
        "n": store.n_samples,
        "m": store.n_variants,
        "load_s": report["timings"]["shard_load"],
        "fit_s": fit_s,
        "wall_s": wall,
        "iterations": report["iterations"],
        "passes": report["passes"],
        "s_per_pass": fit_s / report["passes"],
        "h2": report["h2_total"],
        "h2_se": report["h2_total_se"],
        "h2_truth": sum(H2),
        **truth,
        "converged": report["converged"],
    }


def sparse_rows(n: int, m: int, gpu_client, cpu_client) -> list[dict]:
    store, _ = rare_store(n, m, cpu_client)
    V = np.random.default_rng(1).standard_normal((n, K))
    rows, products = [], []
    for sparse in (True, False):
        t0 = time.perf_counter()
        op = GenotypeOperator(store, client=gpu_client, sparse=sparse)
        load_s = time.perf_counter() - t0
        pass_s, _, KV = timed_passes(op, V)
        products.append(KV)
        rows.append(
            {
                "case": "rare sparse gpu" if sparse else "rare dense gpu",
                "n": n,
                "m": m,
                "k": K,
                "load_s": load_s,
                "pass_s": pass_s,
                "resident_gib": sum(op.resident_bytes().values()) / 2**30,
            }
        )
        op.close()
    rel = float(np.linalg.norm(products[0] - products[1]) / np.linalg.norm(products[1]))
    for row in rows:
        row["rel_diff"] = rel
        row["vs_dense"] = row["pass_s"] / rows[-1]["pass_s"]
    return rows


PARTS = ("read", "sweep", "pass", "fit", "large", "sparse")


def read_probe(path: str, rows: int = 8192) -> dict:
    """Seconds and CPU seconds of reading `rows` variants of int8 codes from the store (`dosage`)."""
    store = open_store(path)
    t0, c0 = time.perf_counter(), time.process_time()
    codes = store.dosage(0, min(rows, store.n_variants))
    wall = time.perf_counter() - t0
    return {"read_s": wall, "cpu_per_wall": (time.process_time() - c0) / wall, "read_mb_s": codes.nbytes / wall / 1e6}


def read_rows(store: Store, gpu_client) -> list[dict]:
    """Store read throughput in this process and inside the GPU worker (which loads every shard)."""
    rows = [{"case": "read driver", "n": store.n_samples, **read_probe(str(store.path))}]
    for probe in gpu_client.run(read_probe, str(store.path)).values():
        rows.append({"case": "read gpu worker", "n": store.n_samples, **probe})
    return rows


def run(quick: bool, parts: tuple[str, ...] = PARTS, sink: Path | None = None) -> list[dict]:
    """Benchmark rows (see the module docstring) of the chosen `parts`; `quick` uses small
    sizes; none without CUDA. `sink`: a JSON file rewritten with the rows so far after each
    part (a run cut short keeps what it measured)."""
    if not cuda_available():
        logger.warning("benchmarks.gpu: no CUDA device; nothing to measure")
        return []
    from distributed import Client, LocalCluster

    CACHE.mkdir(parents=True, exist_ok=True)
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    rows: list[dict] = []
    sizes = QUICK if quick else FULL if "large" in parts else FULL[:1]
    with (
        Client(LocalCluster(n_workers=cores, threads_per_worker=1, dashboard_address=None)) as cpu_client,
        connect(dashboard_address=None) as gpu_client,
    ):
        for size in sizes:
            store, convert_s = common_store(size["n"], size["m"], cpu_client)
            logger.info("store n=%d m=%d converted in %.1f s", size["n"], size["m"], convert_s)
            if size is sizes[0]:
                rows += read_rows(store, gpu_client) if "read" in parts else []
                _save(rows, sink)
                rows += block_rows(store, min(20_000, store.n_variants)) if "sweep" in parts else []
                _save(rows, sink)
                rows += pass_rows(store, gpu_client, cpu_client) if "pass" in parts else []
                _save(rows, sink)
            if "fit" in parts:
                rows.append(fit_row(store, gpu_client))
                _save(rows, sink)
        if "sparse" in parts:
            n_rare, m_rare = (2_000, 5_000) if quick else (20_000, 200_000)
            rows += sparse_rows(n_rare, m_rare, gpu_client, cpu_client)
            _save(rows, sink)
    return rows


def _save(rows: list[dict], sink: Path | None) -> None:
    if sink is not None:
        sink.write_text(json.dumps(rows, indent=1))


def main() -> None:
    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = run(args.quick, tuple(args.parts.split(",")), args.json)
    print(format_table(rows))


if __name__ == "__main__":
    main()
