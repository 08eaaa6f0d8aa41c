"""`RemlResult`: the estimates, their uncertainty and the full record of a fit.

Standard errors: cov(theta) = AI^-1 at the final theta, restricted to the free components.
A genetic component on the boundary (theta_g = 0 and score <= 0, held by the active set) is
treated as fixed: its rows and columns of `covariance` are 0 and the other SEs come from the
reduced AI. Its own `se` (and `h2_se`) are read, as GCTA reports them, from the inverse of the
full AI: a number that says how far from 0 the data could tell it, never "0 +- 0" (the Wald
interval is not valid on the boundary; use the LRT there). An unconstrained fit
(`FitConfig.constrain=False`) holds nothing: every SE comes from the full AI, negative
estimates included.
Heritabilities, with Vp = sum_i theta_i (residual included), by the delta method:
    h2_g = theta_g / Vp,        d h2_g / d theta_j = (delta_gj Vp - theta_g) / Vp^2
    h2   = sum_g theta_g / Vp,  d h2 / d theta_j   = (1[j genetic] Vp - sum_g theta_g) / Vp^2
    var(f) = grad f^T cov(theta) grad f.
Monte Carlo error (randomised path): the probes make the score an estimate with covariance
Sigma_s (from the per-probe Hutchinson samples), so the root theta moves by about
AI^-1 delta_s: cov_mc(theta) = AI^-1 Sigma_s AI^-1 on the free components, and the same delta
method gives the Monte Carlo SEs of h2. They are reported beside the sampling SEs (`mc_se`,
`h2_mc_se`, `h2_total_mc_se`); the total error of an estimate about the truth has variance
se^2 + mc_se^2 (0 on the exact path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dreml.reml.config import FitConfig
from dreml.reml.effects import Effects


@dataclass(frozen=True)
class RemlResult:
    """Result of `fit_reml`. Arrays are over the G + 1 components, the residual last.

    Fields:
        names: component names, then "residual".
        theta: variance estimates, shape (G + 1,).
        se: standard errors (on the boundary: from the full AI, module docstring), shape (G + 1,).
        covariance: sampling covariance of theta (inverse AI), shape (G + 1, G + 1).
        at_boundary: genetic components held at 0, shape (G + 1,) (the residual never is; nor
            is any component of an unconstrained fit, `config.constrain=False`, whose genetic
            estimates may be negative).
        h2, h2_se: theta_g / Vp per genetic component and delta-method SEs, shape (G,).
        h2_total, h2_total_se: sum_g theta_g / Vp and its SE.
        mc_se, h2_mc_se, h2_total_mc_se: Monte Carlo standard errors of theta, h2 and h2_total
            from the randomised trace estimates (0 on the exact path).
        vp, vp_se: Vp = sum(theta) and its SE.
        loglik: REML log-likelihood at theta (constant -(n - p)/2 log 2 pi omitted, as GCTA);
            SLQ estimate on the randomised path (NaN there when `config.loglik` is off);
            always computed on the exact path, where it costs nothing.
        loglik_se: its Monte Carlo standard error (0 on the exact path).
        score: the score at theta, shape (G + 1,).
        ai: the average information at theta, shape (G + 1, G + 1).
        iterations: AI updates made.
        decrement: the Newton decrement s^T AI^-1 s at theta (the convergence measure).
        passes: passes over the genotypes for the whole fit (set-up included).
        passes_by_kind: the same split by kind: "setup", "score" (main block solves and the
            stacked K_g P y passes), "warm_start", "information" (AI solves), "final" (the
            last AI solve with the SLQ columns).
        method: "exact" or "randomised"; method_reason: why (`dreml.reml.method`).
        converged: whether the convergence test passed and every solve reached its
            tolerance; `status` says why not.
        status: "converged" or an actionable message.
        n_samples, n_covariates: n and p.
        seed: the fit's seed (also in config).
        config: the `FitConfig` used.
        history: one dict per iterate: iteration, theta, score_norm, decrement, passes,
            wall_s, step_halvings, indefinite_halvings (those of step_halvings made because H was
            indefinite), d_theta, decrement_floor, loglik and loglik_se (the last row
            on the randomised path, every row on the exact one) and, on the randomised path,
            `pcg`, `pcg_ai` (iterations, max_residual, mean_column_iterations, status) and
            `trace_se`.
        timings: seconds spent in "setup", "iterations", "total".
        effects: fixed effects (GLS), P y and K_g P y at theta (`dreml.reml.effects`), from the
            last score evaluation: no extra pass. Per-sample arrays: not in `to_dict()`.
        indefinite_trials: trial steps at which H was indefinite, halved back (unconstrained
            fits only; `dreml.reml.optimizer`); the rows of `history` say which iterations.
    """

    names: tuple[str, ...]
    theta: np.ndarray
    se: np.ndarray
    covariance: np.ndarray
    at_boundary: np.ndarray
    h2: np.ndarray
    h2_se: np.ndarray
    h2_total: float
    h2_total_se: float
    mc_se: np.ndarray
    h2_mc_se: np.ndarray
    h2_total_mc_se: float
    vp: float
    vp_se: float
    loglik: float
    loglik_se: float
    score: np.ndarray
    ai: np.ndarray
    iterations: int
    decrement: float
    passes: int
    passes_by_kind: dict
    method: str
    method_reason: str
    converged: bool
    status: str
    n_samples: int
    n_covariates: int
    seed: int
    config: FitConfig
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    effects: Effects | None = None
    indefinite_trials: int = 0

    @property
    def residual_variance(self) -> float:
        return float(self.theta[-1])

    def to_dict(self) -> dict:
        """Everything as JSON-serialisable Python objects (NaN stays float('nan'))."""
        out = {}
        for name in self.__dataclass_fields__:
            if name == "effects":
                continue
            value = getattr(self, name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, FitConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


def uncertainty(theta: np.ndarray, ai: np.ndarray, held: np.ndarray, score_cov: np.ndarray) -> dict:
    """Covariance, SEs, delta-method heritabilities and Monte Carlo SEs (module docstring).

    Arguments:
        theta: estimates, shape (G + 1,).
        ai: average information, shape (G + 1, G + 1).
        held: components fixed at 0, shape (G + 1,).
        score_cov: Monte Carlo covariance of the score, shape (G + 1, G + 1).

    Returns:
        dict with covariance, se, h2, h2_se, h2_total, h2_total_se, mc_se, h2_mc_se,
        h2_total_mc_se, vp, vp_se.
    """
    free = ~held
    cov = np.zeros_like(ai)
    cov[np.ix_(free, free)] = np.linalg.pinv(ai[np.ix_(free, free)], hermitian=True)
    full_cov = np.linalg.pinv(ai, hermitian=True)  # the held components' SEs (module docstring)
    mc_cov = cov @ score_cov @ cov
    vp = float(theta.sum())
    genetic = theta[:-1]
    G = genetic.shape[0]
    grad_h2 = (np.eye(G, G + 1) * vp - genetic[:, None]) / vp**2  # shape: (G, G + 1)
    grad_total = (np.append(np.full(G, vp), 0.0) - genetic.sum()) / vp**2
    ones = np.ones_like(theta)

    def h2_se(c: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(np.einsum("gi,ij,gj->g", grad_h2, c, grad_h2), 0.0))

    def total_se(c: np.ndarray) -> float:
        return float(np.sqrt(max(grad_total @ c @ grad_total, 0.0)))

    return {
        "covariance": cov,
        "se": np.sqrt(np.maximum(np.diag(np.where(free, cov, full_cov)), 0.0)),
        "h2": genetic / vp,
        "h2_se": np.where(free[:-1], h2_se(cov), h2_se(full_cov)),
        "h2_total": float(genetic.sum() / vp),
        "h2_total_se": total_se(cov),
        "mc_se": np.where(free, np.sqrt(np.maximum(np.diag(mc_cov), 0.0)), np.nan),
        "h2_mc_se": h2_se(mc_cov),
        "h2_total_mc_se": total_se(mc_cov),
        "vp": vp,
        "vp_se": float(np.sqrt(ones @ cov @ ones)),
    }
