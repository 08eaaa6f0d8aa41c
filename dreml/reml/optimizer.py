"""Average-information REML iterations with step control and (by default) non-negative genetic variances.

Update (Gilmour, Thompson & Cullis 1995; Johnson & Thompson 1995 for step control):
    theta' = Pi(theta + AI^-1 s)
on the free components, where Pi projects theta_g >= 0 (g genetic) and theta_e >= 1e-6 sum|theta|.
A genetic component at 0 whose score is <= 0 (the likelihood would rise only by going negative)
is held at 0 and dropped from the Newton system (active set).
Unconstrained (`FitConfig.constrain=False`, GCTA's --reml-no-constrain): Pi keeps only the
residual floor and nothing is held, so genetic variances may go negative. H = sum_g theta_g K_g
+ theta_e I must stay positive definite for the likelihood to exist; a trial theta at which the
evaluator finds it indefinite (`IndefiniteError`) is halved back towards theta, which was
definite (the definite thetas form a convex set), sharing the `max_step_halvings` budget. When
every trial is indefinite the fit stops at theta, not converged.

Step control uses scores only: the step delta is halved, up to `max_step_halvings` times (the
last halved step is then taken and the row says so), when the scores show that it passed the
maximum along the line by more than twice, s(theta')^T delta < -s(theta)^T delta (for a
quadratic along the line this is exactly l(theta') < l(theta)). A rejected trial costs one
score evaluation, not the average information. Steps whose decrement is below 1 (shorter than
about one standard error, where the quadratic model of AI holds) are not checked: there the
test would compare scores that differ by less than their PCG and Monte Carlo noise. The log-likelihood is not needed by the
iterations: on the randomised path its SLQ estimate uses other probes than the Hutchinson
score, so its changes near the score's root are Monte Carlo error, not progress.

Convergence: the Newton decrement nu = s^T AI^-1 s (free components) at the new point, with
the AI of the previous point (so the last AI solve can carry the SLQ columns of the final
log-likelihood), falls below max(`tol_decrement`, nu_mc / 10), where nu_mc = tr(AI^-1 Sigma_s) is
the decrement that the Monte Carlo error of the score (covariance Sigma_s) alone would produce:
the rule never asks for steps far below the estimator's own noise (the remaining step is then
about a third of the Monte Carlo error, sqrt(1/10); measured in docs/validation.md), and it
never stops at steps comparable to that noise, which would add to it. Since AI^-1 approximates cov(theta), nu is the
squared length of the remaining step in standard-error units. The probes are fixed for the
whole fit, so the randomised score is one function of theta and Newton converges to its root;
the distance of that root from the exact one is the Monte Carlo error reported beside the SEs.
A fit whose solves did not all converge never reports converged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from dreml.errors import InputError
from dreml.reml.config import FitConfig
from dreml.reml.evaluation import Evaluator, IndefiniteError, Information, Point

logger = logging.getLogger(__name__)

# the stopping floor as a fraction of the Monte Carlo decrement (module docstring)
MC_FRACTION = 0.1


@dataclass(frozen=True)
class OptimResult:
    """Where the iterations stopped.

    Fields:
        point, info: the final theta's score, average information and log-likelihood.
        held: genetic components held at 0 by the active set at the end, shape (G + 1,).
        iterations: AI updates made.
        decrement: the Newton decrement at the final point with its own AI (the stopping
            test used the previous AI and the floor, recorded in the history).
        converged: whether the convergence test passed and every solve of the fit (trial
            steps and the final log-likelihood solve included) reached its tolerance.
        status: "converged" or why not.
        history: one JSON-serialisable dict per evaluated iterate (row 0 is the start).
        indefinite_trials: trial steps at which H was indefinite and that were halved back
            (unconstrained fits only).
    """

    point: Point
    info: Information
    held: np.ndarray
    iterations: int
    decrement: float
    converged: bool
    status: str
    history: list[dict]
    indefinite_trials: int = 0


def held_at_zero(theta: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Genetic components at 0 whose score points outwards (the residual is never held)."""
    held = (theta <= 0) & (score <= 0)
    held[-1] = False
    return held


