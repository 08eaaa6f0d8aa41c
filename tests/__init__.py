"""The test suite's shared helpers, imported as `tests.*` (`tests.plink_reference`,
`tests.local_cluster`).

tests/ is a package so that pytest imports tests/conftest.py as `tests.conftest` and puts the
repository root on sys.path; a plain tests/ folder would itself go on sys.path, where its
dreml/ and converters/ folders would shadow the real packages as namespace packages.
"""
