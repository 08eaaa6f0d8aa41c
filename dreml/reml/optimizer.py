"""Average-information REML iterations with step control and non-negative genetic variances.

Update (Gilmour, Thompson & Cullis 1995; Johnson & Thompson 1995 for step control):
    theta' = Pi(theta + AI^-1 s)
on the free components, where Pi projects theta_g >= 0 (g genetic) and theta_e >= 1e-6 sum(theta).
A genetic component at 0 whose score is <= 0 (the likelihood would rise only by going negative)
is held at 0 and dropped from the Newton system (active set). The step is halved, up to
`max_step_halvings` times (the last halved step is then taken and the row says so), when
l(theta') < l(theta) - tol_loglik and the scores confirm an overshoot along the step delta,
s(theta')^T delta < -s(theta)^T delta (for a quadratic along the line the two tests agree). The
second test keeps Monte Carlo disagreement between the SLQ log-likelihood and the Hutchinson
score from halving steps near the optimum on the randomised path. Converged when max_i |theta'_i - theta_i| / sum(theta') < tol_theta and
|l(theta') - l(theta)| < tol_loglik; otherwise, after `max_iter` iterations, the result says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from dreml.operators.protocol import GRMOperator
from dreml.reml.config import FitConfig
from dreml.reml.evaluation import Derivatives, Evaluator, Point

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimResult:
    """Where the iterations stopped.

    Fields:
        point, derivatives: the final theta's evaluation, score and AI.
        held: genetic components held at 0 by the active set at the end, shape (G + 1,).
        iterations: AI updates made.
        converged: whether the convergence test passed.
        status: "converged" or why not.
        history: one JSON-serialisable dict per evaluated iterate (row 0 is the start).
    """

    point: Point
    derivatives: Derivatives
    held: np.ndarray
    iterations: int
    converged: bool
    status: str
    history: list[dict]


def held_at_zero(theta: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Genetic components at 0 whose score points outwards (the residual is never held)."""
    held = (theta <= 0) & (score <= 0)
    held[-1] = False
    return held


def _ai_step(der: Derivatives, held: np.ndarray) -> np.ndarray:
    """AI^-1 s on the free components, 0 on the held ones."""
    free = ~held
    step = np.zeros_like(der.score)
    ai = der.ai[np.ix_(free, free)]
    try:
        step[free] = np.linalg.solve(ai, der.score[free])
    except np.linalg.LinAlgError:
        step[free] = np.linalg.lstsq(ai, der.score[free], rcond=None)[0]
    return step


def _overshoot(old: Derivatives, new: Derivatives, delta: np.ndarray) -> bool:
    """Whether the step passed the maximum along the line by more than twice.

    For phi(t) = l(theta + t delta) quadratic, phi(1) < phi(0) exactly when
    phi'(1) < -phi'(0), i.e. s(theta')^T delta < -s(theta)^T delta.
    """
    return float(new.score @ delta) < -float(old.score @ delta)


def _project(theta: np.ndarray) -> np.ndarray:
    out = np.maximum(theta, 0.0)
    out[-1] = max(theta[-1], 1e-6 * float(out.sum()))
    return out


def run_ai(evaluator: Evaluator, operator: GRMOperator, config: FitConfig) -> OptimResult:
    """Iterate AI updates from the evaluator's start.

    Arguments:
        evaluator: exact or randomised.
        operator: for the pass count recorded in the history.
        config: tolerances, max_iter and max_step_halvings.

    Returns:
        `OptimResult`.
    """
    t0 = time.perf_counter()
    history: list[dict] = []

    def record(it: int, point: Point, der: Derivatives, **extra) -> None:
        history.append({
            "iteration": it, "theta": [float(t) for t in point.theta], "loglik": point.loglik,
            "loglik_se": point.loglik_se, "score_norm": float(np.linalg.norm(der.score)),
            "passes": int(operator.passes), "wall_s": time.perf_counter() - t0,
            **extra, **point.stats, **der.stats,
        })
        logger.info(
            "REML iteration %d: theta [%s], logL %.3f, |score| %.3g, %d passes, %.1f s",
            it, ", ".join(f"{t:.4g}" for t in point.theta), point.loglik, history[-1]["score_norm"],
            operator.passes, history[-1]["wall_s"],
        )

    point = evaluator.evaluate(evaluator.start())
    der = evaluator.derivatives(point)
    record(0, point, der, step_halvings=0)
    converged, it = False, 0
    for it in range(1, config.max_iter + 1):
        step = _ai_step(der, held_at_zero(point.theta, der.score))
        for halvings in range(config.max_step_halvings + 1):
            new = evaluator.evaluate(_project(point.theta + step))
            new_der = None if new.loglik >= point.loglik - config.tol_loglik else evaluator.derivatives(new)
            if new_der is None or not _overshoot(der, new_der, new.theta - point.theta):
                break
            step = step / 2
        new_der = new_der if new_der is not None else evaluator.derivatives(new)
        d_theta = float(np.max(np.abs(new.theta - point.theta)) / new.theta.sum())
        d_loglik = new.loglik - point.loglik
        point, der = new, new_der
        record(it, point, der, step_halvings=halvings, d_theta=d_theta, d_loglik=d_loglik)
        if d_theta < config.tol_theta and abs(d_loglik) < config.tol_loglik:
            converged = True
            break
    status = "converged" if converged else (
        f"not converged after {it} iterations (last relative change in theta "
        f"{history[-1].get('d_theta', float('nan')):.3g}, in loglik {history[-1].get('d_loglik', float('nan')):.3g}); "
        f"raise max_iter or loosen tol_theta / tol_loglik"
    )
    return OptimResult(
        point=point, derivatives=der, held=held_at_zero(point.theta, der.score), iterations=it,
        converged=converged, status=status, history=history,
    )
