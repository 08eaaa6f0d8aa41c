"""--keep/--remove/--extract/--exclude/--chr: file formats, matching rules and counts, on a real store."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import zstandard

from converters import convert
from dreml.components import Components, by_chromosome
from dreml.errors import InputError
from dreml.plink_write import write_plink1
from dreml.selection import (
    SampleSelection,
    VariantSelection,
    match_samples,
    parse_chromosomes,
    read_sample_list,
    read_variant_list,
    restrict_components,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """8 variants rs0..rs7 on contigs 1, 1, 2, 2, 3, 10, X, X; 6 samples."""
    root = tmp_path_factory.mktemp("selection")
    rng = np.random.default_rng(0)
    dosage = rng.integers(0, 3, size=(8, 6)).astype(np.int8)
    dosage[:, 0] = 1  # no variant monomorphic
    write_plink1(
        root / "s",
        dosage,
        contig=np.array(["1", "1", "2", "2", "3", "10", "X", "X"]),
        variant_id=np.array([f"rs{j}" for j in range(8)]),
    )
    return convert("bed", root / "s", root / "s.zarr")


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, fid",
    [
        ("#FID IID\nf1 a\nf2 b\n", ["f1", "f2"]),
        ("FID IID\nf1 a\nf2 b\n", ["f1", "f2"]),
        ("f1 a extra columns\nf2 b\n", ["f1", "f2"]),
        ("#IID\na\nb\n", None),
        ("a\nb\n", None),
    ],
)
def test_read_sample_list__formats(tmp_path, text, fid):
    listed = read_sample_list(write(tmp_path / "k", text))
    assert list(listed.iid) == ["a", "b"]
    assert (None if listed.fid is None else list(listed.fid)) == fid


def test_read_sample_list__raise_on_mixed_widths(tmp_path):
    with pytest.raises(InputError, match=r"k: line 2: expected one IID, found 2 field\(s\)"):
        read_sample_list(write(tmp_path / "k", "a\nf b\n"))


def test_match_samples__rules():
    store_fid, store_iid = np.array(["f1", "f1", "f2"]), np.array(["a", "b", "c"])
    index, rule = match_samples(store_fid, store_iid, np.array(["f1", "f9"]), np.array(["b", "c"]))
    assert rule == "FID+IID" and list(index) == [1, -1]
    index, rule = match_samples(store_fid, store_iid, np.array(["b", "c"]), np.array(["b", "c"]))  # FID = IID
    assert rule == "IID" and list(index) == [1, 2]
    index, rule = match_samples(store_iid, store_iid, np.array(["f1", "f9"]), np.array(["b", "c"]))  # store without families
    assert rule == "IID" and list(index) == [1, 2]


def test_SampleSelection__keep_then_remove(tmp_path):
    store_fid, store_iid = np.array(["f1", "f1", "f2", "f3"]), np.array(["a", "b", "c", "d"])
    keep = write(tmp_path / "keep", "f1 a\nf1 b\nf2 c\nf9 d\n")
    remove = write(tmp_path / "remove", "#IID\nb\n")
    mask, report = SampleSelection(keep, remove).mask(store_fid, store_iid)
    assert list(mask) == [True, False, True, False]
    assert report == {
        "keep_file_samples": 4,
        "keep_not_in_store": 1,
        "after_keep": 3,  # f9 d: not the store's d
        "remove_file_samples": 1,
        "remove_not_in_store": 0,
        "after_remove": 2,
    }
    with pytest.raises(InputError, match="no store sample left"):
        SampleSelection(remove=write(tmp_path / "all", "a\nb\nc\nd\n")).mask(store_fid, store_iid)


def test_read_variant_list__header_comments_and_compression(tmp_path, store):
    ids = [np.asarray(store.variant_id)]
    text = "SNP\n# comment\nrs1\nrs5 extra\n"
    assert list(read_variant_list(write(tmp_path / "e", text), ids)) == ["rs1", "rs5"]
    (tmp_path / "e.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    assert list(read_variant_list(tmp_path / "e.zst", ids)) == ["rs1", "rs5"]
    with pytest.raises(InputError, match=r"e2: no variant IDs"):
        read_variant_list(write(tmp_path / "e2", "SNP\n"), ids)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1-3,7", ("1", "2", "3", "7")),
        ("chr1-chr2 X", ("1", "2", "X")),
        ("22", ("22",)),
    ],
)
def test_parse_chromosomes(text, expected):
    assert parse_chromosomes(text) == expected


@pytest.mark.parametrize("text", ["3-1", "1--2", ","])
def test_parse_chromosomes__raise_on_bad_text(text):
    with pytest.raises(InputError, match="--chr"):
        parse_chromosomes(text)


def test_VariantSelection__extract_exclude_chr_counts(tmp_path, store):
    extract = tmp_path / "x.gz"
    extract.write_bytes(gzip.compress(b"rs0\nrs2\nrs3\nrs6\nrs99\n"))
    exclude = write(tmp_path / "y", "rs3\n")
    selection = VariantSelection(extract=extract, exclude=exclude, chromosomes=parse_chromosomes("1-2,X"))
    (mask,), report = selection.masks([store])
    assert list(np.flatnonzero(mask)) == [0, 2, 6]
    assert report == {
        "store_variants": 8,
        "extract_file_variants": 5,
        "extract_not_in_store": 1,
        "after_extract": 4,
        "exclude_file_variants": 1,
        "exclude_not_in_store": 0,
        "after_exclude": 3,
        "after_chr": 3,
    }
    (mask,), _ = VariantSelection(chromosomes=parse_chromosomes("10")).masks([store])
    assert list(np.flatnonzero(mask)) == [5]  # 10 is not 1
    with pytest.raises(InputError, match="no variant left"):
        VariantSelection(chromosomes=("22",)).masks([store])


def test_restrict_components__drops_emptied_components(store):
    components = by_chromosome(store)
    (mask,), _ = VariantSelection(chromosomes=("1", "X")).masks([store])
    kept, dropped = restrict_components(components, [mask])
    assert kept.names == ("chr1", "chrX") and dropped == ["chr2", "chr3", "chr10"]
    np.testing.assert_array_equal(kept.variant_indices[1], [6, 7])
    overlap = Components(("a", "b"), (np.array([0, 2, 4]), np.array([3])))
    with pytest.raises(InputError, match="no component has a variant left"):
        restrict_components(overlap, [np.zeros(8, dtype=bool)])


def test_read_sample_list__raise_on_corrupt_gzip(tmp_path):
    import gzip

    packed = gzip.compress(b"a\nb\n" * 1000)
    (tmp_path / "k.gz").write_bytes(packed[: len(packed) // 2])  # truncated
    with pytest.raises(InputError, match=r"k.gz: line \d+: cannot decompress"):
        read_sample_list(tmp_path / "k.gz")
