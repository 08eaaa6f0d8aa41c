"""Connecting to a Dask cluster: a remote scheduler, local GPU workers, or local CPU workers.

`connect()` is the one place where dreml chooses a cluster; every CLI's `--scheduler` /
`--workers` options end here. Local clusters bind to 127.0.0.1 only, so nothing on the
network can submit work to them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import psutil
from distributed import Client, LocalCluster

from dreml.backend import cuda_available

logger = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"


def _dask_cuda_available() -> bool:
    if not cuda_available():
        return False
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def _default_cpu_workers(threads_per_worker: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, threads_per_worker))


def connect(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = None,
    dashboard_address: str | None = ":0",
) -> Client:
    """A distributed Client, choosing the cluster as follows.

    1. `address` given: connect to that scheduler (workers are managed elsewhere).
    2. CUDA GPUs visible and dask-cuda importable: a `LocalCUDACluster`, one worker per GPU.
    3. Otherwise a `LocalCluster` of worker processes on 127.0.0.1.

    Arguments:
        address: scheduler address such as "tcp://10.0.0.1:8786".
        n_workers: local workers (default: one per GPU, or cores // threads_per_worker).
        threads_per_worker: threads per local CPU worker. BLAS inside each worker runs
            single-threaded (distributed's default environment), so parallelism comes from
            workers and threads, not from BLAS.
        memory_limit: per-worker limit for local workers (bytes or "8GiB"); default: the
            machine's memory split evenly over the workers, kept at 90% to leave the driver room.
        dashboard_address: where the dashboard listens (":0" any free port; None disables).

    Returns:
        The connected client; close it (and its cluster) with `client.close()` /
        `client.cluster.close()`, or use it as a context manager.
    """
    if address is not None:
        client = Client(address)
    elif _dask_cuda_available():
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(
            n_workers=n_workers, ip=LOCAL_HOST, dashboard_address=dashboard_address,
            threads_per_worker=threads_per_worker,
        )
        client = Client(cluster)
    else:
        workers = n_workers or _default_cpu_workers(threads_per_worker)
        if memory_limit is None:
            memory_limit = int(0.9 * psutil.virtual_memory().total / workers)
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host=LOCAL_HOST,
            memory_limit=memory_limit,
            dashboard_address=dashboard_address,
        )
        client = Client(cluster)
    if client.cluster is not None:
        # workers of a fresh local cluster register asynchronously; callers plan shards on them
        client.wait_for_workers(len(client.cluster.workers), timeout=120)
    n = len(client.scheduler_info(n_workers=-1)["workers"])
    dashboard = client.dashboard_link if address is not None or dashboard_address is not None else "disabled"
    logger.info("connected to %s with %d worker(s); dashboard: %s", client.scheduler.address, n, dashboard)
    return client


@contextlib.contextmanager
def session(address: str | None = None, **options) -> Iterator[Client]:
    """`connect(address, **options)` as a context: closes the client, then any cluster it started.

    Closing the client before its local cluster avoids the scheduler's reports of lost data
    that a cluster closed under a live client produces.
    """
    client = connect(address, **options)
    cluster = client.cluster if address is None else None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
