"""The component model: which variants of which store make up each K_g.

A component g is a name, a store index s (into the operator's list of stores) and a sorted
set of variant indices into that store; K_g = Z_g Z_g^T / m_g with Z_g the standardised
genotypes of those variants. Components may overlap (a variant may sit in several), and
several stores may each contribute components (multi-GRM). The spec is validated here, once,
at the public boundary; filters (MAF, missingness, monomorphic) are applied later by
`dreml.components.filters` without rewriting the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dreml.errors import ComponentSpecError


@dataclass(frozen=True, eq=False)
class Components:
    """G genetic components.

    Attributes:
        names: one unique, non-empty name per component.
        variant_indices: per component, sorted unique int64 indices into its store's variants.
        stores: per component, the index of its store in the operator's list of stores.
        annotations: per component, free-form JSON-serialisable metadata.
        source: where the spec came from (file name or builder), used in error messages.
    """

    names: tuple[str, ...]
    variant_indices: tuple[np.ndarray, ...]
    stores: tuple[int, ...] = ()
    annotations: tuple[dict, ...] = ()
    source: str = "<memory>"

    def __post_init__(self) -> None:
        G = len(self.names)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "stores", tuple(int(s) for s in self.stores) or (0,) * G)
        object.__setattr__(self, "annotations", tuple(dict(a) for a in self.annotations) or ({},) * G)
        if G == 0:
            raise ComponentSpecError(f"{self.source}: no components")
        if not len(self.variant_indices) == len(self.stores) == len(self.annotations) == G:
            raise ComponentSpecError(f"{self.source}: names, variant_indices, stores and annotations differ in length")
        seen: set[str] = set()
        indices = []
        for name, idx, store in zip(self.names, self.variant_indices, self.stores):
            where = f"{self.source}: component '{name}'"
            if not name:
                raise ComponentSpecError(f"{self.source}: a component has an empty name")
            if name in seen:
                raise ComponentSpecError(f"{where}: duplicated component name")
            seen.add(name)
            if store < 0:
                raise ComponentSpecError(f"{where}: store index {store} is negative")
            indices.append(_as_index_array(idx, where))
        object.__setattr__(self, "variant_indices", tuple(indices))

    @property
    def n_components(self) -> int:
        return len(self.names)

    @property
    def m(self) -> np.ndarray:
        """m_g: number of variants per component (before operator filters)."""
        return np.array([len(i) for i in self.variant_indices], dtype=np.int64)

    def check_stores(self, n_variants: Sequence[int]) -> None:
        """Check every store index and variant index against the stores' variant counts."""
        for name, idx, store in zip(self.names, self.variant_indices, self.stores):
            where = f"{self.source}: component '{name}'"
            if store >= len(n_variants):
                raise ComponentSpecError(f"{where}: store index {store} but only {len(n_variants)} store(s) given")
            if idx[-1] >= n_variants[store]:
                raise ComponentSpecError(
                    f"{where}: variant index {int(idx[-1])} out of range (store {store} has {n_variants[store]} variants)"
                )

    def select(self, keep: Sequence[np.ndarray], source: str | None = None) -> Components:
        """The same components with only the variants where `keep[store][index]` is True."""
        return Components(
            names=self.names,
            variant_indices=tuple(idx[keep[s][idx]] for idx, s in zip(self.variant_indices, self.stores)),
            stores=self.stores,
            annotations=self.annotations,
            source=source or self.source,
        )

    def concat(self, other: Components, store_offset: int = 0) -> Components:
        """These components followed by `other`'s, its store indices shifted by `store_offset`."""
        return Components(
            names=self.names + other.names,
            variant_indices=self.variant_indices + other.variant_indices,
            stores=self.stores + tuple(s + store_offset for s in other.stores),
            annotations=self.annotations + other.annotations,
            source=f"{self.source} + {other.source}",
        )


def _as_index_array(idx, where: str) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise ComponentSpecError(f"{where}: variant indices must be a flat list, got shape {arr.shape}")
    if arr.size == 0:
        raise ComponentSpecError(f"{where}: empty component (no variants)")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ComponentSpecError(f"{where}: variant indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ComponentSpecError(f"{where}: variant index {int(arr.min())} out of range (negative)")
    sorted_idx = np.sort(arr)
    dup = sorted_idx[1:][sorted_idx[1:] == sorted_idx[:-1]]
    if dup.size:
        raise ComponentSpecError(f"{where}: variant index {int(dup[0])} listed twice")
    return sorted_idx
