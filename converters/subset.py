"""Subset stores: the samples and variants of an input that `--keep/--remove` and
`--extract/--exclude/--chr` select, with `dreml fit`'s file formats and matching rules
(`dreml.selection`, the same readers and the same masks).

Order: samples are matched on the input's FID and IID (`match_samples`: FID+IID when both
the file and the input carry family IDs, else IID), `--keep` then `--remove`; variants by ID,
`--extract` then `--exclude`, then `--chr` on the input's contig names. The counts at each
step are logged. A selection that leaves no sample or no variant is an `InputError`, raised
before anything is written.

A subset is a `Source` like any other, so the writer needs nothing new:
    - its tables are the selected rows (contigs renumbered in order of first appearance
      among the selected variants, as the store's contract asks);
    - its reader reads only the selected variants: their input locators are composed with
      the reader's own (`source.select_rows`), so a Dask task still receives only its own
      range's locators, and a multi-allelic variant skipped by `--max-alleles 2` stays
      skipped; the selected samples are kept from each decoded block (`SampleSubsetReader`);
    - the per-variant statistics are computed by the writer from the blocks it writes, so
      they are the kept samples' (allele frequency, call count).

The selection is recorded in the store's `source` attribute (`source.selection`,
docs/store_format.md): each file's absolute path and size, the chromosomes, and the sample
and variant counts at each step. `verify` reads it back (`recorded_selection`) and applies
the same files to the input again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from converters.source import GenotypeReader, Source, select_rows
from dreml.errors import InputError
from dreml.selection import SampleSelection, Selection, VariantSelection

logger = logging.getLogger(__name__)

SAMPLE_OPTIONS = ("keep", "remove")
VARIANT_OPTIONS = ("extract", "exclude")


@dataclass(frozen=True)
class SampleSubsetReader:
    """The columns `kept` of another reader's blocks.

    Attributes:
        inner: the reader of every input sample.
        kept: `np.packbits` of the boolean mask of the kept input samples (n/8 bytes: what
            each Dask task ships).
        n_samples: the number of kept samples.
    """

    inner: GenotypeReader
    kept: np.ndarray
    n_samples: int

    @property
    def n_variants(self) -> int:
        return self.inner.n_variants

    def for_chunk(self, start: int, stop: int) -> SampleSubsetReader:
        return replace(self, inner=self.inner.for_chunk(start, stop))

    def read(self, start: int, stop: int) -> np.ndarray:
        """int8 block of variants [start, stop), shape (stop - start, n_samples), -1 missing."""
        mask = np.unpackbits(self.kept, count=self.inner.n_samples).view(bool)
        return np.compress(mask, self.inner.read(start, stop), axis=1)


def is_active(selection: Selection | None) -> bool:
    """True when `selection` names at least one file or chromosome."""
    return selection is not None and (
        selection.samples.keep is not None or selection.samples.remove is not None or selection.variants.active
    )


def _file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return {"path": str(path.resolve()), "size": path.stat().st_size}


def select(source: Source, selection: Selection | None) -> Source:
    """The samples and variants of `source` that `selection` keeps (`source` itself when it
    selects nothing); the counts are logged and recorded in the returned source's `selection`.

    Raises:
        InputError: a selection file cannot be read, or nothing is left.
    """
    if selection is None or not is_active(selection):
        return source
    samples, variants = selection.samples, selection.variants
    for option in (*SAMPLE_OPTIONS, *VARIANT_OPTIONS):
        path = getattr(samples if option in SAMPLE_OPTIONS else variants, option)
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: no such file (--{option})")
    n, m = source.n_samples, source.n_variants
    sample_mask, sample_report = (
        samples.mask(source.samples.family_id, source.samples.sample_id, where="input")
        if samples.keep is not None or samples.remove is not None
        else (np.ones(n, dtype=bool), {})
    )
    (variant_mask,), variant_report = variants.masks_of(
        [source.variants.variant_id], [source.variants.contig_id], [source.variants.contig], where="input"
    )
    record: dict[str, Any] = {
        option: _file(path)
        for option in (*SAMPLE_OPTIONS, *VARIANT_OPTIONS)
        if (path := getattr(samples if option in SAMPLE_OPTIONS else variants, option)) is not None
    }
    if variants.chromosomes is not None:
        record["chr"] = list(variants.chromosomes)
    sample_index, variant_index = np.flatnonzero(sample_mask), np.flatnonzero(variant_mask)
    variant_report.pop("store_variants")
    record["samples"] = {"input": n, **sample_report, "kept": len(sample_index)}
    record["variants"] = {
        "input": m,
        **{key.replace("_not_in_store", "_not_in_input"): count for key, count in variant_report.items()},
        "kept": len(variant_index),
    }
    logger.info("selected %d of %d samples and %d of %d variants", len(sample_index), n, len(variant_index), m)
    genotypes = source.genotypes if len(variant_index) == m else select_rows(source.genotypes, variant_index)
    if len(sample_index) < n:
        genotypes = SampleSubsetReader(inner=genotypes, kept=np.packbits(sample_mask), n_samples=len(sample_index))
    return replace(
        source,
        samples=source.samples.take(sample_index),
        variants=source.variants.take(variant_index),
        genotypes=genotypes,
        selection=record,
    )


def recorded_selection(recorded: dict[str, Any], where: str | Path) -> Selection | None:
    """The `Selection` a store's `source.selection` records (None for a whole-input store).

    Raises:
        InputError: a recorded selection file no longer exists.
    """
    if not recorded:
        return None
    paths = {}
    for option in (*SAMPLE_OPTIONS, *VARIANT_OPTIONS):
        if option in recorded:
            paths[option] = Path(recorded[option]["path"])
            if not paths[option].is_file():
                raise InputError(
                    f"{paths[option]}: no such file (the --{option} file that {where} was selected with; "
                    "verify applies the recorded selection to the input again)"
                )
    chromosomes = recorded.get("chr")
    return Selection(
        samples=SampleSelection(keep=paths.get("keep"), remove=paths.get("remove")),
        variants=VariantSelection(
            extract=paths.get("extract"),
            exclude=paths.get("exclude"),
            chromosomes=None if chromosomes is None else tuple(chromosomes),
        ),
    )


def describe(recorded: dict[str, Any]) -> list[str]:
    """Lines of `dreml-convert info` for a recorded selection (none for a whole-input store)."""
    if not recorded:
        return []
    options = {
        "samples": [f"--{o} {recorded[o]['path']}" for o in SAMPLE_OPTIONS if o in recorded],
        "variants": [f"--{o} {recorded[o]['path']}" for o in VARIANT_OPTIONS if o in recorded]
        + ([f"--chr {','.join(recorded['chr'])}"] if "chr" in recorded else []),
    }
    lines = []
    for what, given in options.items():
        counts = recorded[what]
        by = f" ({', '.join(given)})" if given else ""
        lines.append(f"selected       {counts['kept']} of {counts['input']} input {what}{by}")
    return lines
