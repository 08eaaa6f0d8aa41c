"""The matrix-free evaluator: block PCG, Hutchinson traces, SLQ log-determinant.

Set-up (once per fit; passes counted by kind in `count.passes`):
    1 + q weighted passes    range finder for the preconditioner (none when rank = 0)
    1 stacked pass           K_g [W | y~ | Q]: Hutchinson and HE products, preconditioner core
Per `score(theta)`: one block PCG on [X | y~ | W] (one pass per PCG iteration), with its own
tolerance per column (`pcg_tol` for X and y~, `probe_tol` for the probes W):
    P V = H^-1 V - H^-1 X (X^T H^-1 X)^-1 (H^-1 X)^T V
then K_g P y: one stacked pass, or none for G = 1, where H P y = y~ - X c with
c = (X^T H^-1 X)^-1 (H^-1 X)^T y~ gives, with the recursive residuals r of the solves,
    K P y = (y~ - r_y - (X - r_X) c - theta_e P y) / theta_1.
Per `information(point)`: one block PCG on the G + 1 columns K_i P y (K_e = I) for AI, at
`ai_tol`, with the residual term of a warm-started solve (V_i^T H^-1 V_j = V_i^T x_j +
x_i^T r_j up to second order); with `loglik=True` the SLQ probe columns M^1/2 Z ride in the
same block:
    log|H| = log|M| + SLQ from the Lanczos tridiagonals of the M^1/2 Z columns.
The traces reuse the W solves (Hutchinson 1990, Rademacher probes; `dreml.reml.hutchinson`):
    a_ib = (K_i w_b)^T (P w_b),   tr(P K_i) ~ mean_b a_ib  (with control variates).

Warm starts: each solve starts from the previous solve's solution x (theta moves little
after the first iteration). PCG needs H' x at the new theta': for G = 1 it follows from the
recursive residual r of the old solve without a pass (H x = b - r, so
K x = (b - r - theta_e x) / theta_1 and H' x = theta_1' K x + theta_e' x; H' x = theta_e' x when
theta_1' = 0); for G > 1 it costs one weighted pass per solve (score and AI: two per
iteration). The SLQ columns always start at 0 (Lanczos needs it).

Indefinite H (unconstrained fits only): a preconditioner M(theta) that is not positive definite,
or a PCG direction with p^T H p <= 0 (`dreml.reml.pcg`), raises `IndefiniteError`; the passes
spent are counted, and nothing of the failed solve is kept for warm starts.

The operator may offer `traces()` -> tr(K_g), shape (G,) (an optional extension of the
protocol). Then the Hutchinson estimates use control variates and SLQ's control variate is
unbiased. Without `traces()`, tr(K_g) is estimated from W and the trace control variates are
not used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.protocol import GRMOperator
from dreml.reml.config import FitConfig
from dreml.reml.effects import Effects
from dreml.reml.evaluation import IndefiniteError, Information, PassCounter, Point, haseman_elston, residualise
from dreml.reml.hutchinson import hutchinson
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


@dataclass(frozen=True)
class MainSolve:
    """The score's main block solve at theta and what follows from it.

    Fields:
        result: the block PCG; its first p columns are H^-1 X, the next H^-1 y~.
        HiX: H^-1 X, shape (n, p).
        A: Cholesky factor of X^T H^-1 X (`scipy.linalg.cho_factor`).
        c: the GLS coefficients (X^T H^-1 X)^-1 (H^-1 X)^T y~, shape (p,).
        Py: P y, shape (n,).
        KPy: K_g P y, shape (G, n).
    """

    result: PCGResult
    HiX: np.ndarray
    A: tuple[np.ndarray, bool]
    c: np.ndarray
    Py: np.ndarray
    KPy: np.ndarray

    def project(self, HiV: np.ndarray, V: np.ndarray) -> np.ndarray:
        """P V from H^-1 V."""
        return HiV - self.HiX @ cho_solve(self.A, self.HiX.T @ V)


@dataclass(frozen=True)
class _Solved:
    """A finished solve kept for warm starts: H(theta) x = b - r."""

    theta: np.ndarray  # shape: (G + 1,)
    x: np.ndarray  # shape: (n, k)
    Hx: np.ndarray | None  # shape: (n, k); kept for G = 1 only, where it replaces a pass


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
        self.op, self.X, self.config, self.probes = operator, X, config, probes
        self.count = PassCounter(operator)
        n, B = probes.W.shape
        self.y = residualise(y, X)
        with self.count("setup"):
            Q = range_basis(operator, probes.Omega, config.precond_power_iters)
            KB = np.asarray(operator.matmat(np.column_stack([probes.W, self.y, Q])), dtype=np.float64)
        self.KW = KB[:, :, :B]  # shape: (G, n, B)
        self.Ky = KB[:, :, B]  # shape: (G, n)
        rank = min(config.precond_rank, Q.shape[1], n - 1)
        traces = operator_traces(operator)
        self.core = build_projected_core(Q, KB[:, :, B + 1 :], probes.W, self.KW, rank, traces)
        # control variates w_b^T K_h w_b - tr(K_h), shape (G, B), or None
        self.controls = None if traces is None else np.einsum("nb,gnb->gb", probes.W, self.KW) - traces[:, None]
        self._main_rhs = np.column_stack([X, self.y, probes.W])
        self._main_tol = np.r_[np.full(X.shape[1] + 1, config.pcg_tol), np.full(B, config.probe_tol)]
        self._last: dict[str, _Solved] = {}

    def start(self) -> np.ndarray:
        """Randomised Haseman-Elston: tr(K_g K_h) ~ mean_b (K_g w_b)^T (K_h w_b)."""
        n, B = self.probes.W.shape
        G = self.KW.shape[0]
        T = np.empty((G + 1, G + 1))
        T[:G, :G] = np.einsum("gnb,hnb->gh", self.KW, self.KW) / B
        T[:G, G] = T[G, :G] = np.einsum("nb,gnb->g", self.probes.W, self.KW) / B
        T[G, G] = n
        q = np.append(self.Ky @ self.y, self.y @ self.y)
        return haseman_elston(T, q, self.y @ self.y / (n - self.X.shape[1]))

    def _apply_H(self, theta: np.ndarray, V: np.ndarray) -> np.ndarray:
        """H V = sum_g theta_g K_g V + theta_e V: one weighted pass."""
        return np.asarray(self.op.matmat(V, weights=theta[:-1]), dtype=np.float64) + float(theta[-1]) * V

    def _warm_start(self, kind: str, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(x, H(theta) x) from the last solve of this kind (formulas in the module docstring)."""
        last = self._last.get(kind)
        if last is None:
            return None
        if last.Hx is not None and theta[0] == 0:
            return last.x, theta[1] * last.x
        if last.Hx is not None and last.theta[0] != 0:
            Kx = (last.Hx - last.theta[1] * last.x) / last.theta[0]
            return last.x, theta[0] * Kx + theta[1] * last.x
        with self.count("warm_start"):
            return last.x, self._apply_H(theta, last.x)

    def _solve(
        self,
        kind: str,
        theta: np.ndarray,
        rhs: np.ndarray,
        tol: np.ndarray,
        M: CorePreconditioner,
        cold_columns: int = 0,
        label: str | None = None,
    ) -> PCGResult:
        """H^-1 rhs by block PCG, warm-started from the last solve of `kind` except for the
        last `cold_columns` columns (started at 0); passes counted as `label` (default `kind`)."""
        warm = self._warm_start(kind, theta)
        x0 = Hx0 = None
        if warm is not None:
            pad = np.zeros((rhs.shape[0], cold_columns))
            x0, Hx0 = np.hstack([warm[0], pad]), np.hstack([warm[1], pad])
        with self.count(label or kind):
            result = block_pcg(
                lambda V: self._apply_H(theta, V),
                rhs,
                solve_M=M.solve,
                tol=tol,
                max_iter=self.config.pcg_max_iter,
                x0=x0,
                Hx0=Hx0,
            )
        if result.indefinite:  # nothing of this solve is kept for warm starts
            raise IndefiniteError(result.status)
        k = rhs.shape[1] - cold_columns
        Hx = rhs[:, :k] - result.r[:, :k] if theta.shape[0] == 2 else None
        self._last[kind] = _Solved(theta, result.x[:, :k], Hx)
        return result

    def main_solve(self, theta: np.ndarray, M: CorePreconditioner) -> MainSolve:
        """The block PCG on `self._main_rhs` = [X | y~ | ...] at theta, and what follows from its
        first p + 1 columns (`MainSolve`)."""
        p = self.X.shape[1]
        result = self._solve("score", theta, self._main_rhs, self._main_tol, M)
        HiX = result.x[:, :p]
        A = cho_factor(self.X.T @ HiX, lower=True)
        c = cho_solve(A, HiX.T @ self.y)
        Py = result.x[:, p] - HiX @ c
        if theta.shape[0] == 2 and theta[0] != 0:
            # H P y = y~ - r_y - (X - r_X) c from the recursive residuals r (no pass)
            HPy = self.y - result.r[:, p] - (self.X - result.r[:, :p]) @ c
            KPy = ((HPy - theta[1] * Py) / theta[0])[None]
        else:
            with self.count("score"):
                KPy = np.asarray(self.op.matmat(Py[:, None]), dtype=np.float64)[:, :, 0]
        return MainSolve(result, HiX, A, c, Py, KPy)

    def point(
        self, theta: np.ndarray, main: MainSolve, M: CorePreconditioner, samples: np.ndarray, failures: list[str], stats: dict
    ) -> Point:
        """The score at theta from the main solve and the Hutchinson samples (G + 1, B)."""
        traces, traces_cov = hutchinson(samples, self.controls)
        if main.result.status != "converged":
            failures = [f"score solve: {main.result.status}", *failures]
        V = np.vstack([main.KPy, main.Py[None]]).T  # shape: (n, G + 1), columns K_i P y
        p = self.X.shape[1]
        status = "converged" if not failures else "; ".join(failures)
        return Point(
            theta=theta,
            score=-0.5 * traces + 0.5 * (main.Py @ V),
            score_cov=traces_cov / 4,
            failures=tuple(failures),
            stats={"pcg": main.result.stats(), **stats, "trace_se": np.sqrt(np.diag(traces_cov)).tolist()},
            data={
                "Py": main.Py,
                "V": V,
                "project": main.project,
                "M": M,
                "logdet_A": 2.0 * float(np.sum(np.log(np.diag(main.A[0])))),
                "effects": Effects(main.c, cho_solve(main.A, np.eye(p)), main.Py, main.KPy, status),
            },
        )

    def score(self, theta: np.ndarray) -> Point:
        M = self.core.at(theta)
        main = self.main_solve(theta, M)
        W = self.probes.W
        PW = main.project(main.result.x[:, self.X.shape[1] + 1 :], W)
        samples = np.vstack([np.einsum("gnb,nb->gb", self.KW, PW), np.einsum("nb,nb->b", W, PW)[None]])
        return self.point(theta, main, M, samples, [], {})

    def information(self, point: Point, *, loglik: bool) -> Information:
        M = point.data["M"]
        return information_from_columns(
            self, point, point.data["V"], loglik=loglik, trace_MH=lambda: float(point.theta @ M.traces())
        )


