"""Fixtures shared by the end-to-end tests of tests/dreml: a real local Dask cluster of two
worker processes per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c
