"""REML log-likelihood, gradient and average information of the annotated model, exact and randomised.

Model: H(psi) = Z diag(sigma2) Z^T + theta_e I, sigma2 = f(phi) (`dreml.annotations.maps`),
psi = (phi, log theta_e), P = H^-1 - H^-1 X (X^T H^-1 X)^-1 X^T H^-1 and, as in `dreml.reml`,
    l(psi) = -1/2 [log|H| + log|X^T H^-1 X| + y^T P y]        (constant -(n - p)/2 log 2 pi omitted)
Per-variant gradient (dH / d sigma2_j = z_j z_j^T) and the residual's:
    g_j = dl / d sigma2_j = 1/2 [(z_j^T P y)^2 - z_j^T P z_j],   dl / d theta_e = 1/2 [(P y)^T P y - tr P]
then dl / d phi = J^T g with J = d sigma2 / d phi (JAX: a vector-Jacobian product) and
dl / d log theta_e = theta_e dl / d theta_e. The first term of g is one per-variant product
t = Z^T (P y). Average information on psi (Gilmour, Thompson & Cullis 1995), with
u_a = (dH / d psi_a) P y = Z (J_a * t) for phi_a and theta_e P y for log theta_e:
    AI_ab = 1/2 u_a^T P u_b.

Exact path (`ExactEvaluator`): explicit Z, H = L L^T, z_j^T P z_j = diag(Z^T P Z) exactly.
Randomised path (`RandomisedEvaluator`): block PCG (`dreml.reml.pcg`) on H^-1 [X | y~ | W],
one application of H = two passes (Z^T V, then Z (sigma2 * .)); the diagonal by Hutchinson
with the fit's Rademacher probes W (n x B, drawn once; Z^T W computed once):
    z_j^T P z_j = E[(Z^T P w_b)_j (Z^T w_b)_j],
one `zt` pass on [P y | P W] per evaluation. Control variate when ||z_j||^2 is known exactly:
c_jb = (Z^T w_b)_j^2 - ||z_j||^2 has mean 0 (E[w w^T] = I) and the per-variant regression
coefficient over the B probes removes the part of z_j^T P z_j explained by P ~ I / theta_e
(Glasserman 2003, Sec. 4.1). tr P = E[w_b^T P w_b]. The Monte Carlo covariance of the
psi-gradient comes from its B per-probe values (Lavenberg-Welch factor for the fitted
coefficient, as `dreml.reml.hutchinson`).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from scipy.linalg import cho_factor, cho_solve, eigh_tridiagonal

from dreml.annotations.maps import VarianceMap
from dreml.annotations.variants import VariantOperator
from dreml.reml.evaluation import residualise
from dreml.reml.pcg import block_pcg
from dreml.reml.probes import rademacher
from dreml.reml.slq import lanczos_tridiagonal


@dataclass(frozen=True)
class Point:
    """The gradient at psi (and what `information` needs, in `data`).

    Fields:
        psi: (phi, log theta_e), shape (q + 1,).
        sigma2: per-variant variances, shape (m,).
        theta_e: residual variance.
        grad: dl / d psi, shape (q + 1,).
        grad_cov: its Monte Carlo covariance, shape (q + 1, q + 1) (0 on the exact path).
        variant_grad: g_j = dl / d sigma2_j, shape (m,).
        loglik: l(psi) on the exact path, NaN on the randomised one (see `loglik`).
        failures: messages of PCG solves that missed their tolerance.
        stats: JSON-serialisable solver statistics for the history.
    """

    psi: np.ndarray
    sigma2: np.ndarray
    theta_e: float
    grad: np.ndarray
    grad_cov: np.ndarray
    variant_grad: np.ndarray
    loglik: float
    failures: tuple[str, ...] = ()
    stats: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict, repr=False)


def chain(vmap: VarianceMap, phi: np.ndarray, G: np.ndarray) -> np.ndarray:
    """J^T G for J = d sigma2 / d phi at phi: G of shape (m,) -> (q,), (m, k) -> (q, k)."""
    _, vjp = jax.vjp(vmap.sigma2, jnp.asarray(phi))
    if G.ndim == 1:
        return np.asarray(vjp(jnp.asarray(G))[0])
    return np.asarray(jax.vmap(lambda c: vjp(c)[0], in_axes=1, out_axes=1)(jnp.asarray(G)))


def jacobian(vmap: VarianceMap, phi: np.ndarray) -> np.ndarray:
    """J = d sigma2 / d phi, shape (m, q) (forward mode: q is small for the maps that use it)."""
    return np.asarray(jax.jacfwd(vmap.sigma2)(jnp.asarray(phi)))


def split(vmap: VarianceMap, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(phi, sigma2, theta_e) from psi."""
    phi = np.asarray(psi[:-1], dtype=np.float64)
    return phi, np.asarray(vmap.sigma2(jnp.asarray(phi)), dtype=np.float64), float(np.exp(psi[-1]))


