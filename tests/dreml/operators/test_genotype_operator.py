"""K_g V of the streaming and Dask operators against the dense Z_g Z_g^T V / m_g of an
independent decoder (bed-reader + NumPy standardisation).

One table of cases (component specs, sample subsets, frequency options, multi-store) runs
against every operator (streaming, Dask with 1 and 2 worker processes) in both precisions.
"""

from __future__ import annotations

import numpy as np
import pytest
from genotype_reference import M, N, read_bed, reference_KV, reference_Z, rel_err

from dreml.components import Components, by_chromosome
from dreml.errors import ComponentSpecError, InputError
from dreml.operators import GenotypeOperator, StreamingOperator, dense_reference
from dreml.plink_write import write_plink1

TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}
K = 5
SHARD_ROWS = 37  # divides neither the chunks (50) nor the component sizes


def _subset():
    return np.random.default_rng(3).permutation(N)[:101]  # unsorted: order must be kept


def _case(name, cohort, split_cohort):
    """(stores, components, samples, frequencies, genotypes, reference index sets)."""
    store = cohort.store
    contig = store.variant_contig
    chroms = [np.flatnonzero(contig == c) for c in range(3)]
    if name == "one":
        return store, None, None, "store", cohort.genotypes, [np.arange(M)]
    if name == "three":
        return store, by_chromosome(store), None, "store", cohort.genotypes, chroms
    if name == "overlapping":
        idx = [np.arange(0, 250), np.arange(200, M), np.arange(5, M, 3)]
        return store, Components(("a", "b", "c"), tuple(idx)), None, "store", cohort.genotypes, idx
    if name == "subset":
        return store, by_chromosome(store), _subset(), "store", cohort.genotypes, chroms
    if name == "subset_sample_frequencies":
        return store, by_chromosome(store), _subset(), "samples", cohort.genotypes, chroms
    if name == "multi_store":
        stores, parts = split_cohort
        return stores, None, None, "store", cohort.genotypes, parts
    raise AssertionError(name)


CASES = ["one", "three", "overlapping", "subset", "subset_sample_frequencies", "multi_store"]


def _make(kind, stores, components, samples, frequencies, dtype, request):
    if kind == "streaming":
        return StreamingOperator(stores, components, samples, dtype=dtype, frequencies=frequencies, shard_variants=SHARD_ROWS)
    client = request.getfixturevalue("client1" if kind == "dask1" else "client2")
    return GenotypeOperator(
        stores, components, samples, client=client, dtype=dtype, frequencies=frequencies, shard_variants=SHARD_ROWS
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["streaming", "dask1", "dask2"])
@pytest.mark.parametrize("case", CASES)
def test_matmat__matches_independent_dense(case, kind, dtype, cohort, split_cohort, request):
    stores, components, samples, frequencies, genotypes, indices = _case(case, cohort, split_cohort)
    op = _make(kind, stores, components, samples, frequencies, dtype, request)
    n = N if samples is None else len(samples)
    V = np.random.default_rng(1).standard_normal((n, K))
    expected, m = reference_KV(genotypes, indices, V, samples, frequencies)

    got = op.matmat(V)

    assert got.dtype == np.float64 and got.shape == (len(indices), n, K)
    assert rel_err(got, expected) <= TOLERANCE[dtype]
    assert list(op.m) == m
    assert op.passes == 1 and len(op.pass_times) == 1
    if kind != "streaming":
        assert len(op.shards) > 1
        op.close()


@pytest.mark.parametrize("kind", ["streaming", "dask1", "dask2"])
def test_matmat__weights_and_vectors(kind, cohort, split_cohort, request):
    stores, components, samples, frequencies, genotypes, indices = _case("overlapping", cohort, split_cohort)
    op = _make(kind, stores, components, samples, frequencies, np.float64, request)
    theta = np.array([0.5, 2.0, 0.25])
    V = np.random.default_rng(2).standard_normal((N, K))
    expected, _ = reference_KV(genotypes, indices, V)

    weighted = op.matmat(V, weights=theta)
    vector = op.matmat(V[:, 0])

    assert weighted.shape == (N, K)
    assert rel_err(weighted, np.einsum("g,gnk->nk", theta, expected)) <= 1e-12
    assert vector.shape == (3, N)
    assert rel_err(vector, expected[..., 0]) <= 1e-12
    assert op.passes == 2
    if kind != "streaming":
        op.close()


def test_dense_reference__agrees_with_streaming(cohort):
    components = by_chromosome(cohort.store)
    dense = dense_reference(cohort.store, components)
    stream = StreamingOperator(cohort.store, components, dtype=np.float64)
    V = np.random.default_rng(4).standard_normal((N, K))

    assert rel_err(stream.matmat(V), dense.matmat(V)) <= 1e-12
    assert dense.component_names == stream.component_names == ("chr1", "chr2", "chr3")


