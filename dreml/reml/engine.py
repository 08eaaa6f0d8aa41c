"""`fit_reml`: REML estimation of variance components for any GRM operator."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from dreml.errors import InputError
from dreml.operators.dense import DenseOperator
from dreml.operators.protocol import GRMOperator
from dreml.reml.config import FitConfig, fresh_seed
from dreml.reml.evaluation import residualise
from dreml.reml.exact import ExactEvaluator
from dreml.reml.method import choose_method
from dreml.reml.optimizer import run_ai
from dreml.reml.probes import draw_probes
from dreml.reml.randomised import RandomisedEvaluator
from dreml.reml.results import RemlResult, uncertainty
from dreml.reml.spectral import SpectralEvaluator

logger = logging.getLogger(__name__)


def check_inputs(operator: GRMOperator, y: np.ndarray, X: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(y, X) as float64 (X = 1 when None), checked; raises `InputError` naming what is wrong."""
    n = operator.shape[0]
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise InputError(f"y must have shape ({n},) to match the operator, got {y.shape}")
    X = np.ones((n, 1)) if X is None else np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != n:
        raise InputError(f"X must have shape ({n}, p), got {X.shape}")
    if not (np.isfinite(y).all() and np.isfinite(X).all()):
        raise InputError("y and X must be finite (drop samples with missing values first)")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise InputError("X is rank deficient: drop collinear covariates")
    if X.shape[1] >= n - 1:
        raise InputError(f"need more samples ({n}) than covariates + 1 ({X.shape[1] + 1})")
    y_res = residualise(y, X)
    if y_res @ y_res <= 1e-12 * (y @ y):
        raise InputError("y is a linear combination of the covariates: nothing is left to partition")
    return y, X


def _check_priors(priors: tuple[float, ...] | None, n_components: int) -> None:
    """`FitConfig` checked their values; only the operator knows how many there must be."""
    if priors is not None and len(priors) != n_components + 1:
        raise InputError(
            f"priors must give {n_components + 1} values ({n_components} genetic variance(s), then the "
            f"residual), got {len(priors)}"
        )


EvaluatorFactory = Callable[[GRMOperator, np.ndarray, np.ndarray, FitConfig], RandomisedEvaluator]


def fit_reml(
    operator: GRMOperator,
    y: np.ndarray,
    X: np.ndarray | None = None,
    config: FitConfig = FitConfig(),
    randomised: EvaluatorFactory | None = None,
) -> RemlResult:
    """Fit y = X beta + sum_g u_g + e, u_g ~ N(0, theta_g K_g), e ~ N(0, theta_e I), by REML.

    Arguments:
        operator: any object with the `GRMOperator` protocol (K_g products, stacked or weighted).
        y: phenotype, shape (n,), in the operator's sample order.
        X: fixed-effect covariates, shape (n, p), full column rank; None for an intercept only.
            Include the intercept yourself when you pass X.
        config: `FitConfig`; `config.method` selects the path, `config.seed` (None: a fresh
            seed) the probes, `config.priors` (None: Haseman-Elston) the start and
            `config.constrain` whether genetic variances stay non-negative. The result's
            `config` holds the seed and the path actually used.
        randomised: builds the randomised path's evaluator from (operator, y, X, config) in
            place of `RandomisedEvaluator` with the seed's probes (traits sharing their
            probes, `dreml.reml.shared_probes`); None for the latter.

    Returns:
        `RemlResult`. Non-convergence is reported in `converged` / `status`, not raised.

    Raises:
        InputError: shapes, non-finite values or rank-deficient covariates; priors of the
            wrong length or at which H is indefinite.
    """
    y, X = check_inputs(operator, y, X)
    _check_priors(config.priors, operator.n_components)
    if config.seed is None:
        config = dataclasses.replace(config, seed=fresh_seed())
    seed = config.seed
    assert seed is not None
    t0 = time.perf_counter()
    n = operator.shape[0]
    method, reason = choose_method(config.method, n, operator.n_components)
    config = dataclasses.replace(config, method=method)  # the record reruns the path that ran
    logger.info("REML path: %s (%s); seed %d", method, reason, seed)
    evaluator: ExactEvaluator | SpectralEvaluator | RandomisedEvaluator
    if method == "exact" and isinstance(operator, DenseOperator) and operator.n_components == 1:
        evaluator = SpectralEvaluator(operator, y, X)  # its eigendecomposition serves every fit on it
    elif method == "exact":
        evaluator = ExactEvaluator(operator, y, X)
    elif randomised is not None:
        evaluator = randomised(operator, y, X, config)
    else:
        rank = config.precond_rank
        columns = min(rank + config.precond_oversampling, n) if rank else 0
        probes = draw_probes(n, config.n_probes, config.slq_probes, columns, seed)
        evaluator = RandomisedEvaluator(operator, y, X, config, probes)
    t_setup = time.perf_counter() - t0
    start = evaluator.start() if config.priors is None else np.array(config.priors)
    opt = run_ai(evaluator, config, start)
    t_total = time.perf_counter() - t0
    theta = opt.point.theta
    passes = dict(evaluator.count.passes)
    logger.info("REML %s after %d iterations, %d passes %s", opt.status, opt.iterations, sum(passes.values()), passes)
    return RemlResult(
        names=tuple(operator.component_names) + ("residual",),
        theta=theta,
        **uncertainty(theta, opt.info.ai, opt.held, opt.point.score_cov),
        at_boundary=opt.held,
        loglik=opt.info.loglik,
        loglik_se=opt.info.loglik_se,
        score=opt.point.score,
        ai=opt.info.ai,
        iterations=opt.iterations,
        decrement=opt.decrement,
        passes=int(sum(passes.values())),
        passes_by_kind=passes,
        method=method,
        method_reason=reason,
        converged=opt.converged,
        status=opt.status,
        n_samples=int(y.shape[0]),
        n_covariates=int(X.shape[1]),
        seed=seed,
        config=config,
        history=opt.history,
        timings={"setup": t_setup, "iterations": t_total - t_setup, "total": t_total},
        effects=opt.point.data["effects"].shifted(np.linalg.lstsq(X, y, rcond=None)[0]),
        indefinite_trials=opt.indefinite_trials,
    )