class PassCounter:
    """Passes over the genotypes by kind (`with counter("score"): ...`)."""

    def __init__(self, variants: VariantOperator) -> None:
        self.variants = variants
        self.passes: Counter[str] = Counter()

    @contextlib.contextmanager
    def __call__(self, kind: str) -> Iterator[None]:
        before = self.variants.passes
        try:
            yield
        finally:
            self.passes[kind] += self.variants.passes - before


class ExactEvaluator:
    """Dense reference: Z explicit (`variants.explicit()`, one pass on a genotype operator)."""

    def __init__(self, variants: VariantOperator, vmap: VarianceMap, y: np.ndarray, X: np.ndarray) -> None:
        self.count = PassCounter(variants)
        with self.count("setup"):
            self.Z = np.asarray(variants.explicit(), dtype=np.float64)  # shape: (n, m)
        self.vmap = vmap
        self.y, self.X = residualise(y, X), X

    def evaluate(self, psi: np.ndarray, *, per_probe: bool = False) -> Point:
        phi, sigma2, theta_e = split(self.vmap, psi)
        Z, n = self.Z, self.Z.shape[0]
        H = (Z * sigma2) @ Z.T + theta_e * np.eye(n)
        L = cho_factor(H, lower=True)
        Hi = cho_solve(L, np.eye(n))
        HiX = Hi @ self.X
        A = cho_factor(self.X.T @ HiX, lower=True)
        P = Hi - HiX @ cho_solve(A, HiX.T)
        P = (P + P.T) / 2
        Py = P @ self.y
        t = Z.T @ Py
        diag = np.einsum("ij,ij->j", Z, P @ Z)
        g = 0.5 * (t**2 - diag)
        g_e = 0.5 * (Py @ Py - np.trace(P))
        grad = np.append(chain(self.vmap, phi, g), theta_e * g_e)
        logdet = 2.0 * float(np.sum(np.log(np.diag(L[0])))) + 2.0 * float(np.sum(np.log(np.diag(A[0]))))
        loglik = -0.5 * (logdet + float(self.y @ Py))
        q1 = grad.shape[0]
        return Point(
            psi=np.asarray(psi, dtype=np.float64),
            sigma2=sigma2,
            theta_e=theta_e,
            grad=grad,
            grad_cov=np.zeros((q1, q1)),
            variant_grad=g,
            loglik=loglik,
            data={"P": P, "Py": Py, "t": t},
        )

    def information(self, point: Point) -> np.ndarray:
        """AI on psi, shape (q + 1, q + 1)."""
        J = jacobian(self.vmap, point.psi[:-1])
        U = np.hstack([self.Z @ (J * point.data["t"][:, None]), point.theta_e * point.data["Py"][:, None]])
        ai = 0.5 * U.T @ point.data["P"] @ U
        return (ai + ai.T) / 2

    def loglik(self, point: Point) -> tuple[float, float]:
        return point.loglik, 0.0