def test_streaming__filters_report_and_m(cohort):
    maf = cohort.store.variant_maf
    op = StreamingOperator(cohort.store, by_chromosome(cohort.store), min_maf=0.05, max_missing=0.03)

    kept = (maf >= 0.05) & (cohort.store.variant_missing_rate <= 0.03)
    contig = cohort.store.variant_contig
    assert list(op.m) == [int(np.sum(kept & (contig == c))) for c in range(3)]
    for rep in op.report.components:
        assert rep.m_spec == rep.m + rep.n_monomorphic + rep.n_high_missing + rep.n_low_maf
    assert sum(r.n_low_maf for r in op.report.components) > 0
    assert sum(r.n_high_missing for r in op.report.components) > 0


def test_streaming__monomorphic_always_excluded(tmp_path):
    from converters import convert

    dosage = np.random.default_rng(0).integers(0, 3, size=(6, 20)).astype(np.int8)
    dosage[2] = 0  # monomorphic REF
    dosage[4] = np.where(np.arange(20) % 2, 2, -1)  # observed calls all ALT/ALT
    write_plink1(tmp_path / "mono", dosage)
    store = convert("bed", tmp_path / "mono", tmp_path / "mono.zarr", variant_chunk=4, sample_chunk=7)

    op = StreamingOperator(store, dtype=np.float64)

    assert list(op.m) == [4]
    assert op.report.components[0].n_monomorphic == 2
    V = np.random.default_rng(0).standard_normal((20, 2))
    expected, _ = reference_KV(read_bed(tmp_path / "mono"), [np.arange(6)], V)
    assert rel_err(op.matmat(V), expected) <= 1e-12


def test_GenotypeOperator__raise_on_budget_too_small(cohort, client1):
    with pytest.raises(InputError, match=r"the shards need .* per worker but memory_budget is 0.98 kiB"):
        GenotypeOperator(cohort.store, client=client1, memory_budget=1000)


def test_GenotypeOperator__budget_sets_shard_size(cohort, client2):
    # a resident row: 157 int8 codes + 40 bytes of per-row arrays = 197 bytes; an 8-th of
    # 200 kB holds 126 rows (and a decode block of 126 rows, float32 and mask, fits beside them)
    op = GenotypeOperator(cohort.store, client=client2, memory_budget=200_000)
    assert max(s.n_rows for s in op.shard_specs) <= 126
    assert len(op.shard_specs) % 2 == 0
    op.close()


def test_build_layout__raise_on_different_sample_order(cohort, tmp_path):
    from converters import convert

    g = cohort.genotypes
    dosage = np.where(np.isnan(g), -1, g).astype(np.int8).T[:10]
    ids = np.array([f"I{j + 1}" for j in range(N)])
    ids[[0, 1]] = ids[[1, 0]]
    write_plink1(tmp_path / "swapped", dosage, sample_id=ids)
    other = convert("bed", tmp_path / "swapped", tmp_path / "swapped.zarr")

    with pytest.raises(InputError, match=r"differ in sample order: sample 0 is 'I1' vs 'I2'"):
        StreamingOperator([cohort.store, other])


def test_build_layout__raise_on_different_sample_count(cohort, tmp_path):
    from converters import convert

    write_plink1(tmp_path / "small", np.zeros((3, 10), dtype=np.int8))
    other = convert("bed", tmp_path / "small", tmp_path / "small.zarr")

    with pytest.raises(InputError, match=r"hold different samples \(157 vs 10\)"):
        StreamingOperator([cohort.store, other])


@pytest.mark.parametrize(
    ("samples", "message"),
    [([], "non-empty 1-d array"), ([0.5], "integer indices"), ([0, N], "out of range"), ([1, 1], "repeated index")],
)
def test_build_layout__raise_on_bad_samples(cohort, samples, message):
    with pytest.raises(InputError, match=message):
        StreamingOperator(cohort.store, samples=np.array(samples))


def test_build_layout__raise_on_component_index_out_of_range(cohort):
    spec = Components(("x",), (np.array([0, M]),), source="spec.json")
    with pytest.raises(ComponentSpecError, match=rf"spec.json: component 'x': variant index {M} out of range"):
        StreamingOperator(cohort.store, spec)


def test_build_layout__raise_on_unknown_store_index(cohort):
    spec = Components(("x",), (np.array([0]),), stores=(1,))
    with pytest.raises(ComponentSpecError, match=r"component 'x': store index 1 but only 1 store\(s\) given"):
        StreamingOperator(cohort.store, spec)


def test_build_layout__raise_on_component_empty_after_filters(cohort):
    rare = np.flatnonzero(cohort.store.variant_maf < 0.05)
    with pytest.raises(ComponentSpecError, match=r"component 'rare': no variants left after filters"):
        StreamingOperator(cohort.store, Components(("rare",), (rare,)), min_maf=0.05)


