"""The `Source` interface every input format implements, and the companion-file check.

A `Source` couples the metadata of an input fileset (a `SampleTable` and a `VariantTable`,
held by the driver) with a `GenotypeReader`: a small picklable object (file paths and
counts) that Dask tasks receive and call as `read(start, stop)`. Keeping the two apart
means a task ships a few hundred bytes, not the variant table.

Genotype blocks are `int8`, shape (stop - start, n_samples) (variants x samples), holding
the count of the ALT allele (0, 1, 2) and `MISSING_DOSAGE` (-1) for a missing call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from converters.tables import SampleTable, VariantTable
from dreml.errors import InputError

logger = logging.getLogger(__name__)


class GenotypeReader(Protocol):
    """Reads ALT dosages of a variant range; picklable, opens its files on each call."""

    n_samples: int
    n_variants: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """int8 block of variants [start, stop), shape (stop - start, n_samples), -1 missing."""
        ...


@dataclass(frozen=True, eq=False)
class Source:
    """An opened input fileset: metadata plus a genotype reader.

    Attributes:
        format: "bed" or "pgen".
        files: the fileset's files (genotypes first), recorded in the store's `source` attribute.
        samples, variants: the metadata tables.
        genotypes: the picklable reader that Dask tasks call.
    """

    format: str
    files: tuple[Path, ...]
    samples: SampleTable
    variants: VariantTable
    genotypes: GenotypeReader

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def n_variants(self) -> int:
        return len(self.variants)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.genotypes.read(start, stop)


def companion_files(prefix: str | Path, extensions: tuple[str, ...]) -> tuple[Path, ...]:
    """PREFIX.ext for each extension; raise InputError naming the first that does not exist."""
    paths = tuple(Path(f"{prefix}.{ext}") for ext in extensions)
    for path in paths:
        if not path.is_file():
            others = ", ".join(p.name for p in paths)
            raise InputError(f"{path}: no such file (a fileset needs {others})")
    return paths


def check_range(reader: GenotypeReader, start: int, stop: int) -> None:
    if not 0 <= start <= stop <= reader.n_variants:
        raise IndexError(f"variant range [{start}, {stop}) outside [0, {reader.n_variants})")


def check_not_empty(samples_file: Path, n_samples: int, variants_file: Path, n_variants: int) -> None:
    """A store needs at least one sample and one variant."""
    for path, count, what in ((samples_file, n_samples, "sample"), (variants_file, n_variants, "variant")):
        if count == 0:
            raise InputError(f"{path}: no {what} lines (expected at least one)")


def build_source(
    fmt: str,
    files: tuple[Path, ...],
    samples: SampleTable,
    variants: VariantTable,
    reader_type: Callable[[Path, int, int], GenotypeReader],
) -> Source:
    """The `Source` of a checked fileset; its reader (on `files[0]`) gets the tables' counts."""
    logger.info("%s: %d samples x %d variants", files[0], len(samples), len(variants))
    return Source(
        format=fmt,
        files=files,
        samples=samples,
        variants=variants,
        genotypes=reader_type(files[0], len(samples), len(variants)),
    )
