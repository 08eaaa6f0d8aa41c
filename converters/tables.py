"""Sample and variant metadata as read from the PLINK text companions.

`SampleTable` and `VariantTable` are what every `Source` carries besides its genotypes; the
writer stores them as the store's `sample_*`, `contig_id` and `variant_*` arrays unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SampleTable:
    """Samples in file order.

    Attributes:
        family_id: FID per sample (IID where the .psam has no FID column), shape (n,).
        sample_id: IID per sample, unique, shape (n,).
    """

    family_id: np.ndarray
    sample_id: np.ndarray

    def __len__(self) -> int:
        return len(self.sample_id)

    def take(self, index: np.ndarray) -> SampleTable:
        """The samples `index` (int array, in that order)."""
        return SampleTable(family_id=self.family_id[index], sample_id=self.sample_id[index])


@dataclass(frozen=True, eq=False)
class VariantTable:
    """Variants in file order.

    Attributes:
        contig_id: chromosome names in order of first appearance, shape (contigs,).
        contig: index into `contig_id` per variant, int32, shape (m,).
        position: base-pair coordinate, int64, shape (m,).
        variant_id: ID per variant, shape (m,).
        allele: REF (column 0) and ALT (column 1; the counted allele), shape (m, 2).
    """

    contig_id: np.ndarray
    contig: np.ndarray
    position: np.ndarray
    variant_id: np.ndarray
    allele: np.ndarray

    def __len__(self) -> int:
        return len(self.variant_id)

    def take(self, index: np.ndarray) -> VariantTable:
        """The variants `index` (int array, ascending); contigs renumbered in order of first
        appearance among them (a contig left without variants is dropped)."""
        used, contig = np.unique(self.contig[index], return_inverse=True)  # sorted old numbers
        order = np.argsort(np.unique(contig, return_index=True)[1], kind="stable")  # by first appearance
        rank = np.empty(len(used), dtype=np.int32)
        rank[order] = np.arange(len(used), dtype=np.int32)
        return VariantTable(
            contig_id=self.contig_id[used[order]],
            contig=rank[contig].astype(np.int32),
            position=self.position[index],
            variant_id=self.variant_id[index],
            allele=np.ascontiguousarray(self.allele[index]),
        )

    @classmethod
    def from_columns(
        cls, chrom: list[str], variant_id: list[str], position: list[int], ref: list[str], alt: list[str]
    ) -> VariantTable:
        """Build the table from per-variant columns, numbering contigs by first appearance."""
        contig_index: dict[str, int] = {}
        contig = np.fromiter((contig_index.setdefault(c, len(contig_index)) for c in chrom), dtype=np.int32, count=len(chrom))
        return cls(
            contig_id=np.array(list(contig_index), dtype=str),
            contig=contig,
            position=np.array(position, dtype=np.int64),
            variant_id=np.array(variant_id, dtype=str),
            allele=np.array([ref, alt], dtype=str).T.copy(),  # (m, 2), C order
        )


@dataclass(frozen=True, eq=False)
class KeptVariants:
    """The variants of an input that a conversion keeps (multi-allelic ones may be skipped).

    Attributes:
        table: the kept variants, in input order.
        locator: int64, shape (len(table),): where each kept variant sits in the input (its
            0-based variant row, or its byte offset in a BGEN file), ascending.
        n_input: number of variants in the input, kept or skipped.
    """

    table: VariantTable
    locator: np.ndarray
    n_input: int

    @property
    def n_skipped(self) -> int:
        return self.n_input - len(self.table)

    @property
    def all_kept(self) -> bool:
        return self.n_skipped == 0