@pytest.mark.parametrize("kind", ["streaming", "dask2"])
@pytest.mark.parametrize("case", ["three", "overlapping", "subset", "multi_store"])
def test_traces__match_independent_dense(case, kind, cohort, split_cohort, request):
    stores, components, samples, frequencies, genotypes, indices = _case(case, cohort, split_cohort)
    op = _make(kind, stores, components, samples, frequencies, np.float32, request)
    Z, polymorphic = reference_Z(genotypes, samples, frequencies)
    expected = [np.sum(Z[:, idx[polymorphic[idx]]] ** 2) / np.sum(polymorphic[idx]) for idx in indices]

    got = op.traces()

    # float32 shards, squares summed in float64: the rounding of z alone is ~1e-7 relative
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert op.passes == 0  # not a pass: computed from the resident shards
    assert op.traces() is got  # computed once
    if kind != "streaming":
        op.close()


def test_dense_reference__traces_equal_diagonal_sums(cohort):
    dense = dense_reference(cohort.store, by_chromosome(cohort.store))
    np.testing.assert_allclose(dense.traces(), [np.trace(K) for K in dense.K], rtol=1e-14)


def _reference_Z_components(genotypes, indices, samples, frequencies):
    """Per component, the dense Z_g (n x m_g) of the polymorphic variants."""
    Z, polymorphic = reference_Z(genotypes, samples, frequencies)
    return [Z[:, idx[polymorphic[idx]]] for idx in indices]


@pytest.mark.parametrize("kind", ["streaming", "dask2"])
@pytest.mark.parametrize("case", ["overlapping", "subset_sample_frequencies", "multi_store"])
def test_variant_products__equal_dense_Z(kind, case, cohort, split_cohort, request):
    """Z_g^T U and Z_g B against the independent decoder, float64 workers, 1e-12."""
    stores, components, samples, frequencies, genotypes, indices = _case(case, cohort, split_cohort)
    op = _make(kind, stores, components, samples, frequencies, np.float64, request)
    Zs = _reference_Z_components(genotypes, indices, samples, frequencies)
    n = Zs[0].shape[0]
    rng = np.random.default_rng(11)
    U = rng.standard_normal((n, 3))
    B = [rng.standard_normal((Z.shape[1], 3)) for Z in Zs]

    zt = op.zt_matmat(U)
    z = op.z_matmat(B)
    zt_vector = op.zt_matmat(U[:, 0])

    assert [a.shape for a in zt] == [(Z.shape[1], 3) for Z in Zs]
    for g, Z in enumerate(Zs):
        assert rel_err(zt[g], Z.T @ U) <= 1e-12
        assert rel_err(z[g], Z @ B[g]) <= 1e-12
        assert rel_err(zt_vector[g], Z.T @ U[:, 0]) <= 1e-12
    assert op.passes == 3
    # K_g = Z_g Z_g^T / m_g: the per-variant products compose to the stacked product
    KU = op.matmat(U)
    assert rel_err(op.z_matmat([a / len(a) for a in zt]), KU) <= 1e-12
    diagonal = op.diagonal()
    assert rel_err(diagonal, np.stack([np.sum(Z**2, axis=1) / Z.shape[1] for Z in Zs])) <= 1e-13
    if kind != "streaming":
        op.close()


def test_variant_products__float32_workers(cohort, client2):
    stores, components, samples, frequencies, genotypes, indices = _case("three", cohort, None)
    op = GenotypeOperator(stores, components, client=client2, dtype=np.float32, shard_variants=SHARD_ROWS)
    Zs = _reference_Z_components(genotypes, indices, samples, frequencies)
    U = np.random.default_rng(1).standard_normal((N, 2))
    assert max(rel_err(a, Z.T @ U) for a, Z in zip(op.zt_matmat(U), Zs)) <= TOLERANCE[np.float32]
    op.close()


def test_z_matmat__raise_on_wrong_block_shape(cohort):
    op = StreamingOperator(cohort.store, by_chromosome(cohort.store), dtype=np.float64)
    with pytest.raises(ValueError, match="one block per component"):
        op.z_matmat([np.zeros(3)])
    with pytest.raises(ValueError, match="block 1 must have shape"):
        op.z_matmat([np.zeros((int(op.m[0]), 1)), np.zeros((2, 1)), np.zeros((int(op.m[2]), 1))])


@pytest.mark.parametrize("kind", ["streaming", "dask2"])
def test_restricted_operator__equals_operator_on_the_subset(kind, cohort, request):
    """K_g restricted by padding equals the operator built for the subset, traces included."""
    from dreml.operators import RestrictedOperator

    rows = np.sort(_subset())
    full = _make(kind, cohort.store, by_chromosome(cohort.store), None, "store", np.float64, request)
    direct = StreamingOperator(cohort.store, by_chromosome(cohort.store), rows, dtype=np.float64)
    restricted = RestrictedOperator(full, rows)
    V = np.random.default_rng(5).standard_normal((len(rows), 4))
    theta = np.array([0.3, 0.0, 0.2])

    assert restricted.shape == (len(rows), len(rows))
    assert rel_err(restricted.matmat(V), direct.matmat(V)) <= 1e-12
    assert rel_err(restricted.matmat(V, weights=theta), direct.matmat(V, weights=theta)) <= 1e-12
    assert rel_err(restricted.traces(), direct.traces()) <= 1e-13
    assert restricted.passes == full.passes == 2
    if kind != "streaming":
        full.close()
