"""The matrix-free path of a bivariate fit: block PCG, Hutchinson traces and SLQ on the stacked space.

The univariate machinery (`dreml.reml.pcg.block_pcg`, `dreml.reml.hutchinson.hutchinson`,
`dreml.reml.slq.slq_logdet`) runs unchanged on the N-dimensional stacked space (notation in
`dreml.reml.bivariate_model`); only the product changes:
    V(theta) U = sum_c theta_c A_c U    from one stacked pass K_g [pad_a(U_a) | pad_b(U_b)]
(2 k columns of n samples for a block of k stacked columns).

Set-up (passes counted by kind in `count.passes`): one stacked pass K_g [pad_a([W_a | y~_a]) |
pad_b([W_b | y~_b])] for the Rademacher probes W (N x B) and y~, giving A_c W for the traces
and the Haseman-Elston start. Per `score(theta)`: one block PCG on [X | y~ | W] (one pass per
iteration; `pcg_tol` for X and y~, `probe_tol` for W), then one stacked pass of [pad_a(P y)_a |
pad_b(P y)_b] for the columns A_c P y. Per `information(point)`: one block PCG on the C columns
A_c P y at `ai_tol` (AI with the residual term of a warm start, as `dreml.reml.randomised`), with
the SLQ columns M^1/2 Z when the log-likelihood is asked for. Warm starts: every solve starts
from the last solution of its kind, at the price of one pass for V(theta') x.

Traces: a_cb = (A_c w_b)^T (P w_b), tr(P A_c) ~ mean_b a_cb, with regression control variates
w_b^T A_c w_b - tr(A_c) for the 3 G genetic components when the operator offers `diagonal()`
(tr(A_ga) = sum_{i in S_a} diag(K_g)_i, tr(A_gab) = 0); without it tr(K_aa), tr(K_bb) are
estimated from W and no control variate is used.

Preconditioner: M = diag(d_a I_{n_a}, d_b I_{n_b}), d_t = theta_et + sum_g max(theta_gt, 0) tr(K_tt) / n_t
(each trait's share of the diagonal of V): it puts both traits on one scale, so CG does not
stall on the trait of smaller variance; log|M| and tr(M^-1 V) are exact. The projected-core
preconditioner of the univariate path (`precond_rank`) is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from scipy.linalg import cho_factor, cho_solve

from dreml.operators.protocol import GRMOperator
from dreml.reml.bivariate_model import StackedLayout, moment_start
from dreml.reml.config import FitConfig
from dreml.reml.evaluation import IndefiniteError, Information, PassCounter, Point, residualise
from dreml.reml.hutchinson import hutchinson
from dreml.reml.pcg import PCGResult, block_pcg
from dreml.reml.probes import Probes
from dreml.reml.randomised import information_from_columns


@dataclass(frozen=True)
class TraitScales:
    """M = diag(d_a I, d_b I) at theta (module docstring).

    Fields:
        d: (d_a, d_b).
        sizes: (n_a, n_b).
    """

    d: tuple[float, float]
    sizes: tuple[int, int]

    @property
    def diagonal(self) -> np.ndarray:
        return np.repeat(np.asarray(self.d), self.sizes)

    def solve(self, R):
        """M^-1 R on a JAX block."""
        return R / jnp.asarray(self.diagonal)[:, None]

    def sqrt_apply(self, Z: np.ndarray) -> np.ndarray:
        return Z * np.sqrt(self.diagonal)[:, None]

    def logdet(self) -> float:
        return float(sum(n * np.log(d) for n, d in zip(self.sizes, self.d)))


class BivariateRandomisedEvaluator:
    """Randomised bivariate evaluator over theta (shape (C,), `StackedLayout` order).

    Arguments:
        operator: any GRM operator over the layout's n samples.
        layout: the traits' rows and components.
        y: stacked phenotypes, shape (N,).
        X: block-diagonal covariates, shape (N, p_a + p_b).
        p: (p_a, p_b).
        config: the fit's settings (probe counts and tolerances).
        probes: W (N, B) and Z (N, s) on the stacked space (`dreml.reml.probes.draw_probes`).
    """

    def __init__(
        self,
        operator: GRMOperator,
        layout: StackedLayout,
        y: np.ndarray,
        X: np.ndarray,
        p: tuple[int, int],
        config: FitConfig,
        probes: Probes,
    ) -> None:
        self.op, self.layout, self.X, self.p, self.config, self.probes = operator, layout, X, p, config, probes
        self.count = PassCounter(operator)
        self.y = residualise(y, X)
        W = probes.W
        B = W.shape[1]
        with self.count("setup"):
            U = np.column_stack([W, self.y])
            blocks = layout.blocks(np.asarray(operator.matmat(layout.padded(U)), dtype=np.float64), B + 1)
        self.KW = {k: v[..., :B] for k, v in blocks.items()}  # K_aa W_a, K_ba W_a, K_ab W_b, K_bb W_b: (G, n_., B)
        self.Ky = {k: v[..., B] for k, v in blocks.items()}
        Wa, Wb = layout.split(W)
        quad_a = np.einsum("nb,gnb->gb", Wa, self.KW["aa"])  # w_a^T K_aa w_a, shape (G, B)
        quad_b = np.einsum("nb,gnb->gb", Wb, self.KW["bb"])
        diagonal = getattr(operator, "diagonal", None)
        if callable(diagonal):
            d = np.asarray(diagonal(), dtype=np.float64)
            self.trace_K = np.stack([d[:, layout.rows[0]].sum(axis=1), d[:, layout.rows[1]].sum(axis=1)])  # (2, G)
            controls = np.zeros((3 * layout.G, B))
            controls[0::3] = quad_a - self.trace_K[0][:, None]
            controls[1::3] = quad_b - self.trace_K[1][:, None]
            controls[2::3] = 2 * np.einsum("nb,gnb->gb", Wa, self.KW["ab"])
            self.controls: np.ndarray | None = controls
        else:
            self.trace_K = np.stack([quad_a.mean(axis=1), quad_b.mean(axis=1)])
            self.controls = None
        self._main_rhs = np.column_stack([X, self.y, W])
        self._main_tol = np.r_[np.full(X.shape[1] + 1, config.pcg_tol), np.full(B, config.probe_tol)]
        self._last: dict[str, np.ndarray] = {}

    def start(self) -> np.ndarray:
        """Randomised bivariate Haseman-Elston: tr(A_c A_d) ~ mean_b (A_c w_b)^T (A_d w_b)."""
        L, G = self.layout, self.layout.G
        W = self.probes.W
        B = W.shape[1]
        Wa, Wb = L.split(W)
        ya, yb = L.split(self.y)
        moments = []
        for t, (Wt, y, key) in enumerate(((Wa, ya, "aa"), (Wb, yb, "bb"))):
            KW = self.KW[key]
            T = np.empty((G + 1, G + 1))
            T[:G, :G] = np.einsum("gnb,hnb->gh", KW, KW) / B
            T[:G, G] = T[G, :G] = np.einsum("nb,gnb->g", Wt, KW) / B
            T[G, G] = L.sizes[t]
            moments.append((T, np.append(self.Ky[key] @ y, y @ y), float(y @ y / (L.sizes[t] - self.p[t]))))
        R = int(L.residual_covariance)
        T = np.zeros((G + R, G + R))
        T[:G, :G] = (
            np.einsum("gnb,hnb->gh", self.KW["ab"], self.KW["ab"]) + np.einsum("gnb,hnb->gh", self.KW["ba"], self.KW["ba"])
        ) / B
        q = np.zeros(G + R)
        q[:G] = 2 * self.Ky["ab"] @ ya
        if R:
            JWb, JtWa = L.J(Wb), L.Jt(Wa)
            T[:G, G] = T[G, :G] = (np.einsum("gnb,nb->g", self.KW["ab"], JWb) + np.einsum("gnb,nb->g", self.KW["ba"], JtWa)) / B
            T[G, G] = 2 * L.n_overlap
            q[G] = 2 * ya[L.oa] @ yb[L.ob]
        return moment_start(L, moments, (T, q))

    def _apply_V(self, theta: np.ndarray, U: np.ndarray) -> np.ndarray:
        """V(theta) U: one stacked pass."""
        L = self.layout
        KU = np.asarray(self.op.matmat(L.padded(U)), dtype=np.float64)
        return L.apply_V(theta, U, L.blocks(KU, U.shape[1]))

    def scales(self, theta: np.ndarray) -> TraitScales:
        G = self.layout.G
        da, db = (
            float(theta[3 * G + t] + np.maximum(theta[t : 3 * G : 3], 0.0) @ self.trace_K[t] / self.layout.sizes[t])
            for t in range(2)
        )
        return TraitScales((da, db), self.layout.sizes)

    def _trace_MV(self, theta: np.ndarray, M: TraitScales) -> float:
        """tr(M^-1 V(theta)) (the cross components have no diagonal)."""
        G = self.layout.G
        return float(
            sum((theta[t : 3 * G : 3] @ self.trace_K[t] + self.layout.sizes[t] * theta[3 * G + t]) / M.d[t] for t in range(2))
        )

    def _solve(
        self,
        kind: str,
        theta: np.ndarray,
        rhs: np.ndarray,
        tol: np.ndarray,
        M: TraitScales,
        cold_columns: int = 0,
        label: str | None = None,
    ) -> PCGResult:
        """V^-1 rhs by block PCG, warm-started from the last solve of `kind` (one pass for V x0),
        the last `cold_columns` columns from 0."""
        x0 = Hx0 = None
        last = self._last.get(kind)
        if last is not None:
            with self.count("warm_start"):
                Vx = self._apply_V(theta, last)
            pad = np.zeros((rhs.shape[0], cold_columns))
            x0, Hx0 = np.hstack([last, pad]), np.hstack([Vx, pad])
        with self.count(label or kind):
            result = block_pcg(
                lambda U: self._apply_V(theta, U),
                rhs,
                solve_M=M.solve,
                tol=tol,
                max_iter=self.config.pcg_max_iter,
                x0=x0,
                Hx0=Hx0,
            )
        if result.indefinite:
            raise IndefiniteError(result.status)
        self._last[kind] = result.x[:, : rhs.shape[1] - cold_columns]
        return result

    def score(self, theta: np.ndarray) -> Point:
        L, G = self.layout, self.layout.G
        p = self.X.shape[1]
        W = self.probes.W
        M = self.scales(theta)
        if min(M.d) <= 0:
            raise IndefiniteError(f"the preconditioner's trait scales {M.d} are not positive")
        result = self._solve("score", theta, self._main_rhs, self._main_tol, M)
        ViX = result.x[:, :p]
        A = cho_factor(self.X.T @ ViX, lower=True)

        def project(ViU: np.ndarray, U: np.ndarray) -> np.ndarray:
            """P U from V^-1 U."""
            return ViU - ViX @ cho_solve(A, ViX.T @ U)

        c = cho_solve(A, ViX.T @ self.y)
        Py = result.x[:, p] - ViX @ c
        PW = project(result.x[:, p + 1 :], W)
        with self.count("score"):
            KU = np.asarray(self.op.matmat(L.padded(Py[:, None])), dtype=np.float64)
        columns = L.component_columns(Py, L.blocks(KU, 1))  # shape: (N, C)
        Wa, Wb = L.split(W)
        PWa, PWb = L.split(PW)
        samples = np.zeros((L.C, W.shape[1]))
        samples[0 : 3 * G : 3] = np.einsum("gnb,nb->gb", self.KW["aa"], PWa)
        samples[1 : 3 * G : 3] = np.einsum("gnb,nb->gb", self.KW["bb"], PWb)
        samples[2 : 3 * G : 3] = np.einsum("gnb,nb->gb", self.KW["ab"], PWa) + np.einsum("gnb,nb->gb", self.KW["ba"], PWb)
        samples[3 * G] = np.einsum("nb,nb->b", Wa, PWa)
        samples[3 * G + 1] = np.einsum("nb,nb->b", Wb, PWb)
        if L.residual_covariance:
            samples[3 * G + 2] = np.einsum("nb,nb->b", L.J(Wb), PWa) + np.einsum("nb,nb->b", L.Jt(Wa), PWb)
        traces, traces_cov = hutchinson(samples, self.controls)
        return Point(
            theta=theta,
            score=-0.5 * traces + 0.5 * (Py @ columns),
            score_cov=traces_cov / 4,
            failures=() if result.status == "converged" else (f"score solve: {result.status}",),
            stats={"pcg": result.stats(), "trace_se": np.sqrt(np.diag(traces_cov)).tolist()},
            data={
                "Py": Py,
                "columns": columns,
                "project": project,
                "M": M,
                "logdet_A": 2.0 * float(np.sum(np.log(np.diag(A[0])))),
                "beta": c,
                "beta_covariance": cho_solve(A, np.eye(p)),
            },
        )

    def information(self, point: Point, *, loglik: bool) -> Information:
        return information_from_columns(
            self, point, point.data["columns"], loglik=loglik, trace_MH=lambda: self._trace_MV(point.theta, point.data["M"])
        )
