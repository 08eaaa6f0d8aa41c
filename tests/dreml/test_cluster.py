"""`dreml.cluster.connect`: local CPU workers, a remote scheduler, and the dask-cuda branch."""

from __future__ import annotations

import logging
import sys
import types

import pytest
from distributed import LocalCluster

import dreml.cluster
from dreml.cluster import connect


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
    finally:
        _close(client)


def test_connect__scheduler_address():
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None)
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
    client = connect(dashboard_address=None)
    try:
        assert created["ip"] == "127.0.0.1" and created["threads_per_worker"] == 1
    finally:
        _close(client)


def test_dask_cuda_available__false_without_cuda():
    if dreml.cluster.cuda_available():
        pytest.skip("a CUDA device is present")
    assert dreml.cluster._dask_cuda_available() is False
