"""Conversion benchmark: throughput and peak memory beside a raw read, and compression.

Figures (docs/performance.md, "Conversion"):
- convert: `converters.convert` of a simulated n x m cohort's .bed on a 2-worker
  LocalCluster (processes, 1 thread each; cluster start-up not counted), in genotypes/s and
  MB/s of .bed, with the peak resident memory of this process plus every worker process
  (psutil, sampled every 50 ms), and the CPU seconds of all those processes (robust to
  other load on a shared machine, unlike wall time).
- raw read: the same .bed read into one int8 matrix in the same run, by bed-reader and by
  pgenlib; ratio = raw read time / conversion time (target >= 0.5).
- compression: `call_dosage` bytes on disk against int8 and .bed sizes, and against the
  order-0 entropy of each variant's genotype counts (missing as a fourth value), on the
  simulated spectrum and on a rare-variant-heavy one.
Inputs come from `dreml.simulate`, cached under bench_out/ (the .truth.json, written last,
marks a finished simulation).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import threading
import time
from pathlib import Path

import bed_reader
import distributed
import numpy as np
import pgenlib
import psutil

from converters import convert
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store

logger = logging.getLogger(__name__)

CACHE = Path("bench_out")
FULL = {"n": 20_000, "m": 100_000, "m_spectrum": 5_000}
QUICK = {"n": 2_000, "m": 5_000, "m_spectrum": 2_000}
SEED = 11
# the simulator's default spectrum (density 1/p on [0.01, 0.5]) and a rare-variant-heavy one
SPECTRA = {"neutral, MAF >= 0.01": 0.01, "neutral, MAF >= 0.0005": 0.0005}


def cohort(n: int, m: int, maf_min: float = 0.01) -> Path:
    """Prefix of a simulated cohort, simulated on first use."""
    suffix = "" if maf_min == 0.01 else f"_maf{maf_min:g}"
    prefix = CACHE / f"cohort_n{n}_m{m}{suffix}"
    if not Path(f"{prefix}.truth.json").exists():
        logger.info("simulating %d samples x %d variants (MAF >= %g)", n, m, maf_min)
        simulate_cohort(SimulationConfig(n_samples=n, n_variants=m, maf_min=maf_min, seed=SEED), prefix)
    return prefix


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants until stopped."""

    def __init__(self, interval: float = 0.05) -> None:
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a process that ended between listing and reading
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    """User + system CPU seconds so far of this process and its live descendants."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _read_with_bed_reader(bed: Path, n: int) -> None:
    with bed_reader.open_bed(bed) as reader:
        reader.read(dtype="int8")  # samples x variants, Fortran order (variant-major)


def _read_with_pgenlib(bed: Path, n: int) -> None:
    reader = pgenlib.PgenReader(str(bed).encode(), raw_sample_ct=n)
    out = np.empty((reader.get_variant_ct(), n), dtype=np.int8)
    reader.read_range(0, reader.get_variant_ct(), out)
    reader.close()


def raw_reads(prefix: Path, n: int) -> dict[str, tuple[float, float]]:
    """(wall seconds, CPU seconds) each reader takes to read the whole .bed into an int8 matrix."""
    timings = {}
    for name, read in (("bed-reader", _read_with_bed_reader), ("pgenlib", _read_with_pgenlib)):
        t0, c0 = time.perf_counter(), cpu_seconds()
        read(Path(f"{prefix}.bed"), n)
        timings[name] = (time.perf_counter() - t0, cpu_seconds() - c0)
    return timings


def compression(store: Store) -> dict[str, float]:
    """call_dosage bytes on disk against int8, .bed and the order-0 genotype entropy."""
    n, m = store.n_samples, store.n_variants
    on_disk = sum(f.stat().st_size for f in (store.path / "call_dosage").rglob("*") if f.is_file())
    # counts of 0/1/2/missing from the stored statistics: c2 = (sq - sum) / 2, c1 = sum - 2 c2
    c2 = (store.variant_dosage_sq_sum - store.variant_dosage_sum) // 2
    c1 = store.variant_dosage_sum - 2 * c2
    counts = np.stack([store.variant_call_count - c1 - c2, c1, c2, n - store.variant_call_count]) / n
    entropy_bits = -np.sum(counts * np.log2(np.where(counts > 0, counts, 1.0))) * n
    return {
        "ratio_vs_int8": n * m / on_disk,
        "ratio_vs_bed": m * -(-n // 4) / on_disk,
        "bits_per_genotype": 8 * on_disk / (n * m),
        "entropy_bits_per_genotype": float(entropy_bits) / (n * m),
    }


def run(quick: bool) -> list[dict]:
    """Rows of the conversion table (see the module docstring)."""
    sizes = QUICK if quick else FULL
    n, m = sizes["n"], sizes["m"]
    prefix = cohort(n, m)
    out = CACHE / "convert_bench.zarr"
    rows: list[dict] = []
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.run(importlib.import_module, "converters.writer")  # worker imports are start-up
        with PeakMemory() as memory:
            t0, c0 = time.perf_counter(), cpu_seconds()
            store = convert("bed", prefix, out, client=client, overwrite=True)
            seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    bed_mb = Path(f"{prefix}.bed").stat().st_size / 1e6
    rows.append(
        {
            "step": "convert (2 workers)",
            "n": n,
            "m": m,
            "seconds": seconds,
            "cpu seconds": cpu,
            "Mgenotypes/s": n * m / seconds / 1e6,
            "bed MB/s": bed_mb / seconds,
            "peak memory GB": memory.peak / 1e9,
            "raw read / convert": 1.0,
        }
    )
    for reader, (read_seconds, read_cpu) in raw_reads(prefix, n).items():
        rows.append(
            {
                "step": f"raw read ({reader})",
                "n": n,
                "m": m,
                "seconds": read_seconds,
                "cpu seconds": read_cpu,
                "Mgenotypes/s": n * m / read_seconds / 1e6,
                "bed MB/s": bed_mb / read_seconds,
                "raw read / convert": read_seconds / seconds,
            }
        )
    rows.append({"step": f"compression ({next(iter(SPECTRA))})", "n": n, "m": m, **compression(store)})
    for label, maf_min in list(SPECTRA.items())[1:]:
        spectrum_prefix = cohort(n, sizes["m_spectrum"], maf_min)
        spectrum_store = convert("bed", spectrum_prefix, CACHE / "convert_bench_spectrum.zarr", overwrite=True)
        rows.append({"step": f"compression ({label})", "n": n, "m": sizes["m_spectrum"], **compression(spectrum_store)})
    return rows


def main() -> None:
    from benchmarks.run import format_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = run(quick=args.quick)
    print(f"load average during the run (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in psutil.getloadavg())}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
