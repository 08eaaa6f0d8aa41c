"""Sample and variant selection as PLINK 2 and GCTA spell it: `--keep`/`--remove` sample lists,
`--extract`/`--exclude` variant lists, `--chr` chromosome sets; and the sample-matching rule
every sample file (lists, phenotypes, covariates) shares.

Sample lists: one sample a line, `FID IID` (extra columns ignored, as PLINK does) or `IID`
alone; an optional header line `#FID IID`, `#IID`, `FID IID` or `IID`; blank lines skipped.
Variant lists: one variant ID a line (first field), `#` comment lines, and an optional header
whose first field is not a variant of the stores and is a header word (`SNP`, `ID`, ...).
Chromosome sets: `1-3,7,X` (ranges of numbered contigs, names; a `chr` prefix on either
side is ignored), matched to the stores' contig names.

Matching (`match_samples`): on FID and IID when both the file and the store carry a FID that
is not a copy of the IID (PLINK 1 families), else on IID alone (store IIDs are unique);
the rule used is returned so the caller can log it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dreml.components import Components
from dreml.errors import InputError
from dreml.store import Store
from dreml.textio import VARIANT_HEADER_WORDS, numbered_lines

logger = logging.getLogger(__name__)

_SAMPLE_HEADERS = {("#FID", "IID"): 2, ("FID", "IID"): 2, ("#IID",): 1, ("IID",): 1}


@dataclass(frozen=True)
class SampleFile:
    """Sample IDs read from a file.

    Attributes:
        path: the file. fid: family IDs, or None for an IID-only file. iid: sample IDs.
        line: the file line of each sample, for messages.
    """

    path: Path
    fid: np.ndarray | None
    iid: np.ndarray
    line: np.ndarray


def read_sample_list(path: str | Path) -> SampleFile:
    """A `--keep`/`--remove` file (format in the module docstring)."""
    path = Path(path)
    rows = [(n, line.split()) for n, line in numbered_lines(path) if line.strip()]
    if not rows:
        raise InputError(f"{path}: no samples (expected 'FID IID' or 'IID' lines)")
    width = _SAMPLE_HEADERS.get(tuple(rows[0][1][:2]), _SAMPLE_HEADERS.get(tuple(rows[0][1][:1])))
    if width is not None:
        rows = rows[1:]
    else:
        width = 1 if len(rows[0][1]) == 1 else 2
    for n, fields in rows:
        if len(fields) < width or (width == 1 and len(fields) > 1):
            raise InputError(f"{path}: line {n}: expected {'FID IID' if width == 2 else 'one IID'}, found {len(fields)} field(s)")
    iid = np.array([f[width - 1] for _, f in rows], dtype=str)
    fid = np.array([f[0] for _, f in rows], dtype=str) if width == 2 else None
    return SampleFile(path, fid, iid, np.array([n for n, _ in rows], dtype=np.int64))


def carries_family_ids(fid: np.ndarray | None, iid: np.ndarray) -> bool:
    """True when `fid` holds family IDs: present, and not a copy of the IIDs or all '0'."""
    return fid is not None and not (np.array_equal(fid, iid) or np.all(fid == "0"))


def match_samples(
    store_fid: np.ndarray, store_iid: np.ndarray, fid: np.ndarray | None, iid: np.ndarray
) -> tuple[np.ndarray, str]:
    """Each file sample's index in the store (-1: not there) and the rule used ('FID+IID' or 'IID')."""
    store_iid = np.asarray(store_iid, dtype=str)
    position = {s: i for i, s in enumerate(store_iid)}
    index = np.array([position.get(s, -1) for s in iid], dtype=np.int64)
    if carries_family_ids(fid, iid) and carries_family_ids(np.asarray(store_fid, dtype=str), store_iid):
        found = index >= 0
        same_family = np.zeros(len(index), dtype=bool)
        same_family[found] = np.asarray(store_fid, dtype=str)[index[found]] == np.asarray(fid)[found]
        return np.where(same_family, index, -1), "FID+IID"
    return index, "IID"


