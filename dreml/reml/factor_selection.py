"""Choosing the number of factors K by held-out likelihood (`choose_factor_count`).

Notation of `dreml.reml.factors`. Hold out a random fraction h of the observed entries
(sample i, trait t) of Y, the set H, drawn by `np.random.default_rng(seed)` with the fit's master
seed (the factors' REML seeds are spawned children of it, so the streams differ). Fit the model
with each candidate K on the remaining entries (`fit_factor_model`, same settings and master
seed for every candidate), and score each fit by the mean held-out Gaussian log density per entry

    score(K) = 1/|H| sum_{(i,t) in H} log N(y_it; mu_it, v_it),
    mu_it = x_i b_t + f^_i lambda_t,     v_it = lambda_t^T C_i lambda_t + psi_t,

with B, F^, Lambda, psi and C_i of the fit on the training entries. mu_it is the posterior mean
of y_it given the training entries (the sample's other traits and its relatives); v_it is the
predictive variance given the sample's own training traits (`FactorModelResult.
predictive_variance`: the information of relatives is left out of C_i, so v_it is at least the
exact conditional variance, up to the mean-diagonal prior of C_i). The criterion is the
per-entry (marginal) predictive density, not the joint density of all held-out entries: that
would need their full conditional covariance (|H| solves with the covariance of the observed
entries), and the entries of one sample are correlated through its factors. Too many factors fit
noise in the training entries and shrink psi_t, which the held-out densities penalise through
both the mean and the variance. The held-out mean squared error of mu is reported alongside.

Rule "1se" (default): the smallest K whose score is within one standard error of the highest,
the SE of the paired difference score(K) - score(K_best) over the held-out entries (sd of the
per-entry differences / sqrt|H|; the entries of one sample are correlated, so this SE is somewhat
optimistic): the most parsimonious candidate the held-out data cannot tell from the best (as
glmnet's lambda.1se). Rule "best": K = the candidate with the highest score. On simulations with
a true K = 2 (docs/validation.md) 1se chose it in 9 of 9 runs, best in 7 of 9 (K = 3 twice, its
score above K = 2's by 0.0002 and 0.004 per entry, less than one SE).
The model is then refitted with the chosen K on every observed entry, and that fit is the result.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dreml.errors import InputError
from dreml.operators.protocol import GRMOperator
from dreml.reml.config import fresh_seed
from dreml.reml.factors import FactorConfig, FactorModelResult, check_factor_count, fit_factor_model, working_operator
from dreml.reml.method import choose_method

logger = logging.getLogger(__name__)

CRITERION = "mean held-out Gaussian log density per entry, N(y_it; x_i b_t + f^_i lambda_t, lambda_t^T C_i lambda_t + psi_t)"


@dataclass(frozen=True)
class FactorSelectionConfig:
    """Settings of `choose_factor_count`; invalid values raise `ValueError` at construction.

    Fields:
        candidates: the K values to compare, distinct, each at least 1 (kept in increasing order).
        holdout: h, the fraction of the observed entries held out, in (0, 0.5].
        rule: "1se" (default) or "best" (module docstring).
    """

    candidates: tuple[int, ...]
    holdout: float = 0.1
    rule: Literal["best", "1se"] = "1se"

    def __post_init__(self) -> None:
        values = tuple(sorted(self.candidates))
        if len(values) < 2 or len(set(values)) != len(values) or values[0] < 1:
            raise ValueError(f"candidates must be at least 2 distinct factor counts, each at least 1, got {self.candidates}")
        if not 0 < self.holdout <= 0.5:
            raise ValueError(f"holdout must be in (0, 0.5], got {self.holdout}")
        if self.rule not in ("best", "1se"):
            raise ValueError(f"rule must be 'best' or '1se', got {self.rule!r}")
        object.__setattr__(self, "candidates", values)


@dataclass(frozen=True)
class FactorSelection:
    """Outcome of `choose_factor_count`. Lists over the candidates, in increasing K.

    Fields:
        candidates: the K values compared.
        scores: score(K), the mean held-out log density per entry (module docstring).
        score_se: the SE of score(K) - score(best K), paired over the held-out entries (0 for the best).
        mse: the held-out mean squared error of mu per candidate.
        converged, iterations: of each candidate's fit on the training entries.
        best: the K with the highest score; chosen: the K the rule chose.
        rule: "best" or "1se".
        holdout: h; n_heldout: |H|; seed: the master seed (held-out entries and every fit).
        passes: passes over the genotypes in all (candidates and refit).
        wall_s: seconds of each candidate's fit.
        result: the refit with K = chosen on every observed entry.
    """

    candidates: tuple[int, ...]
    scores: list[float]
    score_se: list[float]
    mse: list[float]
    converged: list[bool]
    iterations: list[int]
    best: int
    chosen: int
    rule: str
    holdout: float
    n_heldout: int
    seed: int
    passes: int
    wall_s: list[float]
    result: FactorModelResult

    def to_dict(self) -> dict:
        """JSON-serialisable record of the choice (the refit's own record is `result.to_dict()`)."""
        return {
            "criterion": CRITERION,
            "candidates": list(self.candidates),
            "heldout_log_density": self.scores,
            "heldout_log_density_se": self.score_se,
            "heldout_mse": self.mse,
            "converged": self.converged,
            "iterations": self.iterations,
            "rule": self.rule,
            "best": self.best,
            "chosen": self.chosen,
            "holdout_fraction": self.holdout,
            "n_heldout": self.n_heldout,
            "seed": self.seed,
            "passes": self.passes,
            "wall_s": self.wall_s,
        }


def heldout_mask(Y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """H: each observed entry of Y held out with probability `fraction`, shape (n, T), bool."""
    return np.isfinite(Y) & (np.random.default_rng(seed).random(Y.shape) < fraction)


def heldout_log_densities(
    result: FactorModelResult, Y: np.ndarray, X: np.ndarray, heldout: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """log N(y_it; mu_it, v_it) and the squared errors (y_it - mu_it)^2 of the held-out entries
    `heldout` (n, T) of Y, each shape (|H|,) in row-major order (module docstring)."""
    residual = (Y - result.predicted(X))[heldout]
    variance = result.predictive_variance()[heldout]
    return -0.5 * (np.log(2 * np.pi * variance) + residual**2 / variance), residual**2


def choose(candidates: tuple[int, ...], log_densities: np.ndarray, rule: str) -> tuple[int, int, np.ndarray]:
    """The best K, the K chosen by `rule` and the paired SEs of the score differences from the
    best (module docstring); `log_densities`: per candidate and held-out entry, shape (C, |H|)."""
    scores = log_densities.mean(axis=1)
    best = int(np.argmax(scores))
    differences = log_densities - log_densities[best]
    se = differences.std(axis=1, ddof=1) / np.sqrt(log_densities.shape[1])
    within = np.flatnonzero(scores >= scores[best] - se)
    chosen = best if rule == "best" else int(within.min())
    return candidates[best], candidates[chosen], se


def choose_factor_count(
    operator: GRMOperator,
    Y: np.ndarray,
    X: np.ndarray | None,
    config: FactorConfig,
    selection: FactorSelectionConfig,
) -> FactorSelection:
    """Fit every candidate K on the training entries, choose K by held-out likelihood, refit.

    Arguments:
        operator: a GRM operator over the n samples, with `traces()`.
        Y: traits, shape (n, T), NaN where missing; X: covariates (n, p) or None (intercept).
        config: the fits' `FactorConfig` (its `n_factors` is replaced by each candidate);
            `config.reml.seed` the master seed (None: a fresh one).
        selection: the candidates, the held-out fraction and the rule.

    Returns:
        `FactorSelection` with the refit on every entry as `result`.

    Raises:
        InputError: a candidate K >= T, a trait left with too few training values, no entry held out.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise InputError(f"Y must have shape (n, T), got {Y.shape}")
    check_factor_count(selection.candidates[-1], Y.shape[1])
    X = np.ones((Y.shape[0], 1)) if X is None else np.asarray(X, dtype=np.float64)
    seed = fresh_seed() if config.reml.seed is None else config.reml.seed
    config = dataclasses.replace(config, reml=dataclasses.replace(config.reml, seed=seed))
    heldout = heldout_mask(Y, selection.holdout, seed)
    if not heldout.any():
        raise InputError(f"no observed value was held out (holdout fraction {selection.holdout:g}): raise it")
    training = np.where(heldout, np.nan, Y)
    method, _ = choose_method(config.reml.method, Y.shape[0], operator.n_components)
    before = operator.passes
    # every fit multiplies by the same K_g: on the exact path read it once for all of them
    working = working_operator(operator, method)
    densities, mse, converged, iterations, wall = [], [], [], [], []
    for K in selection.candidates:
        t0 = time.perf_counter()
        fit = fit_factor_model(working, training, X, dataclasses.replace(config, n_factors=K))
        log_density, squared_error = heldout_log_densities(fit, Y, X, heldout)
        wall.append(time.perf_counter() - t0)
        densities.append(log_density)
        mse.append(float(squared_error.mean()))
        converged.append(fit.converged)
        iterations.append(fit.iterations)
        logger.info("factor count K = %d: held-out log density %.5f per entry, MSE %.5g", K, log_density.mean(), mse[-1])
    best, chosen, se = choose(selection.candidates, np.stack(densities), selection.rule)
    result = fit_factor_model(working, Y, X, dataclasses.replace(config, n_factors=chosen))
    return FactorSelection(
        candidates=selection.candidates,
        scores=[float(d.mean()) for d in densities],
        score_se=se.tolist(),
        mse=mse,
        converged=converged,
        iterations=iterations,
        best=best,
        chosen=chosen,
        rule=selection.rule,
        holdout=selection.holdout,
        n_heldout=int(heldout.sum()),
        seed=seed,
        passes=int(operator.passes - before),
        wall_s=wall,
        result=result,
    )


__all__ = ["FactorSelection", "FactorSelectionConfig", "choose", "choose_factor_count", "heldout_log_densities", "heldout_mask"]
