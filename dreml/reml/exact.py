"""The exact dense path: explicit K_g, Cholesky of H, exact traces and log-determinants.

K_g is obtained from any operator as the stacked product K_g I (one pass over n columns), so
the path is the reference for every operator at small n (memory (G + 3) n^2 float64).
Per evaluation: H = L L^T (n^3 / 3 flops) and H^-1 from the factor (LAPACK potri, n^3 / 3);
a failed factorisation (an unconstrained trial theta with H indefinite) raises `IndefiniteError`.
Formulas in `dreml.reml.evaluation`.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, lapack

from dreml.operators.protocol import GRMOperator
from dreml.reml.effects import Effects
from dreml.reml.evaluation import IndefiniteError, Information, PassCounter, Point, haseman_elston, residualise


def _inverse_and_logdet(H: np.ndarray) -> tuple[np.ndarray, float]:
    """H^-1 (full symmetric) and log|H| from the Cholesky factor; `IndefiniteError` when it fails."""
    try:
        c, lower = cho_factor(H, lower=True)
    except np.linalg.LinAlgError as exc:
        raise IndefiniteError(f"H is not positive definite (Cholesky: {exc})") from exc
    inv, info = lapack.dpotri(c, lower=True)
    if info != 0:
        raise IndefiniteError(f"H is singular (potri info={info})")
    inv = np.tril(inv) + np.tril(inv, -1).T
    return inv, 2.0 * float(np.sum(np.log(np.diag(c))))


class ExactEvaluator:
    """Dense reference evaluator.

    Arguments:
        operator: any GRM operator (K_g is read once with `matmat(I)`).
        y: phenotype, shape (n,).
        X: covariates, shape (n, p), full column rank.
    """

    def __init__(self, operator: GRMOperator, y: np.ndarray, X: np.ndarray) -> None:
        n = operator.shape[0]
        self.count = PassCounter(operator)
        with self.count("setup"):
            self.K = np.asarray(operator.matmat(np.eye(n)), dtype=np.float64)  # shape: (G, n, n)
        self.y, self.X = residualise(y, X), X

    def start(self) -> np.ndarray:
        """Haseman-Elston with exact tr(K_g K_h)."""
        n = self.y.shape[0]
        G = self.K.shape[0]
        T = np.empty((G + 1, G + 1))
        T[:G, :G] = np.tensordot(self.K, self.K, axes=([1, 2], [1, 2]))
        T[:G, G] = T[G, :G] = np.einsum("gii->g", self.K)
        T[G, G] = n
        q = np.append((self.K @ self.y) @ self.y, self.y @ self.y)
        return haseman_elston(T, q, self.y @ self.y / (n - self.X.shape[1]))

    def score(self, theta: np.ndarray) -> Point:
        n = self.y.shape[0]
        H = np.tensordot(theta[:-1], self.K, axes=1) + theta[-1] * np.eye(n)
        Hi, logdet_H = _inverse_and_logdet(H)
        HiX = Hi @ self.X
        A = cho_factor(self.X.T @ HiX, lower=True)
        P = Hi - HiX @ cho_solve(A, HiX.T)
        Py = P @ self.y
        V = np.vstack([self.K @ Py, Py[None]]).T  # shape: (n, G + 1), columns K_i P y
        traces = np.append(np.tensordot(self.K, P, axes=([1, 2], [0, 1])), np.trace(P))
        logdet_A = 2.0 * float(np.sum(np.log(np.diag(A[0]))))
        loglik = -0.5 * (logdet_H + logdet_A + float(self.y @ Py))
        G1 = theta.shape[0]
        effects = Effects(cho_solve(A, HiX.T @ self.y), cho_solve(A, np.eye(self.X.shape[1])), Py, V[:, :-1].T)
        return Point(
            theta=theta,
            score=-0.5 * traces + 0.5 * (Py @ V),
            score_cov=np.zeros((G1, G1)),
            data={"P": P, "V": V, "loglik": loglik, "effects": effects},
        )

    def information(self, point: Point, *, loglik: bool) -> Information:
        P, V = point.data["P"], point.data["V"]
        ai = 0.5 * V.T @ P @ V
        return Information(ai=(ai + ai.T) / 2, loglik=point.data["loglik"], loglik_se=0.0)
