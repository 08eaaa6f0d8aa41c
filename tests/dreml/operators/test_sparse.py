"""Sparse shards (format 1.1 stores) against dense shards and the independent reference.

The rare cohort is converted twice (genotype_reference.RareCohort): a version 1 store and a
1.1 store whose variants below MAF 0.05 are also sparse. Every product of an operator on
the 1.1 store (its components mix sparse and dense variants) must equal the product on the
version 1 store, and the dense Z of bed-reader + NumPy, to 1e-12 with float64 workers.
"""

from __future__ import annotations

import dataclasses

import fake_cupy
import numpy as np
import pytest
from dask.sizeof import sizeof
from genotype_reference import N, reference_KV, reference_Z, rel_err
from test_fake_cupy import _on_workers

from dreml.backend import cuda_available, to_numpy
from dreml.components import Components, by_chromosome
from dreml.errors import InputError
from dreml.operators import GenotypeOperator, StreamingOperator, dense_reference
from dreml.operators import sparse as sparse_module
from dreml.operators.plan import SPARSE_CALL_BYTES, plan_shards, resident_row_bytes, sparse_row_bytes
from dreml.operators.shard import (
    Shard,
    load_shard,
    shard_diagonal,
    shard_matmat,
    shard_traces,
    shard_z,
    shard_zt,
)
from dreml.operators.sparse import SparseShard

K = 4
SHARD_ROWS = 37


def _subset():
    return np.random.default_rng(3).permutation(N)[:101]  # unsorted: order must be kept


def _case(name, store):
    """(components, samples, frequencies, reference index sets) of a case on `store`."""
    chroms = [np.flatnonzero(store.variant_contig == c) for c in range(3)]
    M = store.n_variants
    if name == "one":
        return None, None, "store", [np.arange(M)]
    if name == "three":
        return by_chromosome(store), None, "store", chroms
    if name == "overlapping":
        idx = [np.arange(0, 250), np.arange(200, M), np.arange(5, M, 3)]
        return Components(("a", "b", "c"), tuple(idx)), None, "store", idx
    if name == "subset_sample_frequencies":
        return by_chromosome(store), _subset(), "samples", chroms
    raise AssertionError(name)


def _operator(kind, store, components, samples, frequencies, dtype, request, **options):
    if kind == "streaming":
        return StreamingOperator(
            store, components, samples, dtype=dtype, frequencies=frequencies, shard_variants=SHARD_ROWS, **options
        )
    return GenotypeOperator(
        store,
        components,
        samples,
        client=request.getfixturevalue("client2"),
        dtype=dtype,
        frequencies=frequencies,
        shard_variants=SHARD_ROWS,
        **options,
    )


def _close(op) -> None:
    if isinstance(op, GenotypeOperator):
        op.close()


# ----------------------------------------------------------------------------- the cohort


