"""Re-read a source fileset and compare it with a store: every genotype and all metadata.

A subset store (`converters.subset`) is compared with the same subset of its input: the
selection files recorded in its `source` attribute are applied to the input again, and a
selection whose files or counts changed is reported.

A store with a sparse representation (format 1.1) is also checked against itself: its
sparse variants and offsets must be those its statistics and `sparse_below` give
(`converters.writer.plan_sparse`), and every sparse row must hold exactly the calls of its
`call_dosage` row.

A damaged store (a chunk that cannot be decoded: a truncated or overwritten chunk file, or a
`crc32c` checksum that does not match) is reported, one line per damaged chunk, instead of
stopping at the first: every array but `call_dosage` is checked chunk by chunk first (the
comparisons need them), then each `call_dosage` variant chunk as it is compared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converters.convert import OPENERS, open_source
from converters.source import Source
from converters.subset import recorded_selection, select
from converters.writer import metadata_arrays, plan_sparse, source_attribute
from dreml.errors import InputError
from dreml.store import DamagedStoreError, Store

logger = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """Outcome of `verify`: `mismatches` lists one line per difference found (empty = equal)."""

    n_genotypes: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


# a path with one of these extensions names its fileset: PREFIX.bed -> (PREFIX, "bed")
PLINK_EXTENSIONS = {".bed": "bed", ".bim": "bed", ".fam": "bed", ".pgen": "pgen", ".pvar": "pgen", ".psam": "pgen"}


def resolve_input(path: str | Path, fmt: str | None = None) -> tuple[Path, str | None]:
    """The input of `verify` as (path, format): a PLINK file's path (PREFIX.bed, PREFIX.pgen,
    .bim, .fam, .pvar, .psam) becomes its fileset's PREFIX and format; any other path is
    kept, with `fmt` (None: decided by `verify`).

    Raises InputError when `fmt` contradicts the extension.
    """
    path = Path(path)
    implied = PLINK_EXTENSIONS.get(path.suffix)
    if implied is None:
        return path, fmt
    if fmt is not None and fmt != implied:
        raise InputError(f"{path}: a {implied} file, but --format {fmt} was given")
    return path.with_suffix(""), implied


def detect_format(prefix: str | Path) -> str:
    """'bed' or 'pgen', from which genotype file (PREFIX.bed or PREFIX.pgen) exists."""
    found = [fmt for fmt in OPENERS if Path(f"{prefix}.{fmt}").is_file()]
    if len(found) != 1:
        what = "both .bed and .pgen" if found else "neither .bed nor .pgen"
        raise InputError(
            f"{prefix}: found {what}; cannot tell which fileset to verify against "
            "(give --format bed or --format pgen, or the path of the .bed or .pgen file)"
        )
    return found[0]


def _damaged_arrays(store: Store) -> list[str]:
    """One line per damaged chunk of every array but `call_dosage` (read later, chunk by chunk)."""
    names = [name for name in store.group.array_keys() if name != "call_dosage"]
    return [line for name in sorted(names) for line in store.damaged_chunks(name)]


def _compare_metadata(store: Store, source: Source, report: VerifyReport) -> None:
    for name, values in metadata_arrays(source).items():
        stored = getattr(store, name)
        if stored.shape != values.shape or not np.array_equal(stored, values):
            report.mismatches.append(f"{store.path}: array '{name}' differs from the source")
    recorded, current = dict(store.attrs["source"]), source_attribute(source)
    if recorded.pop("selection", None) != current.pop("selection", None):
        report.mismatches.append(f"{store.path}: the selection recorded in attribute 'source' differs (its files changed)")
    if recorded != current:
        report.mismatches.append(f"{store.path}: attribute 'source' differs (files or sizes changed)")


def _compare_sparse_plan(store: Store, report: VerifyReport) -> None:
    """The sparse variants and offsets against those the statistics give."""
    columns = {
        "call_count": store.variant_call_count,
        "dosage_sum": store.variant_dosage_sum,
        "dosage_sq_sum": store.variant_dosage_sq_sum,
    }
    plan = plan_sparse(columns, store.n_samples, float(store.attrs["sparse_below"]))
    if not np.array_equal(plan.allele, store.variant_sparse_allele):
        report.mismatches.append(
            f"{store.path}: variant_sparse_allele differs from the sparse variants below MAF {store.sparse_below:g}"
        )
    elif not np.array_equal(np.diff(plan.indptr), store.variant_sparse_calls):
        report.mismatches.append(f"{store.path}: call_sparse_indptr differs from the calls the statistics count")


def _compare_sparse_rows(store: Store, start: int, stop: int, dosage: np.ndarray, report: VerifyReport) -> None:
    """The sparse rows of [start, stop) against their `call_dosage` rows."""
    calls = store.sparse_calls(start, stop)
    rows = np.flatnonzero(calls.allele >= 0)
    differs = np.flatnonzero((calls.take(rows).dense(store.n_samples) != dosage[rows]).any(axis=1))
    if differs.size:
        report.mismatches.append(
            f"{store.path}: the sparse calls differ from call_dosage at {differs.size} variant(s) "
            f"of [{start}, {stop}), first {str(store.variant_id[start + rows[differs[0]]])!r}"
        )


def _source_options(store: Store, prefix: str | Path, fmt: str, sample: str | Path | None) -> dict:
    """The options the store was converted with, and a BGEN's .sample file.

    Without `sample`, a BGEN store's recorded .sample file is looked for beside the .bgen.
    """
    recorded = store.attrs["source"]
    options = dict(recorded.get("options", {})) if recorded.get("format") == fmt else {}
    if sample is None and fmt == "bgen" and len(recorded.get("files", [])) > 1:
        beside = Path(prefix).parent / recorded["files"][1]["name"]
        sample = beside if beside.is_file() else None
    if sample is not None:
        options["sample"] = sample
    return options


def verify(store: Store, prefix: str | Path, *, fmt: str | None = None, sample: str | Path | None = None) -> VerifyReport:
    """Compare `store` with its input, chunk by chunk of the store's variants.

    Arguments:
        store: the opened store.
        prefix: the input: a PLINK fileset's path without extension (or the path of its
            .bed or .pgen file), a .vcz or a .bgen.
        fmt: the input's format; by default the one the store records (else detected from
            which of PREFIX.bed and PREFIX.pgen exists).
        sample: a BGEN's .sample file (by default the recorded one, beside the .bgen).

    The input is opened with the options the store records (e.g. `max_alleles`), so a store
    converted with skipped variants compares with the same kept variants; of a subset store,
    only the samples and variants of its recorded selection are compared (the selection's
    files must still exist at their recorded paths). Every damaged chunk is one mismatch
    line; with damage outside `call_dosage` only the damage is reported.
    """
    prefix, fmt = resolve_input(prefix, fmt)
    fmt = fmt or store.attrs["source"].get("format") or detect_format(prefix)
    selection = recorded_selection(store.attrs["source"].get("selection", {}), store.path)
    source = open_source(fmt, prefix, **_source_options(store, prefix, fmt, sample))
    report = VerifyReport()
    try:
        source = select(source, selection)
    except InputError as exc:  # e.g. nothing left: a selection file was emptied
        report.mismatches.append(f"{store.path}: the recorded selection no longer applies to the input: {exc}")
        return report
    if (source.n_variants, source.n_samples) != (store.n_variants, store.n_samples):
        report.mismatches.append(
            f"{store.path}: {store.n_variants} variants x {store.n_samples} samples, "
            f"source{' (its recorded selection)' if source.selection else ''} has "
            f"{source.n_variants} x {source.n_samples}"
        )
        return report
    damaged = _damaged_arrays(store)
    if damaged:
        report.mismatches.extend(damaged)
        report.mismatches.extend(store.damaged_chunks("call_dosage"))
        return report
    _compare_metadata(store, source, report)
    if store.has_sparse:
        _compare_sparse_plan(store, report)
    step = store.chunks[0]
    for start in range(0, store.n_variants, step):
        stop = min(start + step, store.n_variants)
        try:
            dosage = store.dosage(start, stop)
        except DamagedStoreError:
            report.mismatches.extend(store.damaged_chunks("call_dosage", start, stop))
            continue
        differs = np.flatnonzero((dosage != source.read(start, stop)).any(axis=1))
        report.n_genotypes += (stop - start) * store.n_samples
        if differs.size:
            report.mismatches.append(
                f"{store.path}: call_dosage differs from the source at {differs.size} variant(s) "
                f"of [{start}, {stop}), first {str(store.variant_id[start + differs[0]])!r}"
            )
        if store.has_sparse:
            _compare_sparse_rows(store, start, stop, dosage, report)
    logger.info("compared %d genotypes: %d mismatch(es)", report.n_genotypes, len(report.mismatches))
    return report
