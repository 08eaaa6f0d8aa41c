"""What the optimizer needs from a likelihood evaluator, and the pieces both evaluators share.

Notation: theta = (theta_1..theta_G, theta_e), K_e = I, H = sum_g theta_g K_g + theta_e I,
P = H^-1 - H^-1 X (X^T H^-1 X)^-1 X^T H^-1, and (constant -(n - p)/2 log(2 pi) omitted, as GCTA)
    l(theta) = -1/2 [log|H| + log|X^T H^-1 X| + y^T P y]
    s_i      = -1/2 tr(P K_i) + 1/2 y^T P K_i P y
    AI_ij    =  1/2 (K_i P y)^T P (K_j P y)                     (Gilmour, Thompson & Cullis 1995)
Since P X = 0, P y = P y~ with y~ = y residualised on X; the solvers use y~, whose scale is
the residual's, not the mean's (float32 workers otherwise lose |mean| / sd digits).

The optimizer asks for the score at every trial theta (`score`) and for the average
information only at accepted points (`information`); the log-likelihood is computed once, at
the final theta (`information(..., loglik=True)`), since the iterations need only s and AI.
Unconstrained fits (`FitConfig.constrain=False`) may try a theta at which H is not positive
definite; the evaluators then raise `IndefiniteError` and the optimizer halves the step.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dreml.operators.protocol import GRMOperator


class IndefiniteError(np.linalg.LinAlgError):
    """H(theta) is not positive definite, so the likelihood is not defined there.

    Raised by the evaluators: the exact path when the Cholesky factorisation of H fails, the
    randomised one when PCG meets a direction p with p^T H p <= 0 (a proof of indefiniteness)
    or the preconditioner built from theta is not positive definite. Only unconstrained fits
    reach such a theta; the optimizer halves the step back towards its last (definite) point.
    Advice, when it reaches you from a start: choose priors with a larger residual variance.
    """


@dataclass(frozen=True)
class Point:
    """The score at theta, with what `information` needs (`data`, evaluator-private).

    Fields:
        theta: shape (G + 1,).
        score: s(theta), shape (G + 1,).
        score_cov: Monte Carlo covariance of the score estimate, shape (G + 1, G + 1)
            (0 on the exact path).
        failures: messages of solves that did not reach their tolerance.
        stats: JSON-serialisable, goes to the history.
        data: evaluator-private, except `data["effects"]`: the `dreml.reml.effects.Effects`
            at theta for the residualised y~ (both evaluators; the fit's effects).
    """

    theta: np.ndarray
    score: np.ndarray
    score_cov: np.ndarray
    failures: tuple[str, ...] = ()
    stats: dict = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Information:
    """Average information at a `Point`, and the log-likelihood when it was asked for.

    Fields:
        ai: shape (G + 1, G + 1).
        loglik: l(theta) (NaN when not computed); SLQ estimate on the randomised path.
        loglik_se: its Monte Carlo standard error (0 on the exact path, NaN when not computed).
        failures, stats: as in `Point`.
    """

    ai: np.ndarray
    loglik: float = float("nan")
    loglik_se: float = float("nan")
    failures: tuple[str, ...] = ()
    stats: dict = field(default_factory=dict)


class Evaluator(Protocol):
    """The two implementations: `ExactEvaluator` (dense) and `RandomisedEvaluator` (matrix-free).

    `count.passes` holds the operator passes by kind ("setup", "score", ...).
    """

    count: PassCounter

    def start(self) -> np.ndarray:
        """Starting theta (randomised or exact Haseman-Elston)."""

    def score(self, theta: np.ndarray) -> Point:
        """s(theta) and the solves `information` reuses; raises `IndefiniteError` when H(theta)
        is not positive definite."""

    def information(self, point: Point, *, loglik: bool) -> Information:
        """AI(theta) at a scored point, and l(theta) when `loglik`."""


class PassCounter:
    """Operator passes attributed to kinds of work (`with counter("score"): ...`)."""

    def __init__(self, operator: GRMOperator) -> None:
        self.operator = operator
        self.passes: Counter = Counter()

    @contextlib.contextmanager
    def __call__(self, kind: str) -> Iterator[None]:
        before = self.operator.passes
        try:
            yield
        finally:
            self.passes[kind] += int(self.operator.passes - before)


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
