"""SNP shards: contiguous variant ranges of one store and the arithmetic done on them.

Notation (as in `dreml.operators.protocol`): n samples, k columns of the block V, G components.
A shard s covers the variants [start, stop) of one store. Its `rows` list, component by
component, the variants of each component g that fall in the range (a variant in several
components appears once per component), so each component's rows are contiguous:

    Z_s   shape (c, n): standardised genotypes, one row per shard row (variant-major, as stored)
    T     = Z_s V, shape (c, k): the per-variant products Z_g^T V of the design notes
    K_g V += Z_s[rows_g]^T T[rows_g] / m_g          (stacked products, one GEMM per component)
    sum_g theta_g K_g V += Z_s^T (T * theta_g / m_g) (weighted: rows scaled, one GEMM)

Standardisation (GCTA): z = (x - 2p) / sqrt(2p(1-p)), missing -> 0, with p the frequency the
driver chose for the variant. Each variant takes only four values (missing, 0, 1, 2), so a
row is decoded through a 4-entry table computed in float64 and rounded once to the worker
dtype: float32 shards are the correctly rounded float64 standardisation.

The same functions serve the in-process streaming operator (a shard is loaded, used and
dropped every pass) and the Dask operator (shards loaded once, resident on workers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from dask.sizeof import sizeof

from dreml.backend import Backend, array_module, to_numpy
from dreml.store import open_store

logger = logging.getLogger(__name__)

# rows decoded at once are bounded so the host temporaries stay near this size
_DECODE_BYTES = 32 * 2**20

Partial = dict[int, np.ndarray] | np.ndarray
"""A shard's contribution: {g: K_g V part, shape (n, k)} (stacked) or one (n, k) array (weighted)."""


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
    """

    store_path: str
    start: int
    stop: int
    rows: np.ndarray  # shape: (c,)
    frequencies: np.ndarray  # shape: (c,)
    components: tuple[int, ...]
    bounds: tuple[int, ...]
    inv_m: np.ndarray  # shape: (len(components),)

    @property
    def n_rows(self) -> int:
        return len(self.rows)


@dataclass(eq=False)
class Shard:
    """A loaded shard: standardised rows in the worker's backend (NumPy or CuPy)."""

    Z: object  # shape: (c, n), numpy or cupy array of the worker dtype
    components: tuple[int, ...]
    bounds: tuple[int, ...]
    inv_m: np.ndarray  # shape: (len(components),)


@sizeof.register(Shard)
def _sizeof_shard(shard: Shard) -> int:
    # the scheduler's memory accounting and work stealing must see the real size
    return int(shard.Z.nbytes)


