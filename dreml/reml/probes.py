"""Random draws of a fit, all from one seed, in a fixed order.

Every fit draws, once, from `numpy.random.default_rng(seed)`:
    W      (n, B)            Rademacher probes for Hutchinson traces and the HE start
    Z      (n, s)            Rademacher probes for SLQ of log|H|
    Omega  (n, r + p_over)   Gaussian test matrix of the randomised range finder
so the same seed gives the same fit bit for bit, whatever the operator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rademacher(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """An (n, k) float64 matrix of independent +-1 entries."""
    return rng.integers(0, 2, size=(n, k)).astype(np.float64) * 2.0 - 1.0


@dataclass(frozen=True)
class Probes:
    """The random matrices of one fit (shapes in the module docstring)."""

    W: np.ndarray  # shape: (n, B)
    Z: np.ndarray  # shape: (n, s)
    Omega: np.ndarray  # shape: (n, r + oversampling), or (n, 0) without a preconditioner


def draw_probes(n: int, n_probes: int, slq_probes: int, range_columns: int, seed: int) -> Probes:
    """Draw W, Z and Omega for a fit.

    Arguments:
        n: samples.
        n_probes: B, Hutchinson probes.
        slq_probes: s, SLQ probes.
        range_columns: r + oversampling columns of the range finder's test matrix (0 for none).
        seed: the fit's seed.

    Returns:
        `Probes`.
    """
    rng = np.random.default_rng(seed)
    W = rademacher(rng, n, n_probes)
    Z = rademacher(rng, n, slq_probes)
    Omega = rng.standard_normal((n, range_columns))
    return Probes(W=W, Z=Z, Omega=Omega)
