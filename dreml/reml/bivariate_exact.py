"""The exact dense path of a bivariate fit: explicit K_g blocks, Cholesky of the N x N V.

K_g is read once from any operator as the stacked product K_g I (one pass over n columns), then
cut into K_aa, K_ab, K_bb (notation in `dreml.reml.bivariate_model`). Per evaluation
V = L L^T and V^-1 from the factor (as `dreml.reml.exact`), P = V^-1 - V^-1 X (X^T V^-1 X)^-1 X^T V^-1
and, with A_c the components (K_e = I, J for the residual covariance),
    tr(P A_ga) = <P_aa, K_aa>,  tr(P A_gb) = <P_bb, K_bb>,  tr(P A_gab) = 2 <P_ab, K_ab>,
    tr(P A_ea) = tr(P_aa),      tr(P A_eb) = tr(P_bb),      tr(P A_eab) = 2 sum_{O} P_ab,
with <A, B> = sum_ij A_ij B_ij; the score and AI are then the univariate formulas
(`dreml.reml.evaluation`) over the C components. Memory about (3 G / 4 + 4) N^2 float64.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.protocol import GRMOperator
from dreml.reml.bivariate_model import StackedLayout, moment_start
from dreml.reml.evaluation import Information, PassCounter, Point, residualise
from dreml.reml.exact import _inverse_and_logdet


class BivariateExactEvaluator:
    """Dense bivariate evaluator over theta (shape (C,), `StackedLayout` order).

    Arguments:
        operator: any GRM operator over the layout's n samples.
        layout: the traits' rows and components.
        y: stacked phenotypes [y_a; y_b], shape (N,).
        X: block-diagonal covariates diag(X_a, X_b), shape (N, p_a + p_b).
        p: (p_a, p_b), the traits' covariate counts (for their phenotypic variances in the start).
    """

    def __init__(self, operator: GRMOperator, layout: StackedLayout, y: np.ndarray, X: np.ndarray, p: tuple[int, int]) -> None:
        self.layout, self.p = layout, p
        self.count = PassCounter(operator)
        with self.count("setup"):
            K = np.asarray(operator.matmat(np.eye(layout.n)), dtype=np.float64)  # shape: (G, n, n)
        ra, rb = layout.rows
        self.Kaa = K[:, ra][:, :, ra]  # shape: (G, n_a, n_a)
        self.Kab = K[:, ra][:, :, rb]  # shape: (G, n_a, n_b)
        self.Kbb = K[:, rb][:, :, rb]  # shape: (G, n_b, n_b)
        del K
        self.y, self.X = residualise(y, X), X

    def _V(self, theta: np.ndarray) -> np.ndarray:
        L, G = self.layout, self.layout.G
        na, nb = L.sizes
        top = np.tensordot(theta[2 : 3 * G : 3], self.Kab, axes=1)
        if L.residual_covariance:
            top[L.oa, L.ob] += theta[3 * G + 2]
        V = np.empty((L.N, L.N))
        V[:na, :na] = np.tensordot(theta[0 : 3 * G : 3], self.Kaa, axes=1) + theta[3 * G] * np.eye(na)
        V[na:, na:] = np.tensordot(theta[1 : 3 * G : 3], self.Kbb, axes=1) + theta[3 * G + 1] * np.eye(nb)
        V[:na, na:] = top
        V[na:, :na] = top.T
        return V

    def start(self) -> np.ndarray:
        """Bivariate Haseman-Elston with exact traces (`moment_start`)."""
        L, G = self.layout, self.layout.G
        ya, yb = L.split(self.y)
        moments = []
        for K, y, n, p in ((self.Kaa, ya, L.sizes[0], self.p[0]), (self.Kbb, yb, L.sizes[1], self.p[1])):
            T = np.empty((G + 1, G + 1))
            T[:G, :G] = np.tensordot(K, K, axes=([1, 2], [1, 2]))
            T[:G, G] = T[G, :G] = np.einsum("gii->g", K)
            T[G, G] = n
            moments.append((T, np.append((K @ y) @ y, y @ y), float(y @ y / (n - p))))
        R = int(L.residual_covariance)
        T = np.zeros((G + R, G + R))
        T[:G, :G] = 2 * np.tensordot(self.Kab, self.Kab, axes=([1, 2], [1, 2]))
        q = np.zeros(G + R)
        q[:G] = 2 * (self.Kab @ yb) @ ya
        if R:
            T[:G, G] = T[G, :G] = 2 * self.Kab[:, L.oa, L.ob].sum(axis=1)
            T[G, G] = 2 * L.n_overlap
            q[G] = 2 * ya[L.oa] @ yb[L.ob]
        return moment_start(L, moments, (T, q))

    def score(self, theta: np.ndarray) -> Point:
        L, G = self.layout, self.layout.G
        na = L.sizes[0]
        Vi, logdet_V = _inverse_and_logdet(self._V(theta))
        ViX = Vi @ self.X
        A = cho_factor(self.X.T @ ViX, lower=True)
        P = Vi - ViX @ cho_solve(A, ViX.T)
        Py = P @ self.y
        Pa, Pb = L.split(Py)
        blocks = {
            "aa": (self.Kaa @ Pa)[..., None],
            "ba": np.einsum("gij,i->gj", self.Kab, Pa)[..., None],
            "ab": (self.Kab @ Pb)[..., None],
            "bb": (self.Kbb @ Pb)[..., None],
        }
        columns = L.component_columns(Py, blocks)  # shape: (N, C), columns A_c P y
        Paa, Pab, Pbb = P[:na, :na], P[:na, na:], P[na:, na:]
        traces = np.zeros(L.C)
        traces[0 : 3 * G : 3] = np.einsum("gij,ij->g", self.Kaa, Paa)
        traces[1 : 3 * G : 3] = np.einsum("gij,ij->g", self.Kbb, Pbb)
        traces[2 : 3 * G : 3] = 2 * np.einsum("gij,ij->g", self.Kab, Pab)
        traces[3 * G], traces[3 * G + 1] = np.trace(Paa), np.trace(Pbb)
        if L.residual_covariance:
            traces[3 * G + 2] = 2 * Pab[L.oa, L.ob].sum()
        logdet_A = 2.0 * float(np.sum(np.log(np.diag(A[0]))))
        loglik = -0.5 * (logdet_V + logdet_A + float(self.y @ Py))
        C = L.C
        return Point(
            theta=theta,
            score=-0.5 * traces + 0.5 * (Py @ columns),
            score_cov=np.zeros((C, C)),
            data={
                "P": P,
                "columns": columns,
                "loglik": loglik,
                "Py": Py,
                "beta": cho_solve(A, ViX.T @ self.y),
                "beta_covariance": cho_solve(A, np.eye(self.X.shape[1])),
            },
        )

    def information(self, point: Point, *, loglik: bool) -> Information:
        P, columns = point.data["P"], point.data["columns"]
        ai = 0.5 * columns.T @ P @ columns
        return Information(ai=(ai + ai.T) / 2, loglik=point.data["loglik"], loglik_se=0.0)
