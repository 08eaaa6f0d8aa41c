"""PLINK2 PGEN/PVAR/PSAM input, read through pgenlib.

pgenlib takes file names as bytes and fills an int8 buffer (variants x samples) with the
count of allele 1 (ALT) per sample, -9 for a missing call; the reader maps -9 to the
store's missing code -1.

PGENs with dosages: the store holds hard calls. `read_range` returns the hard-call track
PLINK2 stores beside the dosages (a dosage within `--hard-call-threshold` of an integer,
0.1 by default, becomes that call; anything else is a missing hard call), so converted
values are exactly what `plink2 --pfile X --export A` would print without `dosage-only`.

Multi-allelic variants (a comma in the .pvar ALT) are refused with a message naming the
variant and its .pvar line, so that every stored dosage counts one named allele, unless
`max_alleles=2` (`--max-alleles 2`, as in PLINK 2) skips them: the store then holds the
biallelic variants only, read with pgenlib's `read_list` at their .pgen rows, and records how
many were skipped. The text companions may be compressed (PREFIX.pvar.zst, PREFIX.psam.gz...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pgenlib

from converters.plink_text import read_psam, scan_pvar
from converters.source import (
    Source,
    VariantRows,
    build_source,
    check_max_alleles,
    check_not_empty,
    check_range,
    companion_files,
)
from dreml.errors import InputError
from dreml.store_schema import MISSING_DOSAGE

PGENLIB_MISSING = -9


def _open_reader(path: Path, n_samples: int | None = None) -> pgenlib.PgenReader:
    try:
        return pgenlib.PgenReader(bytes(path), raw_sample_ct=n_samples)
    except RuntimeError as exc:  # pgenlib reports a bad header as RuntimeError(bytes message)
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InputError(f"{path}: not a readable PGEN file ({' '.join(detail.split())})") from exc


@dataclass(frozen=True)
class PgenReader:
    """Reads ALT hard-call dosages from a .pgen whose counts were checked by `open_pgen`.

    Attributes:
        rows: the .pgen variant row of each kept variant when some were skipped; None when
            kept variant j is row j.
    """

    path: Path
    n_samples: int
    n_variants: int
    rows: VariantRows | None = None

    def for_chunk(self, start: int, stop: int) -> PgenReader:
        return self if self.rows is None else replace(self, rows=self.rows.window(start, stop))

    def read(self, start: int, stop: int) -> np.ndarray:
        """int8 block of variants [start, stop), shape (stop - start, n_samples), -1 missing."""
        check_range(self, start, stop)
        out = np.empty((stop - start, self.n_samples), dtype=np.int8)
        reader = _open_reader(self.path, self.n_samples)
        try:
            if stop > start and self.rows is None:
                reader.read_range(start, stop, out)
            elif stop > start and self.rows is not None:
                reader.read_list(self.rows.take(start, stop).astype(np.uint32), out)
        finally:
            reader.close()
        out[out == PGENLIB_MISSING] = MISSING_DOSAGE
        return out


def open_pgen(prefix: str | Path, *, max_alleles: int | None = None) -> Source:
    """Open PREFIX.pgen/.pvar/.psam: parse the metadata and check its counts against the .pgen header.

    Arguments:
        prefix: the fileset's path without extension (.pvar/.psam may be .zst or .gz compressed).
        max_alleles: None (a multi-allelic variant is an `InputError`) or 2 (skip them).
    """
    check_max_alleles(max_alleles)
    pgen, pvar, psam = companion_files(prefix, ("pgen", "pvar", "psam"), text=("pvar", "psam"))
    samples = read_psam(psam)
    kept = scan_pvar(pvar, skip_multiallelic=max_alleles == 2)
    check_not_empty(psam, len(samples), pvar, kept.n_input)
    reader = _open_reader(pgen)
    try:
        header = {"samples": reader.get_raw_sample_ct(), "variants": reader.get_variant_ct()}
    finally:
        reader.close()
    for what, count, companion in (("samples", len(samples), psam), ("variants", kept.n_input, pvar)):
        if header[what] != count:
            raise InputError(f"{pgen}: header counts {header[what]} {what}, expected {count} as in {companion.name}")
    if len(kept.table) == 0:
        raise InputError(f"{pvar}: all {kept.n_input} variants are multi-allelic (nothing left to store)")
    return build_source(
        "pgen",
        (pgen, pvar, psam),
        samples,
        kept.table,
        PgenReader,
        options={"max_alleles": max_alleles},
        skipped={"multiallelic": kept.n_skipped} if max_alleles else None,
        rows=None if kept.all_kept else VariantRows(first=0, locator=kept.locator),
    )
