"""BGEN input (https://www.chg.ox.ac.uk/~gav/bgen_format/), read through the optional package
`bgen` (https://github.com/jeremymcrae/bgen; `pip install 'dreml[bgen]'`).

The file's header is checked here first (magic bytes, layout, compression, counts) so that a
file that is not a BGEN gets a one-line `InputError`; the package then parses the variant
blocks (layouts 1 and 2, zlib or zstd, any bit depth, phased or not).

Alleles: BGEN does not say which allele is REF. The first allele is REF and the second ALT
(the counted allele), as `plink2 --bgen F.bgen ref-first` reads it.

Hard calls (the store holds hard calls, as for PGEN): the ALT dosage of a sample is
d = P(REF/ALT) + 2 P(ALT/ALT) (phased: the sum over both haplotypes of P(ALT)); the call is
the nearest integer k when |d - k| <= `hard_call_threshold` (0.1 by default), and missing
otherwise. This is PLINK 2's `--hard-call-threshold` (the maximum distance of a dosage from
an integer), so converting a BGEN directly gives the calls that `plink2 --bgen ... ref-first
--make-pgen` followed by `dreml-convert pgen` gives (both default to 0.1). A sample flagged
missing (layout 2) or with all-zero probabilities (layout 1) is missing. A haploid sample
(ploidy 1) counts as homozygous, d = 2 P(ALT), as PLINK stores haploid calls; ploidy 0 is
missing; a ploidy above 2 is an `InputError` naming the variant.

Samples: from the `sample` file (Oxford .sample: a header line `ID_1 ID_2 ...` or `ID ...`,
a line of column types, then one line per sample; FID = ID_1, IID = ID_2, or both = ID),
else from the identifiers embedded in the BGEN (FID = IID); one of the two must exist.
Variant IDs: the rsID, else the SNP ID, else CHROM:POS:REF:ALT when both are empty or '.'.

Multi-allelic variants are an `InputError` naming the variant, unless `max_alleles=2` skips
them (as for PGEN and VCF Zarr).

Reading: `open_bgen` walks the variant headers once (metadata, multi-allelic check) and keeps
each kept variant's index in the file; a Dask task receives the indices of its own range
(`VariantRows`) and gets the variants by index from the package's reader. The package finds
a variant by index after one walk over all variant headers (measured: 0.2-0.4 s for 200,000
variants from the page cache; a .bgi index beside the file is used instead when present), so
each worker thread keeps its last opened reader (`_thread_reader`): one walk per thread and
file, not one per task, at the cost of the walk's table in memory (measured: about 20 bytes
per variant).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from converters.source import Source, VariantRows, build_source, check_max_alleles, check_range, multiallelic_message
from converters.tables import KeptVariants, SampleTable, VariantTable
from dreml.errors import DremlError, InputError
from dreml.store_schema import MISSING_DOSAGE
from dreml.textio import numbered_lines

logger = logging.getLogger(__name__)

DEFAULT_HARD_CALL_THRESHOLD = 0.1
# Header block: offset of the first variant (uint32), then at byte 4 the header length,
# the variant count, the sample count (uint32 each), 4 magic bytes; the flags are the last
# 4 bytes of the header block. All integers little-endian.
_HEADER = struct.Struct("<IIII4s")
BGEN_MAGIC = (b"bgen", b"\x00\x00\x00\x00")  # the specification allows zeros in old files
_COMPRESSION = {0: "none", 1: "zlib", 2: "zstd"}
_SAMPLE_IDS_FLAG = 1 << 31


class MissingDependencyError(DremlError):
    """An optional package is not installed. Advice: install the extra the message names."""


def bgen_package() -> ModuleType:
    """The `bgen` package, or a one-line error naming the extra that installs it."""
    try:
        import bgen
    except ImportError:
        raise MissingDependencyError("reading BGEN needs the optional package 'bgen': pip install 'dreml[bgen]'") from None
    return bgen


@dataclass(frozen=True)
class BgenHeader:
    """What `read_bgen_header` checked: counts, layout (1 or 2), compression, embedded sample IDs."""

    n_variants: int
    n_samples: int
    layout: int
    compression: str
    has_sample_ids: bool


def read_bgen_header(path: Path) -> BgenHeader:
    """Check the header block of `path`: magic bytes, header length, layout and compression."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(_HEADER.size + 4)
    if len(head) < _HEADER.size + 4:
        raise InputError(f"{path}: not a BGEN file: {len(head)} bytes, shorter than a BGEN header (24 bytes)")
    first_variant, header_length, n_variants, n_samples, magic = _HEADER.unpack_from(head)
    if magic not in BGEN_MAGIC:
        raise InputError(f"{path}: not a BGEN file: bytes 16-19 are {magic.hex(' ')}, expected 'bgen' (62 67 65 6e)")
    if not 20 <= header_length <= first_variant:
        raise InputError(
            f"{path}: corrupt BGEN header: header length {header_length} outside [20, {first_variant}] "
            "(the offset of the first variant)"
        )
    with open(path, "rb") as f:
        f.seek(4 + header_length - 4)  # the flags close the header block
        (flags,) = struct.unpack("<I", f.read(4))
    compression, layout = flags & 0b11, (flags >> 2) & 0b1111
    if layout not in (1, 2) or compression not in _COMPRESSION or (layout == 1 and compression == 2):
        raise InputError(
            f"{path}: unsupported BGEN flags 0x{flags:08x}: layout {layout}, compression {compression} "
            "(expected layout 1 or 2, compression 0 none, 1 zlib or 2 zstd (layout 2 only))"
        )
    return BgenHeader(
        n_variants=n_variants,
        n_samples=n_samples,
        layout=layout,
        compression=_COMPRESSION[compression],
        has_sample_ids=bool(flags & _SAMPLE_IDS_FLAG),
    )


