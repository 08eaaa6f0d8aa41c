"""Subset stores (`--keep/--remove/--extract/--exclude/--chr`): a subset conversion is the full
conversion indexed by the selected samples and variants, with the statistics of the kept
samples; the selection is recorded, verified and refused when it leaves nothing."""

from __future__ import annotations

import re

import numpy as np
import pytest
from plink_fixtures import (
    assert_no_complete_store,
    random_dosage,
    write_bed_fileset,
    write_pgen_fileset,
    write_pgen_with_multiallelic,
)
from test_converters_bgen import cohort as bgen_cohort
from test_converters_bgen import needs_bgen, write_bgen, write_sample_file
from test_converters_vcz import cohort, write_vcz

import converters.bed as bed_module
from converters import convert
from converters.bed import open_bed
from converters.source import row_runs, select_rows
from converters.verify import verify
from dreml.errors import InputError
from dreml.plink_write import write_plink1
from dreml.selection import SampleSelection, Selection, VariantSelection, parse_chromosomes


def selection(keep=None, remove=None, extract=None, exclude=None, chromosomes=None) -> Selection:
    return Selection(
        samples=SampleSelection(keep=keep, remove=remove),
        variants=VariantSelection(
            extract=extract, exclude=exclude, chromosomes=None if chromosomes is None else parse_chromosomes(chromosomes)
        ),
    )


