"""Fixed and random effects at theta: what every post-REML computation starts from.

With H = sum_g theta_g K_g + theta_e I and P as in `dreml.reml.evaluation`:
    beta     = (X^T H^-1 X)^-1 X^T H^-1 y         (GLS, the BLUE), cov(beta) = (X^T H^-1 X)^-1
    u_g      = theta_g K_g P y                      (BLUP of component g's genetic values)
    e        = theta_e P y = y - X beta - sum_g u_g (the residuals)
(Henderson 1975; GCTA's --reml-est-fix and --reml-pred-rand). A fit gets them without a pass
from its last score evaluation (the solves of H^-1 X and H^-1 y~ and the K_g P y columns are
there); `effects_at` computes them at any theta: one block PCG on [X | y~] and, for G > 1,
one stacked pass for K_g P y (for G = 1 it follows from the residuals, as in the fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.protocol import GRMOperator
from dreml.reml.evaluation import residualise
from dreml.reml.pcg import block_pcg


@dataclass(frozen=True)
class Effects:
    """BLUE and BLUP ingredients at one theta.

    Fields:
        beta: fixed effects, shape (p,).
        beta_covariance: (X^T H^-1 X)^-1, shape (p, p).
        Py: P y, shape (n,).
        KPy: K_g P y, shape (G, n).
        status: "converged", or which solve missed its tolerance.
    """

    beta: np.ndarray
    beta_covariance: np.ndarray
    Py: np.ndarray
    KPy: np.ndarray
    status: str = "converged"

    @property
    def beta_se(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(self.beta_covariance), 0.0))

    def blup(self, theta: np.ndarray) -> np.ndarray:
        """u_g = theta_g K_g P y, shape (G, n)."""
        return np.asarray(theta[:-1])[:, None] * self.KPy

    def residual(self, theta: np.ndarray) -> np.ndarray:
        """e = theta_e P y, shape (n,)."""
        return float(theta[-1]) * self.Py

    def shifted(self, beta_ols: np.ndarray) -> Effects:
        """The same effects for y = X beta_ols + y~ when these were computed for y~."""
        return Effects(self.beta + beta_ols, self.beta_covariance, self.Py, self.KPy, self.status)


def gls(X: np.ndarray, y: np.ndarray, HiX: np.ndarray, Hiy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(beta, (X^T H^-1 X)^-1, P y) from the solves H^-1 X and H^-1 y."""
    A = cho_factor(X.T @ HiX, lower=True)
    beta = cho_solve(A, HiX.T @ y)
    return beta, cho_solve(A, np.eye(X.shape[1])), Hiy - HiX @ beta


def effects_at(
    operator: GRMOperator, y: np.ndarray, X: np.ndarray, theta: np.ndarray, *, tol: float = 1e-6, max_iter: int = 500
) -> Effects:
    """Effects at a given theta through the operator (module docstring).

    Arguments:
        operator: any GRM operator.
        y: phenotype, shape (n,); X: covariates, shape (n, p), full column rank.
        theta: (theta_1..theta_G, theta_e), theta_e > 0.
        tol: relative residual of the PCG solves.
        max_iter: PCG iterations (passes) at most.

    Returns:
        `Effects`; a solve that missed `tol` is named in `status`, not raised.
    """
    theta = np.asarray(theta, dtype=np.float64)
    y_res = residualise(y, X)
    beta_ols = np.linalg.lstsq(X, y, rcond=None)[0]
    p = X.shape[1]

    def apply_H(V: np.ndarray) -> np.ndarray:
        return np.asarray(operator.matmat(V, weights=theta[:-1]), dtype=np.float64) + theta[-1] * V

    result = block_pcg(apply_H, np.column_stack([X, y_res]), tol=tol, max_iter=max_iter)
    HiX, Hiy = result.x[:, :p], result.x[:, p]
    beta, cov, Py = gls(X, y_res, HiX, Hiy)
    if theta.shape[0] == 2 and theta[0] != 0:
        # H P y = y~ - r_y - (X - r_X) beta from the recursive residuals (no pass)
        HPy = y_res - result.r[:, p] - (X - result.r[:, :p]) @ beta
        KPy = ((HPy - theta[1] * Py) / theta[0])[None]
    else:
        KPy = np.asarray(operator.matmat(Py[:, None]), dtype=np.float64)[:, :, 0]
    status = "converged" if result.status == "converged" else f"effects solve: {result.status}"
    return Effects(beta + beta_ols, cov, Py, KPy, status)
