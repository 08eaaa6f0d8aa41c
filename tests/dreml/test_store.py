"""`dreml.open_store` validation and the `Store` reading API, on stores written by the converter."""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from converters import convert
from dreml.cli import main as dreml_main
from dreml.errors import InputError
from dreml.plink_write import write_plink1
from dreml.store import DamagedStoreError, StoreError, open_store
from dreml.store_schema import ARRAYS, REQUIRED_ATTRS, SPARSE_ARRAYS, SPARSE_ATTRS


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
        ({"format_version": 99}, r"store format version 99 is not supported \(this dreml reads versions 1 and 1.1\)"),
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


@pytest.fixture
def sparse_store_path(tmp_path) -> tuple[Path, np.ndarray]:
    """A version 1.1 store: variants with MAF below 0.2 also sparse."""
    rng = np.random.default_rng(5)
    p = rng.uniform(0, 0.4, size=(31, 1))
    p[::2] = 1 - p[::2]
    dosage = rng.binomial(2, p, size=(31, 60)).astype(np.int8)
    dosage[rng.random(dosage.shape) < 0.03] = -1
    write_plink1(tmp_path / "r", dosage)
    convert("bed", tmp_path / "r", tmp_path / "r.zarr", variant_chunk=6, sample_chunk=25, sparse_below=0.2)
    return tmp_path / "r.zarr", dosage


def test_store__version_1_store_has_no_sparse_representation(store_path):
    path, _ = store_path
    store = open_store(path)
    assert store.format_version == 1 and not store.has_sparse and store.sparse_below is None
    assert (store.variant_sparse_allele == -1).all() and not store.variant_sparse_calls.any()
    assert "sparse" not in store.summary()
    with pytest.raises(StoreError, match=r"format version 1 has no sparse representation"):
        store.sparse_calls(0, 3)


def test_store__sparse_calls_of_a_version_1_1_store(sparse_store_path):
    path, dosage = sparse_store_path
    store = open_store(path)
    assert store.format_version == "1.1" and store.has_sparse and store.sparse_below == 0.2
    np.testing.assert_array_equal(store.dosage(0, 31), dosage)  # call_dosage holds every variant
    sparse = np.flatnonzero(store.variant_sparse_allele >= 0)
    assert 0 < len(sparse) < 31 and set(store.variant_sparse_allele[sparse]) == {0, 1}
    samples = np.array([59, 3, 17, 0, 40])  # unsorted: positions follow this order
    calls = store.sparse_calls(4, 29, samples)
    rows = np.flatnonzero(calls.allele >= 0)
    np.testing.assert_array_equal(4 + rows, sparse[(sparse >= 4) & (sparse < 29)])
    np.testing.assert_array_equal(calls.take(rows).dense(len(samples)), dosage[4 + rows][:, samples])
    for j in rows:  # ascending positions within a row
        assert np.all(np.diff(calls.sample[calls.indptr[j] : calls.indptr[j + 1]]) > 0)
    assert np.all(np.diff(calls.indptr)[calls.allele < 0] == 0)
    assert f"sparse         {len(sparse)} variants below MAF 0.2: {store.variant_sparse_calls.sum()} calls" in store.summary()
    with pytest.raises(IndexError, match=r"variant range \[30, 32\) outside \[0, 31\)"):
        store.sparse_calls(30, 32)


@pytest.mark.parametrize("version", [1.1, "1.2", 2, "1"])
def test_open_store__raise_on_unknown_minor_version(sparse_store_path, version):
    path, _ = sparse_store_path
    set_attr(path, format_version=version)
    with pytest.raises(
        StoreError, match=rf"store format version {version!r} is not supported \(this dreml reads versions 1 and 1.1\)"
    ):
        open_store(path)


def test_open_store__raise_on_version_1_1_without_sparse_array(sparse_store_path):
    path, _ = sparse_store_path
    shutil.rmtree(path / "call_sparse_dosage")
    with pytest.raises(StoreError, match=r"array 'call_sparse_dosage' is missing"):
        open_store(path)


def test_open_store__raise_on_version_1_1_without_threshold(sparse_store_path):
    path, _ = sparse_store_path
    group = zarr.open_group(str(path), mode="r+")
    attrs = group.attrs.asdict()
    del attrs["sparse_below"]
    group.attrs.clear()
    group.attrs.update(attrs)
    with pytest.raises(StoreError, match=r"missing group attribute\(s\) sparse_below \(format version 1.1\)"):
        open_store(path)


def test_open_store__raise_on_sparse_offsets_disagreeing_with_calls(sparse_store_path):
    path, _ = sparse_store_path
    group = zarr.open_group(str(path), mode="r+")
    n_calls = group["call_sparse_sample"].shape[0]
    group["call_sparse_indptr"][31] = n_calls - 1
    with pytest.raises(
        StoreError, match=rf"array 'call_sparse_indptr' ends at {n_calls - 1} but the store holds {n_calls} sparse calls"
    ):
        open_store(path)


def test_open_store__raise_on_sparse_arrays_of_different_lengths(sparse_store_path):
    path, _ = sparse_store_path
    group = zarr.open_group(str(path), mode="r+")
    group["call_sparse_dosage"].resize((3,))
    with pytest.raises(StoreError, match=r"array 'call_sparse_dosage' has shape \(3,\), expected \(\d+,\) \(sparse_calls\)"):
        open_store(path)