def _nonblank(path: Path) -> Iterator[tuple[int, list[str]]]:
    for lineno, line in numbered_lines(path):
        fields = line.split()
        if fields:
            yield lineno, fields


def read_oxford_sample(path: Path) -> SampleTable:
    """Parse an Oxford .sample file (module docstring); IIDs must be unique."""
    lines = _nonblank(path)
    lineno, header = next(lines, (1, []))
    if header[:2] == ["ID_1", "ID_2"]:
        n_ids = 2
    elif header[:1] == ["ID"]:
        n_ids = 1
    else:
        raise InputError(f"{path}: line {lineno}: expected a header starting 'ID_1 ID_2' (or 'ID'), found {' '.join(header)!r}")
    lineno, types = next(lines, (lineno + 1, []))
    if len(types) != len(header) or types[:n_ids] != ["0"] * n_ids:
        raise InputError(
            f"{path}: line {lineno}: expected the column-types line ({' '.join(['0'] * n_ids)} ..., "
            f"{len(header)} columns as in the header), found {' '.join(types)!r}"
        )
    family_id, sample_id = [], []
    first_line: dict[str, int] = {}
    for lineno, fields in lines:
        if len(fields) != len(header):
            raise InputError(f"{path}: line {lineno}: expected {len(header)} columns as in the header, found {len(fields)}")
        iid = fields[n_ids - 1]
        seen = first_line.setdefault(iid, lineno)
        if seen != lineno:
            raise InputError(
                f"{path}: line {lineno}: duplicate sample ID {iid!r} (first on line {seen}); sample IDs must be unique"
            )
        family_id.append(fields[0])
        sample_id.append(iid)
    return SampleTable(family_id=np.array(family_id, dtype=str), sample_id=np.array(sample_id, dtype=str))


def _package_reader(path: Path) -> Any:
    """A `bgen.BgenReader` on `path` (its embedded sample IDs, if any, are read too)."""
    bgen = bgen_package()
    try:
        return bgen.BgenReader(str(path), delay_parsing=True)
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(f"{path}: not a readable BGEN file ({exc})") from None


_local = threading.local()


