"""Independent dense references of the sparse REML tests: the REML projection P from an
explicit H, the whitened LASSO problem and FISTA (accelerated proximal gradient, Beck and
Teboulle 2009): another algorithm on another representation of the objective."""

from __future__ import annotations

import numpy as np


def dense_P(Zg: np.ndarray, X: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """P = H^-1 - H^-1 X (X^T H^-1 X)^-1 X^T H^-1 with H = theta_1 Zg Zg^T / m + theta_e I."""
    n = len(Zg)
    H = theta[0] * Zg @ Zg.T / Zg.shape[1] + theta[1] * np.eye(n)
    Hi = np.linalg.inv(H)
    HiX = Hi @ X
    return Hi - HiX @ np.linalg.solve(X.T @ HiX, HiX.T)


def whitened(Zg: np.ndarray, Zs: np.ndarray, X: np.ndarray, y: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A, y_w with ||y_w - A b||^2 = (y - Zs b)^T P (y - Zs b), from P's eigenvectors (rank n - p)."""
    w, U = np.linalg.eigh(dense_P(Zg, X, theta))
    keep = w > 1e-10 * w.max()
    root = U[:, keep] * np.sqrt(w[keep])  # shape: (n, n - p)
    return root.T @ Zs, root.T @ y


def fista(A: np.ndarray, y: np.ndarray, penalty: np.ndarray, iterations: int = 200_000) -> np.ndarray:
    """argmin 1/2 ||y - A b||^2 + sum penalty_j |b_j|."""
    L = np.linalg.norm(A, 2) ** 2
    b = v = np.zeros(A.shape[1])
    t = 1.0
    for _ in range(iterations):
        w = v - A.T @ (A @ v - y) / L
        b_new = np.sign(w) * np.maximum(np.abs(w) - penalty / L, 0)
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        v = b_new + (t - 1) / t_new * (b_new - b)
        if np.max(np.abs(b_new - b)) < 1e-15:
            return b_new
        b, t = b_new, t_new
    return b
