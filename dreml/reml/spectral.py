"""The exact path for one genetic component from K's eigendecomposition (`SpectralEvaluator`).

With G = 1 and K = U diag(s) U^T (computed once per `DenseOperator` and kept: every fit on the
same operator shares it), H = theta_1 K + theta_e I = U diag(1 / d) U^T with
d_i = 1 / (theta_1 s_i + theta_e), so after rotating once, y' = U^T y~ and X' = U^T X, every
evaluation is O(n p^2) instead of a Cholesky (n^3 / 3):
    A = X'^T D X',   P' = D - D X' A^-1 X'^T D  (P = U P' U^T),   P y -> p' = P' y'
    log|H| = -sum_i log d_i,   y^T P y = y'^T p',   y^T P K P y = sum_i s_i p'_i^2
    tr(P K) = sum_i d_i s_i - tr(A^-1 X'^T D S D X'),   tr(P) = sum_i d_i - tr(A^-1 X'^T D^2 X')
    AI = 1/2 V'^T P' V' with V' = [S p', p'] (the rotated K P y, P y)
(the spectral REML of FaST-LMM and GCTA's --reml with one GRM). H is indefinite exactly when
some theta_1 s_i + theta_e <= 0 (`IndefiniteError`). Formulas otherwise as in
`dreml.reml.evaluation`; the results equal `dreml.reml.exact.ExactEvaluator`'s (tested).
The eigendecomposition costs about 10 Cholesky factorisations, so the path pays off from the
second fit on the same operator (replicates, many traits, reduced models).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.dense import DenseOperator
from dreml.reml.effects import Effects
from dreml.reml.evaluation import IndefiniteError, Information, PassCounter, Point, haseman_elston, residualise


class SpectralEvaluator:
    """Exact evaluator for G = 1 from the operator's cached eigendecomposition.

    Arguments:
        operator: a one-component `DenseOperator`.
        y: phenotype, shape (n,).
        X: covariates, shape (n, p), full column rank.
    """

    def __init__(self, operator: DenseOperator, y: np.ndarray, X: np.ndarray) -> None:
        if operator.n_components != 1:
            raise ValueError(f"the spectral path needs one component, the operator has {operator.n_components}")
        self.count = PassCounter(operator)
        self.s, self.U = operator.eigh()
        self.y, self.X = residualise(y, X), X
        self.y_rot, self.X_rot = self.U.T @ self.y, self.U.T @ X

    def start(self) -> np.ndarray:
        """Haseman-Elston with exact tr(K^2) = sum s_i^2 and tr(K) = sum s_i."""
        n = self.y.shape[0]
        T = np.array([[self.s @ self.s, self.s.sum()], [self.s.sum(), n]])
        q = np.array([self.s @ self.y_rot**2, self.y @ self.y])
        return haseman_elston(T, q, self.y @ self.y / (n - self.X.shape[1]))

    def score(self, theta: np.ndarray) -> Point:
        eig_H = theta[0] * self.s + theta[1]
        if (eig_H <= 0).any():
            raise IndefiniteError(f"H is not positive definite at theta = {theta}: smallest eigenvalue {eig_H.min():.3g}")
        d = 1.0 / eig_H
        DX = d[:, None] * self.X_rot
        A = cho_factor(self.X_rot.T @ DX, lower=True)
        c = cho_solve(A, DX.T @ self.y_rot)
        p_rot = d * self.y_rot - DX @ c  # P' y'
        traces = np.array(
            [
                d @ self.s - np.trace(cho_solve(A, DX.T @ (self.s[:, None] * DX))),
                d.sum() - np.trace(cho_solve(A, DX.T @ DX)),
            ]
        )
        V_rot = np.column_stack([self.s * p_rot, p_rot])
        loglik = -0.5 * (float(np.log(eig_H).sum()) + 2.0 * float(np.sum(np.log(np.diag(A[0])))) + float(self.y_rot @ p_rot))
        Py = self.U @ p_rot
        effects = Effects(c, cho_solve(A, np.eye(self.X.shape[1])), Py, (self.U @ V_rot[:, 0])[None])
        return Point(
            theta=theta,
            score=-0.5 * traces + 0.5 * (p_rot @ V_rot),
            score_cov=np.zeros((2, 2)),
            data={"d": d, "DX": DX, "A": A, "V_rot": V_rot, "loglik": loglik, "effects": effects},
        )

    def information(self, point: Point, *, loglik: bool) -> Information:
        d, DX, A, V = point.data["d"], point.data["DX"], point.data["A"], point.data["V_rot"]
        XDV = DX.T @ V
        ai = 0.5 * (V.T @ (d[:, None] * V) - XDV.T @ cho_solve(A, XDV))
        return Information(ai=(ai + ai.T) / 2, loglik=point.data["loglik"], loglik_se=0.0)
