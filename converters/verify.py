"""Re-read a source fileset and compare it with a store: every genotype and all metadata."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.convert import OPENERS, open_source
from converters.source import Source
from converters.writer import metadata_arrays, source_attribute
from dreml.errors import InputError
from dreml.store import Store

logger = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """Outcome of `verify`: `mismatches` lists one line per difference found (empty = equal)."""

    n_genotypes: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def detect_format(prefix: str | Path) -> str:
    """'bed' or 'pgen', from which genotype file (PREFIX.bed or PREFIX.pgen) exists."""
    found = [fmt for fmt in OPENERS if Path(f"{prefix}.{fmt}").is_file()]
    if len(found) != 1:
        what = "both .bed and .pgen" if found else "neither .bed nor .pgen"
        raise InputError(f"{prefix}: found {what}; cannot tell which fileset to verify against")
    return found[0]


def _compare_metadata(store: Store, source: Source, report: VerifyReport) -> None:
    for name, values in metadata_arrays(source).items():
        stored = getattr(store, name)
        if stored.shape != values.shape or not np.array_equal(stored, values):
            report.mismatches.append(f"{store.path}: array '{name}' differs from the source")
    if store.attrs["source"] != source_attribute(source):
        report.mismatches.append(f"{store.path}: attribute 'source' differs (files or sizes changed)")


def verify(store: Store, prefix: str | Path, *, fmt: str | None = None) -> VerifyReport:
    """Compare `store` with the fileset PREFIX.*, chunk by chunk of the store's variants."""
    source = open_source(fmt or detect_format(prefix), prefix)
    report = VerifyReport()
    if (source.n_variants, source.n_samples) != (store.n_variants, store.n_samples):
        report.mismatches.append(
            f"{store.path}: {store.n_variants} variants x {store.n_samples} samples, "
            f"source has {source.n_variants} x {source.n_samples}"
        )
        return report
    _compare_metadata(store, source, report)
    step = store.chunks[0]
    for start in range(0, store.n_variants, step):
        stop = min(start + step, store.n_variants)
        differs = np.flatnonzero((store.dosage(start, stop) != source.read(start, stop)).any(axis=1))
        report.n_genotypes += (stop - start) * store.n_samples
        if differs.size:
            report.mismatches.append(
                f"{store.path}: call_dosage differs from the source at {differs.size} variant(s) "
                f"of [{start}, {stop}), first {str(store.variant_id[start + differs[0]])!r}"
            )
    logger.info("compared %d genotypes: %d mismatch(es)", report.n_genotypes, len(report.mismatches))
    return report
