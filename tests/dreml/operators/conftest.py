"""Fixtures of the genotype-operator tests: a small simulated cohort converted to stores,
an independent dense reference read by bed-reader, and real local Dask clusters.

Sizes are chosen so that nothing divides evenly: n = 157 samples in sample chunks of 40,
m = 403 variants in variant chunks of 50, shards of 37 rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from bed_reader import open_bed
from distributed import Client, LocalCluster

from converters import convert
from dreml.plink_write import write_plink1
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store

N, M = 157, 403


@dataclass(frozen=True)
class Cohort:
    prefix: Path
    store: Store
    genotypes: np.ndarray  # shape: (n, m), float64 ALT counts, NaN missing (read by bed-reader)


def read_bed(prefix: Path) -> np.ndarray:
    """ALT (= .bim A1) dosages as (n, m) float64 with NaN missing, by bed-reader."""
    with open_bed(f"{prefix}.bed", count_A1=True) as bed:
        return bed.read(dtype="float64")


def reference_Z(genotypes: np.ndarray, samples=None, frequencies: str = "store") -> tuple[np.ndarray, np.ndarray]:
    """GCTA-standardised Z (n x m) of the analysed samples and the polymorphic mask.

    p comes from all samples ("store") or from the analysed ones ("samples"); missing -> 0.
    """
    X = genotypes if samples is None else genotypes[samples]
    base = genotypes if frequencies == "store" else X
    with np.errstate(invalid="ignore", divide="ignore"):  # all-missing and monomorphic columns
        p = np.nansum(base, axis=0) / (2.0 * np.sum(~np.isnan(base), axis=0))
        polymorphic = np.isfinite(p) & (p > 0) & (p < 1)
        Z = (X - 2 * p) / np.sqrt(2 * p * (1 - p))
    Z[np.isnan(X)] = 0.0
    Z[:, ~polymorphic] = 0.0
    return Z, polymorphic


def reference_KV(
    genotypes: np.ndarray, indices: list[np.ndarray], V: np.ndarray, samples=None, frequencies: str = "store"
) -> tuple[np.ndarray, list[int]]:  # V shape: (n, k) -> (G, n, k)
    """Dense Z_g Z_g^T V / m_g per component (monomorphic variants dropped) and the m_g."""
    Z, polymorphic = reference_Z(genotypes, samples, frequencies)
    out, m = [], []
    for idx in indices:
        keep = idx[polymorphic[idx]]
        Zg = Z[:, keep]
        out.append(Zg @ (Zg.T @ V) / len(keep))
        m.append(len(keep))
    return np.stack(out), m


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Cohort:
    """A 3-chromosome cohort with missing calls (and, at this size, a monomorphic variant)."""
    root = tmp_path_factory.mktemp("cohort")
    prefix = root / "sim"
    simulate_cohort(
        SimulationConfig(n_samples=N, n_variants=M, n_chromosomes=3, group_variances=(0.2, 0.1, 0.1), seed=7),
        prefix,
    )
    genotypes = read_bed(prefix)
    assert genotypes.shape == (N, M)
    store = convert("bed", prefix, root / "sim.zarr", variant_chunk=50, sample_chunk=40)
    return Cohort(prefix, store, genotypes)


@pytest.fixture(scope="session")
def split_cohort(cohort, tmp_path_factory) -> tuple[list[Store], list[np.ndarray]]:
    """The cohort's variants split into two stores with the same samples (multi-store)."""
    root = tmp_path_factory.mktemp("split")
    g = cohort.genotypes
    dosage = np.where(np.isnan(g), -1, g).astype(np.int8).T  # shape: (m, n)
    parts = [np.arange(0, 150), np.arange(150, M)]
    stores = []
    for i, idx in enumerate(parts):
        prefix = root / f"part{i}"
        write_plink1(prefix, dosage[idx], sample_id=np.array([f"I{j + 1}" for j in range(N)]),
                     variant_id=np.array([f"p{i}v{j}" for j in idx]))
        stores.append(convert("bed", prefix, root / f"part{i}.zarr", variant_chunk=33, sample_chunk=64))
    return stores, parts


def _cluster(n_workers: int):
    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="2GiB",
    )
    client = Client(cluster)
    return cluster, client


@pytest.fixture(scope="session")
def client2():
    cluster, client = _cluster(2)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def client1():
    cluster, client = _cluster(1)
    yield client
    client.close()
    cluster.close()
