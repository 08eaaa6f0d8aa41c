"""`dreml.open_store` validation and the `Store` reading API, on stores written by the converter."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from converters import convert
from dreml.plink_write import write_plink1
from dreml.store import StoreError, open_store
from dreml.store_schema import ARRAYS, REQUIRED_ATTRS


@pytest.fixture
def store_path(tmp_path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    dosage = rng.integers(-1, 3, size=(23, 9)).astype(np.int8)
    write_plink1(tmp_path / "x", dosage)
    convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=5, sample_chunk=4)
    return tmp_path / "x.zarr", dosage


def set_attr(path: Path, **attrs) -> None:
    zarr.open_group(str(path), mode="r+").attrs.update(attrs)


def test_store__reading_api(store_path):
    path, dosage = store_path
    store = open_store(path)
    assert (store.n_variants, store.n_samples, store.chunks) == (23, 9, (5, 4))
    np.testing.assert_array_equal(store.dosage(3, 17), dosage[3:17])
    subset = store.dosage(0, 23, samples=np.array([8, 0, 3]))
    np.testing.assert_array_equal(subset, dosage[:, [8, 0, 3]])
    assert subset.flags["C_CONTIGUOUS"]  # rows contiguous: shard passes walk rows
    assert store.sample_id.dtype.kind == "U" and list(store.sample_id[:2]) == ["s0", "s1"]
    np.testing.assert_allclose(store.variant_missing_rate, (dosage < 0).mean(axis=1))
    assert "samples        9" in store.summary() and "x.bed" in store.summary()
    with pytest.raises(IndexError, match=r"variant range \[20, 24\) outside \[0, 23\)"):
        store.dosage(20, 24)


def test_open_store__raise_on_missing_path(tmp_path):
    with pytest.raises(StoreError, match=re.escape(f"{tmp_path / 'nope.zarr'}: no such store")):
        open_store(tmp_path / "nope.zarr")


def test_open_store__raise_on_not_a_group(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a Zarr v3 group"):
        open_store(tmp_path / "plain")


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"complete": False}, r"x\.zarr: store is incomplete \(conversion was interrupted"),
        ({"format_version": 99}, r"store format version 99 is not supported \(this dreml reads version 1\)"),
        ({"format": "vcf-zarr"}, r"not a dreml genotype store \(attribute 'format' is 'vcf-zarr'\)"),
        ({"n_samples": 10}, r"array 'sample_id' has shape \(9,\), expected \(10,\) \(samples\)"),
    ],
    ids=["incomplete", "unknown_version", "foreign_format", "counts_disagreeing_with_arrays"],
)
def test_open_store__raise_on_bad_attribute(store_path, attrs, message):
    path, _ = store_path
    set_attr(path, **attrs)
    with pytest.raises(StoreError, match=message):
        open_store(path)


def test_open_store__raise_on_missing_attribute(store_path):
    path, _ = store_path
    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs.asdict()
    del attrs["source"]
    group.attrs.clear()
    group.attrs.update(attrs)
    with pytest.raises(StoreError, match=r"missing group attribute\(s\) source"):
        open_store(path)


def test_open_store__raise_on_shape_disagreement(store_path):
    path, _ = store_path
    group = zarr.open_group(str(path), mode="r+")
    group["variant_position"].resize((22,))
    with pytest.raises(StoreError, match=r"array 'variant_position' has shape \(22,\), expected \(23,\) \(variants\)"):
        open_store(path)


def test_open_store__raise_on_missing_array(store_path):
    path, _ = store_path
    shutil.rmtree(path / "variant_allele_frequency")
    with pytest.raises(StoreError, match=r"array 'variant_allele_frequency' is missing"):
        open_store(path)


def test_open_store__raise_on_wrong_dtype(store_path):
    path, _ = store_path
    group = zarr.open_group(str(path), mode="r+")
    del group["variant_call_count"]
    group.create_array("variant_call_count", shape=(23,), dtype="float32")
    with pytest.raises(StoreError, match=r"array 'variant_call_count' has dtype float32, expected int64"):
        open_store(path)


def test_store_format_doc__lists_every_array_and_attribute():
    """docs/store_format.md has a table row per array (its dtype and dims) and per required attribute."""
    doc = (Path(__file__).parents[2] / "docs" / "store_format.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [cell.strip().strip("`") for cell in line.split("|")[1:-1]]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1:]
    for name, spec in ARRAYS.items():
        dtype, dims = rows[name][:2]
        assert (dtype, dims) == ("string" if spec.dtype == "str" else spec.dtype, " x ".join(spec.dims)), name
    assert set(REQUIRED_ATTRS) <= set(rows)
