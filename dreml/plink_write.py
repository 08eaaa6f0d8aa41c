"""Writing PLINK1 binary filesets (BED/BIM/FAM), used by the simulator and by tests.

This encoder is deliberately separate from the decoder in `converters.bed`, so that each
can be checked against the other and against pgenlib.

BED layout (variant-major): 3 magic bytes 0x6C 0x1B 0x01, then per variant ceil(n/4) bytes;
sample i sits in bits 2*(i%4)..2*(i%4)+1 of byte i//4. The 2-bit codes count the first
allele of the .bim (A1, column 5), which dreml stores as ALT:
    00 -> A1/A1 (ALT count 2), 01 -> missing, 10 -> A1/A2 (1), 11 -> A2/A2 (0).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

BED_MAGIC = bytes([0x6C, 0x1B, 0x01])
# index = dosage + 1 for dosage in (-1, 0, 1, 2)
_CODE_OF_DOSAGE = np.array([0b01, 0b11, 0b10, 0b00], dtype=np.uint8)


def encode_bed_rows(dosage: np.ndarray) -> bytes:
    """Encode ALT dosages (variants x samples, int8, -1 missing) as BED variant records."""
    m, n = dosage.shape
    codes = _CODE_OF_DOSAGE[dosage.astype(np.int16) + 1]
    padded = np.zeros((m, -(-n // 4) * 4), dtype=np.uint8)  # padding bits are zero
    padded[:, :n] = codes
    quads = padded.reshape(m, -1, 4)
    packed = quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)
    return packed.astype(np.uint8).tobytes()


class BedWriter:
    """Streams variant blocks into a .bed file (magic first, records appended in order)."""

    def __init__(self, path: str | Path) -> None:
        self._file: BinaryIO = open(path, "wb")
        self._file.write(BED_MAGIC)

    def write(self, dosage: np.ndarray) -> None:
        self._file.write(encode_bed_rows(dosage))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_bim(
    path: str | Path,
    contig: np.ndarray,
    variant_id: np.ndarray,
    position: np.ndarray,
    alt: np.ndarray,
    ref: np.ndarray,
) -> None:
    """Write a .bim: chromosome, ID, cM (0), position, A1 (= ALT), A2 (= REF)."""
    with open(path, "w") as f:
        for c, v, p, a1, a2 in zip(contig, variant_id, position, alt, ref):
            f.write(f"{c}\t{v}\t0\t{p}\t{a1}\t{a2}\n")


def write_fam(path: str | Path, family_id: np.ndarray, sample_id: np.ndarray, sex: np.ndarray | None = None) -> None:
    """Write a .fam: FID, IID, father 0, mother 0, sex (1/2/0), phenotype -9."""
    sex = np.zeros(len(sample_id), dtype=int) if sex is None else sex
    with open(path, "w") as f:
        for fid, iid, s in zip(family_id, sample_id, sex):
            f.write(f"{fid} {iid} 0 0 {int(s)} -9\n")


def write_plink1(prefix: str | Path, dosage: np.ndarray, **bim_fields) -> None:
    """Write PREFIX.bed/.bim/.fam from an in-memory dosage matrix (variants x samples).

    Keyword arguments `contig`, `variant_id`, `position`, `alt`, `ref`, `family_id`,
    `sample_id` default to simple synthetic values; tests use this for small filesets.
    """
    m, n = dosage.shape
    prefix = str(prefix)
    with BedWriter(prefix + ".bed") as w:
        w.write(dosage)
    write_bim(
        prefix + ".bim",
        bim_fields.get("contig", np.ones(m, dtype=int)),
        bim_fields.get("variant_id", np.array([f"v{j}" for j in range(m)])),
        bim_fields.get("position", np.arange(1, m + 1) * 100),
        bim_fields.get("alt", np.full(m, "A")),
        bim_fields.get("ref", np.full(m, "G")),
    )
    sample_id = bim_fields.get("sample_id", np.array([f"s{i}" for i in range(n)]))
    write_fam(prefix + ".fam", bim_fields.get("family_id", sample_id), sample_id)
