"""The operator protocol every solver in dreml consumes.

Notation (used across dreml):
    n        samples;  G  genetic components;  k  columns of a block
    Z_g      n x m_g standardised genotypes of component g
    K_g      = Z_g Z_g^T / m_g, the genetic relationship matrix (GRM) of component g
    V        an n x k block of vectors
    theta    variance parameters (theta_1..theta_G for K_g; the residual is handled by solvers)
    pass     one visit of every genotype shard; the unit of cost

An operator never forms K_g (except the dense reference). `matmat(V)` returns the stacked
products K_g V, shape (G, n, k); `matmat(V, weights=theta)` returns sum_g theta_g K_g V,
shape (n, k), the weighting applied where the data lives. Both count one pass.

Optional extension: `traces()` -> tr(K_g), shape (G,). The REML engine uses exact traces
as control variates of its stochastic trace and log-determinant estimates (about 3-4x
smaller errors in h2, see docs/math.md); without them it estimates tr(K_g) from its probes.
dreml's three operators provide it. `GRMOperatorWithDiagonal` names an operator that has it
together with the exact diagonal `diagonal()` -> diag(K_g), shape (G, n), as the genotype
operators and `DenseOperator` do; restricted views (`RestrictedOperator`) need both.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class GRMOperator(Protocol):
    """What `fit_reml` and the other solvers need from an operator."""

    @property
    def shape(self) -> tuple[int, int]:
        """(n, n)."""

    @property
    def n_components(self) -> int:
        """G."""

    @property
    def component_names(self) -> tuple[str, ...]:
        """One name per component, in the order of the stacked products."""

    @property
    def passes(self) -> int:
        """Number of passes over the genotypes so far."""

    def matmat(self, V: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """K_g V for every g (shape (G, n, k)), or sum_g weights_g K_g V (shape (n, k))."""


@runtime_checkable
class GRMOperatorWithTraces(GRMOperator, Protocol):
    """A `GRMOperator` with the optional exact traces (module docstring)."""

    def traces(self) -> np.ndarray:
        """tr(K_g), shape (G,)."""


@runtime_checkable
class GRMOperatorWithDiagonal(GRMOperatorWithTraces, Protocol):
    """A `GRMOperator` with exact traces and the exact diagonal (the genotype operators, `DenseOperator`)."""

    def diagonal(self) -> np.ndarray:
        """diag(K_g) for every g, shape (G, n)."""


def with_diagonal(operator: GRMOperator) -> GRMOperatorWithDiagonal:
    """`operator`, checked to offer `traces()` and `diagonal()` (what a restricted view needs).

    Raises:
        TypeError: it does not (e.g. an operator without the optional extension).
    """
    if not isinstance(operator, GRMOperatorWithDiagonal):
        raise TypeError(f"{type(operator).__name__} has no exact traces() and diagonal(), which this operator needs")
    return operator


def as_block(V: np.ndarray, n: int) -> tuple[np.ndarray, bool]:
    """V as a float64 (n, k) block and whether the caller passed a vector."""
    V = np.asarray(V, dtype=np.float64)
    vector = V.ndim == 1
    block = V[:, None] if vector else V
    if block.ndim != 2 or block.shape[0] != n:
        raise ValueError(f"expected a block with {n} rows, got shape {V.shape}")
    return block, vector


def check_weights(weights: np.ndarray | None, n_components: int) -> np.ndarray | None:
    """Validate `weights` (theta_1..theta_G) as a float64 vector of length G."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n_components,):
        raise ValueError(f"weights must have one entry per component ({n_components}), got {w.shape}")
    return w
