"""A pytest plugin that converts every store of a test run as format 1.1 (`--sparse-below`).

Runs the tests of any reader of stores on stores that also hold their rare variants sparse,
so that the operators load sparse shards wherever a test's store has rare variants:

    PYTHONPATH=tests/converters DREML_TEST_SPARSE_BELOW=0.1 \
        pytest -p sparse_stores_plugin tests/dreml/gwas tests/dreml/test_predict.py ...

Without DREML_TEST_SPARSE_BELOW the threshold is 0.1. Only conversions in the pytest
process are affected (`converters.convert.write_store`'s default), not console scripts run
as subprocesses. Tests that check a version 1 store (its format version, its summary) fail
under it by design.
"""

from __future__ import annotations

import importlib
import os


def pytest_configure(config) -> None:
    module = importlib.import_module("converters.convert")
    module.write_store.__kwdefaults__["sparse_below"] = float(os.environ.get("DREML_TEST_SPARSE_BELOW", "0.1"))