def _thread_reader(path: Path) -> Any:
    """This thread's reader of `path`, reopened when the file changed (size or mtime) or another is asked.

    A BgenReader shares one file handle among its variants, so readers are per thread.
    """
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    cached = getattr(_local, "reader", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if cached is not None:
        cached[1].close()
    reader = _package_reader(path)
    _local.reader = (key, reader)
    return reader


def _variant_id(rsid: str, varid: str, chrom: str, pos: int, alleles: list[str]) -> str:
    for name in (rsid, varid):
        if name not in ("", "."):
            return name
    return f"{chrom}:{pos}:{alleles[0]}:{alleles[1]}"


def scan_bgen_variants(path: Path, header: BgenHeader, *, skip_multiallelic: bool) -> KeptVariants:
    """Walk the variant headers: metadata of the kept variants, `locator` = variant index in the file."""
    chrom, ids, pos, ref, alt, kept = [], [], [], [], [], []
    reader = _package_reader(path)
    index = -1
    try:
        for index, variant in enumerate(reader):
            alleles = list(variant.alleles)
            where = f"{path}: variant {index}"
            name = variant.rsid or variant.varid
            what = f"variant {name!r} at {variant.chrom}:{variant.pos} (alleles {','.join(alleles)})"
            if len(alleles) < 2:
                raise InputError(f"{where}: {what} has {len(alleles)} allele(s), expected 2")
            if len(alleles) > 2:
                if skip_multiallelic:
                    continue
                raise InputError(multiallelic_message(where, what))
            chrom.append(variant.chrom)
            ids.append(_variant_id(variant.rsid, variant.varid, variant.chrom, variant.pos, alleles))
            pos.append(variant.pos)
            ref.append(alleles[0])
            alt.append(alleles[1])
            kept.append(index)
    except (ValueError, RuntimeError, IndexError) as exc:  # the package's errors for a corrupt block
        raise InputError(f"{path}: variant {index + 1}: cannot read the variant block ({exc})") from None
    finally:
        reader.close()
    if index + 1 != header.n_variants:
        raise InputError(f"{path}: header counts {header.n_variants} variants, the file holds {index + 1}")
    table = VariantTable.from_columns(chrom, ids, pos, ref, alt)
    return KeptVariants(table=table, locator=np.array(kept, dtype=np.int64), n_input=index + 1)


def hard_calls(dosage: np.ndarray, threshold: float) -> np.ndarray:
    """int8 hard calls of ALT dosages (NaN missing): the nearest integer k if |d - k| <= threshold, else -1."""
    nearest = np.rint(dosage)
    call = np.full(dosage.shape, MISSING_DOSAGE, dtype=np.int8)
    sure = np.abs(dosage - nearest) <= threshold  # False for NaN
    call[sure] = nearest[sure]
    return call


def alt_dosage(path: Path, index: int, variant: Any) -> np.ndarray:
    """float64 ALT dosage per sample of a biallelic variant (module docstring); NaN when missing."""
    try:
        dosage = np.asarray(variant.alt_dosage, dtype=np.float64)
        ploidy = np.asarray(variant.ploidy)
    except (ValueError, RuntimeError) as exc:  # e.g. "cannot compute dosage with ploidy > 2"
        raise InputError(f"{path}: variant {index} ({variant.rsid or variant.varid!r}): {exc}") from None
    dosage[ploidy == 1] *= 2  # haploid: homozygous, as PLINK stores haploid calls
    dosage[ploidy == 0] = np.nan
    return dosage


@dataclass(frozen=True)
class BgenHardCallReader:
    """Reads hard calls (module docstring) from a BGEN checked by `open_bgen`.

    Attributes:
        rows: the variant index in the file of each kept variant.
        hard_call_threshold: maximum distance of a dosage from the integer it is called as.
    """

    path: Path
    n_samples: int
    n_variants: int
    rows: VariantRows | None = None
    hard_call_threshold: float = DEFAULT_HARD_CALL_THRESHOLD

    def for_chunk(self, start: int, stop: int) -> BgenHardCallReader:
        return replace(self, rows=self.rows.window(start, stop)) if self.rows is not None else self

    def read(self, start: int, stop: int) -> np.ndarray:
        """int8 block of variants [start, stop), shape (stop - start, n_samples), -1 missing."""
        check_range(self, start, stop)
        out = np.empty((stop - start, self.n_samples), dtype=np.int8)
        if stop == start:
            return out
        indices = np.arange(start, stop) if self.rows is None else self.rows.take(start, stop)
        reader = _thread_reader(self.path)
        for j, index in enumerate(indices.tolist()):
            try:
                variant = reader[index]
            except (ValueError, RuntimeError, IndexError) as exc:
                raise InputError(f"{self.path}: variant {index}: cannot read the variant block ({exc})") from None
            out[j] = hard_calls(alt_dosage(self.path, index, variant), self.hard_call_threshold)
        return out


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 0.5:
        raise InputError(f"hard_call_threshold must be a number in [0, 0.5), got {threshold!r}")


def bgen_samples(path: Path, header: BgenHeader, sample: Path | None) -> SampleTable:
    """The samples: from the .sample file when given, else the identifiers embedded in the BGEN."""
    if sample is not None:
        samples = read_oxford_sample(sample)
        if len(samples) != header.n_samples:
            raise InputError(f"{path}: header counts {header.n_samples} samples, expected {len(samples)} as in {sample.name}")
        return samples
    if not header.has_sample_ids:
        raise InputError(f"{path}: holds no sample identifiers; pass the .sample file (--sample F.sample)")
    reader = _package_reader(path)
    try:
        ids = np.array(reader.samples, dtype=str)
    finally:
        reader.close()
    first: dict[str, int] = {}
    for i, iid in enumerate(ids.tolist()):
        if first.setdefault(iid, i) != i:
            raise InputError(
                f"{path}: embedded sample {i} duplicates sample ID {iid!r} (first at {first[iid]}); sample IDs must be unique"
            )
    return SampleTable(family_id=ids.copy(), sample_id=ids)


def open_bgen(
    path: str | Path,
    *,
    sample: str | Path | None = None,
    max_alleles: int | None = None,
    hard_call_threshold: float = DEFAULT_HARD_CALL_THRESHOLD,
) -> Source:
    """Open a BGEN file: header checks, samples, variant metadata (module docstring for the rules).

    Arguments:
        path: the .bgen file.
        sample: the Oxford .sample file (plain, gzip or zstd); None uses the identifiers
            embedded in the BGEN.
        max_alleles: None (a multi-allelic variant is an `InputError`) or 2 (skip them).
        hard_call_threshold: a dosage within this distance of an integer is called as that
            integer, any other is missing (PLINK 2's --hard-call-threshold; in [0, 0.5)).
    """
    check_max_alleles(max_alleles)
    _check_threshold(hard_call_threshold)
    bgen_package()  # the one-line error about the extra before any other
    path = Path(path)
    sample = None if sample is None else Path(sample)
    if sample is not None and not sample.is_file():
        raise InputError(f"{sample}: no such file (the .sample file of {path.name})")
    header = read_bgen_header(path)
    samples = bgen_samples(path, header, sample)
    kept = scan_bgen_variants(path, header, skip_multiallelic=max_alleles == 2)
    if header.n_samples == 0 or kept.n_input == 0:
        raise InputError(f"{path}: {header.n_samples} samples x {kept.n_input} variants (expected at least one of each)")
    if len(kept.table) == 0:
        raise InputError(f"{path}: all {kept.n_input} variants are multi-allelic (nothing left to store)")
    return build_source(
        "bgen",
        (path,) if sample is None else (path, sample),
        samples,
        kept.table,
        BgenHardCallReader,
        options={"max_alleles": max_alleles, "hard_call_threshold": float(hard_call_threshold)},
        skipped={"multiallelic": kept.n_skipped} if max_alleles else None,
        rows=None if kept.all_kept else VariantRows(first=0, locator=kept.locator),
        hard_call_threshold=float(hard_call_threshold),
    )
