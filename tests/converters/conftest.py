"""Fixtures of the converter tests (helpers that write filesets live in plink_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240611)
