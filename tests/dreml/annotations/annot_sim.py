"""Small simulated data for the annotation tests: independent variants, GCTA-standardised Z."""

from __future__ import annotations

import numpy as np


def genotypes(n: int, m: int, seed: int, maf_min: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """(Z, p): Z (n, m) standardised with the sample frequencies p (every variant polymorphic)."""
    rng = np.random.default_rng(seed)
    p_true = rng.uniform(maf_min, 0.5, m)
    G = rng.binomial(2, p_true, (n, m)).astype(np.float64)
    for j in np.flatnonzero(G.std(axis=0) == 0):
        G[0, j] = 1.0 - G[0, j] if G[0, j] > 0 else 1.0
    p = G.mean(axis=0) / 2
    return (G - 2 * p) / np.sqrt(2 * p * (1 - p)), p


def phenotype(Z: np.ndarray, sigma2: np.ndarray, theta_e: float, seed: int) -> np.ndarray:
    """y = 1 + Z b + e, b_j ~ N(0, sigma2_j), e ~ N(0, theta_e)."""
    rng = np.random.default_rng(seed)
    b = rng.standard_normal(Z.shape[1]) * np.sqrt(sigma2)
    return 1.0 + Z @ b + rng.standard_normal(Z.shape[0]) * np.sqrt(theta_e)


def reml_loglik(Z: np.ndarray, sigma2: np.ndarray, theta_e: float, y: np.ndarray, X: np.ndarray) -> float:
    """-1/2 [log|H| + log|X^T H^-1 X| + y^T P y], written out with slogdet and solve."""
    H = Z @ np.diag(sigma2) @ Z.T + theta_e * np.eye(Z.shape[0])
    HiX = np.linalg.solve(H, X)
    Hiy = np.linalg.solve(H, y)
    XHX = X.T @ HiX
    Py = Hiy - HiX @ np.linalg.solve(XHX, X.T @ Hiy)
    return -0.5 * (np.linalg.slogdet(H)[1] + np.linalg.slogdet(XHX)[1] + y @ Py)