def information_from_columns(
    evaluator, point: Point, columns: np.ndarray, *, loglik: bool, trace_MH: Callable[[], float]
) -> Information:
    """The average information 1/2 V_i^T P V_j of the columns V_i (K_i P y) at `point`, from
    one block PCG with the residual term of a warm start, and with `loglik` the SLQ
    log-likelihood from probe columns riding in the same block (module docstring).

    Shared by the univariate and the bivariate evaluators: `evaluator` has `config`, `probes`,
    `y` and `_solve`; `point.data` holds `M` (the preconditioner), `project` (P from H^-1),
    `logdet_A` and `Py`; `trace_MH()` is tr(M^-1 H), the SLQ control variate.
    """
    M, project = point.data["M"], point.data["project"]
    k = columns.shape[1]
    rhs, tol, slq_columns = columns, np.full(k, evaluator.config.ai_tol), 0
    if loglik:
        slq_columns = evaluator.probes.Z.shape[1]
        rhs = np.hstack([columns, M.sqrt_apply(evaluator.probes.Z)])
        tol = np.r_[tol, np.full(slq_columns, evaluator.config.slq_tol)]
    result = evaluator._solve(
        "information", point.theta, rhs, tol, M, cold_columns=slq_columns, label="final" if loglik else "information"
    )
    x, r = result.x[:, :k], result.r[:, :k]
    ai = 0.5 * (columns.T @ project(x, columns) + x.T @ r)
    failures = () if result.status == "converged" else (f"information solve: {result.status}",)
    out = {"ai": (ai + ai.T) / 2, "failures": failures, "stats": {"pcg_ai": result.stats()}}
    if not loglik:
        return Information(**out)
    slq, slq_se = slq_logdet(result, np.arange(k, k + slq_columns), trace_MH())
    value = -0.5 * (M.logdet() + slq + point.data["logdet_A"] + float(evaluator.y @ point.data["Py"]))
    return Information(**out, loglik=value, loglik_se=0.5 * slq_se)
