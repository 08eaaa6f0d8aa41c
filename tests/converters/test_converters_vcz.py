"""`dreml-convert vcz`: VCF Zarr stores written here with the zarr package (the bio2zarr / sgkit
layout, Zarr formats 2 and 3), converted and compared call by call with a plain decode."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from plink_fixtures import assert_no_complete_store

from converters import convert
from converters.cli import main
from converters.vcz import genotype_dosage
from converters.verify import verify
from dreml.errors import InputError

FILL = ""  # variant_allele padding of sites with fewer alleles


def write_vcz(path: Path, arrays: dict[str, np.ndarray], *, zarr_format: int = 2, chunk: int = 5, sample_chunk: int = 3):
    """A VCF Zarr group: every array chunked `chunk` along variants and `sample_chunk` along samples,
    with its dimension names (`_ARRAY_DIMENSIONS` in format 2, `dimension_names` in format 3)."""
    dims = {
        "call_genotype": ("variants", "samples", "ploidy"),
        "call_genotype_phased": ("variants", "samples"),
        "variant_allele": ("variants", "alleles"),
        "variant_contig": ("variants",),
        "variant_position": ("variants",),
        "variant_id": ("variants",),
        "contig_id": ("contigs",),
        "sample_id": ("samples",),
    }
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    group.attrs.update({"vcf_zarr_version": "0.4", "source": "dreml tests"})
    for name, values in arrays.items():
        names = dims[name]
        chunks = tuple({"variants": chunk, "samples": sample_chunk}.get(d, size) for d, size in zip(names, values.shape))
        naming = {"attributes": {"_ARRAY_DIMENSIONS": list(names)}} if zarr_format == 2 else {"dimension_names": names}
        dtype = str if values.dtype.kind == "U" else values.dtype
        array = group.create_array(name, shape=values.shape, dtype=dtype, chunks=tuple(max(1, c) for c in chunks), **naming)
        array[...] = values
    return path


def cohort(rng: np.random.Generator, m: int = 23, n: int = 7) -> dict[str, np.ndarray]:
    """A small cohort: missing and half-missing calls, phased calls, a multi-allelic site (row 6),
    a haploid call (chrX, sample 0), a REF-only site (row 9), IDs '.' (rows 2 and 9)."""
    p = rng.uniform(0.1, 0.9, size=(m, 1, 1))
    genotype = (rng.random((m, n, 2)) < p).astype(np.int8)
    genotype[rng.random((m, n, 2)) < 0.08] = -1  # missing alleles, some half-missing calls
    contig = np.sort(rng.integers(0, 3, size=m)).astype(np.int32)  # indexes into contig_id
    contig[:2] = 1  # chr2 appears first: the store numbers contigs by first appearance
    genotype[contig == 2, 0] = [1, -2]  # a male on chrX: haploid ALT
    genotype[6, :3, 1] = [2, 2, 1][: min(n, 3)]  # the multi-allelic site carries allele 2
    genotype[9] = np.where(genotype[9] == 1, 0, genotype[9])  # REF-only: no allele 1
    allele = np.full((m, 3), FILL, dtype="U2")
    allele[:, 0] = np.array(["A", "C", "G", "T"])[np.arange(m) % 4]
    allele[:, 1] = np.array(["G", "T", "AT", "C"])[np.arange(m) % 4]
    allele[6, 2] = "TT"
    allele[9, 1] = FILL
    variant_id = np.array([f"rs{100 + j}" for j in range(m)])
    variant_id[[2, 9]] = "."
    return {
        "call_genotype": genotype,
        "call_genotype_phased": rng.random((m, n)) < 0.5,
        "variant_allele": allele,
        "variant_contig": contig,
        "variant_position": (np.arange(m) * 101 + 7).astype(np.int32),
        "variant_id": variant_id,
        "contig_id": np.array(["chr1", "chr2", "chrX", "chrUn"]),
        "sample_id": np.array([f"S{i}" for i in range(n)]),
    }


def decode_call(alleles) -> int:
    """The documented rule, one call at a time: -1 missing if an allele is -1 or none is present,
    else the count of allele 1, doubled for a haploid call (one allele, the rest -2 fill)."""
    present = [a for a in alleles if a != -2]
    if not present or -1 in present:
        return -1
    count = sum(a == 1 for a in present)
    return 2 * count if len(present) == 1 else count


def expected_store(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    genotype = arrays["call_genotype"]
    dosage = np.array([[decode_call(call) for call in genotype[j]] for j in keep], dtype=np.int8)
    chrom = arrays["contig_id"][arrays["variant_contig"][keep]]
    position = arrays["variant_position"][keep]
    ref = arrays["variant_allele"][keep, 0]
    alt = np.where(arrays["variant_allele"][keep, 1] == FILL, ".", arrays["variant_allele"][keep, 1])
    ids = arrays["variant_id"][keep]
    ids = np.array([f"{c}:{p}:{r}:{a}" if i == "." else i for i, c, p, r, a in zip(ids, chrom, position, ref, alt)])
    return {"dosage": dosage, "chrom": chrom, "position": position, "ref": ref, "alt": alt, "variant_id": ids}


def assert_store_equals(store, arrays: dict[str, np.ndarray], keep: np.ndarray) -> None:
    want = expected_store(arrays, keep)
    np.testing.assert_array_equal(store.dosage(0, store.n_variants), want["dosage"])
    np.testing.assert_array_equal(store.contig_id[store.variant_contig], want["chrom"])
    assert list(store.contig_id) == list(dict.fromkeys(want["chrom"]))
    np.testing.assert_array_equal(store.variant_position, want["position"])
    np.testing.assert_array_equal(store.variant_allele, np.stack([want["ref"], want["alt"]], axis=1))
    np.testing.assert_array_equal(store.variant_id, want["variant_id"])
    np.testing.assert_array_equal(store.sample_id, arrays["sample_id"])
    np.testing.assert_array_equal(store.sample_family_id, arrays["sample_id"])
    observed = want["dosage"] >= 0
    np.testing.assert_array_equal(store.variant_call_count, observed.sum(axis=1))
    np.testing.assert_array_equal(store.variant_dosage_sum, np.where(observed, want["dosage"], 0).sum(axis=1))


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(("variant_chunk", "sample_chunk"), [(4, 3), (64, 64), (1, 5)])
def test_convert__vcz_skips_multiallelic_and_equals_plain_decode(tmp_path, rng, zarr_format, variant_chunk, sample_chunk):
    arrays = cohort(rng)
    write_vcz(tmp_path / "in.vcz", arrays, zarr_format=zarr_format)
    store = convert(
        "vcz",
        tmp_path / "in.vcz",
        tmp_path / "x.zarr",
        max_alleles=2,
        variant_chunk=variant_chunk,
        sample_chunk=sample_chunk,
    )
    keep = np.setdiff1d(np.arange(23), [6])
    assert_store_equals(store, arrays, keep)
    source = store.attrs["source"]
    assert source["format"] == "vcz" and source["files"][0]["name"] == "in.vcz"
    assert source["files"][0]["size"] > 0  # the bytes of the files under the directory
    assert source["options"] == {"max_alleles": 2} and source["skipped_variants"] == {"multiallelic": 1}
    assert verify(store, tmp_path / "in.vcz").ok


@pytest.mark.parametrize("n", range(1, 10))
def test_convert__vcz_sample_counts_1_to_9(tmp_path, rng, n):
    arrays = cohort(rng, m=11, n=n)
    arrays["variant_allele"][6, 2] = FILL  # no multi-allelic site: no option needed
    arrays["call_genotype"][6] = np.minimum(arrays["call_genotype"][6], 1)
    write_vcz(tmp_path / "in.vcz", arrays, chunk=4, sample_chunk=2)
    store = convert("vcz", tmp_path / "in.vcz", tmp_path / "x.zarr", variant_chunk=3, sample_chunk=2)
    assert_store_equals(store, arrays, np.arange(11))
    assert "skipped_variants" not in store.attrs["source"]


def test_convert__vcz_without_variant_id_and_haploid_dataset(tmp_path, rng):
    arrays = cohort(rng, m=10, n=4)
    arrays["variant_allele"][6, 2] = FILL
    del arrays["variant_id"]
    arrays["call_genotype"] = np.maximum(arrays["call_genotype"][:, :, :1], -1).clip(max=1)  # ploidy dimension 1
    write_vcz(tmp_path / "in.vcz", arrays)
    store = convert("vcz", tmp_path / "in.vcz", tmp_path / "x.zarr")
    arrays["variant_id"] = np.full(10, ".")
    assert_store_equals(store, arrays, np.arange(10))
    assert set(np.unique(store.dosage(0, 10))) <= {-1, 0, 2}  # haploid calls count as homozygous


def test_genotype_dosage__table_of_rules():
    calls = np.array([[[0, 0], [0, 1], [1, 0], [1, 1], [0, -1], [-1, -1], [1, -2], [0, -2], [-2, -2], [-1, -2]]])
    np.testing.assert_array_equal(genotype_dosage(calls), [[0, 1, 1, 2, -1, -1, 2, 0, -1, -1]])


def test_cli__vcz_reports_skipped(tmp_path, rng, capsys):
    write_vcz(tmp_path / "in.vcz", cohort(rng))
    args = ["vcz", str(tmp_path / "in.vcz"), str(tmp_path / "x.zarr"), "--workers", "1", "--max-alleles", "2"]
    assert main(["-q", *args]) == 0
    out = capsys.readouterr().out
    assert "skipped        1 multi-allelic variant(s)" in out and "option         max-alleles 2" in out
    assert main(["info", str(tmp_path / "x.zarr")]) == 0
    assert "skipped        1 multi-allelic variant(s)" in capsys.readouterr().out
    assert main(["-q", "verify", str(tmp_path / "x.zarr"), str(tmp_path / "in.vcz")]) == 0


# ---- bad inputs: one-line InputError naming the store, the array or variant, and what was expected ----


def test_convert__raise_on_vcz_multiallelic_without_option(tmp_path, rng):
    write_vcz(tmp_path / "in.vcz", cohort(rng))
    expected = r"in\.vcz: variant row 6: variant 'rs106' at chr\w+:613 \(alleles G,AT,TT\) is multi-allelic; .*--max-alleles 2"
    with pytest.raises(InputError, match=expected):
        convert("vcz", tmp_path / "in.vcz", tmp_path / "x.zarr")
    assert_no_complete_store(tmp_path / "x.zarr")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "no_genotype",
            r"VCF Zarr array 'call_genotype' is missing \(expected dimensions \(variants, samples, ploidy\)\)",
        ),
        ("short_positions", r"VCF Zarr array 'variant_allele' has shape \(23, 3\), expected \(22, any\)"),
        ("tetraploid", r"call_genotype has ploidy 4; dreml converts diploid \(and haploid\) calls only"),
        ("bad_contig", r"variant row 3: variant_contig 9 is not an index into contig_id \(0\.\.3\)"),
        ("duplicate_sample", r"sample_id\[4\] duplicates sample ID 'S1' \(first at index 1\)"),
        ("bad_allele", r"call_genotype\[5, 2, 1\] is 3, expected 0, 1, -1 \(missing\) or -2 \(fill\)"),
    ],
)
def test_convert__raise_on_bad_vcz(tmp_path, rng, change, message):
    arrays = cohort(rng)
    if change == "no_genotype":
        del arrays["call_genotype"]
    elif change == "short_positions":
        arrays["variant_position"] = arrays["variant_position"][:-1]
    elif change == "tetraploid":
        arrays["call_genotype"] = np.concatenate([arrays["call_genotype"]] * 2, axis=2)
    elif change == "bad_contig":
        arrays["variant_contig"][3] = 9
    elif change == "duplicate_sample":
        arrays["sample_id"][4] = "S1"
    else:
        arrays["call_genotype"][5, 2, 1] = 3
    write_vcz(tmp_path / "in.vcz", arrays)
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "in.vcz")) + ": " + message):
        convert("vcz", tmp_path / "in.vcz", tmp_path / "x.zarr", max_alleles=2)
    assert_no_complete_store(tmp_path / "x.zarr")


def test_convert__raise_on_vcz_not_a_group(tmp_path):
    (tmp_path / "in.vcz").mkdir()
    with pytest.raises(InputError, match=r"in\.vcz: not a Zarr group"):
        convert("vcz", tmp_path / "in.vcz", tmp_path / "x.zarr")
    with pytest.raises(InputError, match=r"absent\.vcz: no such VCF Zarr directory"):
        convert("vcz", tmp_path / "absent.vcz", tmp_path / "x.zarr")
