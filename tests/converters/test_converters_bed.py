"""The .bed decoder against two independent readers (pgenlib, bed-reader) and its input checks."""

from __future__ import annotations

import re

import bed_reader
import numpy as np
import pytest
from plink_fixtures import random_dosage, read_bed_with_pgenlib, write_bed_fileset, write_pgen_fileset

from converters import bed
from converters.bed import open_bed
from converters.pgen import open_pgen
from dreml.errors import InputError


def test_lookup_table_decodes_every_byte():
    # byte b holds samples 0..3 in bit pairs (b >> 2k) & 3, codes 00 -> 2, 01 -> -1, 10 -> 1, 11 -> 0
    raw = np.arange(256, dtype=np.uint8)[:, None]
    out = np.empty((256, 4), dtype=np.int8)
    bed.decode_bed_records(raw, out)
    expected = [[{0: 2, 1: -1, 2: 1, 3: 0}[(b >> (2 * k)) & 3] for k in range(4)] for b in range(256)]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("n", range(1, 10))
def test_read__equals_pgenlib_and_bed_reader(tmp_path, rng, n):
    dosage = random_dosage(rng, 13, n, missing=0.2)
    write_bed_fileset(tmp_path / "x", dosage)
    source = open_bed(tmp_path / "x")
    by_pgenlib = read_bed_with_pgenlib(tmp_path / "x.bed", n)
    with bed_reader.open_bed(tmp_path / "x.bed") as reader:
        by_bed_reader = reader.read(dtype="int8").T  # samples x variants, -127 missing
    by_bed_reader[by_bed_reader == -127] = -1
    np.testing.assert_array_equal(by_pgenlib, dosage)
    np.testing.assert_array_equal(by_bed_reader, dosage)
    np.testing.assert_array_equal(source.read(0, 13), dosage)
    for start, stop in ((0, 0), (5, 6), (3, 11), (12, 13)):
        np.testing.assert_array_equal(source.read(start, stop), dosage[start:stop])


def test_read__bounded_buffer_steps(tmp_path, rng, monkeypatch):
    # a read buffer of 2 records forces many steps, the last one short
    monkeypatch.setattr(bed, "READ_BLOCK_BYTES", 2 * 3)
    dosage = random_dosage(rng, 11, 10)
    write_bed_fileset(tmp_path / "x", dosage)
    np.testing.assert_array_equal(open_bed(tmp_path / "x").read(1, 10), dosage[1:10])


def test_read__raise_on_range_outside(tmp_path, rng):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 4, 5))
    with pytest.raises(IndexError, match=r"variant range \[2, 5\) outside \[0, 4\)"):
        open_bed(tmp_path / "x").read(2, 5)


def test_pgen_read__equals_bed(tmp_path, rng):
    dosage = random_dosage(rng, 17, 7, missing=0.1)
    meta = write_bed_fileset(tmp_path / "x", dosage)
    write_pgen_fileset(tmp_path / "x", dosage, meta)
    np.testing.assert_array_equal(open_pgen(tmp_path / "x").read(2, 15), open_bed(tmp_path / "x").read(2, 15))


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "is too small to be a valid .pgen file."), (b"garbage" * 10, "is not a .pgen file")],
    ids=["empty", "bad_magic"],
)
def test_open_pgen__raise_on_unreadable_pgen(tmp_path, rng, content, reason):
    dosage = random_dosage(rng, 5, 4)
    write_pgen_fileset(tmp_path / "x", dosage, write_bed_fileset(tmp_path / "x", dosage))
    (tmp_path / "x.pgen").write_bytes(content)
    pgen = tmp_path / "x.pgen"
    with pytest.raises(InputError, match=re.escape(f"{pgen}: not a readable PGEN file ({pgen} {reason}")) as info:
        open_pgen(tmp_path / "x")
    assert "\n" not in str(info.value) and "b'" not in str(info.value)


def test_read__raise_on_truncated_bed(tmp_path, rng):
    dosage = random_dosage(rng, 6, 5)
    write_bed_fileset(tmp_path / "x", dosage)
    source = open_bed(tmp_path / "x")  # sizes checked here; the file shrinks afterwards
    data = (tmp_path / "x.bed").read_bytes()
    (tmp_path / "x.bed").write_bytes(data[:-3])  # 2 bytes per variant: variant 4 loses 1 byte
    np.testing.assert_array_equal(source.read(0, 4), dosage[:4])
    with pytest.raises(InputError, match=r"x\.bed: file ended early \(truncated while reading variant 4\)"):
        source.read(4, 6)


@pytest.mark.parametrize(("emptied", "what"), [("fam", "sample"), ("bim", "variant")])
def test_open_bed__raise_on_empty_fileset(tmp_path, rng, emptied, what):
    write_bed_fileset(tmp_path / "x", random_dosage(rng, 3, 4))
    (tmp_path / f"x.{emptied}").write_text("\n")
    with pytest.raises(InputError, match=re.escape(f"x.{emptied}: no {what} lines (expected at least one)")):
        open_bed(tmp_path / "x")
