"""Average-information iterations of a bivariate fit over the parameters phi of a `Parametrisation`.

The same algorithm as `dreml.reml.optimizer.run_ai` (reusing its Newton step, Monte Carlo
decrement and stopping rule), with the projection and the active set of the parametrisation:
genetic variances >= their lower bound (held there while their score points outwards),
residual variances >= 1e-6 sum|phi|, covariances free. The evaluator works over theta; with
D = d theta / d phi (`Parametrisation.jacobian`):
    s_phi = D^T s_theta,   Sigma_s,phi = D^T Sigma_s D,   AI_phi = D^T AI_theta D.
Step control: the Newton step is halved, up to `max_step_halvings` times, when V is indefinite
at the trial phi (`IndefiniteError`) or when the scores show an overshoot,
s(phi')^T delta < -s(phi)^T delta (not tested for steps of decrement below 1).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from dreml.reml.bivariate_model import Parametrisation
from dreml.reml.config import FitConfig
from dreml.reml.evaluation import IndefiniteError, Information, Point
from dreml.reml.optimizer import MC_FRACTION, monte_carlo_decrement, newton

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluated:
    """The score at phi: the evaluator's `Point` at theta(phi) and its phi-level score."""

    phi: np.ndarray
    score: np.ndarray  # D^T s_theta, shape (q,)
    score_cov: np.ndarray  # D^T Sigma_s D, shape (q, q)
    D: np.ndarray  # d theta / d phi, shape (C, q)
    point: Point


@dataclass(frozen=True)
class BivariateOptim:
    """Where the iterations stopped (the fields of `dreml.reml.optimizer.OptimResult`, over phi).

    Fields:
        current: the final phi with its score and the evaluator's `Point` at theta(phi).
        info: the evaluator's `Information` there (AI over theta, logL).
        ai: AI over phi. held: variances held on their bound, shape (q,).
        iterations, decrement, converged, status, history: as `OptimResult`.
    """

    current: Evaluated
    info: Information
    ai: np.ndarray  # D^T AI_theta D, shape (q, q)
    held: np.ndarray
    iterations: int
    decrement: float
    converged: bool
    status: str
    history: list[dict]


def _evaluate(evaluator, param: Parametrisation, phi: np.ndarray) -> Evaluated:
    point = evaluator.score(param.theta(phi))
    D = param.jacobian(phi)
    return Evaluated(phi, D.T @ point.score, D.T @ point.score_cov @ D, D, point)


def _information(evaluator, current: Evaluated, loglik: bool) -> tuple[Information, np.ndarray]:
    info = evaluator.information(current.point, loglik=loglik)
    return info, current.D.T @ info.ai @ current.D


def run_bivariate_ai(evaluator, param: Parametrisation, config: FitConfig, start: np.ndarray) -> BivariateOptim:
    """AI iterations over phi from `start` (shape (q,)), as `dreml.reml.optimizer.run_ai` does over
    theta: the same step control and stopping rule, with `param`'s projection and active set."""
    t0 = time.perf_counter()
    history: list[dict] = []
    failures: list[str] = []

    def record(it: int, cur: Evaluated, info: Information, **extra) -> None:
        failures.extend(cur.point.failures + info.failures)
        row = {
            "iteration": it,
            "theta": [float(t) for t in cur.point.theta],
            "score_norm": float(np.linalg.norm(cur.score)),
            "passes": int(sum(evaluator.count.passes.values())),
            "wall_s": time.perf_counter() - t0,
            **extra,
            **cur.point.stats,
            **info.stats,
        }
        if np.isfinite(info.loglik):
            row.update(loglik=info.loglik, loglik_se=info.loglik_se)
        history.append(row)
        logger.info(
            "bivariate REML iteration %d: theta [%s], |score| %.3g, decrement %.3g",
            it,
            ", ".join(f"{t:.4g}" for t in cur.point.theta),
            row["score_norm"],
            extra.get("decrement", float("nan")),
        )

    cur = _evaluate(evaluator, param, param.project(np.asarray(start, dtype=np.float64)))
    info, ai = _information(evaluator, cur, False)
    record(0, cur, info, step_halvings=0)
    converged, it, stopped = False, 0, ""
    while it < config.max_iter:
        step, step_decrement = newton(cur.score, ai, param.held(cur.phi, cur.score))
        new, halvings = None, 0
        for halvings in range(config.max_step_halvings + 1):
            try:
                trial = _evaluate(evaluator, param, param.project(cur.phi + step))
            except IndefiniteError:
                step = step / 2
                continue
            delta = trial.phi - cur.phi  # overshoot: s(phi')^T delta < -s(phi)^T delta (`optimizer._overshoot`)
            if halvings == config.max_step_halvings or step_decrement < 1.0 or not trial.score @ delta < -(cur.score @ delta):
                new = trial
                break
            failures.extend(trial.point.failures)
            step = step / 2
        if new is None:
            stopped = f"V was indefinite at every trial step of iteration {it + 1}"
            break
        it += 1
        cur = new
        held = param.held(cur.phi, cur.score)
        _, decrement = newton(cur.score, ai, held)
        floor = MC_FRACTION * monte_carlo_decrement(cur.score_cov, ai, held)
        converged = decrement < max(config.tol_decrement, floor)
        info, ai = _information(evaluator, cur, config.loglik and converged)
        record(it, cur, info, step_halvings=halvings, decrement=decrement, decrement_floor=floor)
        if converged:
            break
    if config.loglik and not converged:
        info, ai = _information(evaluator, cur, True)
        failures.extend(info.failures)
        history[-1].update(loglik=info.loglik, loglik_se=info.loglik_se)
    held = param.held(cur.phi, cur.score)
    _, final_decrement = newton(cur.score, ai, held)
    if failures:
        status = f"not converged: {len(failures)} solve(s) failed, first: {failures[0]}"
    elif stopped:
        status = f"not converged: {stopped}; raise max_step_halvings"
    elif not converged:
        status = (
            f"not converged after {it} iterations (Newton decrement {history[-1].get('decrement', float('nan')):.3g}); "
            f"raise max_iter or tol_decrement"
        )
    else:
        status = "converged"
    return BivariateOptim(cur, info, ai, held, it, final_decrement, converged and not failures, status, history)