def newton(score: np.ndarray, ai: np.ndarray, held: np.ndarray) -> tuple[np.ndarray, float]:
    """AI^-1 s on the free components (0 on the held ones) and the decrement s^T AI^-1 s."""
    free = ~held
    step = np.zeros_like(score)
    a = ai[np.ix_(free, free)]
    try:
        step[free] = np.linalg.solve(a, score[free])
    except np.linalg.LinAlgError:
        step[free] = np.linalg.lstsq(a, score[free], rcond=None)[0]
    return step, float(score[free] @ step[free])


def monte_carlo_decrement(score_cov: np.ndarray, ai: np.ndarray, held: np.ndarray) -> float:
    """E[delta_s^T AI^-1 delta_s] = tr(AI^-1 Sigma_s) for a score error delta_s of covariance Sigma_s:
    the decrement that the Monte Carlo error of the score alone produces (0 on the exact path)."""
    free = ~held
    a, c = ai[np.ix_(free, free)], score_cov[np.ix_(free, free)]
    return float(np.trace(np.linalg.lstsq(a, c, rcond=None)[0]))


def _overshoot(old: Point, new: Point) -> bool:
    """Whether the step passed the maximum along the line by more than twice.

    For phi(t) = l(theta + t delta) quadratic, phi(1) < phi(0) exactly when
    phi'(1) < -phi'(0), i.e. s(theta')^T delta < -s(theta)^T delta.
    """
    delta = new.theta - old.theta
    return float(new.score @ delta) < -float(old.score @ delta)


def _project(theta: np.ndarray, constrain: bool) -> np.ndarray:
    """Pi (module docstring): theta_g >= 0 when `constrain`, theta_e >= 1e-6 sum|theta| always."""
    out = np.maximum(theta, 0.0) if constrain else theta.copy()
    out[-1] = max(theta[-1], 1e-6 * float(np.abs(out).sum()))
    return out


def _held(point: Point, constrain: bool) -> np.ndarray:
    """The active set: `held_at_zero` when constrained, empty otherwise."""
    return held_at_zero(point.theta, point.score) if constrain else np.zeros(point.theta.shape, dtype=bool)


@dataclass(frozen=True)
class _Trial:
    """Outcome of the step control along one Newton step.

    Fields:
        point: the accepted trial, or None when H was indefinite at every trial.
        halvings: halvings of the step made (for an overshoot or an indefinite H).
        indefinite: how many of them were for an indefinite H.
        rejected_failures: solve failures of the trials rejected for an overshoot.
    """

    point: Point | None
    halvings: int
    indefinite: int
    rejected_failures: tuple[str, ...]


def _step_control(evaluator: Evaluator, point: Point, step: np.ndarray, step_decrement: float, config: FitConfig) -> _Trial:
    """Try theta + step, halving it on an overshoot or an indefinite H (module docstring)."""
    indefinite = 0
    rejected: list[str] = []
    for halvings in range(config.max_step_halvings + 1):
        try:
            new = evaluator.score(_project(point.theta + step, config.constrain))
        except IndefiniteError:
            indefinite += 1
            step = step / 2
            continue
        if halvings == config.max_step_halvings or step_decrement < 1.0 or not _overshoot(point, new):
            return _Trial(new, halvings, indefinite, tuple(rejected))
        rejected.extend(new.failures)  # a rejected trial's solves still count
        step = step / 2
    return _Trial(None, config.max_step_halvings, indefinite, tuple(rejected))


def _score_at_start(evaluator: Evaluator, start: np.ndarray) -> Point:
    """s(start); an indefinite H there can only come from the caller's priors."""
    try:
        return evaluator.score(start)
    except IndefiniteError as exc:
        raise InputError(
            f"priors [{', '.join(f'{t:g}' for t in start)}] make H = sum_g theta_g K_g + theta_e I indefinite "
            f"({exc}): choose a larger residual or less negative genetic variances"
        ) from exc


