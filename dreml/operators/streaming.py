"""The in-process streaming operator, and the set-up it shares with the Dask operator.

`build_layout` turns stores + a component spec + a sample subset into what every genotype
operator needs: the validated stores, the filtered components with their m_g, and the
frequencies p_j used to standardise. `GenotypeOperatorBase` exposes that layout through the
operator protocol. `StreamingOperator` then reads the store shard by shard on every pass
(no Dask, bounded memory); it runs the same shard functions as the Dask operator.

Frequencies: by default ("store") p_j comes from the store's statistics over ALL its
samples, which matches GCTA run on the whole file, keeps K_g identical whichever phenotype
(and so sample subset) is analysed, and costs no pass. "samples" recomputes p_j, the missing
rates and the monomorphic test over the analysed samples (one extra pass at build time),
which centres Z_g exactly on the subset. Explicit arrays (one per store) standardise with
frequencies from elsewhere: prediction on new samples uses the training frequencies.

Sparse shards: the sparse variants of a format 1.1 store (docs/store_format.md) are held as
sparse shards (`dreml.operators.sparse`) unless `sparse=False`; the others as dense int8
shards. A component may hold variants of both kinds: a pass visits both kinds of shard and
sums their partials, with the same results to rounding. The kind does not depend on the
frequencies or the sample subset (it is the store's), only the standardisation does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np

from dreml.backend import Backend
from dreml.components import Components, FilterReport, VariantStats, filter_components, per_store
from dreml.errors import InputError
from dreml.operators.dense import DenseOperator
from dreml.operators.protocol import as_block, check_weights
from dreml.operators.shard import (
    Partial,
    ShardSpec,
    add_partials,
    call_counts,
    decode_rows,
    load_shard,
    plan_shards,
    resident_row_bytes,
    shard_diagonal,
    shard_matmat,
    shard_traces,
    shard_z,
    shard_zt,
)
from dreml.store import Store, open_stores

logger = logging.getLogger(__name__)

Frequencies = Literal["store", "samples"] | Sequence[np.ndarray]
# map(call_counts, argument tuples) -> results, run in-process or on a cluster
CountMap = Callable[[list[tuple]], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True, eq=False)
class Layout:
    """Stores, samples and filtered components of a genotype operator.

    Attributes:
        stores: the opened stores (same samples, same order).
        samples: indices of the analysed samples into the stores' samples (None: all).
        components: components after filters; `components.m` is m_g.
        report: what the filters removed, per component.
        frequencies: per store, the p_j used to standardise.
        sparse_calls: per store, None (every variant in dense shards) or per variant its
            number of sparse calls, -1 for a variant that is not sparse (`plan_shards`).
    """

    stores: tuple[Store, ...]
    samples: np.ndarray | None  # shape: (n,)
    components: Components
    report: FilterReport
    frequencies: tuple[np.ndarray, ...]
    sparse_calls: tuple[np.ndarray | None, ...] = ()

    @property
    def n(self) -> int:
        return self.stores[0].n_samples if self.samples is None else len(self.samples)

    def plan(self, max_rows: int, multiple_of: int = 1) -> list[ShardSpec]:
        """Shards of at most `max_rows` rows; a sparse shard also of at most the bytes of a
        dense shard of `max_rows` rows (see `plan_shards`)."""
        return plan_shards(
            [str(s.path) for s in self.stores],
            self.components.variant_indices,
            self.components.stores,
            self.components.m,
            self.frequencies,
            max_rows,
            multiple_of,
            sparse_calls=self.sparse_calls or None,
            max_bytes=max_rows * resident_row_bytes(self.n),
        )


def _check_samples(samples: Sequence[int] | np.ndarray | None, n_samples: int) -> np.ndarray | None:
    if samples is None:
        return None
    idx = np.asarray(samples)
    if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
        raise InputError(f"samples must be a non-empty 1-d array of integer indices, got dtype {idx.dtype} shape {idx.shape}")
    if idx.min() < 0 or idx.max() >= n_samples:
        raise InputError(f"sample index out of range [0, {n_samples}): {int(idx.min())}..{int(idx.max())}")
    if np.unique(idx).size != idx.size:
        raise InputError("samples contain a repeated index")
    return idx.astype(np.int64)


def _local_map(args: list[tuple]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [call_counts(*a) for a in args]


def build_layout(
    stores: Store | str | Path | Sequence[Store | str | Path],
    components: Components | None = None,
    samples: Sequence[int] | np.ndarray | None = None,
    *,
    min_maf: float = 0.0,
    max_missing: float = 1.0,
    frequencies: Frequencies = "store",
    sparse: bool = True,
    count_map: CountMap = _local_map,
) -> Layout:
    """Validate the inputs of a genotype operator and apply the variant filters.

    Arguments:
        stores: one store (path or `Store`) or several with identical samples.
        components: the spec (default: one component per store, all its variants).
        samples: analysed samples as indices into the stores' samples (default: all).
        min_maf, max_missing: variant filters (monomorphic variants are always excluded).
        frequencies: "store" (p_j over all samples, the default), "samples" (p_j over
            `samples`), or one array of p_j per store; see the module docstring.
        sparse: hold the sparse variants of format 1.1 stores as sparse shards (default);
            False: every variant in dense int8 shards.
        count_map: how the "samples" statistics pass runs (in-process, or on a cluster).
    """
    opened = open_stores(stores)
    idx = _check_samples(samples, opened[0].n_samples)
    components = components if components is not None else per_store(opened)
    components.check_stores([s.n_variants for s in opened])
    if not isinstance(frequencies, str):
        if len(frequencies) != len(opened) or any(len(p) != s.n_variants for p, s in zip(frequencies, opened)):
            raise ValueError("explicit frequencies need one array of n_variants values per store")
        stats = [VariantStats(np.asarray(p, dtype=np.float64), s.variant_missing_rate) for p, s in zip(frequencies, opened)]
    elif frequencies == "store":
        stats = [VariantStats.from_store(s) for s in opened]
    elif frequencies == "samples":
        stats = []
        for s in opened:
            step = s.chunks[0]
            ranges = [(str(s.path), a, min(a + step, s.n_variants), idx) for a in range(0, s.n_variants, step)]
            counts = list(count_map(ranges))
            n = s.n_samples if idx is None else len(idx)
            stats.append(
                VariantStats.from_counts(np.concatenate([c for c, _ in counts]), np.concatenate([d for _, d in counts]), n)
            )
    else:
        raise ValueError(f"frequencies must be 'store' or 'samples', got {frequencies!r}")
    kept, report = filter_components(components, stats, min_maf=min_maf, max_missing=max_missing)
    logger.info("components after filters:\n%s", report.table())
    sparse_calls = tuple(
        np.where(s.variant_sparse_allele >= 0, s.variant_sparse_calls, -1) if sparse and s.has_sparse else None for s in opened
    )
    return Layout(opened, idx, kept, report, tuple(st.allele_frequency for st in stats), sparse_calls)


class GenotypeOperatorBase:
    """Protocol properties shared by the genotype operators (set `self.layout` first).

    Attributes:
        layout: stores, samples and filtered components.
        pass_times: wall-clock seconds of every pass so far.
    """

    layout: Layout
    dtype: np.dtype

    def __init__(self, layout: Layout, dtype: np.dtype | type) -> None:
        self.layout = layout
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.pass_times: list[float] = []
        self._traces: np.ndarray | None = None
        self._diagonal: np.ndarray | None = None
        self._row_positions: list | None = None

    def traces(self) -> np.ndarray:
        """tr(K_g) for every g, shape (G,): exact, computed once from the shards (not a pass).

        The REML engine uses them as control variates of its Hutchinson and SLQ estimates.
        """
        if self._traces is None:
            total = np.zeros(self.n_components)
            for spec, part in zip(self.shard_specs, self.map_shards(shard_traces)):
                np.add.at(total, list(spec.components), part)
            self._traces = total
        return self._traces

    def diagonal(self) -> np.ndarray:
        """diag(K_g) for every g, shape (G, n), exact in float64, from the codes (not a pass),
        computed once.

        Restricted operators (`dreml.operators.subset`) take their exact traces from it.
        """
        if self._diagonal is None:
            out = np.zeros((self.n_components, self.shape[0]))
            parts = self.map_shards(shard_diagonal)
            assert isinstance(parts, list)  # without `reduce`: one result per shard
            for part in parts:
                for g, d in part.items():
                    out[g] += d
            self._diagonal = out
        return self._diagonal

    def map_shards(self, func, shared: tuple = (), per_shard: list[tuple] | None = None, reduce: bool = False) -> list | Partial:
        """`func(shard, *shared, *per_shard[i])` on every shard i: the list of results in
        `shard_specs` order, or their sum (`add_partials`) with `reduce`."""
        raise NotImplementedError

    @property
    def shard_specs(self) -> list[ShardSpec]:
        raise NotImplementedError

    def _positions(self) -> list[list[tuple[int, int, int, np.ndarray]]]:
        """Per shard, per group: (g, a, b, positions of rows a..b within component g's variants)."""
        if self._row_positions is None:
            indices = self.layout.components.variant_indices
            self._row_positions = [
                [
                    (g, a, b, np.searchsorted(indices[g], spec.start + spec.rows[a:b]))
                    for g, a, b in zip(spec.components, spec.bounds[:-1], spec.bounds[1:])
                ]
                for spec in self.shard_specs
            ]
        return self._row_positions

    @overload
    def shard_pass(
        self, func, shared: tuple = (), per_shard: list[tuple] | None = None, reduce: Literal[False] = False
    ) -> list: ...

    @overload
    def shard_pass(self, func, shared: tuple = (), per_shard: list[tuple] | None = None, *, reduce: Literal[True]) -> Partial: ...

    def shard_pass(self, func, shared: tuple = (), per_shard: list[tuple] | None = None, reduce: bool = False) -> list | Partial:
        """`map_shards` counted as one pass (`passes`, `pass_times`): every genotype row is read."""
        t0 = time.perf_counter()
        out = self.map_shards(func, shared, per_shard, reduce)
        self.pass_times.append(time.perf_counter() - t0)
        logger.debug("pass %d took %.3f s", self.passes, self.pass_times[-1])
        return out

    def zt_matmat(self, U: np.ndarray) -> list[np.ndarray]:
        """Z_g^T U for every g: one (m_g, k) float64 array per component, rows in the
        component's variant order (`layout.components.variant_indices[g]`), standardised
        scale. U has shape (n, k) or (n,) (then each result is (m_g,)). One pass."""
        block, vector = as_block(U, self.shape[0])
        parts = self.shard_pass(shard_zt, (block.astype(self.dtype),))
        out = [np.zeros((int(m), block.shape[1])) for m in self.m]
        for part, groups in zip(parts, self._positions()):
            for g, a, b, pos in groups:
                out[g][pos] = part[a:b]
        return [o[:, 0] for o in out] if vector else out

    def z_matmat(self, B: Sequence[np.ndarray]) -> np.ndarray:
        """Z_g B_g for every g, shape (G, n, k), float64: B holds one (m_g, k) (or (m_g,))
        array per component, rows in the component's variant order. One pass."""
        if len(B) != self.n_components:
            raise ValueError(f"z_matmat needs one block per component ({self.n_components}), got {len(B)}")
        blocks = [np.asarray(b, dtype=np.float64) for b in B]
        vector = blocks[0].ndim == 1
        blocks = [b[:, None] if b.ndim == 1 else b for b in blocks]
        for g, b in enumerate(blocks):
            if b.shape != (int(self.m[g]), blocks[0].shape[1]):
                raise ValueError(f"block {g} must have shape ({int(self.m[g])}, {blocks[0].shape[1]}), got {b.shape}")
        per_shard = [(np.concatenate([blocks[g][pos] for g, _, _, pos in groups]),) for groups in self._positions()]
        total = self.shard_pass(shard_z, per_shard=per_shard, reduce=True)
        assert isinstance(total, dict)  # `shard_z` sums one block per component
        out = np.zeros((self.n_components, self.shape[0], blocks[0].shape[1]))
        for g, part in total.items():
            out[g] = part
        return out[..., 0] if vector else out

    @property
    def shape(self) -> tuple[int, int]:
        return (self.layout.n, self.layout.n)

    @property
    def n_components(self) -> int:
        return self.layout.components.n_components

    @property
    def component_names(self) -> tuple[str, ...]:
        return self.layout.components.names

    @property
    def m(self) -> np.ndarray:
        """m_g: variants per component after filters."""
        return self.layout.components.m

    @property
    def report(self) -> FilterReport:
        return self.layout.report

    @property
    def passes(self) -> int:
        return len(self.pass_times)

    def matmat(self, V: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """K_g V for every g, shape (G, n, k), or sum_g weights_g K_g V, shape (n, k); float64."""
        block, vector = as_block(V, self.shape[0])
        w = check_weights(weights, self.n_components)
        total = self.shard_pass(shard_matmat, (block.astype(self.dtype), w), reduce=True)
        if w is None:
            assert isinstance(total, dict)  # unweighted: the stacked products, one block per component
            out = np.zeros((self.n_components,) + block.shape)
            for g, part in total.items():
                out[g] = part
        else:
            out = np.asarray(total, dtype=np.float64)
        return out[..., 0] if vector else out


class StreamingOperator(GenotypeOperatorBase):
    """Genotype operator computed in this process, reading the stores shard by shard each pass.

    Arguments:
        stores, components, samples, min_maf, max_missing, frequencies, sparse: see `build_layout`.
        dtype: arithmetic precision (float32 default, float64 option); results are float64.
        shard_variants: rows per shard (default: the store's variant chunk), the bound on
            the memory one pass holds at a time (a sparse shard: at most the bytes of a dense
            one).
        backend: "auto" (CuPy with a GPU, else NumPy), "numpy" or "cupy".
    """

    def __init__(
        self,
        stores: Store | str | Path | Sequence[Store | str | Path],
        components: Components | None = None,
        samples: Sequence[int] | np.ndarray | None = None,
        *,
        dtype: np.dtype | type = np.float32,
        min_maf: float = 0.0,
        max_missing: float = 1.0,
        frequencies: Frequencies = "store",
        sparse: bool = True,
        shard_variants: int | None = None,
        backend: Backend = "auto",
    ) -> None:
        layout = build_layout(
            stores, components, samples, min_maf=min_maf, max_missing=max_missing, frequencies=frequencies, sparse=sparse
        )
        super().__init__(layout, dtype)
        self.backend = backend
        self._specs = layout.plan(shard_variants or layout.stores[0].chunks[0])

    @property
    def shard_specs(self) -> list[ShardSpec]:
        return self._specs

    def map_shards(self, func, shared: tuple = (), per_shard: list[tuple] | None = None, reduce: bool = False) -> list | Partial:
        results: list = []
        total: Partial | None = None
        for i, spec in enumerate(self._specs):
            part = func(
                load_shard(spec, self.layout.samples, self.dtype.name, self.backend),
                *shared,
                *(per_shard[i] if per_shard else ()),
            )
            if reduce:
                total = part if total is None else add_partials(total, part)
            else:
                results.append(part)
        if not reduce:
            return results
        assert total is not None  # a layout has at least one shard
        return total


def dense_reference(
    stores: Store | str | Path | Sequence[Store | str | Path],
    components: Components | None = None,
    samples: Sequence[int] | np.ndarray | None = None,
    **layout_options,
) -> DenseOperator:
    """The explicit float64 K_g of the same layout, as a `DenseOperator` (exact fits, small n).

    Builds K_g = Z_g Z_g^T / m_g from the same shards a streaming operator reads.
    """
    layout = build_layout(stores, components, samples, **layout_options)
    n, G = layout.n, layout.components.n_components
    K = np.zeros((G, n, n))
    for spec in layout.plan(layout.stores[0].chunks[0]):
        shard = load_shard(spec, layout.samples, "float64", "numpy")
        for g, a, b, inv_m in zip(shard.components, shard.bounds[:-1], shard.bounds[1:], shard.inv_m):
            Z = decode_rows(shard, a, b)  # shape: (b - a, n)
            K[g] += inv_m * (Z.T @ Z)
    return DenseOperator(K, layout.components.names)
