"""Builders of common component specs from a store's metadata (no genotypes are read).

Every builder returns a validated `Components` on store 0 (or one per store for
`per_store`); a builder that would produce an empty component raises ComponentSpecError.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dreml.components.model import Components
from dreml.errors import ComponentSpecError
from dreml.store import Store


def all_variants(store: Store, name: str = "all") -> Components:
    """One component holding every variant of `store`."""
    return Components((name,), (np.arange(store.n_variants),), source="all_variants")


def per_store(stores: Sequence[Store], names: Sequence[str] | None = None) -> Components:
    """One component per store, each holding all of that store's variants (multi-GRM).

    Names default to the store directory names without their suffix ("chr1.zarr" -> "chr1").
    """
    names = list(names) if names is not None else [s.path.name.removesuffix(".zarr") for s in stores]
    if len(names) != len(stores):
        raise ComponentSpecError(f"per_store: {len(names)} names for {len(stores)} stores")
    return Components(
        tuple(names),
        tuple(np.arange(s.n_variants) for s in stores),
        stores=tuple(range(len(stores))),
        source="per_store",
    )


def by_chromosome(store: Store) -> Components:
    """One component per contig present in `store`, named "chr<contig>", in store order."""
    contig = store.variant_contig
    present = [c for c in range(len(store.contig_id)) if np.any(contig == c)]
    return Components(
        tuple(f"chr{store.contig_id[c]}" for c in present),
        tuple(np.flatnonzero(contig == c) for c in present),
        annotations=tuple({"contig": str(store.contig_id[c])} for c in present),
        source="by_chromosome",
    )


def by_maf_bins(store: Store, edges: Sequence[float] = (0.01, 0.05, 0.5)) -> Components:
    """Components by minor-allele-frequency bins [e_i, e_{i+1}), the last bin closed at e_last.

    Frequencies are the store's (all samples). Variants below the first edge belong to no
    component. With the default edges: "maf_0.01_0.05" and "maf_0.05_0.5".
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0) or e[0] < 0 or e[-1] > 0.5:
        raise ComponentSpecError(f"by_maf_bins: edges must increase within [0, 0.5], got {list(edges)}")
    maf = np.nan_to_num(store.variant_maf, nan=-1.0)
    names, indices, annotations = [], [], []
    for i, (lo, hi) in enumerate(zip(e[:-1], e[1:])):
        upper = maf <= hi if i == len(e) - 2 else maf < hi
        idx = np.flatnonzero((maf >= lo) & upper)
        name = f"maf_{lo:g}_{hi:g}"
        if idx.size == 0:
            raise ComponentSpecError(f"by_maf_bins: component '{name}': empty component (no variant with MAF in the bin)")
        names.append(name)
        indices.append(idx)
        annotations.append({"maf_min": float(lo), "maf_max": float(hi)})
    return Components(tuple(names), tuple(indices), annotations=tuple(annotations), source="by_maf_bins")


def by_blocks(store: Store, block_size: int) -> Components:
    """Contiguous blocks of `block_size` variants (the last may be shorter): "block1", ..."""
    if block_size < 1:
        raise ComponentSpecError(f"by_blocks: block_size must be >= 1, got {block_size}")
    starts = range(0, store.n_variants, block_size)
    return Components(
        tuple(f"block{b + 1}" for b in range(len(starts))),
        tuple(np.arange(s, min(s + block_size, store.n_variants)) for s in starts),
        annotations=tuple({"first": s, "last": min(s + block_size, store.n_variants) - 1} for s in starts),
        source="by_blocks",
    )
