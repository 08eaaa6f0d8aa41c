"""The `Source` interface every input format implements, and the companion-file lookup.

A `Source` couples the metadata of an input (a `SampleTable` and a `VariantTable`, held by
the driver) with a `GenotypeReader`: a small picklable object (file paths and counts) that
Dask tasks receive and call as `read(start, stop)`. Keeping the two apart means a task
ships a few hundred bytes, not the variant table.

Variant indices: a source's variants are the variants it *keeps*, numbered 0..m-1 in input
order; the store holds exactly these. An input row that is skipped (a multi-allelic variant
under `max_alleles=2`) has no index. Where the two numberings differ, a reader carries a
`VariantRows` (the input locator of each kept variant) and hands each Dask task only the
slice of it that the task's range needs (`GenotypeReader.for_chunk`).

A subset (`--keep/--remove/--extract/--exclude/--chr`, `converters.subset`) is a `Source`
too: its reader's locators are those of the selected variants, and its samples are dropped
from each block after decoding.

Genotype blocks are `int8`, shape (stop - start, n_samples) (variants x samples), holding
the count of the ALT allele (0, 1, 2) and `MISSING_DOSAGE` (-1) for a missing call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import Field, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from converters.tables import SampleTable, VariantTable
from dreml.errors import InputError

logger = logging.getLogger(__name__)

# Compressed names tried, in this order, for a text companion absent under its plain name
# (PLINK 2 writes .pvar.zst; gzip is what most pipelines produce). The content decides
# the decompression (dreml.textio reads the magic bytes), the name only finds the file.
COMPRESSED_SUFFIXES = (".zst", ".gz")


class GenotypeReader(Protocol):
    """Reads ALT dosages of a variant range; picklable, opens its files on each call."""

    # read-only: the readers are frozen dataclasses (or derive the counts as properties)
    @property
    def n_samples(self) -> int: ...

    @property
    def n_variants(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """int8 block of variants [start, stop), shape (stop - start, n_samples), -1 missing."""
        ...

    def for_chunk(self, start: int, stop: int) -> GenotypeReader:
        """A reader that answers `read` on [start, stop) alike, and is what one Dask task receives.

        Readers that carry per-variant lookups return a copy carrying only this range's;
        the others return themselves.
        """
        ...


@dataclass(frozen=True, eq=False)
class VariantRows:
    """Input locators of the kept variants [first, first + len(locator)).

    Attributes:
        first: the (kept-variant) index of `locator[0]`.
        locator: int64, ascending: for each kept variant its row in the input (a variant
            index of the .pgen or of the VCF Zarr arrays) or its byte offset (BGEN).
    """

    first: int
    locator: np.ndarray

    def take(self, start: int, stop: int) -> np.ndarray:
        """Locators of the kept variants [start, stop), which must lie within this window."""
        if not self.first <= start <= stop <= self.first + len(self.locator):
            raise IndexError(
                f"variant range [{start}, {stop}) outside the window [{self.first}, {self.first + len(self.locator)})"
            )
        return self.locator[start - self.first : stop - self.first]

    def window(self, start: int, stop: int) -> VariantRows:
        """A copy holding only the locators of [start, stop) (what a Dask task ships)."""
        return VariantRows(first=start, locator=self.take(start, stop).copy())


def row_runs(rows: np.ndarray, *, max_rows: int, max_gap: int = 1) -> list[tuple[int, int]]:
    """Split ascending input rows into runs `rows[i:j]`, each read with one contiguous read.

    Within a run consecutive rows are at most `max_gap` apart (a shorter gap is read through,
    a longer one skipped), and a run spans at most `max_rows` input rows (the read buffer).
    Contiguous rows (no selection) give runs of `max_rows` rows.
    """
    runs = []
    breaks = (np.flatnonzero(np.diff(rows) > max_gap) + 1).tolist()
    for first, last in zip([0, *breaks], [*breaks, len(rows)]):
        i = first
        while i < last:  # rows[j - 1] - rows[i] < max_rows
            j = min(last, int(np.searchsorted(rows, rows[i] + max_rows, side="left")))
            runs.append((i, j))
            i = j
    return runs


@runtime_checkable
class RowsReader(GenotypeReader, Protocol):
    """A `GenotypeReader` that is a dataclass with a `rows` field (`VariantRows`, or None when
    kept variant j is input row j): what `select_rows` needs to select variants."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    @property
    def rows(self) -> VariantRows | None: ...


def select_rows(reader: GenotypeReader, index: np.ndarray) -> GenotypeReader:
    """A reader of the variants `index` (ascending, into `reader`'s variants) of an unwindowed
    reader with a `rows` field: the locators compose (a subset of a subset reads the input)."""
    if not isinstance(reader, RowsReader):
        raise TypeError(f"select_rows needs a reader with a `rows` field, got {type(reader).__name__}")
    rows = reader.rows
    if rows is not None and (rows.first != 0 or len(rows.locator) != reader.n_variants):
        raise ValueError("select_rows needs a whole reader, not one task's window")
    base = np.arange(reader.n_variants, dtype=np.int64) if rows is None else rows.locator
    return replace(reader, n_variants=len(index), rows=VariantRows(first=0, locator=base[index]))


