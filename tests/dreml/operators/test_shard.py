"""Shard planning and the per-shard arithmetic, on arrays and on the small cohort store."""

from __future__ import annotations

import numpy as np
import pytest
from genotype_reference import read_bed, reference_Z, rel_err

from dreml.operators import shard as shard_module
from dreml.operators.shard import (
    add_partials,
    decode_rows,
    load_shard,
    plan_shards,
    shard_matmat,
    shard_traces,
    standardisation_table,
)
from dreml.plink_write import write_plink1


def _plan(indices, stores, n_variants, max_rows, multiple_of=1):
    m = np.array([len(i) for i in indices])
    freqs = [np.linspace(0.1, 0.9, n) for n in n_variants]
    return plan_shards([f"s{s}" for s in range(len(n_variants))], indices, stores, m, freqs, max_rows, multiple_of)


@pytest.mark.parametrize("max_rows", [1, 7, 50, 1000])
def test_plan_shards__every_component_row_once_per_component(max_rows):
    indices = [np.arange(0, 60), np.arange(40, 97), np.arange(3, 97, 5)]  # overlapping
    specs = _plan(indices, [0, 0, 0], [97], max_rows)

    seen = {g: [] for g in range(3)}
    for spec in specs:
        assert np.all((spec.rows >= 0) & (spec.rows < spec.stop - spec.start))
        for g, a, b in zip(spec.components, spec.bounds[:-1], spec.bounds[1:]):
            seen[g].extend(spec.start + spec.rows[a:b])
            np.testing.assert_array_equal(spec.frequencies[a:b], np.linspace(0.1, 0.9, 97)[spec.start + spec.rows[a:b]])
            assert spec.inv_m[spec.components.index(g)] == 1 / len(indices[g])
    for g in range(3):
        np.testing.assert_array_equal(np.sort(seen[g]), indices[g])
    assert sum(s.n_rows for s in specs) == sum(len(i) for i in indices)  # overlaps duplicated


def test_plan_shards__balanced_and_multiple_of_workers():
    specs = _plan([np.arange(100)], [0], [100], max_rows=30, multiple_of=3)

    assert len(specs) == 6
    assert {s.n_rows for s in specs} <= {16, 17}
    assert [s.start for s in specs] == sorted(s.start for s in specs)


def test_plan_shards__one_store_per_component():
    specs = _plan([np.arange(10), np.arange(4)], [0, 1], [10, 4], max_rows=100)

    assert [(s.store_path, s.components) for s in specs] == [("s0", (0,)), ("s1", (1,))]


def test_standardisation_table__gcta_values_and_missing_zero():
    p = np.array([0.1, 0.5])
    table = standardisation_table(p)

    sd = np.sqrt(2 * p * (1 - p))
    expected = np.stack([np.zeros(2), -2 * p / sd, (1 - 2 * p) / sd, (2 - 2 * p) / sd], axis=1)
    np.testing.assert_allclose(table, expected, rtol=1e-15)


