"""A worker process dies between two passes: its shards are reloaded from the store (lineage)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster
from genotype_reference import N, reference_KV, rel_err

from dreml.components import by_chromosome
from dreml.operators import GenotypeOperator


@pytest.fixture
def cluster_client():
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None, memory_limit="2GiB"
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def _wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "cluster did not reach the expected state in time"
        time.sleep(0.1)


def test_matmat__correct_after_worker_killed(cohort, cluster_client):
    client = cluster_client
    components = by_chromosome(cohort.store)
    op = GenotypeOperator(cohort.store, components, client=client, dtype=np.float64, shard_variants=37)
    V = np.random.default_rng(5).standard_normal((N, 4))
    contig = cohort.store.variant_contig
    expected, _ = reference_KV(cohort.genotypes, [np.flatnonzero(contig == c) for c in range(3)], V)
    assert rel_err(op.matmat(V), expected) <= 1e-12

    holders = {addr for addrs in client.who_has(op.shards).values() for addr in addrs}
    pids = client.run(os.getpid)
    victim = sorted(holders)[0]
    victim_pid = pids[victim]
    os.kill(victim_pid, signal.SIGKILL)
    # the scheduler drops the dead worker; its nanny starts a new process under a new address
    _wait_until(lambda: victim not in client.scheduler_info(n_workers=-1)["workers"])
    _wait_until(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 2)

    new_pids = client.run(os.getpid)
    assert victim not in new_pids and victim_pid not in new_pids.values()
    assert not psutil.pid_exists(victim_pid) or psutil.Process(victim_pid).status() == psutil.STATUS_ZOMBIE
    second = op.matmat(V)
    assert rel_err(second, expected) <= 1e-12
    assert op.passes == 2
    live = set(client.scheduler_info(n_workers=-1)["workers"])
    assert {addr for addrs in client.who_has(op.shards).values() for addr in addrs} <= live
    op.close()