def test_rare_cohort__sparse_store_mixes_kinds_in_components(rare_cohort):
    store = rare_cohort.sparse
    allele = store.variant_sparse_allele
    assert rare_cohort.dense.format_version == 1 and store.format_version == "1.1"
    assert 100 < np.sum(allele >= 0) < store.n_variants - 100  # both kinds, plenty of each
    assert {0, 1} <= set(allele[allele >= 0])  # rows counting ALT and rows counting REF
    sparse_missing = store.variant_call_count[allele >= 0] < store.n_samples
    assert sparse_missing.sum() > 50  # missing calls among the rare variants

    op = StreamingOperator(store, by_chromosome(store), shard_variants=SHARD_ROWS)

    kinds = {g: {spec.sparse for spec in op.shard_specs if g in spec.components} for g in range(3)}
    assert kinds == {g: {False, True} for g in range(3)}  # every component holds both kinds
    assert len({spec.start // 50 for spec in op.shard_specs if spec.sparse}) > 3  # across store chunks


# ----------------------------------------------------------------------------- planning


@pytest.mark.parametrize(("max_rows", "max_bytes", "multiple_of"), [(1000, 400, 1), (7, 10_000, 2), (30, 600, 3)])
def test_plan_shards__sparse_rows_in_sparse_shards_within_bounds(max_rows, max_bytes, multiple_of):
    rng = np.random.default_rng(0)
    n_var = 120
    calls = np.where(rng.random(n_var) < 0.6, rng.integers(0, 30, n_var), -1)
    indices = [np.arange(0, 80), np.arange(50, 120), np.arange(3, 120, 4)]  # overlapping
    m = np.array([len(i) for i in indices])

    specs = plan_shards(
        ["s"],
        indices,
        [0, 0, 0],
        m,
        [np.linspace(0.1, 0.4, n_var)],
        max_rows,
        multiple_of,
        sparse_calls=[calls],
        max_bytes=max_bytes,
    )

    seen = {g: [] for g in range(3)}
    for spec in specs:
        variants = spec.start + spec.rows
        assert np.all((calls[variants] >= 0) == spec.sparse)  # one kind per shard
        assert spec.n_calls == (calls[variants].sum() if spec.sparse else 0)
        for g, a, b in zip(spec.components, spec.bounds[:-1], spec.bounds[1:]):
            seen[g].extend(spec.start + spec.rows[a:b])
        if spec.sparse:  # balanced cuts: within the bounds up to one variant's rows
            biggest = 3 * max(int(sparse_row_bytes(c)) for c in calls[variants])
            assert spec.resident_bytes(9) <= max_bytes + biggest
            assert spec.n_rows <= max_rows + 3
    for g in range(3):
        np.testing.assert_array_equal(np.sort(seen[g]), indices[g])
    for sparse in (False, True):
        assert sum(spec.sparse == sparse for spec in specs) % multiple_of == 0


def test_plan_shards__without_sparse_calls_unchanged():
    indices = [np.arange(0, 60), np.arange(40, 97)]
    m = np.array([60, 57])
    freqs = [np.linspace(0.1, 0.9, 97)]
    plain = plan_shards(["s"], indices, [0, 0], m, freqs, 23, 2)
    none = plan_shards(["s"], indices, [0, 0], m, freqs, 23, 2, sparse_calls=[np.full(97, -1)], max_bytes=10)

    assert [(s.start, s.stop, s.sparse) for s in plain] == [(s.start, s.stop, s.sparse) for s in none]
    assert not any(s.sparse for s in plain)


# ----------------------------------------------------------------------------- one shard


def _shards(store, dtype, samples=None, indices=None):
    """(sparse shard, dense shard of the same rows) of the sparse variants 0..200 of two
    overlapping components."""
    sparse_idx = np.flatnonzero(store.variant_sparse_allele >= 0)
    sparse_idx = sparse_idx[store.variant_maf[sparse_idx] > 0]  # polymorphic
    indices = indices or [sparse_idx[sparse_idx < 200], sparse_idx[(sparse_idx > 60) & (sparse_idx < 300)]]
    m = np.array([len(i) for i in indices])
    calls = np.where(store.variant_sparse_allele >= 0, store.variant_sparse_calls, -1)
    spec = plan_shards([str(store.path)], indices, [0, 0], m, [store.variant_allele_frequency], 1000, sparse_calls=[calls])[0]
    assert spec.sparse and spec.n_rows == m.sum()
    return (
        load_shard(spec, samples, dtype, "numpy"),
        load_shard(dataclasses.replace(spec, sparse=False), samples, dtype, "numpy"),
        spec,
    )


@pytest.mark.parametrize("samples", [None, np.array([150, 3, 77, 12, 99, 0, 42])])
def test_load_shard__sparse_calls_counts_and_bytes(rare_cohort, samples):
    sparse, dense, spec = _shards(rare_cohort.sparse, "float32", samples)

    assert isinstance(sparse, SparseShard) and isinstance(dense, Shard)
    np.testing.assert_array_equal(to_numpy(sparse.codes), dense.codes)  # the dense view
    np.testing.assert_array_equal(sparse.counts, dense.counts)
    assert sparse.sample.dtype == np.int32 and sparse.dosage.dtype == np.int8
    c, E = spec.n_rows, sparse.n_calls
    # sample (int32) and dosage (int8) per call; indptr, flag, frequency and 4 counts per row
    assert sparse.nbytes == sizeof(sparse) == 4 * E + E + 8 * (c + 1) + c + 8 * c + 4 * 8 * c + sparse.inv_m.nbytes
    if samples is None:  # planned from the store's calls: exact over all samples, an upper bound otherwise
        assert sparse.nbytes == spec.resident_bytes(N) + sparse.inv_m.nbytes
        assert SPARSE_CALL_BYTES * E < c * N / 3  # the genotypes; 89 bytes per row besides weigh at n = 157
    else:
        assert sparse.nbytes < spec.resident_bytes(len(samples)) + sparse.inv_m.nbytes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scratch", [0, 1 << 30])  # one call per block, or whole groups
@pytest.mark.parametrize("samples", [None, _subset()])
def test_sparse_shard__products_equal_dense_shard(rare_cohort, dtype, scratch, samples, monkeypatch):
    monkeypatch.setattr(sparse_module, "_SCRATCH_BYTES", scratch)
    sparse, dense, spec = _shards(rare_cohort.sparse, dtype, samples)
    n = dense.n_samples
    rng = np.random.default_rng(1)
    V = rng.standard_normal((n, 3))
    V[:, 0] += 3.0  # a column mean: the rank-one centring must cancel it
    B = rng.standard_normal((spec.n_rows, 3))
    theta = np.array([2.0, -1.0])
    tol = 1e-13 if dtype == "float64" else 2e-6

    def close(a, b):
        if isinstance(a, dict):
            assert sorted(a) == sorted(b)
            return all(close(a[g], b[g]) for g in a)
        assert rel_err(a, b) <= tol, rel_err(a, b)
        return True

    assert close(shard_matmat(sparse, V.astype(dtype)), shard_matmat(dense, V.astype(dtype)))
    assert close(shard_matmat(sparse, V.astype(dtype), theta), shard_matmat(dense, V.astype(dtype), theta))
    assert close(shard_zt(sparse, V.astype(dtype)), shard_zt(dense, V.astype(dtype)))
    assert close(shard_z(sparse, B), shard_z(dense, B))
    diagonal = shard_diagonal(sparse)
    for g, d in shard_diagonal(dense).items():
        np.testing.assert_allclose(diagonal[g], d, rtol=1e-13)  # float64 whatever the worker dtype
    np.testing.assert_allclose(shard_traces(sparse), shard_traces(dense), rtol=1e-14)


def test_sparse_shard__gwas_shard_functions_see_the_dense_view(rare_cohort):
    """The GWAS shard functions walk int8 rows: a sparse shard gives them its dense view."""
    from dreml.gwas.mixed import shard_columns, shard_row_stats
    from dreml.gwas.shard_sums import shard_sums

    sparse, dense, spec = _shards(rare_cohort.sparse, "float64", _subset())
    rng = np.random.default_rng(2)
    C = rng.standard_normal((dense.n_samples, 2))
    W = (rng.random((dense.n_samples, 1)) < 0.9).astype(float)
    rows = np.array([0, 5, spec.n_rows - 1])

    for a, b in zip(shard_sums(sparse, C, C, W), shard_sums(dense, C, C, W)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(shard_row_stats(sparse), shard_row_stats(dense))
    np.testing.assert_array_equal(shard_columns(sparse, rows), shard_columns(dense, rows))


# ----------------------------------------------------------------------------- operators


@pytest.mark.parametrize("kind", ["streaming", "dask2"])
@pytest.mark.parametrize("case", ["one", "three", "overlapping", "subset_sample_frequencies"])
def test_operator__sparse_store_equals_dense_store(case, kind, rare_cohort, request):
    """K_g V (stacked, weighted), Z_g^T U, Z_g B, diag(K_g), tr(K_g): float64 workers, 1e-12."""
    components, samples, frequencies, indices = _case(case, rare_cohort.sparse)
    ops = [
        _operator(kind, store, components, samples, frequencies, np.float64, request)
        for store in (rare_cohort.sparse, rare_cohort.dense)
    ]
    sparse, dense = ops
    n = N if samples is None else len(samples)
    rng = np.random.default_rng(4)
    V = rng.standard_normal((n, K))
    theta = np.linspace(0.5, 2.0, len(indices))
    B = [rng.standard_normal((int(m), 2)) for m in dense.m]

    assert any(s.sparse for s in sparse.shard_specs) and not any(s.sparse for s in dense.shard_specs)
    assert list(sparse.m) == list(dense.m)
    KV = sparse.matmat(V)
    assert rel_err(KV, dense.matmat(V)) <= 1e-12
    assert rel_err(KV, reference_KV(rare_cohort.genotypes, indices, V, samples, frequencies)[0]) <= 1e-12
    assert rel_err(sparse.matmat(V, weights=theta), dense.matmat(V, weights=theta)) <= 1e-12
    for a, b in zip(sparse.zt_matmat(V), dense.zt_matmat(V)):
        assert rel_err(a, b) <= 1e-12
    assert rel_err(sparse.z_matmat(B), dense.z_matmat(B)) <= 1e-12
    assert rel_err(sparse.diagonal(), dense.diagonal()) <= 1e-13
    np.testing.assert_allclose(sparse.traces(), dense.traces(), rtol=1e-13)
    assert sparse.passes == dense.passes == 4  # diag and traces are not passes
    for op in ops:
        _close(op)


@pytest.mark.parametrize("kind", ["streaming", "dask2"])
def test_operator__sparse_float32_workers(kind, rare_cohort, request):
    components, samples, frequencies, indices = _case("three", rare_cohort.sparse)
    op = _operator(kind, rare_cohort.sparse, components, samples, frequencies, np.float32, request)
    V = np.random.default_rng(5).standard_normal((N, K))
    V[:, 0] += 3.0

    expected, _ = reference_KV(rare_cohort.genotypes, indices, V)

    assert rel_err(op.matmat(V), expected) <= 1e-6
    Z, polymorphic = reference_Z(rare_cohort.genotypes)
    for a, idx in zip(op.zt_matmat(V), indices):
        assert rel_err(a, Z[:, idx[polymorphic[idx]]].T @ V) <= 1e-6
    _close(op)


def test_operator__sparse_false_holds_every_variant_dense(rare_cohort):
    store = rare_cohort.sparse
    op = StreamingOperator(store, by_chromosome(store), dtype=np.float64, sparse=False, shard_variants=SHARD_ROWS)
    ref = StreamingOperator(rare_cohort.dense, by_chromosome(store), dtype=np.float64, shard_variants=SHARD_ROWS)
    V = np.random.default_rng(6).standard_normal((N, 2))

    assert not any(s.sparse for s in op.shard_specs)
    assert [(s.start, s.stop) for s in op.shard_specs] == [(s.start, s.stop) for s in ref.shard_specs]
    np.testing.assert_array_equal(op.matmat(V), ref.matmat(V))


def test_dense_reference__sparse_store_equals_dense_store(rare_cohort):
    components = by_chromosome(rare_cohort.sparse)
    sparse, dense = (dense_reference(s, components) for s in (rare_cohort.sparse, rare_cohort.dense))
    np.testing.assert_allclose(sparse.K, dense.K, rtol=0, atol=1e-14)


def test_genotype_operator__sparse_shards_counted_by_resident_bytes(rare_cohort, client2):
    store = rare_cohort.sparse
    op = GenotypeOperator(store, by_chromosome(store), client=client2, shard_variants=SHARD_ROWS)
    measured = client2.nbytes([f.key for f in op.shards], summary=False)

    for spec, future, planned in zip(op.shard_specs, op.shards, op.shard_bytes):
        # the scheduler weighs each shard by its resident bytes: what the plan counted
        assert measured[future.key] == planned + 8 * len(spec.components), spec
    sparse_bytes = sum(b for s, b in zip(op.shard_specs, op.shard_bytes) if s.sparse)
    sparse_rows = sum(s.n_rows for s in op.shard_specs if s.sparse)
    assert sparse_bytes < 0.7 * sparse_rows * resident_row_bytes(N)  # held dense; at this small n rows weigh
    assert sum(op.resident_bytes().values()) == sum(measured.values())
    op.close()


def test_genotype_operator__budget_bounds_sparse_shard_bytes(rare_cohort, client2):
    # a resident dense row is 157 + 40 bytes: an 8-th of 60 kB holds 38 dense rows, and a
    # sparse shard at most the same 7.5 kB
    budget = 60_000
    op = GenotypeOperator(rare_cohort.sparse, client=client2, memory_budget=budget)
    shard_cap = budget // 8

    specs = op.shard_specs
    assert max(s.n_rows for s in specs if not s.sparse) <= shard_cap // (N + 40) + 1
    biggest_row = max(int(sparse_row_bytes(c)) for c in rare_cohort.sparse.variant_sparse_calls)
    assert max(op.shard_bytes[i] for i, s in enumerate(specs) if s.sparse) <= shard_cap + biggest_row
    assert sum(s.sparse for s in specs) % 2 == 0 and sum(not s.sparse for s in specs) % 2 == 0
    op.close()


def test_GenotypeOperator__raise_on_budget_too_small_for_sparse_shards(rare_cohort, client1):
    with pytest.raises(
        InputError, match=r"the shards need .* per worker but memory_budget is 1.95 kiB .*or as sparse calls, 5 bytes each"
    ):
        GenotypeOperator(rare_cohort.sparse, client=client1, memory_budget=2000)


# ----------------------------------------------------------------------------- the CUDA branch


@pytest.fixture
def cupy():
    fake_cupy.install()
    yield fake_cupy
    fake_cupy.uninstall()


def test_fake_cupyx__refuses_host_arrays_and_integer_data(cupy):
    import cupyx.scipy.sparse as cupyx_sparse

    data, indices, indptr = (
        cupy.asarray([1.0, 2.0]),
        cupy.asarray(np.array([0, 2], np.int32)),
        cupy.asarray(np.array([0, 1, 2], np.int32)),
    )
    A = cupyx_sparse.csr_matrix((data, indices, indptr), shape=(2, 3))
    assert sparse_module.sparse_module(cupy) is cupyx_sparse
    np.testing.assert_array_equal(to_numpy(A @ cupy.ones((3, 1))), [[1.0], [2.0]])
    np.testing.assert_array_equal(to_numpy(A.T @ cupy.ones((2, 1))), [[1.0], [0.0], [2.0]])
    with pytest.raises(TypeError, match="host array"):
        A @ np.ones((3, 1))
    with pytest.raises(TypeError, match="expected a device array"):
        cupyx_sparse.csr_matrix((np.ones(2), indices, indptr), shape=(2, 3))
    with pytest.raises(ValueError, match="Only float32, float64"):
        cupyx_sparse.csr_matrix((cupy.asarray(np.ones(2, np.int8)), indices, indptr), shape=(2, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_streaming__cupy_sparse_shards_equal_numpy(rare_cohort, cupy, dtype):
    store = rare_cohort.sparse
    components, samples, frequencies, _ = _case("subset_sample_frequencies", store)
    V = np.random.default_rng(7).standard_normal((len(samples), K))
    host = StreamingOperator(
        store, components, samples, dtype=dtype, frequencies=frequencies, backend="numpy", shard_variants=SHARD_ROWS
    )
    device = StreamingOperator(
        store, components, samples, dtype=dtype, frequencies=frequencies, backend="cupy", shard_variants=SHARD_ROWS
    )
    B = [np.ones((int(m), 1)) for m in host.m]
    before = cupy.get_default_memory_pool().used_bytes()

    results = [
        (op.matmat(V), op.matmat(V, weights=np.array([1.0, 0.0, 2.0])), op.zt_matmat(V), op.z_matmat(B), op.diagonal())
        for op in (device, host)
    ]

    tol = 1e-12 if dtype == np.float64 else 1e-6
    for a, b in zip(*results):
        if isinstance(a, list):
            assert max(rel_err(x, y) for x, y in zip(a, b)) <= tol
        else:
            assert rel_err(a, b) <= tol
    assert cupy.get_default_memory_pool().used_bytes() == before  # shards and blocks released


def test_load_shard__sparse_calls_on_device(rare_cohort, cupy):
    store = rare_cohort.sparse
    calls = np.where(store.variant_sparse_allele >= 0, store.variant_sparse_calls, -1)
    spec = plan_shards(
        [str(store.path)],
        [np.arange(store.n_variants)],
        [0],
        np.array([store.n_variants]),
        [store.variant_allele_frequency],
        10_000,
        sparse_calls=[calls],
    )[1]
    before = cupy.get_default_memory_pool().used_bytes()

    shard = load_shard(spec, None, "float32", "cupy")

    assert spec.sparse and type(shard.sample).__module__ == "cupy" and type(shard.dosage).__module__ == "cupy"
    # the device holds the calls only: 5 bytes each
    assert (
        cupy.get_default_memory_pool().used_bytes() - before
        == SPARSE_CALL_BYTES * shard.n_calls
        == SPARSE_CALL_BYTES * spec.n_calls
    )
    dense = load_shard(dataclasses.replace(spec, sparse=False), None, "float32", "numpy")
    np.testing.assert_array_equal(to_numpy(shard.codes), dense.codes)


@pytest.mark.skipif(cuda_available(), reason="a real CUDA device is present: test_gpu.py covers the CuPy branch")
def test_genotype_operator__cupy_workers_hold_sparse_calls(rare_cohort, client2):
    store = rare_cohort.sparse
    components, _, _, indices = _case("three", store)
    V = np.random.default_rng(8).standard_normal((N, K))
    expected, _ = reference_KV(rare_cohort.genotypes, indices, V)
    with _on_workers(client2) as client:
        before = client.run(fake_cupy.used_bytes)
        op = GenotypeOperator(store, components, client=client, dtype=np.float64, shard_variants=SHARD_ROWS, backend="cupy")
        loaded = client.run(fake_cupy.used_bytes)
        got = op.matmat(V)
        diagonal = op.diagonal()

        device = dict.fromkeys(loaded, 0)  # dense rows: n int8 codes; sparse rows: 5 bytes per call
        for spec, w in zip(op.shard_specs, op.shard_workers):
            device[w] += SPARSE_CALL_BYTES * spec.n_calls if spec.sparse else spec.n_rows * N
        assert {w: loaded[w] - before[w] for w in loaded} == device
        assert client.run(fake_cupy.used_bytes) == loaded  # a pass leaves nothing behind
        assert rel_err(got, expected) <= 1e-12
        Z, polymorphic = reference_Z(rare_cohort.genotypes)
        exact = np.stack([np.sum(Z[:, i[polymorphic[i]]] ** 2, axis=1) / polymorphic[i].sum() for i in indices])
        assert rel_err(diagonal, exact) <= 1e-13
        op.close()


# ----------------------------------------------------------------------------- a fit


def test_fit_reml__sparse_store_equals_dense_store(rare_cohort):
    from dreml.reml import FitConfig, fit_reml

    Z, polymorphic = reference_Z(rare_cohort.genotypes)
    rng = np.random.default_rng(12)
    m = polymorphic.sum()
    y = Z[:, polymorphic] @ rng.standard_normal(m) * np.sqrt(0.6 / m) + rng.standard_normal(N) * np.sqrt(0.4)
    X = np.column_stack([np.ones(N), rng.standard_normal(N)])
    config = FitConfig(method="exact", tol_decrement=1e-12)

    fits = [
        fit_reml(StreamingOperator(store, by_chromosome(store), dtype=np.float64), y, X, config)
        for store in (rare_cohort.sparse, rare_cohort.dense)
    ]

    np.testing.assert_allclose(fits[0].theta, fits[1].theta, rtol=1e-8)
    np.testing.assert_allclose(fits[0].loglik, fits[1].loglik, rtol=1e-10)