@dataclass(frozen=True)
class SolverSettings:
    """The PCG and probe settings of the randomised evaluator (from `AnnotConfig`)."""

    n_probes: int = 100
    slq_probes: int = 64
    pcg_tol: float = 1e-5
    probe_tol: float = 1e-4
    ai_tol: float = 1e-2
    slq_tol: float = 1e-2
    pcg_max_iter: int = 500
    control_variates: bool = True
    warm_start: bool = True


class RandomisedEvaluator:
    """Matrix-free evaluator: H products through the variant operator, PCG, Hutchinson.

    Arguments:
        variants: the per-variant products.
        vmap: the variance map.
        y, X: phenotype (n,) and covariates (n, p).
        settings: `SolverSettings`.
        seed: seeds the probes W (n x B) and the SLQ probes (n x s), drawn once in that order.
    """

    def __init__(
        self, variants: VariantOperator, vmap: VarianceMap, y: np.ndarray, X: np.ndarray, settings: SolverSettings, seed: int
    ) -> None:
        self.variants, self.vmap, self.settings = variants, vmap, settings
        self.y, self.X = residualise(y, X), X
        n = variants.n
        rng = np.random.default_rng(seed)
        self.W = rademacher(rng, n, settings.n_probes)  # shape: (n, B)
        self.Zs = rademacher(rng, n, settings.slq_probes)  # shape: (n, s)
        self.count = PassCounter(variants)
        with self.count("setup"):
            self.ZtW = variants.zt(self.W)  # shape: (m, B)
        norms = variants.sum_squares() if settings.control_variates else None
        self.norms = None if norms is None else np.asarray(norms, dtype=np.float64)
        self._previous: np.ndarray | None = None

    def apply_H(self, sigma2: np.ndarray, theta_e: float):
        def apply(V: np.ndarray) -> np.ndarray:
            return self.variants.z(sigma2[:, None] * self.variants.zt(V)) + theta_e * V

        return apply

    def _project(self, HiV: np.ndarray, HiX: np.ndarray, V: np.ndarray, A) -> np.ndarray:
        """P V = H^-1 V - H^-1 X (X^T H^-1 X)^-1 (H^-1 X)^T V."""
        return HiV - HiX @ cho_solve(A, HiX.T @ V)

    def evaluate(self, psi: np.ndarray, *, per_probe: bool = False) -> Point:
        s = self.settings
        phi, sigma2, theta_e = split(self.vmap, psi)
        p, B = self.X.shape[1], self.W.shape[1]
        rhs = np.hstack([self.X, self.y[:, None], self.W])
        tol = np.concatenate([np.full(p + 1, s.pcg_tol), np.full(B, s.probe_tol)])
        apply = self.apply_H(sigma2, theta_e)
        x0 = Hx0 = None
        if s.warm_start and self._previous is not None:
            x0 = self._previous
            with self.count("warm_start"):
                Hx0 = apply(x0)
        with self.count("score"):
            sol = block_pcg(apply, rhs, tol=tol, max_iter=s.pcg_max_iter, x0=x0, Hx0=Hx0)
        self._previous = sol.x
        HiX, Hiy, HiW = sol.x[:, :p], sol.x[:, p], sol.x[:, p + 1 :]
        A = cho_factor(self.X.T @ HiX, lower=True)
        Py = self._project(Hiy, HiX, self.y, A)
        PW = self._project(HiW, HiX, self.W, A)
        with self.count("score"):
            T = self.variants.zt(np.hstack([Py[:, None], PW]))  # shape: (m, 1 + B)
        t, S = T[:, 0], T[:, 1:]
        samples = S * self.ZtW  # a_jb, E = z_j^T P z_j
        q_cv = 0
        if self.norms is not None:
            controls = self.ZtW**2 - self.norms[:, None]  # mean 0
            cc = controls - controls.mean(axis=1, keepdims=True)
            denom = np.einsum("jb,jb->j", cc, cc)
            beta = np.where(
                denom > 0,
                np.einsum("jb,jb->j", samples - samples.mean(axis=1, keepdims=True), cc) / np.where(denom > 0, denom, 1.0),
                0.0,
            )
            samples = samples - beta[:, None] * controls
            q_cv = 1
        diag = samples.mean(axis=1)
        g = 0.5 * (t**2 - diag)
        trace_samples = np.einsum("nb,nb->b", self.W, PW)
        g_e = 0.5 * (Py @ Py - trace_samples.mean())
        grad = np.append(chain(self.vmap, phi, g), theta_e * g_e)
        # per-probe gradients: their spread is the Monte Carlo error of the mean
        per_probe_grad = np.vstack(
            [chain(self.vmap, phi, 0.5 * (t[:, None] ** 2 - samples)), theta_e * 0.5 * (Py @ Py - trace_samples)[None]]
        )  # shape: (q + 1, B)
        dev = per_probe_grad - per_probe_grad.mean(axis=1, keepdims=True)
        scale = 1.0 / max(B - 1 - q_cv, 1) * ((B - 2) / max(B - q_cv - 2, 1) if q_cv else 1.0)
        grad_cov = dev @ dev.T * scale / B
        failures = () if sol.converged.all() else (sol.status,)
        return Point(
            psi=np.asarray(psi, dtype=np.float64),
            sigma2=sigma2,
            theta_e=theta_e,
            grad=grad,
            grad_cov=grad_cov,
            variant_grad=g,
            loglik=float("nan"),
            failures=failures,
            stats={"pcg": sol.stats()},
            data={"HiX": HiX, "A": A, "Py": Py, "t": t, "per_probe": per_probe_grad if per_probe else None},
        )

    def information(self, point: Point) -> np.ndarray:
        """AI on psi: one `z` pass for the u columns, one PCG solve at `ai_tol`."""
        J = jacobian(self.vmap, point.psi[:-1])
        with self.count("information"):
            U = np.hstack([self.variants.z(J * point.data["t"][:, None]), point.theta_e * point.data["Py"][:, None]])
            sol = block_pcg(
                self.apply_H(point.sigma2, point.theta_e), U, tol=self.settings.ai_tol, max_iter=self.settings.pcg_max_iter
            )
        PU = self._project(sol.x, point.data["HiX"], U, point.data["A"])
        ai = 0.5 * U.T @ PU
        return (ai + ai.T) / 2

    def loglik(self, point: Point) -> tuple[float, float]:
        """l(psi) by SLQ (Ubaru, Chen & Saad 2017) on the SLQ probes, and its Monte Carlo SE.

        log|H| = E[z^T log(H) z] from the Lanczos tridiagonals of a PCG solve started at 0; with
        ||z_j||^2 known, tr(H) = sum_j sigma2_j ||z_j||^2 + n theta_e is a control variate
        (E[z^T (log H - H) z] + tr H, as `dreml.reml.slq`).
        """
        with self.count("final"):
            sol = block_pcg(
                self.apply_H(point.sigma2, point.theta_e), self.Zs, tol=self.settings.slq_tol, max_iter=self.settings.pcg_max_iter
            )
        quad = np.empty(self.Zs.shape[1])
        for c in range(self.Zs.shape[1]):
            J = int(sol.column_iterations[c])
            d, off = lanczos_tridiagonal(sol.alpha[:J, c], sol.beta[:J, c])
            lam, vecs = eigh_tridiagonal(d, off)
            log_quad = float(np.sum(vecs[0] ** 2 * np.log(lam)))
            quad[c] = sol.rz0[c] * (log_quad - (d[0] if self.norms is not None else 0.0))
        trace_H = 0.0
        if self.norms is not None:
            trace_H = float(point.sigma2 @ self.norms) + self.variants.n * point.theta_e
        logdet_H = trace_H + float(quad.mean())
        logdet_A = 2.0 * float(np.sum(np.log(np.diag(point.data["A"][0]))))
        loglik = -0.5 * (logdet_H + logdet_A + float(self.y @ point.data["Py"]))
        return loglik, 0.5 * float(quad.std(ddof=1) / np.sqrt(len(quad)))
