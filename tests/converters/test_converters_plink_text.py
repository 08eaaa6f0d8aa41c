"""Parsers of .bim/.fam/.pvar/.psam: accepted layouts and one-line errors naming file and line."""

from __future__ import annotations

import re

import numpy as np
import pytest

from converters.plink_text import read_bim, read_fam, read_psam, read_pvar
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
    with pytest.raises(InputError, match=r"x\.pvar: line 3: variant 'v2' is multi-allelic \(ALT 'C,T'\)"):
        read_pvar(path)


def test_read_bim__raise_on_non_utf8(tmp_path):
    path = tmp_path / "x.bim"
    path.write_bytes(b"1 a 0 10 \xff G\n")
    with pytest.raises(InputError, match=r"x\.bim: not a UTF-8 text file"):
        read_bim(path)
