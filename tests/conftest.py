"""Fixtures shared by every test package.

`client`: one real local Dask cluster (two worker processes of one thread) for the whole
session; tests that kill or restart workers, or need another worker count, make their own
with `tests.local_cluster.local_client`. The independent PLINK reader the end-to-end tests
compare with is `tests.plink_reference`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client

from tests.local_cluster import local_client


@pytest.fixture(scope="session")
def client() -> Iterator[Client]:
    """Two worker processes; the dashboard on a free port (reports record its link)."""
    with local_client(2, dashboard_address=":0") as c:
        yield c
