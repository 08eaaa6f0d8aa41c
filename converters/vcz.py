"""VCF Zarr input: a store written by bio2zarr (`vcf2zarr`), sgkit or any writer of the
VCF Zarr specification (https://github.com/sgkit-dev/vcf-zarr-spec, versions 0.1 to 0.4),
in Zarr format 2 or 3.

Arrays read (names and dimensions from the specification):
    call_genotype      (variants, samples, ploidy) int: allele index per chromosome copy,
                       0 = REF, 1 = first ALT, ...; -1 missing; -2 fill (mixed ploidy)
    variant_allele     (variants, alleles) str: REF first, then the ALTs, '' as fill
    variant_contig     (variants,) int: index into contig_id (the `contigs` group
                       attribute in VCF Zarr 0.1)
    variant_position   (variants,) int
    variant_id         (variants,) str, optional: '.' (or absent) when the VCF had no ID
    sample_id          (samples,) str, unique
`call_genotype_phased` and every other array are ignored.

Dosage rule (the store counts ALT, the second allele): for each call, the number of
chromosome copies carrying allele 1. A call is missing when any of its alleles is -1 (a
half-missing call such as `0/.` is missing, as `plink2 --vcf-half-call missing`) or when all
are fill. A haploid call (one allele, the rest -2 fill, or a ploidy dimension of 1) counts as
homozygous, 0 or 2, as PLINK stores haploid calls (`1` on a male chrX becomes 2). Phasing is
ignored: `0|1` and `1|0` both count 1. An allele index other than 0 or 1 (or a value below
-2) at a biallelic site is an `InputError` naming the variant and the sample. A ploidy
dimension above 2 is refused.

Multi-allelic variants (more than two non-fill alleles) are an `InputError` naming the
variant, as for PGEN, unless `max_alleles=2` skips them. A site with REF only stores ALT '.'.
A missing variant ID ('.', '' or no `variant_id` array) becomes CHROM:POS:REF:ALT, as
`plink2 --set-missing-var-ids @:#:$r:$a` would name it, so that every variant can be named
in a component file. The family ID of every sample is its sample ID.

Reading: each Dask task reads the VCF Zarr rows of its variant range (of a subset: in runs
of nearby rows, `source.row_runs`), `READ_BLOCK_SAMPLES` samples (rounded to whole
`call_genotype` sample chunks) at a time, so its buffer stays bounded whatever the cohort
size. A task decodes every VCF Zarr chunk its rows touch: when
`--variant-chunk` is smaller than the VCF Zarr variant chunk, neighbouring tasks decode the
same chunks again (correct, but slower; see docs/store_format.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import zarr

from converters.source import (
    Source,
    VariantRows,
    build_source,
    check_max_alleles,
    check_range,
    multiallelic_message,
    row_runs,
)
from converters.tables import KeptVariants, SampleTable, VariantTable
from dreml.errors import InputError
from dreml.store_schema import MISSING_DOSAGE

logger = logging.getLogger(__name__)

# Samples decoded per step of `VczReader.read` (rounded up to whole VCF Zarr sample chunks).
READ_BLOCK_SAMPLES = 8192
# VCF Zarr codes: a missing allele and the fill of a slot beyond a call's ploidy.
VCZ_MISSING = -1
VCZ_FILL = -2


def _open_group(path: Path) -> zarr.Group:
    if not path.is_dir():
        raise InputError(f"{path}: no such VCF Zarr directory")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a directory that is not a group
        raise InputError(f"{path}: not a Zarr group ({type(exc).__name__}: {exc})") from None


def _array(path: Path, group: zarr.Group, name: str, shape: tuple[int | None, ...], dims: str) -> zarr.Array:
    """The array `name`, whose shape must match `shape` (None: any size)."""
    array = group[name] if name in group else None
    if not isinstance(array, zarr.Array):
        raise InputError(f"{path}: VCF Zarr array '{name}' is missing (expected dimensions {dims})")
    if len(array.shape) != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape)):
        expected = ", ".join("any" if want is None else str(want) for want in shape)
        raise InputError(f"{path}: VCF Zarr array '{name}' has shape {tuple(array.shape)}, expected ({expected}) = {dims}")
    return array


def _values(path: Path, group: zarr.Group, name: str, shape: tuple[int | None, ...], dims: str) -> np.ndarray:
    """The whole of the array `name` (checked by `_array`) as a NumPy array."""
    return np.asarray(_array(path, group, name, shape, dims)[:])


def _strings(values: np.ndarray) -> np.ndarray:
    """Zarr strings (object, NumPy StringDType or fixed width) as a NumPy unicode array."""
    values = np.asarray(values)
    if values.dtype.kind == "T":  # NumPy needs an explicit width for this conversion
        return values.astype(f"U{max(1, int(np.strings.str_len(values).max(initial=1)))}")
    if values.dtype.kind == "O":
        values = np.array(["" if v is None else str(v) for v in values.ravel()], dtype=str).reshape(values.shape)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    return values.astype(str)


def _contig_names(path: Path, group: zarr.Group) -> np.ndarray:
    """`contig_id` (VCF Zarr 0.2+) or the `contigs` group attribute (0.1)."""
    if "contig_id" in group:
        return _strings(_values(path, group, "contig_id", (None,), "(contigs)"))
    if "contigs" in group.attrs:
        contigs = group.attrs["contigs"]
        if not isinstance(contigs, list):
            raise InputError(f"{path}: the 'contigs' group attribute is {type(contigs).__name__}, expected a list of names")
        return np.array(list(contigs), dtype=str)
    raise InputError(f"{path}: VCF Zarr array 'contig_id' is missing (expected dimensions (contigs))")


def read_vcz_samples(path: Path, group: zarr.Group) -> SampleTable:
    """`sample_id`, unique; the family ID of each sample is its sample ID."""
    sample_id = _strings(_values(path, group, "sample_id", (None,), "(samples)"))
    first: dict[str, int] = {}
    for i, iid in enumerate(sample_id.tolist()):
        seen = first.setdefault(iid, i)
        if seen != i:
            raise InputError(
                f"{path}: sample_id[{i}] duplicates sample ID {iid!r} (first at index {seen}); sample IDs must be unique"
            )
    return SampleTable(family_id=sample_id.copy(), sample_id=sample_id)


def scan_vcz_variants(path: Path, group: zarr.Group, *, skip_multiallelic: bool) -> KeptVariants:
    """The variant metadata, multi-allelic variants skipped (or refused); `locator` = VCF Zarr row."""
    position = _values(path, group, "variant_position", (None,), "(variants)")
    m = len(position)
    allele = _strings(_values(path, group, "variant_allele", (m, None), "(variants, alleles)"))
    contig = np.asarray(_values(path, group, "variant_contig", (m,), "(variants)"), dtype=np.int64)
    names = _contig_names(path, group)
    bad = np.flatnonzero((contig < 0) | (contig >= len(names)))
    if bad.size:
        j = int(bad[0])
        raise InputError(
            f"{path}: variant row {j}: variant_contig {contig[j]} is not an index into contig_id (0..{len(names) - 1})"
        )
    chrom = names[contig] if m else np.array([], dtype=str)
    if "variant_id" in group:
        variant_id = _strings(_values(path, group, "variant_id", (m,), "(variants)"))
    else:
        variant_id = np.full(m, ".", dtype=str)
    n_alleles = (allele != "").sum(axis=1) if allele.shape[1] else np.zeros(m, dtype=np.int64)
    multi = np.flatnonzero(n_alleles > 2)
    if multi.size and not skip_multiallelic:
        j = int(multi[0])
        alleles = ",".join(a for a in allele[j] if a)
        what = f"variant {str(variant_id[j])!r} at {chrom[j]}:{position[j]} (alleles {alleles})"
        raise InputError(multiallelic_message(f"{path}: variant row {j}", what))
    kept = np.flatnonzero(n_alleles <= 2)
    ref = allele[kept, 0] if allele.shape[1] else np.full(len(kept), ".", dtype=str)
    alt = allele[kept, 1] if allele.shape[1] > 1 else np.full(len(kept), "", dtype=str)
    alt = np.where(alt == "", ".", alt)  # a site with REF only (VCF ALT '.')
    ids = variant_id[kept]
    unnamed = (ids == ".") | (ids == "")
    synthetic = [f"{c}:{p}:{r}:{a}" for c, p, r, a in zip(chrom[kept], position[kept], ref, alt)]
    ids = np.where(unnamed, np.array(synthetic, dtype=str) if len(kept) else ids, ids)
    table = VariantTable.from_columns(chrom[kept].tolist(), ids.tolist(), position[kept].tolist(), ref.tolist(), alt.tolist())
    return KeptVariants(table=table, locator=kept.astype(np.int64), n_input=m)


def genotype_dosage(calls: np.ndarray) -> np.ndarray:
    """ALT dosages (int8, -1 missing) of biallelic calls, shape (variants, samples, ploidy) -> (variants, samples).

    The count of allele 1 per call; a haploid call (one allele present, the rest fill)
    counts twice; missing if any allele is -1 or none is present (module docstring).
    """
    present = calls >= 0
    n_present = present.sum(axis=2, dtype=np.int8)
    alt = (calls == 1).sum(axis=2, dtype=np.int8)
    dosage = np.where(n_present == 1, 2 * alt, alt).astype(np.int8)
    dosage[(calls == VCZ_MISSING).any(axis=2) | (n_present == 0)] = MISSING_DOSAGE
    return dosage


def _check_calls(path: Path, calls: np.ndarray, rows: np.ndarray, sample_offset: int) -> None:
    """Every allele of a biallelic site is 0, 1, missing (-1) or fill (-2)."""
    bad = np.argwhere((calls > 1) | (calls < VCZ_FILL))
    if bad.size:
        j, i, k = (int(v) for v in bad[0])
        raise InputError(
            f"{path}: call_genotype[{rows[j]}, {sample_offset + i}, {k}] is {int(calls[j, i, k])}, "
            "expected 0, 1, -1 (missing) or -2 (fill) at a biallelic variant"
        )


@dataclass(frozen=True)
class VczReader:
    """Reads ALT dosages from the `call_genotype` array of a VCF Zarr checked by `open_vcz`.

    Attributes:
        rows: the VCF Zarr row of each kept variant when some were skipped; None when kept
            variant j is row j.
    """

    path: Path
    n_samples: int
    n_variants: int
    rows: VariantRows | None = None

    def for_chunk(self, start: int, stop: int) -> VczReader:
        return self if self.rows is None else replace(self, rows=self.rows.window(start, stop))

    def read(self, start: int, stop: int) -> np.ndarray:
        """int8 block of variants [start, stop), shape (stop - start, n_samples), -1 missing."""
        check_range(self, start, stop)
        out = np.empty((stop - start, self.n_samples), dtype=np.int8)
        if stop == start:
            return out
        rows = np.arange(start, stop) if self.rows is None else self.rows.take(start, stop)
        genotype = zarr.open_array(str(self.path), path="call_genotype", mode="r")
        sample_chunk = int(genotype.chunks[1])
        step = sample_chunk * max(1, -(-READ_BLOCK_SAMPLES // sample_chunk))
        # one slice per run of rows spanning at most twice the rows kept (a subset's gaps
        # within a VCF Zarr chunk are read through: the chunk is decoded anyway)
        runs = row_runs(rows, max_rows=2 * len(rows), max_gap=int(genotype.chunks[0]))
        for s in range(0, self.n_samples, step):
            for i, j in runs:
                first, last = int(rows[i]), int(rows[j - 1]) + 1
                block = np.asarray(genotype[first:last, s : s + step, :])
                if last - first != j - i:
                    block = block[rows[i:j] - first]
                _check_calls(self.path, block, rows[i:j], s)
                out[i:j, s : s + step] = genotype_dosage(block)
        return out


def open_vcz(path: str | Path, *, max_alleles: int | None = None) -> Source:
    """Open a VCF Zarr store: check its arrays' shapes, read samples and variants.

    Arguments:
        path: the VCF Zarr directory (e.g. cohort.vcz).
        max_alleles: None (a multi-allelic variant is an `InputError`) or 2 (skip them).
    """
    check_max_alleles(max_alleles)
    path = Path(path)
    group = _open_group(path)
    samples = read_vcz_samples(path, group)
    kept = scan_vcz_variants(path, group, skip_multiallelic=max_alleles == 2)
    genotype = _array(path, group, "call_genotype", (kept.n_input, len(samples), None), "(variants, samples, ploidy)")
    if genotype.dtype.kind not in "iu":
        raise InputError(f"{path}: VCF Zarr array 'call_genotype' has dtype {genotype.dtype}, expected an integer type")
    if genotype.shape[2] not in (1, 2):
        raise InputError(f"{path}: call_genotype has ploidy {genotype.shape[2]}; dreml converts diploid (and haploid) calls only")
    for what, count in (("sample_id", len(samples)), ("variant_position", kept.n_input)):
        if count == 0:
            raise InputError(f"{path}: '{what}' is empty (expected at least one {what.split('_')[0]})")
    if len(kept.table) == 0:
        raise InputError(f"{path}: all {kept.n_input} variants are multi-allelic (nothing left to store)")
    logger.info("%s: call_genotype chunks %s (variants x samples x ploidy)", path, tuple(genotype.chunks))
    return build_source(
        "vcz",
        (path,),
        samples,
        kept.table,
        VczReader,
        options={"max_alleles": max_alleles},
        skipped={"multiallelic": kept.n_skipped} if max_alleles else None,
        rows=None if kept.all_kept else VariantRows(first=0, locator=kept.locator),
    )
