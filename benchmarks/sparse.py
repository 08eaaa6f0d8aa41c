"""Sparse rare-variant shards against dense int8 shards: resident bytes and pass time.

Figures (docs/performance.md, "Sparse rare-variant shards"), all from one store and one run
(`python -m benchmarks.sparse`; the store is kept and reused by later runs):
- store: a rare-variant cohort (MAF log-uniform on [0.0005, 0.01], the ALT allele the
  minor one for half the variants, per-variant missing rate uniform on [0, 2 x MISSING],
  genotypes in Hardy-Weinberg proportions, no LD), converted with `--sparse-below 0.02`
  (format 1.1; 0.02 rather than 0.01 so that the variants drawn near 0.01 whose observed MAF
  lands above it are sparse too: every variant is): the bytes on disk of `call_dosage`
  (which a 1.1 store keeps complete) and of the sparse arrays, and the conversion's wall time.
- operator: one component of all m variants through the Dask operator on W CPU workers
  (1 thread each), float32 workers, k = 64 columns, default budget; once with sparse
  shards (`sparse=True`, the default) and once with every variant in dense int8 shards
  (`sparse=False`, as a version 1 store would give): load time, resident bytes as the
  scheduler weighs the shards (`nbytes`), resident bytes per genotype, the peak RSS of a
  worker after loading and one pass, and the pass time (best of REPEATS after a warm-up).
  The two operators' K V agree to float32 rounding (`rel_diff`).
The genotypes come from a generator in this module (no PLINK file): each conversion task
draws its chunk from a seed and the chunk's start. The store is cached under bench_out/sparse/.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.convert import write_store
from converters.source import Source
from converters.tables import SampleTable, VariantTable
from dreml.cluster import connect
from dreml.operators import GenotypeOperator
from dreml.store import Store, open_store
from dreml.store_schema import SPARSE_ARRAYS

logger = logging.getLogger(__name__)

CACHE = Path("bench_out/sparse")
FULL = {"n": 20_000, "m": 200_000, "k": 64, "workers": 2}
QUICK = {"n": 2_000, "m": 5_000, "k": 16, "workers": 2}
MAF = (0.0005, 0.01)
MISSING = 0.005  # mean per-variant missing rate
SPARSE_BELOW = 0.02
VARIANT_CHUNK = 1024
REPEATS = 3


@dataclass(frozen=True)
class RareReader:
    """Rare-variant ALT dosages drawn chunk by chunk (a `GenotypeReader`, picklable).

    `read(start, stop)` is a function of (seed, start, stop): the conversion reads every
    chunk once, with the same bounds.
    """

    n_samples: int
    n_variants: int
    seed: int = 7

    def read(self, start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, start, stop])
        r, n = stop - start, self.n_samples
        maf = np.exp(rng.uniform(np.log(MAF[0]), np.log(MAF[1]), size=(r, 1))).astype(np.float32)
        block = (rng.random((r, n), dtype=np.float32) < maf).astype(np.int8)
        block += rng.random((r, n), dtype=np.float32) < maf
        flip = rng.random(r) < 0.5  # the ALT allele the major one
        block[flip] = 2 - block[flip]
        missing = rng.uniform(0, 2 * MISSING, size=(r, 1)).astype(np.float32)
        block[rng.random((r, n), dtype=np.float32) < missing] = -1
        return block

    def for_chunk(self, start: int, stop: int) -> RareReader:
        return self


def synthetic_source(reader, n: int, m: int, contigs: int = 1) -> Source:
    """A `Source` of n samples and m variants (REF A, ALT G) split evenly over `contigs`,
    genotypes drawn by `reader` inside the conversion tasks."""
    ids = np.array([f"s{i}" for i in range(n)])
    contig = np.arange(m) * contigs // m
    starts = np.searchsorted(contig, np.arange(contigs))
    variants = VariantTable(
        contig_id=np.array([str(c + 1) for c in range(contigs)]),
        contig=contig.astype(np.int32),
        position=(np.arange(m) - starts[contig] + 1).astype(np.int64),
        variant_id=np.array([f"v{j}" for j in range(m)]),
        allele=np.tile(np.array(["A", "G"]), (m, 1)),
    )
    return Source(
        format="synthetic", files=(), samples=SampleTable(family_id=ids, sample_id=ids), variants=variants, genotypes=reader
    )


def rare_store(n: int, m: int, client) -> tuple[Store, float]:
    """The cohort's 1.1 store (converted on first use) and the conversion's seconds (NaN if cached)."""
    out = CACHE / f"n{n}_m{m}.zarr"
    if out.exists():
        return open_store(out), float("nan")
    t0 = time.perf_counter()
    source = synthetic_source(RareReader(n, m), n, m)
    store = write_store(source, out, client=client, variant_chunk=VARIANT_CHUNK, sparse_below=SPARSE_BELOW)
    return store, time.perf_counter() - t0


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports kiB


def operator_row(store: Store, client, k: int, sparse: bool, V: np.ndarray) -> tuple[dict, np.ndarray]:
    """Load, one warm-up pass, REPEATS timed passes; the row and the warm-up's K V."""
    t0 = time.perf_counter()
    op = GenotypeOperator(store, client=client, sparse=sparse)
    load_s = time.perf_counter() - t0
    KV = op.matmat(V)[0]
    peak = max(client.run(_peak_rss).values())
    for _ in range(REPEATS):
        op.matmat(V)
    resident = sum(op.resident_bytes().values())
    n, m = op.shape[0], int(op.m.sum())
    row = {
        "shards": "sparse" if sparse else "dense int8",
        "n": n,
        "m": m,
        "k": k,
        "n_shards": len(op.shards),
        "resident_mib": resident / 2**20,
        "bytes_per_genotype": resident / (n * m),
        "load_s": load_s,
        "pass_s": min(op.pass_times[1:]),
        "peak_worker_rss_gib": peak / 2**30,
    }
    op.close()
    return row, KV


def run(quick: bool) -> list[dict]:
    """Benchmark rows (see the module docstring); `quick` uses small sizes."""
    size = QUICK if quick else FULL
    CACHE.mkdir(parents=True, exist_ok=True)
    with connect(n_workers=size["workers"], threads_per_worker=1, dashboard_address=None) as client:
        store, convert_s = rare_store(size["n"], size["m"], client)
        sparse_variants = int(np.sum(store.variant_sparse_allele >= 0))
        calls = int(store.variant_sparse_calls.sum())
        rows = [
            {
                "shards": "store",
                "n": store.n_samples,
                "m": store.n_variants,
                "convert_s": convert_s,
                "sparse_variants": sparse_variants,
                "calls_per_variant": calls / max(1, sparse_variants),
                "call_dosage_mib": store.array_bytes("call_dosage") / 2**20,
                "sparse_arrays_mib": sum(store.array_bytes(a) for a in SPARSE_ARRAYS) / 2**20,
            }
        ]
        V = np.random.default_rng(1).standard_normal((store.n_samples, size["k"]))
        sparse_row, sparse_KV = operator_row(store, client, size["k"], True, V)
        dense_row, dense_KV = operator_row(store, client, size["k"], False, V)
        dense_row["rel_diff"] = sparse_row["rel_diff"] = float(np.linalg.norm(sparse_KV - dense_KV) / np.linalg.norm(dense_KV))
        for row in (sparse_row, dense_row):
            row["pass_vs_dense"] = row["pass_s"] / dense_row["pass_s"]
            row["bytes_vs_dense"] = row["resident_mib"] / dense_row["resident_mib"]
        rows += [sparse_row, dense_row]
        client.cluster.close()
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
