"""Shard planning and the per-shard arithmetic, on arrays and on the small cohort store."""

from __future__ import annotations

import numpy as np
import pytest
from genotype_reference import reference_Z

from dreml.operators.shard import add_partials, load_shard, plan_shards, shard_matmat, standardisation_table


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_load_shard__standardised_rows_in_component_order(cohort, dtype):
    store = cohort.store
    indices = [np.arange(10, 40), np.arange(20, 30)]
    freqs = [store.variant_allele_frequency]
    spec = plan_shards([str(store.path)], indices, [0, 0], np.array([30, 10]), freqs, max_rows=1000)[0]
    samples = np.array([5, 2, 9, 100])

    shard = load_shard(spec, samples, dtype, "numpy")

    Z, _ = reference_Z(cohort.genotypes, samples)
    expected = Z[:, np.concatenate(indices)].T
    assert shard.Z.dtype == np.dtype(dtype) and shard.Z.shape == (40, 4)
    # float32 rows are the float64 standardisation rounded once
    np.testing.assert_allclose(shard.Z, expected.astype(dtype), rtol=1e-15 if dtype == "float64" else 0, atol=1e-13)


def test_shard_matmat__stacked_and_weighted(cohort):
    store = cohort.store
    indices = [np.arange(0, 30), np.arange(25, 50)]
    m = np.array([30, 25])
    spec = plan_shards([str(store.path)], indices, [0, 0], m, [store.variant_allele_frequency], 1000)[0]
    shard = load_shard(spec, None, "float64", "numpy")
    V = np.random.default_rng(0).standard_normal((store.n_samples, 3))
    Z, _ = reference_Z(cohort.genotypes)

    stacked = shard_matmat(shard, V)
    weighted = shard_matmat(shard, V, np.array([2.0, -1.0]))

    expected = [Z[:, i] @ (Z[:, i].T @ V) / len(i) for i in indices]
    np.testing.assert_allclose(stacked[0], expected[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stacked[1], expected[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(weighted, 2 * expected[0] - expected[1], rtol=1e-12, atol=1e-12)


def test_add_partials__stacked_merge_and_weighted_sum():
    a = {0: np.ones((2, 1)), 2: np.full((2, 1), 2.0)}
    b = {2: np.full((2, 1), 3.0), 1: np.zeros((2, 1))}

    merged = add_partials(a, b)

    assert sorted(merged) == [0, 1, 2]
    np.testing.assert_array_equal(merged[2], np.full((2, 1), 5.0))
    np.testing.assert_array_equal(add_partials(np.ones(2), np.ones(2)), np.full(2, 2.0))
