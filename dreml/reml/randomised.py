"""The matrix-free evaluator: block PCG, Hutchinson traces, SLQ log-determinant.

Set-up (once per fit; passes counted on the operator):
    1 + q weighted passes    range finder for the preconditioner (none when rank = 0)
    1 stacked pass           K_g [W | y~ | Q]: Hutchinson and HE products, preconditioner core
Per `evaluate(theta)`: one block PCG on [X | y | W | M^1/2 Z] (one pass per PCG iteration):
    P V = H^-1 V - H^-1 X (X^T H^-1 X)^-1 (H^-1 X)^T V
    log|H| = log|M| + SLQ from the Lanczos tridiagonals of the M^1/2 Z columns
Per `derivatives(point)`: one stacked pass K_g P y, then one block PCG on the G + 1 columns
K_i P y (K_e = I) for AI. The traces reuse the W solves (Hutchinson 1990, Rademacher probes):
    a_ib = (K_i w_b)^T (P w_b),   tr(P K_i) ~ mean_b a_ib.

The operator may offer `traces()` -> tr(K_g), shape (G,) (an optional extension of the
protocol). Then c_hb = w_b^T K_h w_b - tr(K_h) (mean zero, free from K_h W) are regression
control variates (Glasserman 2003, Sec. 4.1; coefficients by least squares over the B probes):
    tr(P K_i) ~ mean_b a_ib - beta_i^T mean_b c_b,
which removes the part of P K_i linear in the K_h (a 3-4 fold smaller error, docs/validation.md),
and SLQ's control variate is unbiased. Without `traces()`, tr(K_g) is estimated from W and
the trace control variates are not used.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.protocol import GRMOperator
from dreml.reml.config import FitConfig
from dreml.reml.evaluation import Derivatives, Point, haseman_elston, residualise
from dreml.reml.pcg import PCGResult, block_pcg
from dreml.reml.preconditioner import CorePreconditioner, build_projected_core, range_basis
from dreml.reml.probes import Probes
from dreml.reml.slq import slq_logdet


def operator_traces(operator: GRMOperator) -> np.ndarray | None:
    """tr(K_g) from the operator's optional `traces()`, or None."""
    traces = getattr(operator, "traces", None)
    if not callable(traces):
        return None
    out = np.asarray(traces(), dtype=np.float64).reshape(-1)
    if out.shape != (operator.n_components,):
        raise ValueError(f"operator.traces() must return {operator.n_components} values, got {out.shape}")
    return out


def hutchinson(samples: np.ndarray, controls: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Trace estimates and their Monte Carlo standard errors from per-probe samples.

    Arguments:
        samples: a_ib, shape (G + 1, B).
        controls: mean-zero control variates c_hb, shape (G, B), or None.

    Returns:
        (estimates, standard errors), each shape (G + 1,).
    """
    B = samples.shape[1]
    if controls is None:
        return samples.mean(axis=1), samples.std(axis=1, ddof=1) / np.sqrt(B)
    c = controls - controls.mean(axis=1, keepdims=True)
    beta, *_ = np.linalg.lstsq(c.T, (samples - samples.mean(axis=1, keepdims=True)).T, rcond=None)
    residual = samples - beta.T @ controls
    return residual.mean(axis=1), residual.std(axis=1, ddof=1 + controls.shape[0]) / np.sqrt(B)


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
        Q = range_basis(operator, probes.Omega, config.precond_power_iters)
        KB = np.asarray(operator.matmat(np.column_stack([probes.W, self.y_res, Q])), dtype=np.float64)
        self.KW = KB[:, :, :B]  # shape: (G, n, B)
        self.Ky = KB[:, :, B]  # shape: (G, n)
        rank = min(config.precond_rank, Q.shape[1], n - 1)
        traces = operator_traces(operator)
        self.core = build_projected_core(Q, KB[:, :, B + 1 :], probes.W, self.KW, rank, traces)
        # control variates w_b^T K_h w_b - tr(K_h), shape (G, B), or None
        self.controls = None if traces is None else np.einsum("nb,gnb->gb", probes.W, self.KW) - traces[:, None]

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

    def _solve(self, theta: np.ndarray, B: np.ndarray, M: CorePreconditioner) -> PCGResult:
        """H^-1 B by block PCG, H = sum_g theta_g K_g + theta_e I (one weighted pass per iteration)."""
        weights, theta_e = theta[:-1], float(theta[-1])

        def apply_H(V: np.ndarray) -> np.ndarray:
            return np.asarray(self.op.matmat(V, weights=weights), dtype=np.float64) + theta_e * V

        return block_pcg(apply_H, B, solve_M=M.solve, tol=self.config.pcg_tol, max_iter=self.config.pcg_max_iter)

    def evaluate(self, theta: np.ndarray) -> Point:
        p, B, s = self.X.shape[1], self.probes.W.shape[1], self.probes.Z.shape[1]
        M = self.core.at(theta)
        result = self._solve(theta, np.column_stack([self.X, self.y, self.probes.W, M.sqrt_apply(self.probes.Z)]), M)
        HiX = result.x[:, :p]
        A = cho_factor(self.X.T @ HiX, lower=True)

        def project(HiV: np.ndarray, V: np.ndarray) -> np.ndarray:
            """P V from H^-1 V."""
            return HiV - HiX @ cho_solve(A, HiX.T @ V)

        Py = project(result.x[:, p], self.y)
        PW = project(result.x[:, p + 1 : p + 1 + B], self.probes.W)
        trace_A = float(theta @ M.traces())  # tr(M^-1 H)
        slq, slq_se = slq_logdet(result, np.arange(p + 1 + B, p + 1 + B + s), trace_A)
        logdet_A = 2.0 * float(np.sum(np.log(np.diag(A[0]))))
        loglik = -0.5 * (M.logdet() + slq + logdet_A + float(self.y @ Py))
        return Point(
            theta=theta, loglik=loglik, loglik_se=0.5 * slq_se, stats={"pcg": result.stats()},
            data={"Py": Py, "PW": PW, "project": project, "M": M},
        )

    def derivatives(self, point: Point) -> Derivatives:
        theta, Py, project, PW = point.theta, point.data["Py"], point.data["project"], point.data["PW"]
        W = self.probes.W
        samples = np.vstack([np.einsum("gnb,nb->gb", self.KW, PW), np.einsum("nb,nb->b", W, PW)[None]])
        traces, traces_se = hutchinson(samples, self.controls)
        V = np.vstack([np.asarray(self.op.matmat(Py[:, None]), dtype=np.float64)[:, :, 0], Py[None]]).T
        score = -0.5 * traces + 0.5 * (Py @ V)
        result = self._solve(theta, V, point.data["M"])
        ai = 0.5 * V.T @ project(result.x, V)
        return Derivatives(score=score, ai=(ai + ai.T) / 2, stats={"pcg_ai": result.stats(), "trace_se": traces_se.tolist()})
