"""`RemlResult`: the estimates, their uncertainty and the full record of a fit.

Standard errors: cov(theta) = AI^-1 at the final theta, restricted to the free components.
A genetic component on the boundary (theta_g = 0 and score <= 0, held by the active set) is
treated as fixed: its rows and columns of `covariance` are 0 and its `se` is NaN (the usual
Wald SE is not valid on the boundary); the other SEs come from the reduced AI.
Heritabilities, with Vp = sum_i theta_i (residual included), by the delta method:
    h2_g = theta_g / Vp,        d h2_g / d theta_j = (delta_gj Vp - theta_g) / Vp^2
    h2   = sum_g theta_g / Vp,  d h2 / d theta_j   = (1[j genetic] Vp - sum_g theta_g) / Vp^2
    var(f) = grad f^T cov(theta) grad f.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dreml.reml.config import FitConfig


@dataclass(frozen=True)
class RemlResult:
    """Result of `fit_reml`. Arrays are over the G + 1 components, the residual last.

    Fields:
        names: component names, then "residual".
        theta: variance estimates, shape (G + 1,).
        se: standard errors (NaN on the boundary), shape (G + 1,).
        covariance: sampling covariance of theta (inverse AI), shape (G + 1, G + 1).
        at_boundary: genetic components held at 0, shape (G + 1,) (the residual never is).
        h2, h2_se: theta_g / Vp per genetic component and delta-method SEs, shape (G,).
        h2_total, h2_total_se: sum_g theta_g / Vp and its SE.
        vp, vp_se: Vp = sum(theta) and its SE.
        loglik: REML log-likelihood at theta (constant -(n - p)/2 log 2 pi omitted, as GCTA);
            SLQ estimate on the randomised path.
        loglik_se: its Monte Carlo standard error (0 on the exact path).
        score: the score at theta, shape (G + 1,).
        ai: the average information at theta, shape (G + 1, G + 1).
        iterations: AI updates made.
        passes: passes over the genotypes for the whole fit (set-up included).
        converged: whether the convergence test passed; `status` says why not.
        status: "converged" or an actionable message.
        n_samples, n_covariates: n and p.
        seed: the fit's seed (also in config).
        config: the `FitConfig` used.
        history: one dict per iterate: iteration, theta, loglik, loglik_se, score_norm, passes,
            wall_s, step_halvings, d_theta, d_loglik and, on the randomised path, `pcg` and
            `pcg_ai` (iterations, max_residual, mean_column_iterations, status).
        timings: seconds spent in "setup", "iterations", "total".
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
    vp: float
    vp_se: float
    loglik: float
    loglik_se: float
    score: np.ndarray
    ai: np.ndarray
    iterations: int
    passes: int
    converged: bool
    status: str
    n_samples: int
    n_covariates: int
    seed: int
    config: FitConfig
    history: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    @property
    def residual_variance(self) -> float:
        return float(self.theta[-1])

    def to_dict(self) -> dict:
        """Everything as JSON-serialisable Python objects (NaN stays float('nan'))."""
        out = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, FitConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


def uncertainty(theta: np.ndarray, ai: np.ndarray, held: np.ndarray) -> dict:
    """Covariance, SEs and delta-method heritabilities (formulas in the module docstring).

    Arguments:
        theta: estimates, shape (G + 1,).
        ai: average information, shape (G + 1, G + 1).
        held: components fixed at 0, shape (G + 1,).

    Returns:
        dict with covariance, se, h2, h2_se, h2_total, h2_total_se, vp, vp_se.
    """
    free = ~held
    cov = np.zeros_like(ai)
    cov[np.ix_(free, free)] = np.linalg.pinv(ai[np.ix_(free, free)], hermitian=True)
    se = np.where(free, np.sqrt(np.maximum(np.diag(cov), 0.0)), np.nan)
    vp = float(theta.sum())
    genetic = theta[:-1]
    G = genetic.shape[0]
    grad_h2 = (np.eye(G, G + 1) * vp - genetic[:, None]) / vp**2  # shape: (G, G + 1)
    grad_total = (np.append(np.full(G, vp), 0.0) - genetic.sum()) / vp**2
    ones = np.ones_like(theta)
    return {
        "covariance": cov,
        "se": se,
        "h2": genetic / vp,
        "h2_se": np.sqrt(np.einsum("gi,ij,gj->g", grad_h2, cov, grad_h2)),
        "h2_total": float(genetic.sum() / vp),
        "h2_total_se": float(np.sqrt(grad_total @ cov @ grad_total)),
        "vp": vp,
        "vp_se": float(np.sqrt(ones @ cov @ ones)),
    }