@dataclass(frozen=True)
class SampleSelection:
    """`--keep` and `--remove`: the store samples an analysis may use (None: no such file)."""

    keep: Path | None = None
    remove: Path | None = None

    def mask(self, store_fid: np.ndarray, store_iid: np.ndarray, *, where: str = "store") -> tuple[np.ndarray, dict]:
        """Store samples kept (bool, store order) and the counts at each step.

        Plain arrays: `dreml-convert` passes its input's samples, named `where="input"` in
        the messages."""
        kept = np.ones(len(store_iid), dtype=bool)
        report: dict = {}
        for option, path, keep in (("keep", self.keep, True), ("remove", self.remove, False)):
            if path is None:
                continue
            listed = read_sample_list(path)
            index, rule = match_samples(store_fid, store_iid, listed.fid, listed.iid)
            hit = np.zeros(len(store_iid), dtype=bool)
            hit[index[index >= 0]] = True
            kept &= hit if keep else ~hit
            report[f"{option}_file_samples"] = int(len(listed.iid))
            report[f"{option}_not_in_{where}"] = int((index < 0).sum())  # counted, not fatal (as PLINK)
            report[f"after_{option}"] = int(kept.sum())
            logger.info(
                "--%s %s: %d listed, %d matched in the %s (on %s), %d samples left",
                option,
                path,
                len(listed.iid),
                int(hit.sum()),
                where,
                rule,
                int(kept.sum()),
            )
        if not kept.any():
            raise InputError(f"{self.keep or self.remove}: no {where} sample left after --keep/--remove")
        return kept, report


def read_variant_list(path: str | Path, known: Sequence[np.ndarray]) -> np.ndarray:
    """The IDs of an `--extract`/`--exclude` file; `known`: the stores' variant IDs (header check)."""
    path = Path(path)
    rows = [(n, line.split()[0]) for n, line in numbered_lines(path) if line.strip() and not line.startswith("#")]
    if rows and rows[0][1].lower() in VARIANT_HEADER_WORDS and not any(np.isin(rows[0][1], k).any() for k in known):
        rows = rows[1:]
    if not rows:
        raise InputError(f"{path}: no variant IDs (expected one ID a line)")
    return np.array([r for _, r in rows], dtype=str)


def parse_chromosomes(text: str) -> tuple[str, ...]:
    """`1-3,7 X` -> ('1', '2', '3', '7', 'X'); a `chr` prefix is dropped."""
    out: list[str] = []
    for token in re.split(r"[,\s]+", text.strip()):
        if not token:
            continue
        bounds = [_bare_contig(b) for b in token.split("-")]
        if len(bounds) == 2 and all(b.isdigit() for b in bounds) and int(bounds[0]) <= int(bounds[1]):
            out.extend(str(c) for c in range(int(bounds[0]), int(bounds[1]) + 1))
        elif len(bounds) == 1 and bounds[0]:
            out.append(bounds[0])
        else:
            raise InputError(f"--chr {text!r}: cannot read {token!r} (expected e.g. 1-3,7,X)")
    if not out:
        raise InputError(f"--chr {text!r}: no chromosome given")
    return tuple(out)


def _bare_contig(name: str) -> str:
    return name[3:] if name.lower().startswith("chr") else name