def plan_shards(
    store_paths: Sequence[str],
    variant_indices: Sequence[np.ndarray],
    component_stores: Sequence[int],
    m: np.ndarray,  # shape: (G,)
    frequencies: Sequence[np.ndarray],
    max_rows: int,
    multiple_of: int = 1,
) -> list[ShardSpec]:
    """Split each store's component variants into shards of at most `max_rows` rows.

    Arguments:
        store_paths: one path per store.
        variant_indices, component_stores: per component g (after filters), its sorted
            variant indices and its store.
        m: m_g per component (the length of its variant indices).
        frequencies: per store, p of every variant.
        max_rows: bound on rows (variants, counting duplicates) per shard.
        multiple_of: the shard count of each store is rounded up to a multiple of this
            (the worker count), so shards spread evenly; sizes within a store are balanced.
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
        cum = np.cumsum(per_variant)
        total = int(cum[-1])
        n_shards = -(-total // max(1, max_rows))
        n_shards = min(-(-n_shards // multiple_of) * multiple_of, total)
        # cut where the cumulative row count passes equal fractions of the total
        cuts = np.searchsorted(cum, np.linspace(0, total, n_shards + 1)[1:-1], side="left") + 1
        edges = np.unique(np.concatenate([[int(np.argmax(per_variant > 0))], cuts, [int(np.flatnonzero(per_variant)[-1]) + 1]]))
        for start, stop in zip(edges[:-1], edges[1:]):
            groups = []
            for g in gs:
                idx = variant_indices[g]
                local = idx[np.searchsorted(idx, start):np.searchsorted(idx, stop)] - start
                if local.size:
                    groups.append((g, local))
            if not groups:
                continue
            rows = np.concatenate([local for _, local in groups])
            specs.append(
                ShardSpec(
                    store_path=str(path),
                    start=int(start),
                    stop=int(stop),
                    rows=rows,
                    frequencies=frequencies[s][start + rows],
                    components=tuple(g for g, _ in groups),
                    bounds=tuple(np.concatenate([[0], np.cumsum([len(loc) for _, loc in groups])]).tolist()),
                    inv_m=np.array([1.0 / m[g] for g, _ in groups]),
                )
            )
    return specs


def standardisation_table(frequencies: np.ndarray) -> np.ndarray:  # shape: (c,) -> (c, 4)
    """z for dosage (missing, 0, 1, 2) of each variant: column x + 1 holds z(x); missing -> 0."""
    p = np.asarray(frequencies, dtype=np.float64)[:, None]
    scale = 1.0 / np.sqrt(2.0 * p * (1.0 - p))
    table = (np.arange(-1, 3, dtype=np.float64)[None, :] - 2.0 * p) * scale
    table[:, 0] = 0.0
    return table


def load_shard(
    spec: ShardSpec,
    samples: np.ndarray | None,  # shape: (n,) indices into the store's samples
    dtype: str = "float32",
    backend: Backend = "auto",
) -> Shard:
    """Read a shard's variants from its store, standardise them and keep them in the backend."""
    xp = array_module(backend)
    dosage = open_store(spec.store_path).dosage(spec.start, spec.stop, samples)  # shape: (stop - start, n)
    n = dosage.shape[1]
    table = standardisation_table(spec.frequencies).astype(dtype)
    Z = xp.empty((spec.n_rows, n), dtype=dtype)
    step = max(1, _DECODE_BYTES // (table.itemsize * max(n, 1)))
    for a in range(0, spec.n_rows, step):
        b = min(a + step, spec.n_rows)
        # NumPy rows are decoded in place; CuPy rows go through a host block
        block = Z[a:b] if xp is np else np.empty((b - a, n), dtype=dtype)
        codes = (dosage[spec.rows[a:b]] + 1).view(np.uint8)  # 0 missing, 1..3 dosage 0..2
        for i in range(b - a):
            np.take(table[a + i], codes[i], out=block[i])
        if xp is not np:
            Z[a:b] = xp.asarray(block)
    return Shard(Z=Z, components=spec.components, bounds=spec.bounds, inv_m=spec.inv_m)


def shard_matmat(
    shard: Shard,
    V: np.ndarray,  # shape: (n, k), already of the worker dtype
    weights: np.ndarray | None = None,  # shape: (G,) theta
) -> Partial:
    """The shard's part of K_g V for each of its components, or of sum_g theta_g K_g V."""
    xp = array_module("cupy") if type(shard.Z).__module__.startswith("cupy") else np
    Z = shard.Z
    T = Z @ xp.asarray(V, dtype=Z.dtype)  # shape: (c, k)
    groups = list(zip(shard.components, shard.bounds[:-1], shard.bounds[1:], shard.inv_m))
    if weights is None:
        return {g: to_numpy(Z[a:b].T @ (T[a:b] * Z.dtype.type(inv_m))) for g, a, b, inv_m in groups}
    for g, a, b, inv_m in groups:
        T[a:b] *= Z.dtype.type(weights[g] * inv_m)
    return to_numpy(Z.T @ T)


def shard_traces(shard: Shard) -> np.ndarray:  # shape: (G_s,)
    """The shard's part of tr(K_g) = sum_j ||z_j||^2 / m_g, one value per group, in float64."""
    # array methods, so the same line runs on NumPy and CuPy shards
    sq = [float((shard.Z[a:b].astype("float64") ** 2).sum()) for a, b in zip(shard.bounds[:-1], shard.bounds[1:])]
    return np.asarray(sq) * shard.inv_m


def add_partials(a: Partial, b: Partial) -> Partial:
    """Sum two partials (the tree reduction's step); stacked partials add per component."""
    if isinstance(a, np.ndarray):
        return a + b
    out = dict(a)
    for g, part in b.items():
        out[g] = out[g] + part if g in out else part
    return out


def call_counts(
    store_path: str, start: int, stop: int, samples: np.ndarray | None  # samples shape: (n,)
) -> tuple[np.ndarray, np.ndarray]:
    """Observed calls and ALT dosage sums of variants [start, stop) over `samples`."""
    dosage = open_store(store_path).dosage(start, stop, samples)
    observed = dosage >= 0
    return observed.sum(axis=1, dtype=np.int64), np.where(observed, dosage, 0).sum(axis=1, dtype=np.int64)
