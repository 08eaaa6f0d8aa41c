"""`converters.convert` end to end (bed, pgen): real filesets, real Zarr stores on disk, real Dask."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import distributed
import numpy as np
import pgenlib
import pytest
import zarr
from plink_fixtures import (
    assert_no_complete_store,
    compress_file,
    random_dosage,
    read_bed_with_pgenlib,
    write_bed_fileset,
    write_pgen_fileset,
    write_pgen_with_multiallelic,
)

from converters import convert
from converters.bed import BedReader
from converters.cli import main as cli_main
from converters.convert import partial_path, replaced_path
from converters.verify import detect_format, resolve_input, verify
from converters.writer import ChunkStats, finalize_store
from dreml.errors import InputError
from dreml.plink_write import write_plink1
from dreml.store import StoreError, open_store
from dreml.store_schema import ARRAYS, FORMAT_NAME

convert_module = importlib.import_module("converters.convert")  # the package re-exports a function of that name


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def assert_store_matches(store, dosage: np.ndarray, meta: dict[str, np.ndarray]) -> None:
    """Genotypes, metadata and statistics of `store` against the matrix and metadata written."""
    np.testing.assert_array_equal(store.dosage(0, store.n_variants), dosage)
    np.testing.assert_array_equal(store.sample_id, meta["sample_id"])
    np.testing.assert_array_equal(store.sample_family_id, meta["family_id"])
    np.testing.assert_array_equal(store.variant_id, meta["variant_id"])
    np.testing.assert_array_equal(store.variant_position, meta["position"])
    np.testing.assert_array_equal(store.variant_allele, np.stack([meta["ref"], meta["alt"]], axis=1))
    np.testing.assert_array_equal(store.contig_id[store.variant_contig], meta["contig"])
    assert list(store.contig_id) == list(dict.fromkeys(meta["contig"]))  # order of first appearance
    observed = dosage >= 0
    x = np.where(observed, dosage, 0).astype(np.int64)
    np.testing.assert_array_equal(store.variant_call_count, observed.sum(axis=1))
    np.testing.assert_array_equal(store.variant_dosage_sum, x.sum(axis=1))
    np.testing.assert_array_equal(store.variant_dosage_sq_sum, (x * x).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_p = x.sum(axis=1) / (2.0 * observed.sum(axis=1))
    np.testing.assert_allclose(store.variant_allele_frequency, expected_p, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(("variant_chunk", "sample_chunk"), [(7, 5), (64, 64), (1, 3)])
def test_convert__bed_multichunk_equals_independent_readers(tmp_path, rng, variant_chunk, sample_chunk):
    dosage = random_dosage(rng, 50, 23, missing=0.1)
    dosage[3] = -1  # a variant with no observed call: frequency NaN
    meta = write_bed_fileset(tmp_path / "x", dosage, n_contigs=4)
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=variant_chunk, sample_chunk=sample_chunk)
    assert store.chunks == (min(variant_chunk, 50), min(sample_chunk, 23))
    np.testing.assert_array_equal(store.dosage(0, 50), read_bed_with_pgenlib(tmp_path / "x.bed", 23))
    assert_store_matches(store, dosage, meta)
    assert np.isnan(store.variant_allele_frequency[3])
    assert not partial_path(tmp_path / "x.zarr").exists()


@pytest.mark.parametrize("n", range(1, 10))
def test_convert__sample_counts_1_to_9(tmp_path, rng, n):
    dosage = random_dosage(rng, 9, n, missing=0.2)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=4, sample_chunk=2)
    assert_store_matches(store, dosage, meta)


def test_convert__on_cluster_bed_equals_pgen(tmp_path, rng, client):
    dosage = random_dosage(rng, 301, 37, missing=0.05)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    bed_store = convert("bed", tmp_path / "x", tmp_path / "bed.zarr", client=client, variant_chunk=40, sample_chunk=16)
    # BED -> PGEN through pgenlib's writer, fed by pgenlib's own reading of the .bed
    write_pgen_fileset(tmp_path / "x", read_bed_with_pgenlib(tmp_path / "x.bed", 37), meta)
    pgen_store = convert("pgen", tmp_path / "x", tmp_path / "pgen.zarr", client=client, variant_chunk=40, sample_chunk=16)
    assert_store_matches(bed_store, dosage, meta)
    assert_store_matches(pgen_store, dosage, meta)
    for name in ARRAYS:
        np.testing.assert_array_equal(bed_store.group[name][...], pgen_store.group[name][...])
    assert pgen_store.attrs["source"]["format"] == "pgen"
    assert [f["name"] for f in pgen_store.attrs["source"]["files"]] == ["x.pgen", "x.pvar", "x.psam"]
    assert verify(pgen_store, tmp_path / "x", fmt="pgen").ok
    assert verify(bed_store, tmp_path / "x", fmt="bed").ok


def test_convert__pgen_dosages_become_hard_calls(tmp_path):
    writer = pgenlib.PgenWriter(str(tmp_path / "d.pgen").encode(), 6, variant_ct=1, nonref_flags=False, dosage_present=True)
    writer.append_dosages(np.array([0.0, 0.95, 1.12, 1.5, 2.0, -9], dtype=np.float32))
    writer.close()
    (tmp_path / "d.pvar").write_text("#CHROM\tPOS\tID\tREF\tALT\n1\t5\tv\tA\tC\n")
    (tmp_path / "d.psam").write_text("#IID\n" + "".join(f"s{i}\n" for i in range(6)))
    store = convert("pgen", tmp_path / "d", tmp_path / "d.zarr")
    # within 0.1 of an integer -> that call; otherwise missing (PLINK2's hard-call threshold)
    np.testing.assert_array_equal(store.dosage(0, 1), [[0, 1, -1, -1, 2, -1]])


def test_convert__attributes_and_plain_zarr_reading(tmp_path, rng):
    dosage = random_dosage(rng, 10, 6)
    write_bed_fileset(tmp_path / "x", dosage)
    convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=4, sample_chunk=4)
    group = zarr.open_group(str(tmp_path / "x.zarr"), mode="r")
    attrs = group.attrs.asdict()
    assert attrs["format"] == FORMAT_NAME and attrs["format_version"] == 1 and attrs["complete"] is True
    assert attrs["counted_allele"] == "ALT" and attrs["missing_dosage"] == -1
    assert attrs["source"]["files"][0] == {"name": "x.bed", "size": (tmp_path / "x.bed").stat().st_size}
    np.testing.assert_array_equal(group["call_dosage"][...], dosage)
    assert group["call_dosage"].metadata.dimension_names == ("variants", "samples")


def test_convert__overwrite_replaces_store(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    dosage = random_dosage(rng, 8, 3)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    assert_store_matches(convert("bed", tmp_path / "x", tmp_path / "x.zarr", overwrite=True), dosage, meta)


def test_convert__overwrite_failing_midway_keeps_old_store(tmp_path, rng, monkeypatch):
    old = random_dosage(rng, 9, 4)
    meta = write_bed_fileset(tmp_path / "x", old)
    convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=3)
    read = BedReader.read

    def fail_on_second_chunk(self, start, stop):
        if start > 0:
            raise OSError("disk unplugged")
        return read(self, start, stop)

    monkeypatch.setattr(BedReader, "read", fail_on_second_chunk)
    with pytest.raises(OSError, match="disk unplugged"):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=3, overwrite=True)
    assert_store_matches(open_store(tmp_path / "x.zarr"), old, meta)


def test_convert__overwrite_deletes_old_store_only_after_new_is_in_place(tmp_path, rng, monkeypatch):
    out = tmp_path / "x.zarr"
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    convert("bed", tmp_path / "x", out)
    new = random_dosage(rng, 8, 3)
    meta = write_bed_fileset(tmp_path / "x", new)
    replaced_path(out).mkdir()  # left by a conversion killed between its two renames
    remove = convert_module._remove
    removals = []  # (what is deleted, variants of the store at OUT at that moment)

    def spy(path):
        if path == replaced_path(out) and path.exists():
            deleted = open_store(path).n_variants if (path / "zarr.json").exists() else "stale"
            removals.append((deleted, open_store(out).n_variants))
        remove(path)

    monkeypatch.setattr(convert_module, "_remove", spy)
    assert_store_matches(convert("bed", tmp_path / "x", out, overwrite=True), new, meta)
    assert removals == [("stale", 5), (5, 8)]  # the old store (5 variants) goes once OUT holds the new one
    assert not replaced_path(out).exists() and not partial_path(out).exists()


def test_remove__store_stops_opening_before_its_chunks_go(tmp_path, rng, monkeypatch):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    monkeypatch.setattr(convert_module.shutil, "rmtree", lambda path: None)  # killed before rmtree
    convert_module._remove(tmp_path / "x.zarr")
    with pytest.raises(StoreError):
        open_store(tmp_path / "x.zarr")


def test_convert__removes_stale_partial(tmp_path, rng):
    dosage = random_dosage(rng, 5, 4)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    stale = partial_path(tmp_path / "x.zarr")
    stale.mkdir()
    (stale / "junk").write_text("left by a killed conversion")
    assert_store_matches(convert("bed", tmp_path / "x", tmp_path / "x.zarr"), dosage, meta)
    assert not stale.exists()


# ---- bad inputs: each a one-line InputError naming the file, and no complete store ----


def test_convert__raise_on_missing_companion_file(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    (tmp_path / "x.fam").unlink()
    with pytest.raises(
        InputError,
        match=r"x\.fam: no such file, nor x\.fam\.zst or x\.fam\.gz \(a fileset needs x\.bed, x\.bim, x\.fam\)",
    ):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    assert_no_complete_store(tmp_path / "x.zarr")


def test_convert__raise_on_wrong_bed_magic(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    data = bytearray((tmp_path / "x.bed").read_bytes())
    data[2] = 0x00  # sample-major
    (tmp_path / "x.bed").write_bytes(bytes(data))
    with pytest.raises(
        InputError, match=r"x\.bed: not a variant-major PLINK1 \.bed: first bytes are 6c 1b 00, expected 6c 1b 01"
    ):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    assert_no_complete_store(tmp_path / "x.zarr")


@pytest.mark.parametrize("change", ["extra_sample", "missing_variant"])
def test_convert__raise_on_bed_size_inconsistent(tmp_path, rng, change):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    if change == "extra_sample":  # 5 samples need 2 bytes per variant, the .bed has 1
        with open(tmp_path / "x.fam", "a") as f:
            f.write("f9 s9 0 0 0 -9\n")
        expected = r"size is 8 bytes, expected 13 = 3 \+ 5 variants \(x\.bim\) x ceil\(5 samples \(x\.fam\) / 4\)"
    else:
        lines = (tmp_path / "x.bim").read_text().splitlines(keepends=True)
        (tmp_path / "x.bim").write_text("".join(lines[:-1]))
        expected = r"size is 8 bytes, expected 7 = 3 \+ 4 variants"
    with pytest.raises(InputError, match=r"x\.bed: " + expected):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    assert_no_complete_store(tmp_path / "x.zarr")


@pytest.mark.parametrize(
    ("fmt", "ext", "line", "expected"),
    [
        ("bed", "bim", "1 bad 0 notanumber A G", r"x\.bim: line 3: position 'notanumber' is not an integer"),
        ("bed", "fam", "f s 0 0", r"x\.fam: line 3: expected 6 columns"),
        ("pgen", "pvar", "1\t5\tbad", r"x\.pvar: line 3: expected at least 5 columns"),
        ("pgen", "psam", "onlyfid", r"x\.psam: line 3: expected at least 3 columns"),
    ],
)
def test_convert__raise_on_malformed_line(tmp_path, rng, fmt, ext, line, expected):
    dosage = random_dosage(rng, 5, 4)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_fileset(tmp_path / "x", dosage, meta)
    path = tmp_path / f"x.{ext}"
    lines = path.read_text().splitlines()
    lines[2] = line  # line 3 of the file
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=expected):
        convert(fmt, tmp_path / "x", tmp_path / "x.zarr")
    assert_no_complete_store(tmp_path / "x.zarr")


def test_convert__raise_on_duplicate_sample_ids(tmp_path, rng):
    dosage = random_dosage(rng, 5, 4)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    meta["sample_id"][3] = meta["sample_id"][1]
    write_plink1(tmp_path / "x", dosage, **meta)
    with pytest.raises(InputError, match=r"x\.fam: line 4: duplicate sample ID 'ind1' \(first on line 2\)"):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    assert_no_complete_store(tmp_path / "x.zarr")


def test_convert__raise_on_multiallelic_pgen_variant(tmp_path):
    writer = pgenlib.PgenWriter(str(tmp_path / "m.pgen").encode(), 3, variant_ct=2, nonref_flags=False, allele_ct_limit=3)
    writer.append_alleles(np.array([0, 1, 1, 1, 0, 0], dtype=np.int32))
    writer.append_alleles(np.array([0, 1, 1, 2, 0, 0], dtype=np.int32))
    writer.close()
    (tmp_path / "m.pvar").write_text("#CHROM\tPOS\tID\tREF\tALT\n1\t5\tv1\tA\tC\n1\t9\trs77\tA\tC,T\n")
    (tmp_path / "m.psam").write_text("#IID\na\nb\nc\n")
    expected = r"m\.pvar: line 3: variant 'rs77' \(ALT 'C,T'\) is multi-allelic; .*pass --max-alleles 2"
    with pytest.raises(InputError, match=expected):
        convert("pgen", tmp_path / "m", tmp_path / "m.zarr")
    assert_no_complete_store(tmp_path / "m.zarr")


def test_convert__raise_on_existing_output(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    first = convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'x.zarr'}: output already exists")):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    assert open_store(first.path).n_variants == 5  # untouched


def test_convert__raise_on_overwriting_non_store(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    (tmp_path / "precious").mkdir()
    with pytest.raises(InputError, match=r"precious: exists and is not a Zarr store"):
        convert("bed", tmp_path / "x", tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious").is_dir()


def test_convert__raise_on_pgen_count_mismatch(tmp_path, rng):
    dosage = random_dosage(rng, 5, 4)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_fileset(tmp_path / "x", dosage, meta)
    with open(tmp_path / "x.psam", "a") as f:
        f.write("f9\ts9\tNA\n")
    with pytest.raises(InputError, match=r"x\.pgen: header counts 4 samples, expected 5 as in x\.psam"):
        convert("pgen", tmp_path / "x", tmp_path / "x.zarr")
    assert_no_complete_store(tmp_path / "x.zarr")


@pytest.mark.parametrize(
    ("option", "value"), [("variant_chunk", 0), ("sample_chunk", -3), ("variant_chunk", 4.0), ("sample_chunk", True)]
)
def test_convert__raise_on_bad_chunk_size(tmp_path, rng, option, value):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 5, 4))
    with pytest.raises(InputError, match=re.escape(f"{option} must be a positive integer, got {value!r}")):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr", **{option: value})
    assert_no_complete_store(tmp_path / "x.zarr")


def test_open_source__raise_on_unsupported_format(tmp_path):
    with pytest.raises(InputError, match=r"format 'vcf' is not supported \(expected one of bed, pgen, vcz, bgen\)"):
        convert("vcf", tmp_path / "x", tmp_path / "x.zarr")


def test_verify__reports_changed_genotype(tmp_path, rng):
    dosage = random_dosage(rng, 12, 5, missing=0.0)
    write_bed_fileset(tmp_path / "x", dosage)
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=5)
    dosage[7, 2] = (dosage[7, 2] + 1) % 3
    write_bed_fileset(tmp_path / "x", dosage)
    report = verify(store, tmp_path / "x")
    assert not report.ok
    assert any("call_dosage differs from the source at 1 variant(s) of [5, 10), first 'snp7'" in m for m in report.mismatches)


def test_verify__reports_changed_metadata_and_counts(tmp_path, rng):
    dosage = random_dosage(rng, 6, 5)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr")
    meta["position"][2] += 1  # same number of digits: the .bim keeps its size
    write_plink1(tmp_path / "x", dosage, **meta)
    assert verify(store, tmp_path / "x").mismatches == [f"{store.path}: array 'variant_position' differs from the source"]
    meta["sample_id"] = np.array(["renamed", *meta["sample_id"][1:]])  # the .fam grows
    write_plink1(tmp_path / "x", dosage, **meta)
    assert verify(store, tmp_path / "x").mismatches == [
        f"{store.path}: array 'sample_id' differs from the source",
        f"{store.path}: array 'variant_position' differs from the source",
        f"{store.path}: attribute 'source' differs (files or sizes changed)",
    ]
    write_bed_fileset(tmp_path / "x", dosage[:5])
    assert verify(store, tmp_path / "x").mismatches == [f"{store.path}: 6 variants x 5 samples, source has 5 x 5"]


def overwrite_chunk(path, array: str, *coords: int) -> None:
    """Replace a chunk file of a store with 100 bytes that no codec decodes."""
    (path / array / "c" / "/".join(map(str, coords))).write_bytes(bytes(range(100)))


def damaged(path, array: str, chunk: str) -> str:
    reason = "crc32c checksum does not match the chunk's bytes"
    return f"{path}: array {array}, chunk {chunk} is damaged ({reason}): re-convert the store"


def test_verify__lists_every_damaged_chunk(tmp_path, rng, capsys):
    dosage = random_dosage(rng, 12, 9)
    write_bed_fileset(tmp_path / "x", dosage)
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", variant_chunk=5, sample_chunk=4)
    path = store.path
    for coords in ((0, 1), (2, 0), (2, 2)):
        overwrite_chunk(path, "call_dosage", *coords)
    expected = [damaged(path, "call_dosage", chunk) for chunk in ("(0, 1)", "(2, 0)", "(2, 2)")]
    report = verify(store, tmp_path / "x")
    assert report.mismatches == expected
    assert report.n_genotypes == 5 * 9  # the one undamaged variant chunk was compared
    assert cli_main(["verify", str(path), str(tmp_path / "x")]) == 1
    assert capsys.readouterr().out.splitlines() == [*expected, "MISMATCH: compared 45 genotypes"]
    overwrite_chunk(path, "variant_position", 0)  # damage outside call_dosage: only the damage is listed
    assert verify(open_store(path), tmp_path / "x").mismatches == [damaged(path, "variant_position", "0"), *expected]


def test_verify__format_option_and_plink_file_paths(tmp_path, rng, capsys):
    dosage = random_dosage(rng, 9, 6, missing=0.0)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_fileset(tmp_path / "x", read_bed_with_pgenlib(tmp_path / "x.bed", 6), meta)
    store = convert("pgen", tmp_path / "x", tmp_path / "x.zarr")
    group = zarr.open_group(str(store.path), mode="r+")
    group.attrs["source"] = {**store.attrs["source"], "format": None}  # as if unrecorded: detected
    with pytest.raises(InputError, match=re.escape("found both .bed and .pgen; cannot tell which fileset")):
        verify(open_store(store.path), tmp_path / "x")
    group.attrs["source"] = {**store.attrs["source"], "format": "pgen"}
    for args in (["--format", "pgen", str(tmp_path / "x")], [str(tmp_path / "x.pgen")], [str(tmp_path / "x.pvar")]):
        assert cli_main(["verify", str(store.path), *args]) == 0, args
        assert capsys.readouterr().out.strip() == "OK: compared 54 genotypes"
    assert cli_main(["verify", str(store.path), str(tmp_path / "x.pgen"), "--format", "bed"]) == 2
    assert capsys.readouterr().err.strip().endswith("x.pgen: a pgen file, but --format bed was given")


def test_resolve_input__plink_file_paths():
    assert resolve_input("d/x.bed") == (Path("d/x"), "bed")
    assert resolve_input("d/x.psam", "pgen") == (Path("d/x"), "pgen")
    assert resolve_input("d/x", "bed") == (Path("d/x"), "bed")
    assert resolve_input("d/x.bgen") == (Path("d/x.bgen"), None)


def test_resolve_input__raise_on_format_contradicting_extension():
    with pytest.raises(InputError, match=re.escape("x.bed: a bed file, but --format pgen was given")):
        resolve_input("x.bed", "pgen")


@pytest.mark.parametrize("present", [(), ("bed", "pgen")], ids=["neither", "both"])
def test_detect_format__raise_on_neither_or_both(tmp_path, present):
    for ext in present:
        (tmp_path / f"x.{ext}").write_bytes(b"")
    what = "both .bed and .pgen" if present else "neither .bed nor .pgen"
    with pytest.raises(InputError, match=re.escape(f"x: found {what}; cannot tell which fileset")):
        detect_format(tmp_path / "x")


def test_finalize_store__raise_on_lost_variants(tmp_path):
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    group.attrs["n_variants"] = 4
    one = np.ones(2, dtype=np.int64)
    with pytest.raises(RuntimeError, match=r"conversion lost variants: 2 have no statistics"):
        finalize_store(group, [ChunkStats(start=0, call_count=one, dosage_sum=one, dosage_sq_sum=one)])
    assert "complete" not in group.attrs


# ---- compressed text companions (PLINK 2 allows PREFIX.pvar.zst, PREFIX.bim.gz...) ----


@pytest.mark.parametrize(("fmt", "compressed"), [("bed", {"bim": "gz", "fam": "zst"}), ("pgen", {"pvar": "zst", "psam": "gz"})])
def test_convert__compressed_companions_equal_plain(tmp_path, rng, fmt, compressed):
    dosage = random_dosage(rng, 23, 7)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_fileset(tmp_path / "x", dosage, meta)
    plain = convert(fmt, tmp_path / "x", tmp_path / "plain.zarr", variant_chunk=5)
    for ext, kind in compressed.items():
        compress_file(tmp_path / f"x.{ext}", kind)
    store = convert(fmt, tmp_path / "x", tmp_path / "packed.zarr", variant_chunk=5)
    assert_store_matches(store, dosage, meta)
    for name in ARRAYS:
        np.testing.assert_array_equal(store.group[name][...], plain.group[name][...])
    names = [f["name"] for f in store.attrs["source"]["files"]]
    assert names == [f"x.{fmt}", *(f"x.{ext}.{kind}" for ext, kind in compressed.items())]
    assert verify(store, tmp_path / "x").ok


# ---- --max-alleles 2: multi-allelic PGEN variants skipped and counted ----


@pytest.mark.parametrize("variant_chunk", [3, 64])
def test_convert__pgen_max_alleles_skips_multiallelic(tmp_path, rng, variant_chunk, client):
    dosage = random_dosage(rng, 20, 9)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    skipped = [0, 4, 5, 13, 19]
    kept = write_pgen_with_multiallelic(tmp_path / "x", dosage, meta, skipped)
    store = convert(
        "pgen",
        tmp_path / "x",
        tmp_path / "x.zarr",
        max_alleles=2,
        variant_chunk=variant_chunk,
        sample_chunk=4,
        client=client if variant_chunk == 3 else None,
    )
    np.testing.assert_array_equal(store.dosage(0, store.n_variants), kept)
    keep = np.setdiff1d(np.arange(20), skipped)
    np.testing.assert_array_equal(store.variant_id, meta["variant_id"][keep])
    np.testing.assert_array_equal(store.variant_allele, np.stack([meta["ref"], meta["alt"]], axis=1)[keep])
    source = store.attrs["source"]
    assert source["options"] == {"max_alleles": 2} and source["skipped_variants"] == {"multiallelic": 5}
    assert verify(store, tmp_path / "x").ok  # re-opened with the recorded max_alleles


def test_convert__pgen_max_alleles_without_multiallelic_records_zero(tmp_path, rng):
    dosage = random_dosage(rng, 6, 4)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_fileset(tmp_path / "x", dosage, meta)
    store = convert("pgen", tmp_path / "x", tmp_path / "x.zarr", max_alleles=2)
    np.testing.assert_array_equal(store.dosage(0, 6), dosage)
    assert store.attrs["source"]["skipped_variants"] == {"multiallelic": 0}


def test_convert__raise_on_pgen_all_multiallelic(tmp_path, rng):
    dosage = random_dosage(rng, 2, 4)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_with_multiallelic(tmp_path / "x", dosage, meta, [0, 1])
    with pytest.raises(InputError, match=r"x\.pvar: all 2 variants are multi-allelic"):
        convert("pgen", tmp_path / "x", tmp_path / "x.zarr", max_alleles=2)
    assert_no_complete_store(tmp_path / "x.zarr")


@pytest.mark.parametrize(
    ("fmt", "options", "message"),
    [
        ("pgen", {"max_alleles": 3}, r"max_alleles must be 2 \(skip multi-allelic variants\) or unset, got 3"),
        ("bed", {"max_alleles": 2}, r"option 'max_alleles' does not apply to format 'bed'"),
    ],
)
def test_convert__raise_on_bad_source_option(tmp_path, rng, fmt, options, message):
    dosage = random_dosage(rng, 3, 4)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_fileset(tmp_path / "x", dosage, meta)
    with pytest.raises(InputError, match=message):
        convert(fmt, tmp_path / "x", tmp_path / "x.zarr", **options)
    assert_no_complete_store(tmp_path / "x.zarr")
