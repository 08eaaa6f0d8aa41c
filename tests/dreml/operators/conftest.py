"""Fixtures of the genotype-operator tests: a small simulated cohort converted to stores, a
rare-variant cohort converted with and without sparse rows, and real local Dask clusters
(helpers and sizes in genotype_reference.py)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from distributed import Client, LocalCluster
from genotype_reference import Cohort, M, N, RareCohort, read_bed

from converters import convert
from dreml.plink_write import write_plink1
from dreml.simulate import SimulationConfig, simulate_cohort
from dreml.store import Store


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
def rare_cohort(tmp_path_factory) -> RareCohort:
    """A cohort whose MAF spectrum reaches 0.003 (about half its variants below 0.05, the
    ALT allele the minor one for half of them), 3% missing calls, converted twice: a version
    1 store and a 1.1 store with the variants below MAF 0.05 also sparse."""
    root = tmp_path_factory.mktemp("rare")
    prefix = root / "rare"
    simulate_cohort(
        SimulationConfig(
            n_samples=N, n_variants=M, n_chromosomes=3, group_variances=(0.2, 0.1, 0.1), maf_min=0.003, missing_rate=0.03, seed=11
        ),
        prefix,
    )
    chunks = {"variant_chunk": 50, "sample_chunk": 40}
    dense = convert("bed", prefix, root / "dense.zarr", **chunks)
    sparse = convert("bed", prefix, root / "sparse.zarr", sparse_below=0.05, **chunks)
    return RareCohort(prefix, dense, sparse, read_bed(prefix))


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
        write_plink1(
            prefix,
            dosage[idx],
            sample_id=np.array([f"I{j + 1}" for j in range(N)]),
            variant_id=np.array([f"p{i}v{j}" for j in idx]),
        )
        stores.append(convert("bed", prefix, root / f"part{i}.zarr", variant_chunk=33, sample_chunk=64))
    return stores, parts


def _client(n_workers: int) -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="2GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def client2() -> Iterator[Client]:
    yield from _client(2)


@pytest.fixture(scope="session")
def client1() -> Iterator[Client]:
    yield from _client(1)
