"""Built-in annotation columns: ld_score against a dense NumPy computation (np.corrcoef over every
pair, masked to the window) at 1e-10, on random rows and on a real store read through the operator's
shards; maf; and the --max-missing-annot count."""

from __future__ import annotations

import numpy as np
import pytest

from converters import convert
from dreml.annotations.builtin import minor_allele_frequency, parse_builtin, store_ld_scores, windowed_ld_scores
from dreml.annotations.io import StoreAnnotations, read_annotations
from dreml.errors import InputError
from dreml.fit import variant_table
from dreml.operators import StreamingOperator
from dreml.simulate import SimulationConfig, simulate_cohort


def dense_ld_scores(Z: np.ndarray, groups: np.ndarray, window: int) -> np.ndarray:
    """sum over k of r2 - (1 - r2) / (n - 2), every pair of one group within `window` ranks (Z: n x m)."""
    n, m = Z.shape
    r2 = np.corrcoef(Z.T) ** 2
    adjusted = r2 - (1 - r2) / (n - 2)
    rank = np.arange(m)
    near = (np.abs(rank[:, None] - rank[None, :]) <= window) & (groups[:, None] == groups[None, :])
    np.fill_diagonal(adjusted, 1.0)
    return (adjusted * near).sum(axis=1)


@pytest.mark.parametrize(("window", "block"), [(0, 7), (5, 3), (12, 5), (40, 512)])
def test_windowed_ld_scores__equal_dense(window, block):
    rng = np.random.default_rng(window)
    n, m = 60, 53
    X = rng.standard_normal((m, n)).cumsum(axis=0) / 3 + rng.integers(0, 3, (m, n))  # rows in LD along the order
    groups = np.repeat([0, 1, 2], [20, 1, 32])
    got = windowed_ld_scores(lambda a, b: 2.0 * X[a:b] + 1.0, groups, n, window=window, block=block)
    np.testing.assert_allclose(got, dense_ld_scores(X.T, groups, window), rtol=0, atol=1e-10)


def test_store_ld_scores__equal_dense_from_the_shards(tmp_path):
    simulate_cohort(SimulationConfig(n_samples=90, n_variants=130, n_chromosomes=2, ld_rho=0.8, seed=2), tmp_path / "c")
    convert("bed", tmp_path / "c", tmp_path / "c.zarr", variant_chunk=40, sample_chunk=90)
    op = StreamingOperator(tmp_path / "c.zarr", samples=np.arange(3, 90), dtype=np.float64)
    table = variant_table(op)
    Z = np.concatenate(op.zt_matmat(np.eye(87)), axis=0).T  # shape: (n, m), decoded by the shards
    got = store_ld_scores(op.layout, table.store, table.index, table.contig, window=9)
    _, groups = np.unique(table.contig, return_inverse=True)
    np.testing.assert_allclose(got, dense_ld_scores(Z, groups, 9), rtol=0, atol=1e-10)
    assert got.max() > 2  # the simulated LD shows
    np.testing.assert_array_equal(minor_allele_frequency(table.frequency), np.minimum(table.frequency, 1 - table.frequency))


def test_parse_builtin__raise_on_unknown_column():
    with pytest.raises(InputError, match="unknown built-in annotation 'alpha'"):
        parse_builtin("maf,alpha")


def test_windowed_ld_scores__raise_on_two_samples():
    with pytest.raises(InputError, match="at least 3 samples"):
        windowed_ld_scores(lambda a, b: np.ones((b - a, 2)), np.zeros(4), 2, window=1)


def test_read_annotations__counts_ids_not_in_store(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("SNP x\nrs1 1\nrs2 2\nrsX 3\nrsY 4\nrs3 5\n")
    table = read_annotations(path, ["rs1", "rs2"], store_ids=["rs1", "rs2", "rs3"], max_missing=2)
    assert table.not_in_store == 2 and table.columns == ("x",)
    np.testing.assert_array_equal(table.values, [[1], [2]])


def test_read_annotations__raise_on_too_many_ids_not_in_store(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("SNP x\nrs1 1\nrsX 3\nrsY 4\n")
    with pytest.raises(
        InputError,
        match=r"line 3: variant rsX is not in the store; 2 annotated variants are not, more than --max-missing-annot 1",
    ):
        read_annotations(path, ["rs1"], store_ids=["rs1"], max_missing=1)


def test_store_annotations__raise_on_negative_ld_window():
    with pytest.raises(InputError, match="--ld-window must be >= 0, got -1"):
        StoreAnnotations(builtin=("ld_score",), ld_window=-1)


def test_store_annotations__raise_on_negative_max_missing():
    with pytest.raises(InputError, match="--max-missing-annot must be >= 0, got -2"):
        StoreAnnotations(annot="a.txt", max_missing=-2)
