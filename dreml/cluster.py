"""Connecting to a Dask cluster: a remote scheduler, local GPU workers, or local CPU workers.

`connect()` is the one place where dreml chooses a cluster; every CLI's `--scheduler` /
`--workers` / `--wait-workers` options end here. Local clusters bind to 127.0.0.1 only, so
nothing on the network can submit work to them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import dask
import psutil
from distributed import Client, LocalCluster

from dreml.backend import cuda_available
from dreml.errors import DremlError

logger = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"
# dask-cuda spills device objects to host memory beyond this fraction of device memory: above
# the default shard budget (half of device memory, dreml.operators.distributed), so resident
# shards are never spilled, and below the whole device, leaving room for the CUDA context and
# the pass's working blocks (deploy/README.md states how the three must relate)
DEFAULT_DEVICE_MEMORY_LIMIT = 0.9
# environment of the workers connect() starts: a worker that imports JAX must not let XLA
# preallocate 75% of its GPU beside the shards (the deploy scripts set the same)
WORKER_ENVIRONMENT = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
DEFAULT_WAIT_TIMEOUT = 600.0


class ClusterError(DremlError):
    """The Dask cluster is not in the state a fit needs (e.g. too few workers arrived).

    Advice: check the scheduler address and the workers' logs (a worker that cannot see its
    GPU or reach the scheduler never arrives), or wait longer.
    """


def _dask_cuda_available() -> bool:
    if not cuda_available():
        return False
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def local_cuda_cluster_options(
    *,
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: str | int | None,
    device_memory_limit: str | float | int,
    dashboard_address: str | None,
) -> dict[str, object]:
    """Keyword arguments of `dask_cuda.LocalCUDACluster` for connect()'s local GPU cluster.

    Names as in dask-cuda's current signature: `host` (LocalCluster's, passed through;
    `ip` is deprecated), `device_memory_limit` (bytes, "8GiB" or a fraction of device memory:
    where dask-cuda starts spilling device objects, resident shards among them, to the host),
    `memory_limit` (host memory; "auto" splits it over the workers).
    """
    return {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "host": LOCAL_HOST,
        "dashboard_address": dashboard_address,
        "memory_limit": "auto" if memory_limit is None else memory_limit,
        "device_memory_limit": device_memory_limit,
    }


def _default_cpu_workers(threads_per_worker: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, threads_per_worker))


def connect(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = None,
    device_memory_limit: str | float | int = DEFAULT_DEVICE_MEMORY_LIMIT,
    dashboard_address: str | None = ":0",
    wait_for_workers: int | None = None,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
) -> Client:
    """A distributed Client, choosing the cluster as follows.

    1. `address` given: connect to that scheduler (workers are managed elsewhere).
    2. CUDA GPUs visible and dask-cuda importable: a `LocalCUDACluster`, one worker per GPU.
    3. Otherwise a `LocalCluster` of worker processes on 127.0.0.1.

    Workers that connect() starts run with `WORKER_ENVIRONMENT` (no XLA preallocation) unless
    the environment already sets those variables.

    Arguments:
        address: scheduler address such as "tcp://10.0.0.1:8786".
        n_workers: local workers (default: one per GPU, or cores // threads_per_worker).
        threads_per_worker: threads per local CPU worker. BLAS inside each worker runs
            single-threaded (distributed's default environment), so parallelism comes from
            workers and threads, not from BLAS.
        memory_limit: per-worker limit for local workers (bytes or "8GiB"); default: the
            machine's memory split evenly over the workers, kept at 90% to leave the driver
            room (local GPU workers: dask-cuda's "auto", the memory split evenly).
        device_memory_limit: local GPU workers only: device memory (bytes, "70GiB" or a
            fraction) beyond which dask-cuda spills device objects to the host. Keep it above
            the operator's `memory_budget` so resident shards are never spilled.
        dashboard_address: where the dashboard listens (":0" any free port; None disables).
        wait_for_workers: return only once this many workers have arrived (default: every
            worker of a local cluster; none for a remote scheduler).
        wait_timeout: seconds to wait for them before raising `ClusterError`.

    Returns:
        The connected client; close it (and its cluster) with `client.close()` /
        `client.cluster.close()`, or use it as a context manager.

    Raises:
        ClusterError: fewer than `wait_for_workers` workers arrived within `wait_timeout`.
    """
    if address is not None:
        client = Client(address)
    else:
        with dask.config.set({f"distributed.nanny.environ.{k}": v for k, v in WORKER_ENVIRONMENT.items()}):
            client = Client(_local_cluster(n_workers, threads_per_worker, memory_limit, device_memory_limit, dashboard_address))
    # workers of a fresh local cluster register asynchronously; callers plan shards on them
    expected = wait_for_workers or (len(client.cluster.workers) if client.cluster is not None else 0)
    if expected:
        _wait_for_workers(client, expected, wait_timeout)
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    gpus = [w["gpu"]["name"] for w in workers.values() if w.get("gpu")]  # set where workers see NVML
    dashboard = client.dashboard_link if address is not None or dashboard_address is not None else "disabled"
    logger.info(
        "connected to %s with %d worker(s), %d thread(s), GPUs: %s; dashboard: %s",
        client.scheduler.address,
        len(workers),
        threads,
        ", ".join(gpus) or "none",
        dashboard,
    )
    return client


def _local_cluster(
    n_workers: int | None,
    threads_per_worker: int,
    memory_limit: str | int | None,
    device_memory_limit: str | float | int,
    dashboard_address: str | None,
) -> LocalCluster:
    """A LocalCUDACluster where GPUs and dask-cuda are present, else a LocalCluster of processes."""
    if _dask_cuda_available():
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(
            **local_cuda_cluster_options(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                memory_limit=memory_limit,
                device_memory_limit=device_memory_limit,
                dashboard_address=dashboard_address,
            )
        )
    workers = n_workers or _default_cpu_workers(threads_per_worker)
    if memory_limit is None:
        memory_limit = int(0.9 * psutil.virtual_memory().total / workers)
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host=LOCAL_HOST,
        memory_limit=memory_limit,
        dashboard_address=dashboard_address,
    )


def _wait_for_workers(client: Client, expected: int, timeout: float) -> None:
    """Block until `expected` workers run; on timeout close the client (and its cluster) and raise."""
    try:
        client.wait_for_workers(expected, timeout=timeout)
    except TimeoutError:
        address = client.scheduler.address
        arrived = len(client.scheduler_info(n_workers=-1)["workers"])
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
        raise ClusterError(
            f"{arrived} of {expected} expected Dask worker(s) arrived at the scheduler {address} within {timeout:g} s"
        ) from None


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
