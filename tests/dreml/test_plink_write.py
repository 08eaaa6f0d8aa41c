"""`dreml.plink_write`: the BED encoder checked against pgenlib's decoder."""

from __future__ import annotations

import numpy as np
import pytest

from dreml.plink_write import BED_MAGIC, encode_bed_rows, write_plink1
from tests.plink_reference import read_dosage


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9])
def test_write_plink1__decodes_via_pgenlib(tmp_path, n):
    rng = np.random.default_rng(n)
    dosage = rng.integers(-1, 3, size=(6, n)).astype(np.int8)
    write_plink1(tmp_path / "x", dosage)
    data = (tmp_path / "x.bed").read_bytes()
    assert data[:3] == BED_MAGIC and len(data) == 3 + 6 * -(-n // 4)
    np.testing.assert_array_equal(read_dosage(tmp_path / "x", n, 6), dosage)
    assert len((tmp_path / "x.bim").read_text().splitlines()) == 6
    assert len((tmp_path / "x.fam").read_text().splitlines()) == n


def test_encode_bed_rows__codes_and_zero_padding():
    # samples 0..4 = dosages 2, -1, 1, 0, 2 -> codes 00, 01, 10, 11 | 00 (+ three zero pads)
    assert encode_bed_rows(np.array([[2, -1, 1, 0, 2]], dtype=np.int8)) == bytes([0b11100100, 0b00000000])
