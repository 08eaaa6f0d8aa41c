"""`dreml.cluster.connect`: local CPU workers, a remote scheduler, and the dask-cuda branch."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import types

import pytest
from distributed import LocalCluster

import dreml.cluster
from dreml.cli.common import add_cluster_options, cluster_client
from dreml.cluster import ClusterError, connect, local_cuda_cluster_options

# LocalCUDACluster's own parameters, from dask_cuda/local_cuda_cluster.py (rapidsai/dask-cuda
# at 63a1ea97, August 2026); every other keyword goes through **kwargs to LocalCluster
DASK_CUDA_PARAMETERS = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "n_workers",
        "threads_per_worker",
        "memory_limit",
        "device_memory_limit",
        "enable_cudf_spill",
        "cudf_spill_stats",
        "local_directory",
        "protocol",
        "enable_tcp_over_ucx",
        "enable_infiniband",
        "enable_nvlink",
        "enable_rdmacm",
        "rmm_pool_size",
        "rmm_maximum_pool_size",
        "rmm_managed_memory",
        "rmm_async",
        "rmm_allocator_external_lib_list",
        "rmm_release_threshold",
        "rmm_log_directory",
        "rmm_track_allocations",
        "log_spilling",
        "pre_import",
    }
)
# LocalCluster parameters that only warn (DeprecationWarning) in distributed
DEPRECATED_LOCAL_CLUSTER_PARAMETERS = frozenset({"ip", "start"})


def _close(client) -> None:
    cluster = client.cluster
    client.close()
    if cluster is not None:
        cluster.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _worker_environ(name: str) -> str | None:
    # a function, not `os.environ.get`: a bound method would carry this process's environ along
    return os.environ.get(name)


@pytest.mark.skipif(dreml.cluster._dask_cuda_available(), reason="dask-cuda and a GPU: connect() starts a LocalCUDACluster")
def test_connect__local_cpu_workers_on_localhost():
    # a handler on our own logger: LocalCluster lowers the level of the root's stream
    # handlers (pytest's caplog among them) while it runs (`silence_logs`). setLevel, not an
    # attribute assignment: it clears the logger's cache of enabled levels, which an earlier
    # `-q` CLI run in the same process may have filled.
    records = _Records()
    logger = dreml.cluster.logger
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(records)
    try:
        client = connect(n_workers=2, memory_limit="1GiB", dashboard_address=None)
    finally:
        logger.removeHandler(records)
        logger.setLevel(previous)
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
        assert all(w["nthreads"] == 1 and w["memory_limit"] == 2**30 for w in workers.values())
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert any("dashboard:" in m and "2 worker(s)" in m for m in records.messages), records.messages
        # workers started by connect() never let an imported JAX preallocate a GPU
        assert set(client.run(_worker_environ, "XLA_PYTHON_CLIENT_PREALLOCATE").values()) == {"false"}
    finally:
        _close(client)


def test_connect__scheduler_address():
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    )
    try:
        client = connect(cluster.scheduler_address)
        assert client.cluster is None  # workers are managed elsewhere
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        client.close()
    finally:
        cluster.close()


def test_connect__local_cuda_cluster_when_gpus_and_dask_cuda(monkeypatch):
    created = {}

    def fake_local_cuda_cluster(**kwargs):
        created.update(kwargs)
        return LocalCluster(n_workers=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None)

    monkeypatch.setattr(dreml.cluster, "_dask_cuda_available", lambda: True)
    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=fake_local_cuda_cluster))
    client = connect(dashboard_address=None, device_memory_limit="70GiB")
    try:
        assert created == local_cuda_cluster_options(
            n_workers=None,
            threads_per_worker=1,
            memory_limit=None,
            device_memory_limit="70GiB",
            dashboard_address=None,
        )
        assert created["host"] == "127.0.0.1" and "ip" not in created
    finally:
        _close(client)


def _check_local_cuda_cluster_options(own_parameters: frozenset[str]) -> None:
    options = local_cuda_cluster_options(
        n_workers=2,
        threads_per_worker=1,
        memory_limit=None,
        device_memory_limit=0.9,
        dashboard_address=None,
    )
    local_cluster = set(inspect.signature(LocalCluster).parameters) - DEPRECATED_LOCAL_CLUSTER_PARAMETERS
    forwarded = set(options) - own_parameters
    assert forwarded <= local_cluster, forwarded - local_cluster
    # the keywords passed through to LocalCluster start one without a (Deprecation)Warning
    with LocalCluster(n_workers=1, processes=False, protocol="tcp", **{k: options[k] for k in forwarded}) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")


def test_local_cuda_cluster_options__in_dask_cuda_signature():
    dask_cuda = pytest.importorskip("dask_cuda", reason="dask-cuda is not installed; checked against its documented names")
    own = inspect.signature(dask_cuda.LocalCUDACluster).parameters
    _check_local_cuda_cluster_options(frozenset(n for n, p in own.items() if p.kind is not p.VAR_KEYWORD))


def test_local_cuda_cluster_options__documented_names():
    _check_local_cuda_cluster_options(DASK_CUDA_PARAMETERS)


def test_connect__waits_for_workers_at_address():
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        cluster.scale(2)  # the second worker arrives while connect() waits
        client = connect(cluster.scheduler_address, wait_for_workers=2, wait_timeout=60)
        try:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
        finally:
            client.close()


def test_connect__raise_on_workers_missing_after_timeout():
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        with pytest.raises(
            ClusterError, match=rf"^1 of 3 expected Dask worker\(s\) arrived at the scheduler {address} within 0.5 s$"
        ):
            connect(address, wait_for_workers=3, wait_timeout=0.5)


def _cluster_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dreml")
    add_cluster_options(parser)
    return parser.parse_args(argv)


def test_cluster_client__wait_workers_option():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        with cluster_client(_cluster_args(["--scheduler", cluster.scheduler_address, "--wait-workers", "2"])) as client:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_cluster_client__raise_on_wait_workers_below_one(capsys):
    with pytest.raises(SystemExit):
        _cluster_args(["--wait-workers", "0"])
    assert "--wait-workers: expected a whole number of at least 1, got '0'" in capsys.readouterr().err


def test_dask_cuda_available__false_without_cuda():
    if dreml.cluster.cuda_available():
        pytest.skip("a CUDA device is present")
    assert dreml.cluster._dask_cuda_available() is False
