"""Variant filters applied when an operator is built, without rewriting the store.

A variant j of a component is kept when it is polymorphic (0 < p_j < 1 among observed
calls; monomorphic variants have no variance and are always excluded), its missing rate is
at most `max_missing`, and its minor-allele frequency min(p_j, 1 - p_j) is at least
`min_maf`. p_j and the missing rate come from `VariantStats`: the store's statistics over
all samples, or recomputed over the analysed samples (`VariantStats.from_counts`). The
report counts each excluded variant once, under the first rule it fails, in the order
monomorphic, missing rate, MAF; m_g is the number kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dreml.components.model import Components
from dreml.errors import ComponentSpecError
from dreml.store import Store


@dataclass(frozen=True, eq=False)
class VariantStats:
    """Per-variant statistics used to standardise and filter.

    Attributes:
        allele_frequency: p_j, ALT frequency among observed calls (NaN with no calls).
        missing_rate: fraction of missing calls.
    """

    allele_frequency: np.ndarray  # shape: (m,)
    missing_rate: np.ndarray  # shape: (m,)

    @classmethod
    def from_store(cls, store: Store) -> VariantStats:
        """The statistics the converter stored (over all samples of the store)."""
        return cls(np.asarray(store.variant_allele_frequency, dtype=np.float64), np.asarray(store.variant_missing_rate))

    @classmethod
    def from_counts(
        cls,
        call_count: np.ndarray,  # shape: (m,)
        dosage_sum: np.ndarray,  # shape: (m,)
        n_samples: int,
    ) -> VariantStats:
        """Statistics from observed-call counts and ALT dosage sums over `n_samples` samples."""
        call_count = np.asarray(call_count, dtype=np.float64)
        p = np.divide(dosage_sum, 2.0 * call_count, out=np.full(call_count.shape, np.nan), where=call_count > 0)
        return cls(p, 1.0 - call_count / max(n_samples, 1))


@dataclass(frozen=True)
class ComponentReport:
    """Filtering outcome of one component: m_spec variants requested, m kept."""

    name: str
    m_spec: int
    m: int
    n_monomorphic: int
    n_high_missing: int
    n_low_maf: int


@dataclass(frozen=True)
class FilterReport:
    """What the filters did to every component, with the settings used."""

    components: tuple[ComponentReport, ...]
    min_maf: float
    max_missing: float

    @property
    def m(self) -> np.ndarray:
        """m_g after filters, one per component."""
        return np.array([c.m for c in self.components], dtype=np.int64)

    def table(self) -> str:
        """A fixed-width table, one line per component (logged when an operator is built)."""
        lines = [f"{'component':<20} {'m_spec':>9} {'m':>9} {'monomorphic':>11} {'missing':>9} {'low_maf':>9}"]
        for c in self.components:
            lines.append(f"{c.name:<20} {c.m_spec:>9} {c.m:>9} {c.n_monomorphic:>11} {c.n_high_missing:>9} {c.n_low_maf:>9}")
        return "\n".join(lines)


def filter_components(
    components: Components,
    stats: Sequence[VariantStats],
    *,
    min_maf: float = 0.0,
    max_missing: float = 1.0,
) -> tuple[Components, FilterReport]:
    """Drop monomorphic, too-often-missing and too-rare variants from every component.

    Arguments:
        components: the validated spec (store indices already checked).
        stats: one `VariantStats` per store.
        min_maf: keep variants with MAF >= min_maf (0 keeps every polymorphic variant).
        max_missing: keep variants with missing rate <= max_missing.

    Returns:
        The filtered components and the report. A component left empty is an error.
    """
    if not 0.0 <= min_maf <= 0.5:
        raise ValueError(f"min_maf must lie in [0, 0.5], got {min_maf}")
    if not 0.0 <= max_missing <= 1.0:
        raise ValueError(f"max_missing must lie in [0, 1], got {max_missing}")
    # one boolean per rule and store, so each variant is tested once however many components hold it
    rules = []
    for s in stats:
        p = s.allele_frequency
        polymorphic = np.isfinite(p) & (p > 0) & (p < 1)
        maf = np.where(polymorphic, np.minimum(p, 1 - p), 0.0)
        missing_ok = s.missing_rate <= max_missing
        rules.append((polymorphic, missing_ok, maf >= min_maf))
    keep = [poly & miss & maf for poly, miss, maf in rules]
    reports = []
    for name, idx, store in zip(components.names, components.variant_indices, components.stores):
        poly, miss, maf = (r[idx] for r in rules[store])
        report = ComponentReport(
            name=name,
            m_spec=len(idx),
            m=int(np.sum(keep[store][idx])),
            n_monomorphic=int(np.sum(~poly)),
            n_high_missing=int(np.sum(poly & ~miss)),
            n_low_maf=int(np.sum(poly & miss & ~maf)),
        )
        if report.m == 0:
            raise ComponentSpecError(
                f"{components.source}: component '{name}': no variants left after filters "
                f"({report.n_monomorphic} monomorphic, {report.n_high_missing} missing rate > {max_missing}, "
                f"{report.n_low_maf} MAF < {min_maf})"
            )
        reports.append(report)
    return components.select(keep), FilterReport(tuple(reports), min_maf, max_missing)
