"""The Dask genotype operator: SNP shards resident on workers, every K_g V in one pass.

Set-up (once per operator): the shards (contiguous variant ranges, see
`dreml.operators.shard`) are sized from a per-worker memory budget and loaded with
`client.submit(load_shard, ..., pure=False, workers=[w], allow_other_workers=False)`: pinned,
so work stealing cannot move a load (and its bytes) past another worker's budget. The driver
keeps the futures, so the data stays on the workers. A pinned task whose worker has left
waits forever for it, so before every pass (and while one waits) the operator re-plans the
shards of departed workers onto live ones within the budget and reloads them from the store
(lineage, which scattered data would not allow).

One pass (one `matmat`): V is cast to the worker dtype and broadcast to the workers once,
one task per shard computes its partial products where the shard lives, partials are summed
pairwise on the cluster (a binary tree of `add_partials` tasks), and only the final sum
(G blocks of n x k, or one n x k block when `weights=theta`) is gathered on the driver.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import psutil
from dask.utils import format_bytes, parse_bytes
from distributed import Client, Future, get_client, wait

from dreml.backend import Backend, array_module
from dreml.cluster import ClusterError, connect
from dreml.components import Components
from dreml.errors import InputError
from dreml.operators import device_memory  # noqa: F401  (registers Shard with dask-cuda where shards load)
from dreml.operators.shard import (
    Partial,
    ShardSpec,
    add_partials,
    call_counts,
    load_shard,
    resident_row_bytes,
    scratch_bytes,
    sparse_scratch_bytes,
)
from dreml.operators.streaming import Frequencies, GenotypeOperatorBase, build_layout
from dreml.store import Store

logger = logging.getLogger(__name__)

# the default budget is this fraction of a worker's memory, under distributed's spill
# threshold (60% of memory_limit by default): resident shards must never be spilled to disk
DEFAULT_BUDGET_FRACTION = 0.5
# a shard holds at most this fraction of the budget, bounding the temporaries of its load
SHARD_FRACTION_OF_BUDGET = 1 / 8
# seconds between checks for departed workers while shards load or a pass runs
RESIDENT_POLL_S = 2.0
# seconds an operator waits for a cluster that has (momentarily) no worker before refusing it
WORKER_WAIT_S = 30.0


def worker_capacity(backend: Backend = "auto", dask_worker=None) -> int:
    """Bytes a worker can hold: device memory on a CuPy worker, else its memory limit.

    Run on every worker with `client.run(worker_capacity, backend)`.
    """
    xp = array_module(backend)
    if xp is not np:
        return int(xp.cuda.Device().mem_info[1])
    limit = dask_worker.memory_manager.memory_limit if dask_worker is not None else None
    return int(limit or psutil.virtual_memory().total)


def worker_on_device(backend: Backend = "auto") -> bool:
    """True on a CuPy (GPU) worker: its decode blocks are larger (`dreml.operators.shard`)."""
    return array_module(backend) is not np


def _tree_sum(client: Client, parts: list[Future]) -> Future:
    """Sum futures pairwise on the cluster, log2(len(parts)) levels deep."""
    while len(parts) > 1:
        pairs = [client.submit(add_partials, a, b, pure=False) for a, b in zip(parts[0::2], parts[1::2])]
        parts = pairs + parts[len(pairs) * 2 :]
    return parts[0]


class GenotypeOperator(GenotypeOperatorBase):
    """K_g = Z_g Z_g^T / m_g for genotype components, computed on a Dask cluster.

    Arguments:
        stores: one store (path or `Store`), or several with the same samples in the same
            order (default components: one per store).
        components: the component spec (`dreml.components`); default all variants per store.
        samples: analysed samples as indices into the stores' samples (default: all).
        client: the Dask client; default the current one, or a new `dreml.cluster.connect()`
            cluster owned (and closed) by this operator.
        dtype: worker arithmetic, float32 (default) or float64; results are float64.
        memory_budget: bytes (or "4GiB") of resident shards and working space per worker;
            default half of the smallest worker's memory (device memory on GPU workers).
        min_maf, max_missing: variant filters; monomorphic variants are always excluded.
        frequencies: "store" (p_j over all samples, default) or "samples" (over `samples`);
            see `dreml.operators.streaming`.
        sparse: hold the sparse variants of format 1.1 stores as sparse shards (default),
            counted in the budget by their resident bytes; False: every variant dense.
        shard_variants: rows per shard, overriding the size derived from the budget (a
            sparse shard holds at most the bytes of a dense shard of that many rows).
        backend: worker backend, "auto" (CuPy where a worker has a GPU), "numpy" or "cupy".

    Attributes:
        passes, pass_times: count and wall-clock seconds of every pass.
        shard_specs: the planned shards; `shards` their futures; `shard_workers` the worker
            each is pinned to (changed when a worker leaves and its shards are re-planned);
            `shard_bytes` their resident bytes as the budget counts them (a sparse shard's
            calls over all the store's samples: at most its bytes).
        scratch_bytes: the decode blocks of the pass tasks a worker runs at once, counted in
            the budget beside its shards.
        report: per-component filter report (m_spec, m_g, exclusions).
    """

    def __init__(
        self,
        stores: Store | str | Path | Sequence[Store | str | Path],
        components: Components | None = None,
        samples: Sequence[int] | np.ndarray | None = None,
        *,
        client: Client | None = None,
        dtype: np.dtype | type = np.float32,
        memory_budget: int | str | None = None,
        min_maf: float = 0.0,
        max_missing: float = 1.0,
        frequencies: Frequencies = "store",
        sparse: bool = True,
        shard_variants: int | None = None,
        backend: Backend = "auto",
    ) -> None:
        self._owns_client = False
        if client is None:
            try:
                client = get_client()
            except ValueError:
                client, self._owns_client = connect(), True
        self.client = client
        layout = build_layout(
            stores,
            components,
            samples,
            min_maf=min_maf,
            max_missing=max_missing,
            frequencies=frequencies,
            sparse=sparse,
            count_map=lambda args: client.gather([client.submit(call_counts, *a, pure=False) for a in args]),
        )
        super().__init__(layout, dtype)
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        if not workers:  # a worker the nanny is restarting comes back within seconds
            with contextlib.suppress(TimeoutError):
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise InputError(f"the Dask cluster at {client.scheduler.address} has no workers")
        capacity = min(client.run(worker_capacity, backend).values())
        device = any(client.run(worker_on_device, backend).values())
        self.memory_budget = int(
            parse_bytes(memory_budget) if isinstance(memory_budget, str) else memory_budget or capacity * DEFAULT_BUDGET_FRACTION
        )
        # resident: the int8 genotype codes (1 byte each) of dense shards, the calls (5 bytes
        # each) of sparse shards, and small per-row arrays; working space: one decode block
        # of the worker dtype per pass task a worker runs at once
        row_bytes = resident_row_bytes(layout.n)
        max_rows = shard_variants or max(1, int(self.memory_budget * SHARD_FRACTION_OF_BUDGET) // row_bytes)
        self._specs = layout.plan(max_rows, multiple_of=len(workers))
        self.shard_bytes = [spec.resident_bytes(layout.n) for spec in self._specs]
        self.shard_workers = [workers[i % len(workers)] for i in range(len(self._specs))]
        dense_rows = max((spec.n_rows for spec in self._specs if not spec.sparse), default=0)
        sparse_calls = max((spec.n_calls for spec in self._specs if spec.sparse), default=0)
        self.scratch_bytes = max(client.nthreads().values()) * max(
            scratch_bytes(layout.n, self.dtype, dense_rows, device) if dense_rows else 0,
            sparse_scratch_bytes(self.dtype, sparse_calls),
        )
        held = dict.fromkeys(workers, 0)
        for size, w in zip(self.shard_bytes, self.shard_workers):
            held[w] += size
        per_worker = max(held.values()) + self.scratch_bytes
        if per_worker > self.memory_budget:
            raise InputError(
                f"the shards need {format_bytes(per_worker)} per worker but memory_budget is "
                f"{format_bytes(self.memory_budget)} (genotypes resident as int8, 1 byte each, or as sparse "
                f"calls, 5 bytes each, plus {format_bytes(self.scratch_bytes)} of decode blocks): add workers "
                "or raise the budget"
            )
        self._load_args = (layout.samples, self.dtype.name, backend)
        self.shards: list[Future] = [self._submit_load(spec, w) for spec, w in zip(self.shard_specs, self.shard_workers)]
        self._ensure_resident()
        logger.info(
            "%d shards (%s per worker of a %s budget) loaded on %d worker(s)",
            len(self.shards),
            format_bytes(per_worker),
            format_bytes(self.memory_budget),
            len(workers),
        )

    @property
    def shard_specs(self) -> list[ShardSpec]:
        return self._specs

    def _submit_load(self, spec: ShardSpec, worker: str) -> Future:
        # pinned: with allow_other_workers=False the scheduler's work stealing only considers
        # thieves within a task's restrictions, i.e. none for a single pinned worker
        return self.client.submit(load_shard, spec, *self._load_args, pure=False, workers=[worker], allow_other_workers=False)

    def _departed(self) -> tuple[list[int], list[str]]:
        """Shards whose pinned worker has left the cluster, and the live workers.

        With no live worker left, waits up to `WORKER_WAIT_S` for one: a nanny restarts a
        worker process that died (memory, a crash) within seconds, and its shards can go there.
        """
        live = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        lost = [i for i, w in enumerate(self.shard_workers) if w not in live]
        if lost and not live:
            with contextlib.suppress(TimeoutError):  # still none: `_replan` names the empty cluster
                self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            live = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        return lost, live

    def _replan(self, lost: list[int], live: list[str]) -> None:
        """Pin each lost shard to the live worker with the fewest resident bytes, within the budget.

        Resident bytes are `shard_bytes` plus the `scratch_bytes` of the decode blocks, as the
        budget check of `__init__` counts them. The whole plan is checked before any shard is reloaded.

        Raises:
            ClusterError: the live workers cannot hold the lost shards within `memory_budget`.
        """
        size = self.shard_bytes
        resident = dict.fromkeys(live, self.scratch_bytes)
        for i, w in enumerate(self.shard_workers):
            if w in resident:
                resident[w] += size[i]
        free = sum(max(0, self.memory_budget - r) for r in resident.values())
        plan: dict[int, str] = {}
        for i in sorted(lost, key=size.__getitem__, reverse=True):  # largest first: fewer dead ends
            target = min(live, key=resident.__getitem__, default=None)
            if target is None or resident[target] + size[i] > self.memory_budget:
                raise ClusterError(
                    f"{len(lost)} shard(s) ({format_bytes(sum(size[j] for j in lost))}) of departed worker(s) "
                    f"{', '.join(sorted({self.shard_workers[j] for j in lost}))} do not fit on the {len(live)} "
                    f"live worker(s) within memory_budget {format_bytes(self.memory_budget)} per worker "
                    f"({format_bytes(free)} free on them): add workers or raise memory_budget"
                )
            resident[target] += size[i]
            plan[i] = target
        for i, target in plan.items():
            self.shard_workers[i] = target
            self.shards[i] = self._submit_load(self.shard_specs[i], target)  # the old future is released
        logger.warning("%d shard(s) of departed worker(s) reloaded on %s", len(plan), ", ".join(sorted(set(plan.values()))))

    def _ensure_resident(self) -> None:
        """Return once every shard is in memory, re-planning the shards of departed workers."""
        while True:
            lost, live = self._departed()
            if lost:
                self._replan(lost, live)
            try:
                wait(self.shards, timeout=RESIDENT_POLL_S)
                return
            except TimeoutError:
                continue

    def _compute(self, submit: Callable[[], list[Future]]) -> list:
        """Results of the tasks `submit()` creates on the resident shards.

        A task whose shard left with its worker would wait forever: if a pinned worker leaves
        while they run, its shards are re-planned and the tasks submitted again.
        """
        while True:
            self._ensure_resident()
            futures = submit()
            while True:
                try:
                    wait(futures, timeout=RESIDENT_POLL_S)
                    return self.client.gather(futures)
                except TimeoutError:
                    if self._departed()[0]:
                        break

    def map_shards(self, func, shared: tuple = (), per_shard: list[tuple] | None = None, reduce: bool = False) -> list | Partial:
        """`func(shard, *shared, *per_shard[i])` on the worker holding shard i (pinned too: a
        task placed or stolen elsewhere would copy its shard there, past that worker's
        budget). Blocks in `shared` (an n x k V) are broadcast to the workers once; with
        `reduce` the results are summed on the cluster and only the sum is gathered.
        """

        def submit() -> list[Future]:
            args = [
                self.client.scatter(a, broadcast=True, hash=False) if isinstance(a, np.ndarray) and a.ndim == 2 else a
                for a in shared
            ]
            futures = [
                self.client.submit(
                    func, s, *args, *(per_shard[i] if per_shard else ()), pure=False, workers=[w], allow_other_workers=False
                )
                for i, (s, w) in enumerate(zip(self.shards, self.shard_workers))
            ]
            return [_tree_sum(self.client, futures)] if reduce else futures

        results = self._compute(submit)
        return results[0] if reduce else results

    def resident_bytes(self) -> dict[str, int]:
        """Shard bytes held by each worker, as the scheduler weighs them (`Shard.nbytes`):
        the measured counterpart of `shard_bytes` and `shard_workers`."""
        nbytes = self.client.nbytes([f.key for f in self.shards], summary=False)
        held: dict[str, int] = {}
        for key, workers in self.client.who_has(self.shards).items():
            for w in workers:
                held[w] = held.get(w, 0) + nbytes[key]
        return held

    def close(self) -> None:
        """Release the shards (and the cluster, when this operator started it)."""
        for f in self.shards:
            f.release()
        self.shards = []
        if self._owns_client:
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()

    def __enter__(self) -> GenotypeOperator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