@dataclass(frozen=True)
class VariantSelection:
    """`--extract`, `--exclude` and `--chr`: the store variants an analysis may use."""

    extract: Path | None = None
    exclude: Path | None = None
    chromosomes: tuple[str, ...] | None = None

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.extract, self.exclude, self.chromosomes))

    def masks(self, stores: Sequence[Store]) -> tuple[list[np.ndarray], dict]:
        """Per store, the variants kept (bool, store order), and the counts at each step."""
        return self.masks_of([s.variant_id for s in stores], [s.contig_id for s in stores], [s.variant_contig for s in stores])

    def masks_of(
        self,
        variant_ids: Sequence[np.ndarray],
        contig_ids: Sequence[np.ndarray],
        variant_contigs: Sequence[np.ndarray],
        *,
        where: str = "store(s)",
    ) -> tuple[list[np.ndarray], dict]:
        """`masks` on plain arrays, one entry per variant set (a store; `dreml-convert`'s input,
        named `where="input"` in the messages).

        Arguments:
            variant_ids: the variant IDs, shape (m,) each.
            contig_ids: the contig names, shape (contigs,) each.
            variant_contigs: each variant's index into its `contig_ids`, shape (m,) each.
        """
        ids = [np.asarray(i, dtype=str) for i in variant_ids]
        kept = [np.ones(len(i), dtype=bool) for i in ids]
        report: dict = {"store_variants": int(sum(len(i) for i in ids))}
        for option, path, keep in (("extract", self.extract, True), ("exclude", self.exclude, False)):
            if path is None:
                continue
            listed = read_variant_list(path, ids)
            hits = [np.isin(i, listed) for i in ids]
            kept = [k & (h if keep else ~h) for k, h in zip(kept, hits)]
            found = np.isin(listed, np.concatenate(ids))
            report[f"{option}_file_variants"] = int(len(listed))
            report[f"{option}_not_in_store"] = int((~found).sum())
            report[f"after_{option}"] = int(sum(k.sum() for k in kept))
            logger.info(
                "--%s %s: %d listed, %d not in the %s, %d variants left",
                option,
                path,
                len(listed),
                int((~found).sum()),
                where,
                report[f"after_{option}"],
            )
        if self.chromosomes is not None:
            wanted = set(self.chromosomes)
            present = set()
            for contig_id, contig, k in zip(contig_ids, variant_contigs, kept):
                names = np.array([_bare_contig(str(c)) for c in contig_id])
                present |= set(names)
                k &= np.isin(names[np.asarray(contig)], list(wanted))
            missing = sorted(wanted - present)
            if missing:
                logger.warning("--chr: no variant on %s in the %s", ", ".join(missing), where)
            report["after_chr"] = int(sum(k.sum() for k in kept))
            logger.info("--chr %s: %d variants left", ",".join(self.chromosomes), report["after_chr"])
        if self.active and not any(k.any() for k in kept):
            raise InputError("no variant left after --extract/--exclude/--chr")
        return kept, report


@dataclass(frozen=True)
class Selection:
    """Both selections, as the shared command-line layer builds them."""

    samples: SampleSelection = field(default_factory=SampleSelection)
    variants: VariantSelection = field(default_factory=VariantSelection)


def restrict_components(components: Components, masks: Sequence[np.ndarray]) -> tuple[Components, list[str]]:
    """The components restricted to the selected variants; those left empty are dropped (returned
    by name). Dropping every component is an `InputError`."""
    keep = [g for g, (idx, s) in enumerate(zip(components.variant_indices, components.stores)) if masks[s][idx].any()]
    dropped = [components.names[g] for g in range(components.n_components) if g not in keep]
    if not keep:
        raise InputError(f"{components.source}: no component has a variant left after --extract/--exclude/--chr")
    for name in dropped:
        logger.warning("component %r has no variant left after the variant selection: dropped", name)
    kept = Components(
        names=tuple(components.names[g] for g in keep),
        variant_indices=tuple(
            components.variant_indices[g][masks[components.stores[g]][components.variant_indices[g]]] for g in keep
        ),
        stores=tuple(components.stores[g] for g in keep),
        annotations=tuple(components.annotations[g] for g in keep),
        source=components.source,
    )
    return kept, dropped


def select_variants(components: Components, stores: Sequence[Store], selection: VariantSelection) -> tuple[Components, dict]:
    """`components` restricted to `selection` (unchanged when it selects nothing) and the counts."""
    if not selection.active:
        return components, {}
    masks, report = selection.masks(stores)
    components, dropped = restrict_components(components, masks)
    return components, {**report, "components_dropped": dropped}
