"""What the optimizer needs from a likelihood evaluator, and the pieces both evaluators share.

Notation: theta = (theta_1..theta_G, theta_e), K_e = I, H = sum_g theta_g K_g + theta_e I,
P = H^-1 - H^-1 X (X^T H^-1 X)^-1 X^T H^-1, and (constant -(n - p)/2 log(2 pi) omitted, as GCTA)
    l(theta) = -1/2 [log|H| + log|X^T H^-1 X| + y^T P y]
    s_i      = -1/2 tr(P K_i) + 1/2 y^T P K_i P y
    AI_ij    =  1/2 (K_i P y)^T P (K_j P y)                     (Gilmour, Thompson & Cullis 1995)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Point:
    """The log-likelihood at theta, with what `derivatives` needs (`data`, evaluator-private)."""

    theta: np.ndarray  # shape: (G + 1,)
    loglik: float
    loglik_se: float  # Monte Carlo standard error of loglik (0 on the exact path)
    stats: dict = field(default_factory=dict)  # JSON-serialisable, goes to the history
    data: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Derivatives:
    """Score and average information at a `Point`."""

    score: np.ndarray  # shape: (G + 1,)
    ai: np.ndarray  # shape: (G + 1, G + 1)
    stats: dict = field(default_factory=dict)


class Evaluator(Protocol):
    """The two implementations: `ExactEvaluator` (dense) and `RandomisedEvaluator` (matrix-free)."""

    def start(self) -> np.ndarray:
        """Starting theta (randomised or exact Haseman-Elston)."""

    def evaluate(self, theta: np.ndarray) -> Point:
        """l(theta) and the solves the derivatives reuse."""

    def derivatives(self, point: Point) -> Derivatives:
        """s(theta) and AI(theta) at an evaluated point."""


def residualise(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """y~ = (I - X (X^T X)^-1 X^T) y, shape (n,)."""
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    return y - X @ beta


def haseman_elston(T: np.ndarray, q: np.ndarray, vp: float) -> np.ndarray:
    """Method-of-moments start: solve sum_h T_gh theta_h = q_g, clip to >= 1% of Vp.

    Arguments:
        T: T_gh = tr(K_g K_h) over the G + 1 components (K_e = I), shape (G + 1, G + 1).
        q: q_g = y~^T K_g y~, shape (G + 1,).
        vp: phenotypic variance y~^T y~ / (n - p), the scale of the floor.

    Returns:
        theta_0, shape (G + 1,). The covariate projection is ignored in T (a start value only);
        the floor keeps every component off the boundary so AI can move it either way.
    """
    theta, *_ = np.linalg.lstsq(T, q, rcond=None)
    return np.maximum(theta, 0.01 * vp)
