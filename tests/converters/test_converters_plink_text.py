"""Parsers of .bim/.fam/.pvar/.psam (plain, gzip, zstd): accepted layouts and one-line errors naming file and line."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pytest
import zstandard

from converters.plink_text import read_bim, read_fam, read_psam, read_pvar, scan_pvar
from converters.source import companion_files
from dreml.errors import InputError


def write(path, text: str):
    path.write_text(text)
    return path


def test_read_bim__alleles_contigs_positions(tmp_path):
    bim = write(tmp_path / "x.bim", "1 a 0 10 A G\n\nX b 0.5 20 T C\n1 c 0 5 G GA\n")
    table = read_bim(bim)
    assert list(table.contig_id) == ["1", "X"]
    np.testing.assert_array_equal(table.contig, [0, 1, 0])
    np.testing.assert_array_equal(table.position, [10, 20, 5])
    np.testing.assert_array_equal(table.allele, [["G", "A"], ["C", "T"], ["GA", "G"]])  # REF = A2, ALT = A1
    assert table.allele.flags.c_contiguous


def test_read_pvar__header_any_column_order_and_headerless(tmp_path):
    pvar = write(tmp_path / "a.pvar", "##x=y\n#CHROM\tID\tPOS\tALT\tREF\tQUAL\n2\tv1\t7\tT\tC\t.\n")
    table = read_pvar(pvar)
    np.testing.assert_array_equal(table.allele, [["C", "T"]])
    assert table.variant_id[0] == "v1" and table.position[0] == 7
    for text in ("2 v1 0 7 T C\n", "2 v1 7 T C\n"):  # .bim-like, with and without CM
        table = read_pvar(write(tmp_path / "b.pvar", text))
        np.testing.assert_array_equal(table.allele, [["C", "T"]])
        assert table.position[0] == 7


def test_read_psam__with_and_without_fid(tmp_path):
    table = read_psam(write(tmp_path / "a.psam", "#IID\tSEX\ns1\t1\ns2\tNA\n"))
    np.testing.assert_array_equal(table.family_id, ["s1", "s2"])
    table = read_psam(write(tmp_path / "b.psam", "#FID\tIID\nf\ts1\n"))
    np.testing.assert_array_equal(table.family_id, ["f"])
    table = read_psam(write(tmp_path / "c.psam", "f s1 0 0 1 -9\n"))
    np.testing.assert_array_equal(table.sample_id, ["s1"])


@pytest.mark.parametrize(
    ("reader", "name", "text", "message"),
    [
        (
            read_bim,
            "x.bim",
            "1 a 0 10 A G\n1 b 0 20 A\n",
            "line 2: expected 6 columns (CHROM ID CM POS A1 A2), found 5",
        ),
        (read_bim, "x.bim", "1 a 0 ten A G\n", "line 1: position 'ten' is not an integer"),
        (read_fam, "x.fam", "f s1 0 0 1 -9\nf s2 0 0 1\n", "line 2: expected 6 columns"),
        (read_pvar, "x.pvar", "#CHROM\tPOS\tID\tREF\n", "line 1: header lacks column(s) ALT"),
        (read_pvar, "x.pvar", "#CHROM\tPOS\tID\tREF\tALT\n1\t5\tv\tA\n", "line 2: expected at least 5 columns"),
        (read_pvar, "x.pvar", "1 v 0 5 A C\n1 w 5 A C\n", "line 2: expected 6 columns like the first line"),
        (read_psam, "x.psam", "#FID\tIID\nf\n", "line 2: expected at least 2 columns"),
        (read_psam, "x.psam", "f s1 0 0 1\n", "line 1: expected 6 columns like the first line, found 5"),
    ],
)
def test_parsers__raise_on_malformed_line(tmp_path, reader, name, text, message):
    path = write(tmp_path / name, text)
    with pytest.raises(InputError, match=re.escape(f"{path}: {message}")):
        reader(path)


@pytest.mark.parametrize(
    ("reader", "name", "text"),
    [
        (read_fam, "x.fam", "f1 s1 0 0 1 -9\nf2 s2 0 0 1 -9\nf3 s1 0 0 1 -9\n"),
        (read_psam, "x.psam", "#IID\ns1\ns2\ns1\n"),
    ],
)
def test_parsers__raise_on_duplicate_sample_id(tmp_path, reader, name, text):
    path = write(tmp_path / name, text)
    with pytest.raises(InputError, match=r"line \d: duplicate sample ID 's1' \(first on line \d\)"):
        reader(path)


def test_read_pvar__raise_on_multiallelic_variant(tmp_path):
    path = write(tmp_path / "x.pvar", "#CHROM\tPOS\tID\tREF\tALT\n1\t5\tv1\tA\tC\n1\t9\tv2\tA\tC,T\n")
    expected = r"x\.pvar: line 3: variant 'v2' \(ALT 'C,T'\) is multi-allelic; .*--max-alleles 2"
    with pytest.raises(InputError, match=expected):
        read_pvar(path)


def test_read_bim__raise_on_non_utf8(tmp_path):
    path = tmp_path / "x.bim"
    path.write_bytes(b"1 a 0 10 \xff G\n")
    with pytest.raises(InputError, match=r"x\.bim: line 1: not UTF-8 text"):
        read_bim(path)


# ---- compressed companions: gzip and Zstandard, detected from the first bytes ----


def compress(path, kind: str):
    """Write path.gz or path.zst holding path's bytes (the real file formats, not mocks); return it."""
    data = path.read_bytes()
    if kind == "gz":
        packed = gzip.compress(data)
    else:  # two frames: readers must go on past the first
        half = len(data) // 2
        packed = zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])
    target = path.with_name(f"{path.name}.{kind}")
    target.write_bytes(packed)
    return target