def test_store_format_doc__lists_every_array_and_attribute():
    """docs/store_format.md has a table row per array (its dtype and dims) and per required attribute."""
    doc = (Path(__file__).parents[2] / "docs" / "store_format.md").read_text()
    rows = {}
    for line in doc.splitlines():
        cells = [cell.strip().strip("`") for cell in line.split("|")[1:-1]]
        if len(cells) >= 2:
            rows[cells[0]] = cells[1:]
    for name, spec in {**ARRAYS, **SPARSE_ARRAYS}.items():
        dtype, dims = rows[name][:2]
        assert (dtype, dims) == ("string" if spec.dtype == "str" else spec.dtype, " x ".join(spec.dims)), name
    assert set(REQUIRED_ATTRS) | set(SPARSE_ATTRS) <= set(rows)


# ----------------------------------------------------------------------------- damaged stores


def overwrite_chunk(path: Path, array: str, *coords: int) -> None:
    """Replace a chunk file with 100 bytes that no codec decodes."""
    (path / array / "c" / "/".join(map(str, coords))).write_bytes(bytes(range(100)))


def flip_byte(path: Path, array: str, *coords: int) -> None:
    """Flip one byte in the middle of a chunk file, keeping its size (a bit flip on disk)."""
    chunk = path / array / "c" / "/".join(map(str, coords))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def damage_message(path: Path, array: str, chunk: str) -> str:
    return re.escape(f"{path}: array {array}, chunk {chunk} is damaged (") + r".+" + re.escape("): re-convert the store")


def test_store__raise_on_damaged_dosage_chunk(store_path):
    path, dosage = store_path
    overwrite_chunk(path, "call_dosage", 3, 1)
    store = open_store(path)
    np.testing.assert_array_equal(store.dosage(0, 15), dosage[:15])  # other chunks still read
    for read in (lambda: store.dosage(12, 23), lambda: store.dosage(0, 23, samples=np.array([8, 0]))):
        with pytest.raises(DamagedStoreError, match=damage_message(path, "call_dosage", "(3, 1)")) as info:
            read()
        assert isinstance(info.value, InputError) and "\n" not in str(info.value)
    assert store.damaged_chunks("call_dosage") == [
        f"{path}: array call_dosage, chunk (3, 1) is damaged (crc32c checksum does not match the chunk's bytes): "
        "re-convert the store"
    ]


def test_store__raise_on_damaged_metadata_chunk(store_path):
    path, _ = store_path
    overwrite_chunk(path, "variant_id", 0)
    store = open_store(path)  # validation reads no variant IDs
    with pytest.raises(DamagedStoreError, match=damage_message(path, "variant_id", "0")):
        store.variant_id  # noqa: B018 (the cached property reads the array)


def test_store__raise_on_flipped_byte_through_checksum(store_path):
    path, dosage = store_path
    assert '"crc32c"' in (path / "call_dosage" / "zarr.json").read_text()
    flip_byte(path, "call_dosage", 2, 0)
    store = open_store(path)
    with pytest.raises(DamagedStoreError, match=damage_message(path, "call_dosage", "(2, 0)")) as info:
        store.dosage(0, 23)
    assert "crc32c checksum does not match the chunk's bytes" in str(info.value)
    np.testing.assert_array_equal(store.dosage(0, 10), dosage[:10])


def test_store__raise_on_damaged_sparse_chunk(sparse_store_path):
    path, _ = sparse_store_path
    overwrite_chunk(path, "call_sparse_sample", 0)
    store = open_store(path)
    with pytest.raises(DamagedStoreError, match=damage_message(path, "call_sparse_sample", "0")):
        store.sparse_calls(0, 31)
    overwrite_chunk(path, "call_sparse_indptr", 0)
    with pytest.raises(DamagedStoreError, match=damage_message(path, "call_sparse_indptr", "0")):
        open_store(path)  # validation reads the last offset


def test_open_store__store_without_checksums_opens(tmp_path, monkeypatch):
    """Stores written before the crc32c checksum have compression only; they read as before."""
    writer = importlib.import_module("converters.writer")
    monkeypatch.setattr(writer, "_compressors", lambda compressor: (compressor,))
    dosage = np.random.default_rng(4).integers(-1, 3, size=(12, 7)).astype(np.int8)
    write_plink1(tmp_path / "old", dosage)
    convert("bed", tmp_path / "old", tmp_path / "old.zarr", variant_chunk=5)
    path = tmp_path / "old.zarr"
    assert not any('"crc32c"' in f.read_text() for f in path.rglob("zarr.json"))
    store = open_store(path)
    np.testing.assert_array_equal(store.dosage(0, 12), dosage)
    overwrite_chunk(path, "call_dosage", 1, 0)
    with pytest.raises(DamagedStoreError, match=re.escape("(1, 0) is damaged (error during blosc decompression: -1)")):
        store.dosage(0, 12)


def test_dreml_fit_cli__raise_on_damaged_store_exit_2(tmp_path, client, capsys):
    """The shard loads on the workers meet the damaged chunk; one line reaches stderr."""
    rng = np.random.default_rng(6)
    dosage = rng.integers(0, 3, size=(40, 50)).astype(np.int8)
    write_plink1(tmp_path / "d", dosage)
    convert("bed", tmp_path / "d", tmp_path / "d.zarr", variant_chunk=8)
    pheno = tmp_path / "d.pheno"
    pheno.write_text("".join(f"s{i} s{i} {y:.4f}\n" for i, y in enumerate(rng.normal(size=50))))
    path = tmp_path / "d.zarr"
    overwrite_chunk(path, "call_dosage", 3, 0)
    argv = ["fit", "--store", str(path), "--pheno", str(pheno), "--out", str(tmp_path / "o")]
    code = dreml_main([*argv, "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        f"dreml: error: {path}: array call_dosage, chunk (3, 0) is damaged "
        "(crc32c checksum does not match the chunk's bytes): re-convert the store"
    )