@dataclass(frozen=True, eq=False)
class Source:
    """An opened input: metadata plus a genotype reader.

    Attributes:
        format: "bed", "pgen", "vcz" or "bgen".
        files: the input's files (genotypes first), recorded in the store's `source` attribute.
        samples, variants: the metadata tables (kept variants only).
        genotypes: the picklable reader that Dask tasks call.
        options: the conversion options that shaped the store (e.g. `max_alleles`), recorded
            in the store so that `verify` can open the input the same way.
        skipped: number of input variants left out, by reason (e.g. {"multiallelic": 3}).
        selection: empty, or the sample and variant selection that made a subset
            (`converters.subset`), recorded in the store; `verify` re-applies it.
    """

    format: str
    files: tuple[Path, ...]
    samples: SampleTable
    variants: VariantTable
    genotypes: GenotypeReader
    options: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def n_variants(self) -> int:
        return len(self.variants)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.genotypes.read(start, stop)


def find_text_companion(path: Path) -> Path | None:
    """`path` if it is a file, else the first of path.zst, path.gz that is; None if none is."""
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in COMPRESSED_SUFFIXES)):
        if candidate.is_file():
            return candidate
    return None


def companion_files(prefix: str | Path, extensions: tuple[str, ...], *, text: tuple[str, ...] = ()) -> tuple[Path, ...]:
    """PREFIX.ext for each extension; raise InputError naming the first that does not exist.

    Extensions in `text` may also be found compressed (PREFIX.ext.zst or PREFIX.ext.gz, in
    that order, when PREFIX.ext is absent), as PLINK 2 allows for its text companions.
    """
    found = []
    plain = tuple(Path(f"{prefix}.{ext}") for ext in extensions)
    for ext, path in zip(extensions, plain):
        where = find_text_companion(path) if ext in text else (path if path.is_file() else None)
        if where is None:
            others = ", ".join(p.name for p in plain)
            nor = f", nor {path.name}.zst or {path.name}.gz" if ext in text else ""
            raise InputError(f"{path}: no such file{nor} (a fileset needs {others})")
        found.append(where)
    return tuple(found)


def check_range(reader: GenotypeReader, start: int, stop: int) -> None:
    if not 0 <= start <= stop <= reader.n_variants:
        raise IndexError(f"variant range [{start}, {stop}) outside [0, {reader.n_variants})")


def check_not_empty(samples_file: Path, n_samples: int, variants_file: Path, n_variants: int) -> None:
    """A store needs at least one sample and one variant."""
    for path, count, what in ((samples_file, n_samples, "sample"), (variants_file, n_variants, "variant")):
        if count == 0:
            raise InputError(f"{path}: no {what} lines (expected at least one)")


def check_max_alleles(max_alleles: int | None) -> None:
    """`max_alleles` is None (multi-allelic variants are an error) or 2 (they are skipped)."""
    if max_alleles is not None and (isinstance(max_alleles, bool) or max_alleles != 2):
        raise InputError(
            f"max_alleles must be 2 (skip multi-allelic variants) or unset, got {max_alleles!r}; "
            "dreml stores biallelic variants only"
        )


def multiallelic_message(where: str, what: str) -> str:
    """The error for a multi-allelic variant met without `max_alleles=2`, the same for every format."""
    return (
        f"{where}: {what} is multi-allelic; dreml stores biallelic variants only: pass --max-alleles 2 "
        "(max_alleles=2) to skip multi-allelic variants, or split them first (bcftools norm -m-)"
    )


def log_skipped(path: Path, skipped: dict[str, int]) -> None:
    """One log line per reason with a non-zero count ("multiallelic" is written "multi-allelic")."""
    for reason, count in skipped.items():
        if count:
            what = reason.replace("multi", "multi-")
            logger.info("%s: skipped %d %s variant(s) (--max-alleles 2)", path, count, what)


def directory_size(path: Path) -> int:
    """Total size in bytes of the files under a directory (a VCF Zarr store)."""
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def build_source(
    fmt: str,
    files: tuple[Path, ...],
    samples: SampleTable,
    variants: VariantTable,
    reader_type: Callable[..., GenotypeReader],
    *,
    options: dict[str, Any] | None = None,
    skipped: dict[str, int] | None = None,
    **reader_fields: Any,
) -> Source:
    """The `Source` of a checked input; its reader (on `files[0]`) gets the tables' counts.

    `reader_fields` are further fields of the reader (e.g. `rows`); `options` and `skipped`
    are recorded in the store (only the options that were set).
    """
    skipped = dict(skipped or {})
    logger.info("%s: %d samples x %d variants", files[0], len(samples), len(variants))
    log_skipped(files[0], skipped)
    return Source(
        format=fmt,
        files=files,
        samples=samples,
        variants=variants,
        genotypes=reader_type(files[0], len(samples), len(variants), **reader_fields),
        options={name: value for name, value in (options or {}).items() if value is not None},
        skipped=skipped,
    )
