"""Real local Dask clusters for the tests: worker processes of one thread on 127.0.0.1.

The session-wide `client` fixture (tests/conftest.py) is built here; a test that needs a
cluster of its own (another worker count, workers it kills or restarts, a fresh state) calls
`local_client` directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from distributed import Client, LocalCluster


@contextmanager
def local_client(n_workers: int = 2, **options: Any) -> Iterator[Client]:
    """A client of a new `LocalCluster` of `n_workers` processes of one thread each, on
    127.0.0.1 with the dashboard off; `options` override or add LocalCluster settings (e.g.
    `dashboard_address=":0"`, `memory_limit="2GiB"`). Closed on exit."""
    settings: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        **options,
    }
    with LocalCluster(**settings) as cluster, Client(cluster) as client:
        yield client
