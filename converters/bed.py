"""PLINK1 BED/BIM/FAM input: the `.bed` decoder.

BED layout (variant-major, https://www.cog-genomics.org/plink/1.9/formats#bed): 3 magic
bytes 0x6C 0x1B 0x01, then one record of ceil(n/4) bytes per variant. Sample i of a record
sits in bits 2*(i%4) and 2*(i%4)+1 of byte i//4 (the lowest two bits hold the first of four
samples). The 2-bit codes count A1 (.bim column 5), which the store calls ALT:
    00 -> A1/A1, ALT count 2;  01 -> missing;  10 -> A1/A2, 1;  11 -> A2/A2, 0.
The last byte of a record is padded with zero bits when n is not a multiple of 4.

Decoding uses a 256-entry lookup table: entry b holds the four dosages of byte b as four
int8 packed in one uint32, so one `np.take` over the raw bytes decodes four samples per
byte with no per-sample arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from converters.plink_text import read_bim, read_fam
from converters.source import (
    Source,
    VariantRows,
    build_source,
    check_not_empty,
    check_range,
    companion_files,
    row_runs,
)
from dreml.errors import InputError

BED_MAGIC = bytes([0x6C, 0x1B, 0x01])
# Raw bytes decoded per step of `BedReader.read`: bounds the read buffer whatever the range.
READ_BLOCK_BYTES = 16 << 20
# Between two selected variants, a gap shorter than this is read through rather than seeked over.
SKIP_READ_BYTES = 1 << 18
# ALT dosage of each 2-bit code, indexed by the code's value.
_DOSAGE_OF_CODE = np.array([2, -1, 1, 0], dtype=np.int8)


def _build_lookup() -> np.ndarray:
    """uint32[256]: the four int8 dosages of each byte value, in sample order in memory."""
    byte = np.arange(256, dtype=np.uint8)[:, None]
    shift = np.array([0, 2, 4, 6], dtype=np.uint8)[None, :]  # sample k of the byte sits at bits 2k, 2k+1
    codes = (byte >> shift) & 0b11  # (256, 4): the 2-bit code of each of the 4 samples
    dosages = _DOSAGE_OF_CODE[codes]  # (256, 4) int8, C order: sample k is byte k of the row
    # Viewing each row's 4 bytes as one uint32 keeps their memory order, so a gather of these
    # uint32 values, viewed back as int8, lays the samples out in order on any endianness.
    return np.ascontiguousarray(dosages).view(np.uint32).ravel()


_LOOKUP = _build_lookup()


def decode_bed_records(raw: np.ndarray, out: np.ndarray) -> None:
    """Decode BED records `raw` (uint8, shape (rows, ceil(n/4))) into `out`.

    `out` is int8 of shape (rows, 4 * ceil(n/4)), C-contiguous; its last columns receive the
    padding codes (dosage 2) and are for the caller to ignore.
    """
    # out viewed as (rows, ceil(n/4)) uint32; mode="wrap" because the default "raise" makes
    # np.take buffer its output (uint8 indices are always < 256, so nothing wraps).
    np.take(_LOOKUP, raw, out=out.view(np.uint32), mode="wrap")


@dataclass(frozen=True)
class BedReader:
    """Reads ALT dosages from a .bed whose magic and size were checked by `open_bed`.

    Attributes:
        rows: the .bed variant row of each variant read (a subset, `converters.subset`);
            None when variant j is row j.
    """

    path: Path
    n_samples: int
    n_variants: int
    rows: VariantRows | None = None

    def for_chunk(self, start: int, stop: int) -> BedReader:
        return self if self.rows is None else replace(self, rows=self.rows.window(start, stop))

    @property
    def bytes_per_variant(self) -> int:
        return -(-self.n_samples // 4)

    def read(self, start: int, stop: int) -> np.ndarray:
        """int8 block of variants [start, stop), shape (stop - start, n_samples), -1 missing.

        The block is a view into a buffer padded to a multiple of 4 samples (C-contiguous
        exactly when n_samples % 4 == 0). Raw bytes are read at most `READ_BLOCK_BYTES` at a
        time, one read per run of rows (`row_runs`: a subset's gaps under `SKIP_READ_BYTES`
        are read through, longer ones seeked over).
        """
        check_range(self, start, stop)
        width = self.bytes_per_variant
        rows = np.arange(start, stop, dtype=np.int64) if self.rows is None else self.rows.take(start, stop)
        padded = np.empty((stop - start, 4 * width), dtype=np.int8)
        runs = row_runs(rows, max_rows=max(1, READ_BLOCK_BYTES // width), max_gap=max(1, SKIP_READ_BYTES // width))
        raw = np.empty((max((int(rows[j - 1] - rows[i]) + 1 for i, j in runs), default=0), width), dtype=np.uint8)
        with open(self.path, "rb") as f:
            for i, j in runs:
                first = int(rows[i])
                chunk = raw[: int(rows[j - 1]) - first + 1]
                f.seek(len(BED_MAGIC) + first * width)
                if f.readinto(chunk.data.cast("B")) != chunk.nbytes:
                    raise InputError(f"{self.path}: file ended early (truncated while reading variant {first})")
                # a run with gaps keeps only its selected rows
                decode_bed_records(chunk if len(chunk) == j - i else chunk[rows[i:j] - first], padded[i:j])
        return padded[:, : self.n_samples]


def check_bed_magic(path: Path) -> None:
    """The first three bytes must be the variant-major BED magic."""
    with open(path, "rb") as f:
        magic = f.read(len(BED_MAGIC))
    if magic != BED_MAGIC:
        found = magic.hex(" ") or "nothing"
        hint = " (a sample-major .bed: rewrite it with plink --make-bed)" if magic == BED_MAGIC[:2] + b"\x00" else ""
        raise InputError(f"{path}: not a variant-major PLINK1 .bed: first bytes are {found}, expected {BED_MAGIC.hex(' ')}{hint}")


def check_bed_size(path: Path, n_samples: int, n_variants: int, bim: Path, fam: Path) -> None:
    """The file holds exactly one record of ceil(n/4) bytes per variant after the magic."""
    size = path.stat().st_size
    expected = len(BED_MAGIC) + n_variants * -(-n_samples // 4)
    if size != expected:
        raise InputError(
            f"{path}: size is {size} bytes, expected {expected} = 3 + {n_variants} variants ({bim.name}) "
            f"x ceil({n_samples} samples ({fam.name}) / 4) bytes"
        )


def open_bed(prefix: str | Path) -> Source:
    """Open PREFIX.bed/.bim/.fam: magic bytes first, then the metadata, then the .bed size.

    The .bim and .fam may be gzip or Zstandard compressed (PREFIX.bim.gz, PREFIX.fam.zst...).
    """
    bed, bim, fam = companion_files(prefix, ("bed", "bim", "fam"), text=("bim", "fam"))
    check_bed_magic(bed)
    samples = read_fam(fam)
    variants = read_bim(bim)
    check_not_empty(fam, len(samples), bim, len(variants))
    check_bed_size(bed, len(samples), len(variants), bim, fam)
    return build_source("bed", (bed, bim, fam), samples, variants, BedReader)