def _component_shard(cohort, indices, dtype, samples=None, max_rows=1000):
    store = cohort.store
    m = np.array([len(i) for i in indices])
    spec = plan_shards([str(store.path)], indices, [0] * len(indices), m, [store.variant_allele_frequency], max_rows)[0]
    return load_shard(spec, samples, dtype, "numpy")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_load_shard__int8_codes_resident_in_component_order(cohort, dtype):
    indices = [np.arange(10, 40), np.arange(20, 30)]
    samples = np.array([5, 2, 9, 100])

    shard = _component_shard(cohort, indices, dtype, samples)

    g = cohort.genotypes[samples][:, np.concatenate(indices)].T  # shape: (40, 4)
    np.testing.assert_array_equal(shard.codes, np.where(np.isnan(g), -1, g).astype(np.int8))
    assert shard.codes.dtype == np.int8 and shard.dtype == np.dtype(dtype)
    expected_counts = np.stack([np.isnan(g).sum(1)] + [(g == x).sum(1) for x in (0, 1, 2)], axis=1)
    np.testing.assert_array_equal(shard.counts, expected_counts)
    assert shard.nbytes == 40 * 4 + 40 * (8 + 4 * 8) + 2 * 8  # codes, per-row p and counts, inv_m


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_decode_rows__standardised_rows_in_component_order(cohort, dtype):
    indices = [np.arange(10, 40), np.arange(20, 30)]
    samples = np.array([5, 2, 9, 100])
    shard = _component_shard(cohort, indices, dtype, samples)

    got = decode_rows(shard, 3, 37)

    Z, _ = reference_Z(cohort.genotypes, samples)
    expected = Z[:, np.concatenate(indices)].T[3:37]
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=1e-13)  # float64 whatever the worker dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("block_rows", [1, 7, 1000])  # within and across component bounds
def test_shard_matmat__stacked_and_weighted(cohort, dtype, block_rows, monkeypatch):
    monkeypatch.setattr(shard_module, "_MIN_BLOCK_ROWS", block_rows)
    monkeypatch.setattr(shard_module, "_SCRATCH_BYTES", 0)
    indices = [np.arange(0, 30), np.arange(25, 50)]
    shard = _component_shard(cohort, indices, dtype)
    V = np.random.default_rng(0).standard_normal((cohort.store.n_samples, 3))
    V[:, 0] += 3.0  # a column mean: float32 centring errors would add up over the samples
    Z, _ = reference_Z(cohort.genotypes)

    stacked = shard_matmat(shard, V.astype(dtype))
    weighted = shard_matmat(shard, V.astype(dtype), np.array([2.0, -1.0]))

    expected = [Z[:, i] @ (Z[:, i].T @ V) / len(i) for i in indices]
    tol = 1e-12 if dtype == "float64" else 1e-6
    assert sorted(stacked) == [0, 1]
    assert rel_err(stacked[0], expected[0]) <= tol and rel_err(stacked[1], expected[1]) <= tol
    assert rel_err(weighted, 2 * expected[0] - expected[1]) <= tol


def test_shard_matmat__no_missing_calls(tmp_path):
    from converters import convert

    dosage = np.random.default_rng(1).integers(0, 3, size=(9, 23)).astype(np.int8)
    write_plink1(tmp_path / "full", dosage)
    store = convert("bed", tmp_path / "full", tmp_path / "full.zarr", variant_chunk=4, sample_chunk=7)
    spec = plan_shards([str(store.path)], [np.arange(9)], [0], np.array([9]), [store.variant_allele_frequency], 100)[0]
    shard = load_shard(spec, None, "float64", "numpy")
    V = np.random.default_rng(2).standard_normal((23, 2))

    got = shard_matmat(shard, V)[0]

    Z, _ = reference_Z(read_bed(tmp_path / "full"))
    assert not shard.counts[:, 0].any()
    assert rel_err(got, Z @ (Z.T @ V) / 9) <= 1e-12


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shard_traces__exact_from_counts(cohort, dtype):
    indices = [np.arange(0, 30), np.arange(25, 50)]
    samples = np.random.default_rng(3).permutation(cohort.store.n_samples)[:61]
    shard = _component_shard(cohort, indices, dtype, samples)

    got = shard_traces(shard)

    Z, _ = reference_Z(cohort.genotypes, samples)
    expected = [np.sum(Z[:, i] ** 2) / len(i) for i in indices]
    np.testing.assert_allclose(got, expected, rtol=1e-14 if dtype == "float64" else 1e-6)


def test_add_partials__stacked_merge_and_weighted_sum():
    a = {0: np.ones((2, 1)), 2: np.full((2, 1), 2.0)}
    b = {2: np.full((2, 1), 3.0), 1: np.zeros((2, 1))}

    merged = add_partials(a, b)

    assert sorted(merged) == [0, 1, 2]
    np.testing.assert_array_equal(merged[2], np.full((2, 1), 5.0))
    np.testing.assert_array_equal(add_partials(np.ones(2), np.ones(2)), np.full(2, 2.0))
