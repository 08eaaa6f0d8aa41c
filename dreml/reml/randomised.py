"""The matrix-free evaluator: block PCG, Hutchinson traces, SLQ log-determinant.

Set-up (once per fit; passes counted on the operator):
    1 + q weighted passes    range finder for the preconditioner (none when rank = 0)
    1 stacked pass           K_g [W | y~ | Q]: Hutchinson and HE products, preconditioner core
Per `evaluate(theta)`: one block PCG on [X | y | W | M^1/2 Z] (one pass per PCG iteration):
    P V = H^-1 V - H^-1 X (X^T H^-1 X)^-1 (H^-1 X)^T V
    log|H| = log|M| + SLQ from the Lanczos tridiagonals of the M^1/2 Z columns
Per `derivatives(point)`: one stacked pass K_g P y, then one block PCG on the G + 1 columns
K_i P y (K_e = I) for AI; the traces reuse the W solves (Hutchinson 1990, Rademacher probes):
    tr(P K_g) ~ mean_b (K_g w_b)^T (P w_b),   tr(P) ~ mean_b w_b^T (P w_b).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.protocol import GRMOperator
from dreml.reml.config import FitConfig
from dreml.reml.evaluation import Derivatives, Point, haseman_elston, residualise
from dreml.reml.pcg import PCGResult, block_pcg
from dreml.reml.preconditioner import ProjectedCore, build_projected_core, range_basis
from dreml.reml.probes import Probes
from dreml.reml.slq import slq_logdet


class RandomisedEvaluator:
    """Randomised REML quantities from operator passes.

    Arguments:
        operator: any GRM operator.
        y: phenotype, shape (n,).
        X: covariates, shape (n, p), full column rank.
        config: the fit's settings.
        probes: the fit's random draws (`dreml.reml.probes.draw_probes`).
    """

    def __init__(self, operator: GRMOperator, y: np.ndarray, X: np.ndarray, config: FitConfig, probes: Probes) -> None:
        self.op, self.y, self.X, self.config, self.probes = operator, y, X, config, probes
        n, B = probes.W.shape
        self.y_res = residualise(y, X)
        Q = range_basis(operator, probes.Omega, config.precond_power_iters) if config.precond_rank else np.zeros((n, 0))
        KB = np.asarray(operator.matmat(np.column_stack([probes.W, self.y_res, Q])), dtype=np.float64)
        self.KW = KB[:, :, :B]  # shape: (G, n, B)
        self.Ky = KB[:, :, B]  # shape: (G, n)
        self.core: ProjectedCore | None = None
        if config.precond_rank:
            rank = min(config.precond_rank, Q.shape[1], n - 1)
            self.core = build_projected_core(Q, KB[:, :, B + 1 :], probes.W, self.KW, rank)

    def start(self) -> np.ndarray:
        """Randomised Haseman-Elston: tr(K_g K_h) ~ mean_b (K_g w_b)^T (K_h w_b)."""
        n, B = self.probes.W.shape
        G = self.KW.shape[0]
        T = np.empty((G + 1, G + 1))
        T[:G, :G] = np.einsum("gnb,hnb->gh", self.KW, self.KW) / B
        T[:G, G] = T[G, :G] = np.einsum("nb,gnb->g", self.probes.W, self.KW) / B
        T[G, G] = n
        q = np.append(self.Ky @ self.y_res, self.y_res @ self.y_res)
        return haseman_elston(T, q, self.y_res @ self.y_res / (n - self.X.shape[1]))

    def _solve(self, theta: np.ndarray, B: np.ndarray, M) -> PCGResult:
        """H^-1 B by block PCG, H = sum_g theta_g K_g + theta_e I (one weighted pass per iteration)."""
        weights, theta_e = theta[:-1], float(theta[-1])

        def apply_H(V: np.ndarray) -> np.ndarray:
            return np.asarray(self.op.matmat(V, weights=weights), dtype=np.float64) + theta_e * V

        return block_pcg(
            apply_H, B, solve_M=None if M is None else M.solve,
            tol=self.config.pcg_tol, max_iter=self.config.pcg_max_iter,
        )

    def evaluate(self, theta: np.ndarray) -> Point:
        p, B, s = self.X.shape[1], self.probes.W.shape[1], self.probes.Z.shape[1]
        M = None if self.core is None else self.core.at(theta)
        S = self.probes.Z if M is None else M.sqrt_apply(self.probes.Z)
        result = self._solve(theta, np.column_stack([self.X, self.y, self.probes.W, S]), M)
        HiX = result.x[:, :p]
        A = cho_factor(self.X.T @ HiX, lower=True)

        def project(HiV: np.ndarray, V: np.ndarray) -> np.ndarray:
            """P V from H^-1 V."""
            return HiV - HiX @ cho_solve(A, HiX.T @ V)

        Py = project(result.x[:, p], self.y)
        PW = project(result.x[:, p + 1 : p + 1 + B], self.probes.W)
        slq, slq_se = slq_logdet(result, np.arange(p + 1 + B, p + 1 + B + s))
        logdet_H = (0.0 if M is None else M.logdet()) + slq
        logdet_A = 2.0 * float(np.sum(np.log(np.diag(A[0]))))
        loglik = -0.5 * (logdet_H + logdet_A + float(self.y @ Py))
        stats = {"pcg": result.stats()}
        return Point(
            theta=theta, loglik=loglik, loglik_se=0.5 * slq_se, stats=stats,
            data={"Py": Py, "PW": PW, "project": project, "M": M},
        )

    def derivatives(self, point: Point) -> Derivatives:
        theta, Py, PW, project = point.theta, point.data["Py"], point.data["PW"], point.data["project"]
        B = self.probes.W.shape[1]
        traces = np.append(np.einsum("gnb,nb->g", self.KW, PW), np.einsum("nb,nb->", self.probes.W, PW)) / B
        V = np.vstack([np.asarray(self.op.matmat(Py[:, None]), dtype=np.float64)[:, :, 0], Py[None]]).T
        score = -0.5 * traces + 0.5 * (Py @ V)
        result = self._solve(theta, V, point.data["M"])
        ai = 0.5 * V.T @ project(result.x, V)
        return Derivatives(score=score, ai=(ai + ai.T) / 2, stats={"pcg_ai": result.stats()})
