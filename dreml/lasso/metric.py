"""The V^-1 metric of the sparse effects at fixed variance components, and the penalised columns.

With H = sum_g theta_g K_g + theta_e I (the polygenic components and the residual) and the
covariates X (n x p, unpenalised), profiling out the fixed effects beta leaves the REML
projection

    P = H^-1 - H^-1 X (X^T H^-1 X)^-1 X^T H^-1,

so that min_beta (r - X beta)^T H^-1 (r - X beta) = r^T P r. `PMetric` applies P through block
PCG solves with H (one operator pass per iteration), or through a Cholesky factor of H when
the components are held as explicit matrices (`DenseOperator`: the exact path, where
`fit_sparse_reml` reads K_g once); `PenalisedColumns` holds the penalised
variants Z_S (standardised genotypes, one column z_j per variant j in S) on their own
genotype operator and gives Z_S^T U and chosen columns Z_S[:, W] in one pass each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.dense import DenseOperator
from dreml.operators.protocol import GRMOperator
from dreml.reml.pcg import block_pcg


@dataclass
class PMetric:
    """P at fixed theta (module docstring), through block PCG on `operator`.

    Arguments:
        operator: the polygenic components' GRM operator (possibly a `RestrictedOperator`).
        X: covariates, shape (n, p), full column rank.
        theta: (theta_1..theta_G, theta_e), theta_e > 0.
        tol: relative residual of every solve; max_iter: most PCG iterations a solve.

    Attributes:
        solves: PCG solves made; passes: operator passes they took.
        failures: the status of every solve that missed `tol` (a result built on one of them
            is not reported as converged).
    """

    operator: GRMOperator
    X: np.ndarray  # shape: (n, p)
    theta: np.ndarray  # shape: (G + 1,)
    tol: float = 1e-8
    max_iter: int = 1000
    solves: int = 0
    passes: int = 0
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.theta = np.asarray(self.theta, dtype=np.float64)
        self._chol: tuple[np.ndarray, bool] | None = None
        self.HiX = self.solve(self.X)  # shape: (n, p)
        self._A = cho_factor(self.X.T @ self.HiX, lower=True)

    def solve(self, B: np.ndarray) -> np.ndarray:  # shape: (n, k) -> (n, k)
        """H^-1 B: a Cholesky solve on a `DenseOperator` (the exact path), else block PCG."""
        theta = self.theta
        if isinstance(self.operator, DenseOperator):
            if self._chol is None:
                n = self.operator.shape[0]
                self._chol = cho_factor(np.tensordot(theta[:-1], self.operator.K, axes=1) + theta[-1] * np.eye(n), lower=True)
            self.solves += 1
            return cho_solve(self._chol, B)

        def apply_H(V: np.ndarray) -> np.ndarray:
            return np.asarray(self.operator.matmat(V, weights=theta[:-1]), dtype=np.float64) + theta[-1] * V

        result = block_pcg(apply_H, B, tol=self.tol, max_iter=self.max_iter)
        self.solves += 1
        self.passes += result.iterations
        if result.status != "converged":
            self.failures.append(result.status)
        return np.asarray(result.x)

    def apply(self, B: np.ndarray) -> np.ndarray:  # shape: (n, k) -> (n, k)
        """P B = H^-1 B - H^-1 X (X^T H^-1 X)^-1 X^T H^-1 B (X^T H^-1 B = (H^-1 X)^T B)."""
        B = np.asarray(B, dtype=np.float64).reshape(len(B), -1)
        return self.solve(B) - self.HiX @ cho_solve(self._A, self.HiX.T @ B)

    def beta(self, r: np.ndarray) -> np.ndarray:
        """GLS fixed effects of the offset phenotype r: (X^T H^-1 X)^-1 X^T H^-1 r, shape (p,)."""
        return cho_solve(self._A, self.HiX.T @ r)

    @property
    def converged(self) -> bool:
        return not self.failures


class PenalisedColumns:
    """Z_S on a genotype operator of one component (the penalised variants), optionally on a
    subset of its samples.

    Arguments:
        operator: a genotype operator with `zt_matmat` / `z_matmat` whose single component is S
            (columns in that component's variant order).
        rows: the samples used, as indices into the operator's samples (default: all).
    """

    def __init__(self, operator, rows: np.ndarray | None = None) -> None:
        if operator.n_components != 1:
            raise ValueError(f"the penalised operator needs exactly one component, got {operator.n_components}")
        self.operator = operator
        self.rows = rows
        self.n_full = operator.shape[0]
        self.s = int(operator.m[0])
        self.passes = 0

    def zt(self, U: np.ndarray) -> np.ndarray:  # shape: (n, k) -> (s, k)
        """Z_S^T U over the used rows."""
        U = np.asarray(U, dtype=np.float64).reshape(len(U), -1)
        if self.rows is not None:
            padded = np.zeros((self.n_full, U.shape[1]))
            padded[self.rows] = U
            U = padded
        self.passes += 1
        return self.operator.zt_matmat(U)[0]

    def columns(self, W: np.ndarray) -> np.ndarray:  # shape: (|W|,) -> (n, |W|)
        """Z_S[:, W] over the used rows, from one pass of unit vectors."""
        B = np.zeros((self.s, len(W)))
        B[np.asarray(W, dtype=np.int64), np.arange(len(W))] = 1.0
        self.passes += 1
        Z = self.operator.z_matmat([B])[0]
        return Z if self.rows is None else Z[self.rows]

    def restricted(self, rows: np.ndarray) -> PenalisedColumns:
        """The same columns on a subset of the samples (a cross-validation training set)."""
        return PenalisedColumns(self.operator, np.asarray(rows, dtype=np.int64))
