"""The only worker dies: the operator waits for its nanny's replacement and reloads the shards there."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
from genotype_reference import N, reference_KV, rel_err

from dreml.components import by_chromosome
from dreml.operators import GenotypeOperator
from tests.local_cluster import local_client


def test_matmat__correct_after_the_only_worker_is_killed(cohort):
    with local_client(1, memory_limit="2GiB") as client:
        components = by_chromosome(cohort.store)
        V = np.random.default_rng(6).standard_normal((N, 3))
        contig = cohort.store.variant_contig
        expected, _ = reference_KV(cohort.genotypes, [np.flatnonzero(contig == c) for c in range(3)], V)
        with GenotypeOperator(cohort.store, components, client=client, dtype=np.float64, shard_variants=50) as op:
            assert rel_err(op.matmat(V), expected) <= 1e-12
            ((victim, pid),) = client.run(os.getpid).items()
            os.kill(pid, signal.SIGKILL)  # no live worker until the nanny's new process registers
            deadline = time.monotonic() + 30
            while victim in client.scheduler_info(n_workers=-1)["workers"]:
                assert time.monotonic() < deadline, "the scheduler did not notice the dead worker"
                time.sleep(0.05)
            assert rel_err(op.matmat(V), expected) <= 1e-12
            live = set(client.scheduler_info(n_workers=-1)["workers"])
            assert victim not in live and {a for addrs in client.who_has(op.shards).values() for a in addrs} <= live
