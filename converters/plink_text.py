"""Parsers of the PLINK text companions: .bim and .fam (PLINK1), .pvar and .psam (PLINK2).

Each parser reads the whole file into a `VariantTable` or `SampleTable`. A malformed line
raises `InputError` with one line naming the file, the 1-based line number and what was
expected there. Blank lines are skipped. Sample IDs (IID) must be unique: the store is
keyed by them. Files may be gzip or Zstandard compressed (`dreml.textio` detects either
from the first bytes), as PLINK 2 allows (`PREFIX.pvar.zst`, `PREFIX.bim.gz`).

Column conventions (https://www.cog-genomics.org/plink/2.0/formats):
    .bim   CHROM ID CM POS A1 A2       A1 is the counted allele (ALT), A2 is REF
    .fam   FID IID FATHER MOTHER SEX PHENO
    .pvar  '##' meta lines, then a '#CHROM ... POS ID REF ALT ...' header (any column order,
           extra columns ignored); without a header the columns are .bim-like
           (CHROM ID [CM] POS ALT REF)
    .psam  '#FID IID ...' or '#IID ...' header (any order, extra columns ignored);
           without a header the columns are .fam-like
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from converters.source import multiallelic_message
from converters.tables import KeptVariants, SampleTable, VariantTable
from dreml.errors import InputError
from dreml.textio import numbered_lines


def _records(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """Yield (line number, raw line, whitespace-split fields) of every non-blank line.

    Decompression and UTF-8 failures are `InputError`s naming the file (`numbered_lines`).
    """
    for lineno, line in numbered_lines(path):
        fields = line.split()
        if fields:
            yield lineno, line, fields


def _position(path: Path, lineno: int, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{path}: line {lineno}: position {text!r} is not an integer") from None


def _check_columns(path: Path, lineno: int, fields: list[str], expected: tuple[int, ...], what: str) -> None:
    if len(fields) not in expected:
        counts = " or ".join(map(str, expected))
        raise InputError(f"{path}: line {lineno}: expected {counts} columns ({what}), found {len(fields)}")


def read_bim(path: Path) -> VariantTable:
    """Parse a .bim file (6 columns; A1 = ALT, A2 = REF)."""
    chrom, ids, pos, ref, alt = [], [], [], [], []
    for lineno, _, fields in _records(path):
        _check_columns(path, lineno, fields, (6,), "CHROM ID CM POS A1 A2")
        chrom.append(fields[0])
        ids.append(fields[1])
        pos.append(_position(path, lineno, fields[3]))
        alt.append(fields[4])
        ref.append(fields[5])
    return VariantTable.from_columns(chrom, ids, pos, ref, alt)


def _unique_samples(path: Path, family_id: list[str], sample_id: list[str], linenos: list[int]) -> SampleTable:
    first_line: dict[str, int] = {}
    for iid, lineno in zip(sample_id, linenos):
        seen = first_line.setdefault(iid, lineno)
        if seen != lineno:
            raise InputError(
                f"{path}: line {lineno}: duplicate sample ID {iid!r} (first on line {seen}); sample IDs (IID) must be unique"
            )
    return SampleTable(family_id=np.array(family_id, dtype=str), sample_id=np.array(sample_id, dtype=str))


def read_fam(path: Path) -> SampleTable:
    """Parse a .fam file (6 columns; FID and IID are kept)."""
    family_id, sample_id, linenos = [], [], []
    for lineno, _, fields in _records(path):
        _check_columns(path, lineno, fields, (6,), "FID IID FATHER MOTHER SEX PHENO")
        family_id.append(fields[0])
        sample_id.append(fields[1])
        linenos.append(lineno)
    return _unique_samples(path, family_id, sample_id, linenos)


def _header_columns(path: Path, lineno: int, fields: list[str], required: tuple[str, ...]) -> dict[str, int]:
    """Map column names of a '#...' header line to their indices; all of `required` must be there."""
    columns = {name: k for k, name in enumerate([fields[0][1:], *fields[1:]])}
    absent = [name for name in required if name not in columns]
    if absent:
        raise InputError(f"{path}: line {lineno}: header lacks column(s) {', '.join(absent)} (expected {' '.join(required)})")
    return columns


def _check_width(path: Path, lineno: int, fields: list[str], columns: dict[str, int], headerless_width: int) -> None:
    """A data line has exactly the headerless width, or at least as many columns as its header names."""
    if headerless_width:
        if len(fields) != headerless_width:
            raise InputError(
                f"{path}: line {lineno}: expected {headerless_width} columns like the first line, found {len(fields)}"
            )
    elif len(fields) < len(columns):
        raise InputError(
            f"{path}: line {lineno}: expected at least {len(columns)} columns (as in the header), found {len(fields)}"
        )


def read_pvar(path: Path) -> VariantTable:
    """Parse a .pvar file, with a '#CHROM' header or in the headerless .bim-like layout.

    A multi-allelic variant (a comma in ALT) is an `InputError` naming it and its line.
    """
    return scan_pvar(path, skip_multiallelic=False).table


def scan_pvar(path: Path, *, skip_multiallelic: bool) -> KeptVariants:
    """Parse a .pvar file (see `read_pvar`), skipping multi-allelic variants if asked.

    Returns the kept variants with their 0-based variant rows in the file (`locator`), which
    index the .pgen's variants.
    """
    chrom, ids, pos, ref, alt, kept = [], [], [], [], [], []
    columns: dict[str, int] | None = None
    headerless_width = 0  # column count of a headerless file, fixed by its first line
    row = -1  # 0-based variant row of the current data line
    for lineno, line, fields in _records(path):
        if line.startswith("##"):
            continue
        if columns is None and fields[0].startswith("#"):
            columns = _header_columns(path, lineno, fields, ("CHROM", "POS", "ID", "REF", "ALT"))
            continue
        if columns is None:
            _check_columns(path, lineno, fields, (5, 6), "CHROM ID [CM] POS ALT REF")
            headerless_width = len(fields)
            columns = {"CHROM": 0, "ID": 1, "POS": len(fields) - 3, "ALT": len(fields) - 2, "REF": len(fields) - 1}
        _check_width(path, lineno, fields, columns, headerless_width)
        row += 1
        if "," in fields[columns["ALT"]]:
            if skip_multiallelic:
                continue
            what = f"variant {fields[columns['ID']]!r} (ALT {fields[columns['ALT']]!r})"
            raise InputError(multiallelic_message(f"{path}: line {lineno}", what))
        chrom.append(fields[columns["CHROM"]])
        ids.append(fields[columns["ID"]])
        pos.append(_position(path, lineno, fields[columns["POS"]]))
        ref.append(fields[columns["REF"]])
        alt.append(fields[columns["ALT"]])
        kept.append(row)
    table = VariantTable.from_columns(chrom, ids, pos, ref, alt)
    return KeptVariants(table=table, locator=np.array(kept, dtype=np.int64), n_input=row + 1)


def read_psam(path: Path) -> SampleTable:
    """Parse a .psam file, with a '#FID'/'#IID' header or in the headerless .fam layout."""
    family_id, sample_id, linenos = [], [], []
    columns: dict[str, int] | None = None
    headerless_width = 0
    for lineno, _, fields in _records(path):
        if columns is None and fields[0] in ("#FID", "#IID"):
            columns = _header_columns(path, lineno, fields, ("IID",))
            continue
        if columns is None:  # headerless: the .fam layout
            headerless_width = 6
            columns = {"FID": 0, "IID": 1}
        _check_width(path, lineno, fields, columns, headerless_width)
        sample_id.append(fields[columns["IID"]])
        family_id.append(fields[columns["FID"]] if "FID" in columns else sample_id[-1])
        linenos.append(lineno)
    return _unique_samples(path, family_id, sample_id, linenos)