def run_ai(evaluator: Evaluator, config: FitConfig, start: np.ndarray) -> OptimResult:
    """Iterate AI updates from `start`.

    Arguments:
        evaluator: exact or randomised.
        config: tol_decrement, max_iter, max_step_halvings, constrain, loglik.
        start: the first theta (priors or the evaluator's Haseman-Elston start), shape (G + 1,).

    Returns:
        `OptimResult`.

    Raises:
        InputError: H is indefinite at `start` (only possible for unconstrained priors).
    """
    t0 = time.perf_counter()
    history: list[dict] = []
    failures: list[str] = []
    passes = evaluator.count.passes

    def record(it: int, point: Point, info: Information, **extra) -> None:
        failures.extend(point.failures + info.failures)
        row = {
            "iteration": it,
            "theta": [float(t) for t in point.theta],
            "score_norm": float(np.linalg.norm(point.score)),
            "passes": int(sum(passes.values())),
            "wall_s": time.perf_counter() - t0,
            **extra,
            **point.stats,
            **info.stats,
        }
        if np.isfinite(info.loglik):
            row.update(loglik=info.loglik, loglik_se=info.loglik_se)
        history.append(row)
        logger.info(
            "REML iteration %d: theta [%s], |score| %.3g, decrement %.3g, %d passes, %.1f s",
            it,
            ", ".join(f"{t:.4g}" for t in point.theta),
            row["score_norm"],
            extra.get("decrement", float("nan")),
            row["passes"],
            row["wall_s"],
        )

    point = _score_at_start(evaluator, np.asarray(start, dtype=np.float64))
    info = evaluator.information(point, loglik=False)
    record(0, point, info, step_halvings=0)
    converged, it, indefinite_trials, stopped = False, 0, 0, ""
    while it < config.max_iter:
        step, step_decrement = newton(point.score, info.ai, _held(point, config.constrain))
        trial = _step_control(evaluator, point, step, step_decrement, config)
        failures.extend(trial.rejected_failures)
        indefinite_trials += trial.indefinite
        if trial.indefinite:
            logger.info("REML iteration %d: H indefinite at %d trial step(s), halved back", it + 1, trial.indefinite)
        if trial.point is None:
            stopped = (
                f"H was indefinite at all {trial.indefinite} trial steps of iteration {it + 1} from theta "
                f"[{', '.join(f'{t:.4g}' for t in point.theta)}]; raise max_step_halvings or set priors"
            )
            break
        it += 1
        new = trial.point
        d_theta = float(np.max(np.abs(new.theta - point.theta)) / new.theta.sum())
        point = new
        held = _held(point, config.constrain)
        _, decrement = newton(point.score, info.ai, held)
        floor = MC_FRACTION * monte_carlo_decrement(point.score_cov, info.ai, held)
        converged = decrement < max(config.tol_decrement, floor)
        info = evaluator.information(point, loglik=config.loglik and converged)
        record(
            it,
            point,
            info,
            step_halvings=trial.halvings,
            indefinite_halvings=trial.indefinite,
            d_theta=d_theta,
            decrement=decrement,
            decrement_floor=floor,
        )
        if converged:
            break
    if config.loglik and not converged:  # the last AI solve did not carry the SLQ columns
        info = evaluator.information(point, loglik=True)
        failures.extend(info.failures)
        history[-1].update(loglik=info.loglik, loglik_se=info.loglik_se)
    held = _held(point, config.constrain)
    _, final_decrement = newton(point.score, info.ai, held)
    if failures:
        status = f"not converged: {len(failures)} solve(s) failed, first: {failures[0]}"
    elif stopped:
        status = f"not converged: {stopped}"
    elif not converged:
        status = (
            f"not converged after {it} iterations (Newton decrement {history[-1].get('decrement', float('nan')):.3g} "
            f"against max(tol_decrement {config.tol_decrement:g}, floor {history[-1].get('decrement_floor', 0.0):.3g})); "
            f"raise max_iter or tol_decrement"
        )
    else:
        status = "converged"
    return OptimResult(
        point=point,
        info=info,
        held=held,
        iterations=it,
        decrement=final_decrement,
        converged=converged and not failures,
        status=status,
        history=history,
        indefinite_trials=indefinite_trials,
    )
