"""Optimisers of the annotated REML likelihood over psi = (phi, log theta_e).

Fisher scoring (average information) for maps with few parameters (`ldak`, `linear`):
    delta = AI^-1 grad,  psi' = psi + delta (capped at `max_step` in the largest coordinate),
halved while the step overshoots: on the exact path while l(psi') < l(psi); on the randomised
path while grad(psi')^T delta < -grad(psi)^T delta (for a quadratic along the line exactly
l(psi') < l(psi); the probes are fixed for the fit, so the estimated gradient is one smooth
function of psi and the iteration converges to its root, as `dreml.reml.optimizer`).
Stopping rule: the Newton decrement nu = grad^T AI^-1 grad below max(tol_decrement, nu_mc / 10),
nu_mc = tr(AI^-1 Sigma_g) the decrement that the Monte Carlo error Sigma_g of the gradient alone
would produce (0 on the exact path). sqrt(nu) is the remaining step in standard-error units,
so the fit stops once it is below a third of the Monte Carlo error, or below sqrt(tol_decrement).

Adam (Kingma & Ba 2015) for maps with many parameters (`mlp`), ascent on grad; stopping rule:
mean squared gradient entry below max(tol_grad^2, the mean Monte Carlo variance of an entry),
i.e. the gradient is no larger than its own noise. With weight decay lambda (a vector, 0 for the
coordinates not penalised) Adam ascends l(psi) - 1/2 sum_a lambda_a psi_a^2, the MAP estimate
under a N(0, 1/lambda_a) prior on the penalised coordinates: grad - lambda * psi replaces grad.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from dreml.annotations.likelihood import Point

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Optimum:
    """Outcome of an optimiser: the final point, its AI (None for Adam), the record."""

    point: Point
    ai: np.ndarray | None
    iterations: int
    converged: bool
    status: str
    decrement: float
    history: list


def _solve(ai: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(ai, b)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(ai, b, rcond=None)[0]


def _accept(current: Point, trial: Point, step: np.ndarray) -> bool:
    if not np.isfinite(trial.grad).all():
        return False
    if np.isfinite(current.loglik) and np.isfinite(trial.loglik):
        return trial.loglik >= current.loglik - 1e-12 * max(1.0, abs(current.loglik))
    return float(trial.grad @ step) >= -float(current.grad @ step)


def _record(it: int, point: Point, passes: int, t0: float, **extra) -> dict:
    return {
        "iteration": it,
        "psi": point.psi.tolist(),
        "theta_e": point.theta_e,
        "vg": float(point.sigma2.sum()),
        "loglik": None if not np.isfinite(point.loglik) else point.loglik,
        "grad_norm": float(np.linalg.norm(point.grad)),
        "passes": passes,
        "time": time.perf_counter() - t0,
        **point.stats,
        **extra,
    }


def fisher_scoring(
    evaluator, psi0: np.ndarray, *, max_iter: int, tol_decrement: float, max_step_halvings: int, max_step: float
) -> Optimum:
    """Average-information iterations from psi0 (module docstring)."""
    t0 = time.perf_counter()
    point = evaluator.evaluate(np.asarray(psi0, dtype=np.float64))
    history: list = []
    status, converged, nu, halvings = "", False, float("inf"), 0
    for it in range(max_iter + 1):
        ai = evaluator.information(point)
        delta = _solve(ai, point.grad)
        nu = float(point.grad @ delta)
        nu_mc = float(np.trace(_solve(ai, point.grad_cov)))
        threshold = max(tol_decrement, nu_mc / 10)
        history.append(
            _record(it, point, sum(evaluator.count.passes.values()), t0, decrement=nu, decrement_mc=nu_mc, halvings=halvings)
        )
        logger.info(
            "annotated REML iteration %d: decrement %.3g (threshold %.3g), theta_e %.4g, Vg %.4g",
            it,
            nu,
            threshold,
            point.theta_e,
            point.sigma2.sum(),
        )
        if nu < threshold:
            converged = not point.failures
            status = "converged" if converged else "decrement below threshold, but " + "; ".join(point.failures)
            break
        if it == max_iter:
            status = f"not converged after {max_iter} iterations (decrement {nu:.3g} > {threshold:.3g})"
            break
        step = delta * min(1.0, max_step / max(float(np.abs(delta).max()), 1e-300))
        for halvings in range(max_step_halvings + 1):  # noqa: B007 (the count is recorded at the next iteration)
            trial = evaluator.evaluate(point.psi + step)
            if _accept(point, trial, step):
                break
            step = step / 2
        point = trial
    return Optimum(point=point, ai=ai, iterations=it, converged=converged, status=status, decrement=nu, history=history)


def adam(
    evaluator, psi0: np.ndarray, *, max_iter: int, learning_rate: float, tol_grad: float, decay: np.ndarray | None = None
) -> Optimum:
    """Adam ascent from psi0 (module docstring); beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    `decay`: lambda per coordinate of psi (None: no penalty)."""
    t0 = time.perf_counter()
    psi = np.asarray(psi0, dtype=np.float64).copy()
    decay = np.zeros_like(psi) if decay is None else np.asarray(decay, dtype=np.float64)
    m1, m2 = np.zeros_like(psi), np.zeros_like(psi)
    history: list = []
    status, converged = "", False
    for it in range(max_iter + 1):
        point = evaluator.evaluate(psi)
        g = point.grad - decay * psi
        mean_sq = float(g @ g) / g.size
        noise = float(np.trace(point.grad_cov)) / g.size
        history.append(_record(it, point, sum(evaluator.count.passes.values()), t0, mean_sq_grad=mean_sq, mc_variance=noise))
        if mean_sq < max(tol_grad**2, noise):
            converged = not point.failures
            status = "converged" if converged else "gradient below threshold, but " + "; ".join(point.failures)
            break
        if it == max_iter:
            status = f"not converged after {max_iter} Adam steps (mean squared gradient {mean_sq:.3g})"
            break
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g**2
        psi = psi + learning_rate * (m1 / (1 - 0.9 ** (it + 1))) / (np.sqrt(m2 / (1 - 0.999 ** (it + 1))) + 1e-8)
    return Optimum(
        point=point, ai=None, iterations=it, converged=converged, status=status, decrement=float("nan"), history=history
    )