@pytest.mark.parametrize("kind", ["gz", "zst"])
@pytest.mark.parametrize(
    ("reader", "name", "text"),
    [
        (read_bim, "x.bim", "1 a 0 10 A G\n\nX b 0.5 20 T C\n"),
        (read_fam, "x.fam", "f1 s1 0 0 1 -9\nf2 s2 0 0 2 -9\n"),
        (read_pvar, "x.pvar", "##x=y\n#CHROM\tPOS\tID\tREF\tALT\n2\t7\tv1\tC\tT\n3\t9\tv2\tG\tA\n"),
        (read_psam, "x.psam", "#FID\tIID\tSEX\nf\ts1\t1\nf\ts2\tNA\n"),
    ],
)
def test_parsers__compressed_equal_plain(tmp_path, kind, reader, name, text):
    plain = reader(write(tmp_path / name, text))
    packed = reader(compress(tmp_path / name, kind))
    for field in vars(plain):
        np.testing.assert_array_equal(getattr(packed, field), getattr(plain, field))


def test_parsers__compression_read_from_bytes_not_name(tmp_path):
    path = compress(write(tmp_path / "x.bim", "1 a 0 10 A G\n"), "gz").rename(tmp_path / "renamed.bim")
    np.testing.assert_array_equal(read_bim(path).allele, [["G", "A"]])


def test_scan_pvar__skips_multiallelic_with_rows(tmp_path):
    text = "#CHROM\tPOS\tID\tREF\tALT\n1\t5\tv1\tA\tC\n1\t9\tv2\tA\tC,T\n1\t12\tv3\tG\tT\n2\t1\tv4\tA\tC,G,T\n"
    kept = scan_pvar(write(tmp_path / "x.pvar", text), skip_multiallelic=True)
    np.testing.assert_array_equal(kept.table.variant_id, ["v1", "v3"])
    np.testing.assert_array_equal(kept.locator, [0, 2])  # rows of the .pgen
    assert (kept.n_input, kept.n_skipped) == (4, 2)
    assert list(kept.table.contig_id) == ["1"]  # contig 2 held only a skipped variant


def test_read_bim__raise_on_corrupt_gzip(tmp_path):
    text = "".join(f"1 rs{j * 7919 % 10007} 0 {j} A G\n" for j in range(5000))  # compresses to several blocks
    path = compress(write(tmp_path / "x.bim", text), "gz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    with pytest.raises(InputError, match=r"x\.bim\.gz: line \d+: cannot decompress"):
        read_bim(path)


@pytest.mark.parametrize("present", [("x.bim",), ("x.bim.zst", "x.bim.gz"), ("x.bim.gz",), ()])
def test_companion_files__plain_then_zst_then_gz(tmp_path, present):
    (tmp_path / "x.bed").write_bytes(b"")
    (tmp_path / "x.fam").write_text("")
    for name in present:
        (tmp_path / name).write_text("")
    if not present:
        with pytest.raises(InputError, match=r"x\.bim: no such file, nor x\.bim\.zst or x\.bim\.gz \(a fileset needs"):
            companion_files(tmp_path / "x", ("bed", "bim", "fam"), text=("bim", "fam"))
        return
    found = companion_files(tmp_path / "x", ("bed", "bim", "fam"), text=("bim", "fam"))
    assert [p.name for p in found] == ["x.bed", present[0], "x.fam"]


def test_companion_files__raise_on_compressed_genotype_file(tmp_path):
    (tmp_path / "x.bed.gz").write_bytes(b"")  # genotype files are never looked for compressed
    with pytest.raises(InputError, match=r"x\.bed: no such file \(a fileset needs x\.bed, x\.bim, x\.fam\)"):
        companion_files(tmp_path / "x", ("bed", "bim", "fam"), text=("bim", "fam"))
