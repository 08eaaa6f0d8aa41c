"""Shard planning: which rows of which store each shard holds, and what it costs to hold them.

A shard covers the variants [start, stop) of one store; its `rows` list, component by
component, the variants of each component g that fall in the range (a variant in several
components appears once per component), so each component's rows are contiguous.

Two kinds of shard (`ShardSpec.sparse`):
    dense   every row as n int8 codes (`dreml.operators.shard.Shard`): 1 byte per genotype;
    sparse  the rows of the store's sparse variants (format 1.1, docs/store_format.md) as
            their sparse calls (`dreml.operators.sparse.SparseShard`): 5 bytes per call
            (int32 sample, int8 dosage) and a few per row.
A store's dense and sparse variants go to different shards, so a component whose variants
are of both kinds has rows in shards of both kinds, and a pass sums their partials.

Sizes: a dense shard holds at most `max_rows` rows (the rows are all the same size); a
sparse shard at most `max_rows` rows AND `max_bytes` resident bytes, counted from the
store's number of calls per variant (over all its samples: an upper bound for a sample
subset). The row bound keeps a dense view of a sparse shard (`SparseShard.codes`, for the
shard functions that need int8 rows) no larger than a dense shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# per-row arrays of a loaded shard: its frequency (float64) and its four code counts (int64)
_ROW_ARRAY_BYTES = np.dtype(np.float64).itemsize + 4 * np.dtype(np.int64).itemsize
# a sparse call: its int32 sample index and its int8 dosage
SPARSE_CALL_BYTES = np.dtype(np.int32).itemsize + np.dtype(np.int8).itemsize
# a sparse row beside its calls: its offset (int64) and whether it counts REF (bool)
_SPARSE_ROW_BYTES = _ROW_ARRAY_BYTES + np.dtype(np.int64).itemsize + 1


def resident_row_bytes(n: int) -> int:
    """Resident bytes of one dense shard row over n samples: n int8 codes plus its per-row arrays."""
    return n * np.dtype(np.int8).itemsize + _ROW_ARRAY_BYTES


def sparse_row_bytes(calls: np.ndarray | int) -> np.ndarray | int:
    """Resident bytes of sparse shard rows holding `calls` calls each."""
    return SPARSE_CALL_BYTES * calls + _SPARSE_ROW_BYTES


@dataclass(frozen=True, eq=False)
class ShardSpec:
    """What a worker needs to load one shard (small: sent inside the task).

    Attributes:
        store_path: the store the shard is read from (workers open it themselves).
        start, stop: the shard's variant range in the store.
        rows: shard rows as variant offsets from `start`, grouped by component.
        frequencies: p of each row's variant, used to standardise.
        components: global index g of each group of rows.
        bounds: row offsets of the groups: group i is rows[bounds[i]:bounds[i + 1]].
        inv_m: 1 / m_g for each group.
        sparse: a sparse shard (rows of sparse variants, loaded from the sparse calls).
        n_calls: a sparse shard's calls over all the store's samples (0 for a dense shard).
    """

    store_path: str
    start: int
    stop: int
    rows: np.ndarray  # shape: (c,)
    frequencies: np.ndarray  # shape: (c,)
    components: tuple[int, ...]
    bounds: tuple[int, ...]
    inv_m: np.ndarray  # shape: (len(components),)
    sparse: bool = False
    n_calls: int = 0

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    def resident_bytes(self, n: int) -> int:
        """The bytes the loaded shard holds over n samples, as the memory budget counts them
        (a sparse shard: at most, with the calls over all samples)."""
        if self.sparse:
            return SPARSE_CALL_BYTES * self.n_calls + self.n_rows * _SPARSE_ROW_BYTES + np.dtype(np.int64).itemsize
        return self.n_rows * resident_row_bytes(n)


def _cuts(weight: np.ndarray, capacity: int, rows: int, multiple_of: int) -> np.ndarray:
    """Variant indices where the shards of the positively weighted variants start and end.

    `weight` is in row units (each variant's rows, or more for a sparse variant whose bytes
    fill a shard sooner); the shard count is ceil(total / capacity), rounded up to a
    multiple of `multiple_of` and at most `rows`; the cuts fall where the cumulative weight
    passes equal fractions of the total, so shards are balanced and none weighs much more
    than `capacity`. Integer weights (dense shards) cut in exact integer arithmetic.
    """
    cum = np.cumsum(weight)
    total = cum[-1]
    if np.issubdtype(cum.dtype, np.integer):
        n_shards = int(-(-total // max(1, capacity)))
    else:  # a total that is a whole number of shards up to rounding is that number
        n_shards = max(1, int(np.ceil(total / max(1, capacity) * (1 - 1e-12))))
    n_shards = min(-(-n_shards // multiple_of) * multiple_of, rows)
    cuts = np.searchsorted(cum, np.linspace(0, total, n_shards + 1)[1:-1], side="left") + 1
    present = np.flatnonzero(weight > 0)
    return np.unique(np.concatenate([[present[0]], cuts, [present[-1] + 1]]))


def plan_shards(
    store_paths: Sequence[str],
    variant_indices: Sequence[np.ndarray],
    component_stores: Sequence[int],
    m: np.ndarray,  # shape: (G,)
    frequencies: Sequence[np.ndarray],
    max_rows: int,
    multiple_of: int = 1,
    *,
    sparse_calls: Sequence[np.ndarray | None] | None = None,
    max_bytes: int | None = None,
) -> list[ShardSpec]:
    """Split each store's component variants into shards (module docstring).

    Arguments:
        store_paths: one path per store.
        variant_indices, component_stores: per component g (after filters), its sorted
            variant indices and its store.
        m: m_g per component (the length of its variant indices).
        frequencies: per store, p of every variant.
        max_rows: bound on rows (variants, counting duplicates) per shard.
        multiple_of: the shard count of each store and kind is rounded up to a multiple of
            this (the worker count), so shards spread evenly; sizes within a store and kind
            are balanced.
        sparse_calls: per store, None (every variant dense) or, per variant, its number of
            sparse calls and -1 where the variant is not sparse.
        max_bytes: bound on a sparse shard's resident bytes (None: rows only).

    Returns:
        Per store, its dense shards, then its sparse shards, each in variant order.
    """
    specs: list[ShardSpec] = []
    for s, path in enumerate(store_paths):
        gs = [g for g, st in enumerate(component_stores) if st == s]
        if not gs:
            continue
        n_var = len(frequencies[s])
        per_variant = np.zeros(n_var, dtype=np.int64)  # rows each variant contributes (overlaps)
        for g in gs:
            per_variant[variant_indices[g]] += 1
        calls = None if sparse_calls is None or sparse_calls[s] is None else np.asarray(sparse_calls[s])
        is_sparse = np.zeros(n_var, dtype=bool) if calls is None else calls >= 0
        for sparse in (False, True):
            rows_of_kind = np.where(is_sparse == sparse, per_variant, 0)
            if not rows_of_kind.any():
                continue
            weight = rows_of_kind
            if sparse and calls is not None and max_bytes is not None:  # bytes, in rows of a shard of max_bytes
                fill = sparse_row_bytes(np.maximum(calls, 0)) * max(1, max_rows) / max(1, max_bytes)
                weight = rows_of_kind * np.maximum(1.0, fill)
            edges = _cuts(weight, max_rows, int(rows_of_kind.sum()), multiple_of)
            specs.extend(_specs(path, s, gs, variant_indices, m, frequencies, edges, is_sparse == sparse, sparse, calls))
    return specs


def _specs(path, s, gs, variant_indices, m, frequencies, edges, of_kind, sparse, calls) -> list[ShardSpec]:
    """The shards [edges[i], edges[i + 1]) of the variants `of_kind` of store s."""
    out = []
    for start, stop in zip(edges[:-1], edges[1:]):
        groups = []
        for g in gs:
            idx = variant_indices[g]
            idx = idx[np.searchsorted(idx, start) : np.searchsorted(idx, stop)]
            local = idx[of_kind[idx]] - start
            if local.size:
                groups.append((g, local))
        if not groups:
            continue
        rows = np.concatenate([local for _, local in groups])
        out.append(
            ShardSpec(
                store_path=str(path),
                start=int(start),
                stop=int(stop),
                rows=rows,
                frequencies=frequencies[s][start + rows],
                components=tuple(g for g, _ in groups),
                bounds=tuple(np.concatenate([[0], np.cumsum([len(loc) for _, loc in groups])]).tolist()),
                inv_m=np.array([1.0 / m[g] for g, _ in groups]),
                sparse=sparse,
                n_calls=int(calls[start + rows].sum()) if sparse else 0,
            )
        )
    return out
