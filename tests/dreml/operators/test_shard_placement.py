"""Shard loads are pinned to their worker; a departed worker's shards are re-planned within the budget.

Workers here run without a nanny (`dask worker --no-nanny`), so a killed worker stays gone,
as a node lost from a multi-node cluster does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from distributed import Client, LocalCluster
from genotype_reference import N, reference_KV, rel_err

from dreml.cluster import ClusterError
from dreml.components import by_chromosome
from dreml.operators import GenotypeOperator


class _Workers:
    """Worker processes without nannies, attached to an in-process scheduler."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.procs: list[subprocess.Popen] = []

    def start(self, count: int) -> None:
        address = self.client.scheduler.address
        self.procs += [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    address,
                    "--no-nanny",
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "2GiB",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(count)
        ]
        self.client.wait_for_workers(len(self.procs), timeout=120)

    def kill(self, address: str) -> None:
        """SIGKILL the worker at `address` and wait until the scheduler has dropped it."""
        os.kill(self.client.run(os.getpid, workers=[address])[address], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while address in self.client.scheduler_info(n_workers=-1)["workers"]:
            assert time.monotonic() < deadline, f"the scheduler still lists {address}"
            time.sleep(0.1)

    def live(self) -> set[str]:
        return set(self.client.scheduler_info(n_workers=-1)["workers"])


@pytest.fixture
def workers() -> Iterator[_Workers]:
    with (
        LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        pool = _Workers(client)
        try:
            yield pool
        finally:
            for proc in pool.procs:
                proc.terminate()  # a worker closes itself on SIGTERM
            for proc in pool.procs:
                proc.wait(timeout=60)


def _budget(client: Client, cohort, fraction: float, dtype: type = np.float32) -> int:
    """`fraction` of all shards' bytes plus a worker's decode blocks, as the budget counts them
    (one shard plan on this cluster)."""
    with GenotypeOperator(cohort.store, client=client, dtype=dtype, shard_variants=37) as probe:
        return int(fraction * sum(probe.shard_bytes)) + probe.scratch_bytes


def _expected(cohort, V):
    contig = cohort.store.variant_contig
    return reference_KV(cohort.genotypes, [np.flatnonzero(contig == c) for c in range(3)], V)[0]


def test_genotype_operator__shard_loads_pinned(cohort, client2):
    op = GenotypeOperator(cohort.store, client=client2, shard_variants=37)
    keys = [f.key for f in op.shards]

    def restrictions(dask_scheduler, keys=keys):
        return [(set(dask_scheduler.tasks[k].worker_restrictions), dask_scheduler.tasks[k].loose_restrictions) for k in keys]

    assert client2.run_on_scheduler(restrictions) == [({w}, False) for w in op.shard_workers]
    assert {k: set(a) for k, a in client2.who_has(op.shards).items()} == {k: {w} for k, w in zip(keys, op.shard_workers)}
    op.close()


def test_genotype_operator__replans_departed_shards_within_budget(cohort, workers):
    workers.start(3)
    budget = _budget(workers.client, cohort, 0.6, np.float64)  # a third of the shards each now, half each on 2 survivors
    op = GenotypeOperator(
        cohort.store,
        by_chromosome(cohort.store),
        client=workers.client,
        dtype=np.float64,
        shard_variants=37,
        memory_budget=budget,
    )
    V = np.random.default_rng(3).standard_normal((N, 4))
    assert rel_err(op.matmat(V), _expected(cohort, V)) <= 1e-12
    total = sum(op.resident_bytes().values())
    victim = op.shard_workers[0]
    moved = [i for i, w in enumerate(op.shard_workers) if w == victim]
    workers.kill(victim)

    assert rel_err(op.matmat(V), _expected(cohort, V)) <= 1e-12
    live = workers.live()
    assert len(live) == 2 and set(op.shard_workers) == live
    holders = {k: set(a) for k, a in workers.client.who_has(op.shards).items()}
    assert all(holders[op.shards[i].key] == {op.shard_workers[i]} for i in moved)
    held = op.resident_bytes()  # measured by the workers: each shard once, on a live worker
    assert set(held) == live and sum(held.values()) == total
    assert max(held.values()) <= budget - op.scratch_bytes, (held, budget)
    op.close()


def test_genotype_operator__raise_on_survivors_short_of_budget(cohort, workers):
    workers.start(2)
    budget = _budget(workers.client, cohort, 0.6)  # half the shards fit on each worker, not all on one
    op = GenotypeOperator(cohort.store, client=workers.client, shard_variants=37, memory_budget=budget)
    victim = op.shard_workers[0]
    workers.kill(victim)
    with pytest.raises(
        ClusterError,
        match=(
            rf"^\d+ shard\(s\) \(.+\) of departed worker\(s\) {victim} do not fit on the 1 live worker\(s\) "
            r"within memory_budget .+ per worker \(.+ free on them\): add workers or raise memory_budget$"
        ),
    ):
        op.matmat(np.ones((N, 1)))
    op.close()
