"""CuPy workers and Dask-CUDA clusters; skipped cleanly without CuPy, CUDA or dask-cuda."""

from __future__ import annotations

import numpy as np
import pytest
from genotype_reference import N, reference_KV, rel_err

from dreml.backend import array_module, array_module_of, cuda_available
from dreml.components import by_chromosome
from dreml.operators import GenotypeOperator, StreamingOperator
from dreml.operators.shard import load_shard, plan_shards

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device"),
]


def _expected(cohort, V):
    contig = cohort.store.variant_contig
    return reference_KV(cohort.genotypes, [np.flatnonzero(contig == c) for c in range(3)], V)[0]


def test_array_module__auto_picks_cupy_on_gpu():
    assert array_module("auto").__name__ == "cupy"


def test_load_shard__int8_codes_resident_on_device(cohort):
    import cupy

    store = cohort.store
    spec = plan_shards([str(store.path)], [np.arange(50)], [0], np.array([50]), [store.variant_allele_frequency], 100)[0]
    pool = cupy.get_default_memory_pool()
    before = pool.used_bytes()
    shard = load_shard(spec, None, "float32", "cupy")
    assert array_module_of(shard.codes) is cupy and shard.codes.dtype == np.int8
    # 1 byte per genotype on the device (CuPy rounds allocations up to 512 bytes)
    assert 50 * N <= pool.used_bytes() - before < 50 * N + 512


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming__cupy_matches_dense(cohort, dtype):
    V = np.random.default_rng(0).standard_normal((N, 4))
    op = StreamingOperator(cohort.store, by_chromosome(cohort.store), dtype=dtype, backend="cupy", shard_variants=37)
    theta = np.array([0.5, 2.0, 0.25])
    got, weighted = op.matmat(V), op.matmat(V, weights=theta)
    assert isinstance(got, np.ndarray)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    assert rel_err(got, _expected(cohort, V)) <= tol
    assert rel_err(weighted, np.einsum("g,gnk->nk", theta, _expected(cohort, V))) <= tol


def test_genotype_operator__dask_cuda_cluster(cohort):
    pytest.importorskip("dask_cuda")
    from dreml.cluster import connect

    client = connect(dashboard_address=None)
    try:
        V = np.random.default_rng(1).standard_normal((N, 4))
        op = GenotypeOperator(cohort.store, by_chromosome(cohort.store), client=client, shard_variants=37)
        assert rel_err(op.matmat(V), _expected(cohort, V)) <= 1e-6
        kinds = client.run(lambda: array_module("auto").__name__)
        assert set(kinds.values()) == {"cupy"}
        op.close()
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming__cupy_sparse_shards_match_dense(rare_cohort, dtype):
    # cupyx.scipy.sparse products on the device; the store's components mix sparse and dense rows
    store = rare_cohort.sparse
    V = np.random.default_rng(2).standard_normal((N, 4))
    op = StreamingOperator(store, by_chromosome(store), dtype=dtype, backend="cupy", shard_variants=37)
    contig = store.variant_contig
    expected = reference_KV(rare_cohort.genotypes, [np.flatnonzero(contig == c) for c in range(3)], V)[0]
    assert rel_err(op.matmat(V), expected) <= (1e-6 if dtype == np.float32 else 1e-12)