def assert_subset_of(sub, full, samples: np.ndarray, variants: np.ndarray) -> None:
    """`sub` holds the rows `variants` and columns `samples` of `full`: genotypes, metadata, and
    the statistics of those samples (not `full`'s, which are over all its samples)."""
    dosage = full.dosage(0, full.n_variants)[np.ix_(variants, samples)]
    np.testing.assert_array_equal(sub.dosage(0, sub.n_variants), dosage)
    np.testing.assert_array_equal(sub.sample_id, full.sample_id[samples])
    np.testing.assert_array_equal(sub.sample_family_id, full.sample_family_id[samples])
    for name in ("variant_id", "variant_position", "variant_allele"):
        np.testing.assert_array_equal(getattr(sub, name), getattr(full, name)[variants])
    chrom = full.contig_id[full.variant_contig][variants]
    np.testing.assert_array_equal(sub.contig_id[sub.variant_contig], chrom)
    assert list(sub.contig_id) == list(dict.fromkeys(chrom))  # only contigs with variants, first appearance
    observed = dosage >= 0
    x = np.where(observed, dosage, 0).astype(np.int64)
    np.testing.assert_array_equal(sub.variant_call_count, observed.sum(axis=1))
    np.testing.assert_array_equal(sub.variant_dosage_sum, x.sum(axis=1))
    np.testing.assert_array_equal(sub.variant_dosage_sq_sum, (x * x).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x.sum(axis=1) / (2.0 * observed.sum(axis=1))
    np.testing.assert_allclose(sub.variant_allele_frequency, p, rtol=0, atol=0, equal_nan=True)


def write_lists(tmp_path, meta: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[dict, np.ndarray, np.ndarray]:
    """A FID+IID keep file (header, one wrong family, one unknown sample), an IID-only remove
    file, an extract file with a header and an unknown ID; returns the files (with --chr 2-4)
    and the expected sample and variant indices, worked out here without dreml.selection."""
    n, m = len(meta["sample_id"]), len(meta["variant_id"])
    listed = np.sort(rng.choice(n, size=n // 2 + 2, replace=False))
    wrong_family, rest = listed[0], listed[1:]
    lines = ["#FID IID", f"nofam {meta['sample_id'][wrong_family]}", "fam99 nobody"]
    lines += [f"{meta['family_id'][i]} {meta['sample_id'][i]}\tignored column" for i in rest]
    (tmp_path / "keep.txt").write_text("\n".join(lines) + "\n")
    removed = rest[::3]
    (tmp_path / "remove.txt").write_text("".join(f"{meta['sample_id'][i]}\n" for i in removed) + "absent\n")
    extracted = np.sort(rng.choice(m, size=2 * m // 3, replace=False))
    (tmp_path / "extract.txt").write_text("SNP\n" + "".join(f"{meta['variant_id'][j]}\n" for j in extracted) + "rs_none\n")
    files = {
        "keep": tmp_path / "keep.txt",
        "remove": tmp_path / "remove.txt",
        "extract": tmp_path / "extract.txt",
        "chromosomes": "2-4",
    }
    samples = np.setdiff1d(rest, removed)
    bare = np.char.replace(meta["contig"], "chr", "")
    variants = extracted[np.isin(bare[extracted], ["2", "3", "4"])]
    return files, samples, variants


@pytest.mark.parametrize("fmt", ["bed", "pgen"])
@pytest.mark.parametrize(("variant_chunk", "sample_chunk"), [(7, 5), (64, 64)])
def test_convert__subset_equals_full_conversion_indexed(tmp_path, rng, fmt, variant_chunk, sample_chunk):
    dosage = random_dosage(rng, 101, 23, missing=0.1)
    meta = write_bed_fileset(tmp_path / "x", dosage, n_contigs=5)  # contigs chr1, 2, chr3, 4, chr5
    write_pgen_fileset(tmp_path / "x", dosage, meta)
    files, samples, variants = write_lists(tmp_path, meta, rng)
    chunks = {"variant_chunk": variant_chunk, "sample_chunk": sample_chunk}
    full = convert(fmt, tmp_path / "x", tmp_path / "full.zarr", **chunks)
    sub = convert(fmt, tmp_path / "x", tmp_path / "sub.zarr", selection=selection(**files), **chunks)
    assert 0 < sub.n_samples < 23 and 0 < sub.n_variants < 101
    assert_subset_of(sub, full, samples, variants)
    recorded = sub.attrs["source"]["selection"]
    for option in ("keep", "remove", "extract"):
        assert recorded[option] == {"path": str(files[option].resolve()), "size": files[option].stat().st_size}
    assert recorded["chr"] == ["2", "3", "4"]
    keep_lines = (tmp_path / "keep.txt").read_text().splitlines()[1:]
    remove_lines = (tmp_path / "remove.txt").read_text().splitlines()
    assert recorded["samples"] == {
        "input": 23,
        "keep_file_samples": len(keep_lines),
        "keep_not_in_input": 2,
        "after_keep": len(keep_lines) - 2,  # neither the wrong family nor the unknown sample
        "remove_file_samples": len(remove_lines),
        "remove_not_in_input": 1,
        "after_remove": len(samples),  # "absent"
        "kept": len(samples),
    }
    extract_lines = (tmp_path / "extract.txt").read_text().splitlines()[1:]
    assert recorded["variants"] == {
        "input": 101,
        "extract_file_variants": len(extract_lines),
        "extract_not_in_input": 1,
        "after_extract": len(extract_lines) - 1,
        "after_chr": len(variants),
        "kept": len(variants),
    }
    assert verify(sub, tmp_path / "x").ok


def test_convert__subset_of_pgen_with_skipped_multiallelic(tmp_path, rng):
    """The selection applies to the kept variants; their .pgen rows compose with the selection's."""
    dosage = random_dosage(rng, 40, 9)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_with_multiallelic(tmp_path / "x", dosage, meta, [1, 2, 17, 30])
    (tmp_path / "e").write_text("ID\n" + "\n".join(meta["variant_id"][[0, 2, 3, 4, 16, 17, 18, 29, 31, 39]]) + "\n")
    (tmp_path / "r").write_text("#IID\nind4\nind0\n")
    options = {"max_alleles": 2, "variant_chunk": 3, "sample_chunk": 4}
    full = convert("pgen", tmp_path / "x", tmp_path / "full.zarr", **options)
    sub = convert(
        "pgen",
        tmp_path / "x",
        tmp_path / "sub.zarr",
        selection=selection(extract=tmp_path / "e", remove=tmp_path / "r"),
        **options,
    )
    kept = np.setdiff1d(np.arange(40), [1, 2, 17, 30])  # full store row j is input row kept[j]
    variants = np.flatnonzero(np.isin(kept, [0, 3, 4, 16, 18, 29, 31, 39]))
    assert_subset_of(sub, full, np.setdiff1d(np.arange(9), [0, 4]), variants)
    assert sub.attrs["source"]["skipped_variants"] == {"multiallelic": 4}
    assert sub.attrs["source"]["selection"]["variants"]["extract_not_in_input"] == 2  # the skipped rows 2, 17
    assert verify(sub, tmp_path / "x").ok


@pytest.mark.parametrize("variant_chunk", [2, 50])
def test_convert__subset_of_vcz_sparse_rows(tmp_path, rng, variant_chunk):
    """VCF Zarr rows read in runs: gaps within and across its chunks (chunks of 5 variants)."""
    arrays = cohort(rng, m=43, n=8)
    write_vcz(tmp_path / "in.vcz", arrays, chunk=5)
    full = convert("vcz", tmp_path / "in.vcz", tmp_path / "full.zarr", max_alleles=2)
    rows = np.array([0, 1, 3, 4, 5, 11, 12, 30, 31, 32, 33, 34, 35, 41])  # indices into the full store
    (tmp_path / "e").write_text("\n".join(full.variant_id[rows]) + "\n")
    (tmp_path / "k").write_text("S1\nS2\nS6\n")
    sub = convert(
        "vcz",
        tmp_path / "in.vcz",
        tmp_path / "sub.zarr",
        max_alleles=2,
        variant_chunk=variant_chunk,
        selection=selection(keep=tmp_path / "k", extract=tmp_path / "e"),
    )
    assert_subset_of(sub, full, np.array([1, 2, 6]), rows)
    assert verify(sub, tmp_path / "in.vcz").ok


@needs_bgen
def test_convert__subset_of_bgen(tmp_path, rng):
    """BGEN variant indices compose with the selection's; FID+IID from the .sample file."""
    ids = [f"s{i}" for i in range(11)]
    write_bgen(tmp_path / "x.bgen", bgen_cohort(rng), ids)  # a multi-allelic row 4, rows 8.. on contig 2
    write_sample_file(tmp_path / "x.sample", ids)
    options = {"sample": tmp_path / "x.sample", "max_alleles": 2, "variant_chunk": 2}
    full = convert("bgen", tmp_path / "x.bgen", tmp_path / "full.zarr", **options)
    (tmp_path / "k").write_text("FID IID\nFs1 s1\nFs3 s3\nF9 s9\nFs10 s10\n")  # s9: another family
    (tmp_path / "x").write_text("rs3\nrs9\nrs10\n")
    sub = convert(
        "bgen",
        tmp_path / "x.bgen",
        tmp_path / "sub.zarr",
        selection=selection(keep=tmp_path / "k", exclude=tmp_path / "x", chromosomes="1-2"),
        **options,
    )
    variants = np.flatnonzero(~np.isin(full.variant_id, ["rs3", "rs9", "rs10"]))
    assert_subset_of(sub, full, np.array([1, 3, 10]), variants)
    assert verify(sub, tmp_path / "x.bgen").ok


@pytest.mark.parametrize(("read_block", "skip"), [(1 << 20, 1 << 18), (12, 4), (2, 2)])
def test_BedReader__selected_rows_equal_dense_rows(tmp_path, rng, monkeypatch, read_block, skip):
    """Runs of rows read through short gaps and seek over long ones, within the read buffer."""
    dosage = random_dosage(rng, 60, 7)  # 2 bytes per variant
    write_bed_fileset(tmp_path / "x", dosage)
    monkeypatch.setattr(bed_module, "READ_BLOCK_BYTES", read_block)
    monkeypatch.setattr(bed_module, "SKIP_READ_BYTES", skip)
    rows = np.array([0, 1, 2, 5, 6, 9, 20, 21, 22, 23, 24, 25, 40, 59])
    np.testing.assert_array_equal(open_bed(tmp_path / "x").read(0, 60), dosage)
    chosen = select_rows(open_bed(tmp_path / "x").genotypes, rows)
    np.testing.assert_array_equal(chosen.read(0, len(rows)), dosage[rows])
    np.testing.assert_array_equal(chosen.for_chunk(3, 11).read(3, 11), dosage[rows[3:11]])


@pytest.mark.parametrize("max_gap", [1, 3, 100])
def test_row_runs__partition_within_limits(rng, max_gap):
    rows = np.sort(rng.choice(500, size=120, replace=False))
    runs = row_runs(rows, max_rows=16, max_gap=max_gap)
    assert [i for i, _ in runs] == [0, *[j for _, j in runs[:-1]]] and runs[-1][1] == len(rows)
    for i, j in runs:
        assert j > i and rows[j - 1] - rows[i] < 16 and np.all(np.diff(rows[i:j]) <= max_gap)
    assert row_runs(np.arange(10, 50), max_rows=16) == [(0, 16), (16, 32), (32, 40)]
    assert row_runs(np.array([], dtype=np.int64), max_rows=4) == []


def test_verify__subset_compares_only_the_selection(tmp_path, rng):
    dosage = random_dosage(rng, 20, 8, missing=0.0)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    (tmp_path / "k").write_text("fam0 ind0\nfam1 ind2\nfam1 ind3\n")
    (tmp_path / "e").write_text("snp2\nsnp5\nsnp11\n")
    store = convert("bed", tmp_path / "x", tmp_path / "x.zarr", selection=selection(keep=tmp_path / "k", extract=tmp_path / "e"))
    assert verify(store, tmp_path / "x").ok and verify(store, tmp_path / "x").n_genotypes == 9
    dosage[5, 7] = (dosage[5, 7] + 1) % 3  # a sample left out: not compared
    dosage[4, 2] = (dosage[4, 2] + 1) % 3  # a variant left out: not compared
    write_plink1(tmp_path / "x", dosage, **meta)
    assert verify(store, tmp_path / "x").ok
    dosage[11, 3] = (dosage[11, 3] + 1) % 3
    write_plink1(tmp_path / "x", dosage, **meta)
    assert verify(store, tmp_path / "x").mismatches == [
        f"{store.path}: call_dosage differs from the source at 1 variant(s) of [0, 3), first 'snp11'"
    ]
    (tmp_path / "k").write_text("fam0 ind0\nfam1 ind2\n")  # the selection file changed
    assert verify(store, tmp_path / "x").mismatches == [
        f"{store.path}: 3 variants x 3 samples, source (its recorded selection) has 3 x 2"
    ]
    (tmp_path / "k").write_text("fam0 ind0\nfam1 ind2\nfam2 ind4 x\n")  # same counts, other samples
    mismatches = verify(store, tmp_path / "x").mismatches
    assert f"{store.path}: array 'sample_id' differs from the source" in mismatches
    assert f"{store.path}: the selection recorded in attribute 'source' differs (its files changed)" in mismatches
    assert f"{store.path}: attribute 'source' differs (files or sizes changed)" not in mismatches
    (tmp_path / "k").unlink()
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'k'}: no such file (the --keep file that")):
        verify(store, tmp_path / "x")


@pytest.mark.parametrize(
    ("lists", "message"),
    [
        ({"keep": "nofam ind0\nnofam ind1\n"}, "k: no input sample left after --keep/--remove"),
        ({"remove": "#IID\n" + "".join(f"ind{i}\n" for i in range(6))}, "r: no input sample left after --keep/--remove"),
        ({"extract": "SNP\nnot_there\n"}, "no variant left after --extract/--exclude/--chr"),
        ({"chromosomes": "22"}, "no variant left after --extract/--exclude/--chr"),
        ({"keep": ""}, "k: no samples"),
    ],
)
def test_convert__raise_on_empty_selection(tmp_path, rng, lists, message):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 9, 6))
    paths = {"keep": tmp_path / "k", "remove": tmp_path / "r", "extract": tmp_path / "e"}
    given = {}
    for option, text in lists.items():
        if option == "chromosomes":
            given[option] = text
        else:
            paths[option].write_text(text)
            given[option] = paths[option]
    with pytest.raises(InputError, match=re.escape(message)) as info:
        convert("bed", tmp_path / "x", tmp_path / "x.zarr", selection=selection(**given))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.zarr").exists()
    assert_no_complete_store(tmp_path / "x.zarr")


def test_convert__raise_on_missing_selection_file(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 3, 4))
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'absent'}: no such file (--exclude)")):
        convert("bed", tmp_path / "x", tmp_path / "x.zarr", selection=selection(exclude=tmp_path / "absent"))
    assert not (tmp_path / "x.zarr").exists()
