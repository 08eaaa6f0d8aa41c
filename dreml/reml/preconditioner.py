"""The projected-core preconditioner P(theta) = d I + U C(theta) U^T (called M in the solvers).

U (n, r) holds approximate top eigenvectors of the average GRM  Kbar = (1/G) sum_g K_g, found
once per fit by randomised subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4 with
Rayleigh-Ritz, Alg. 5.3). The unweighted average is used because U must serve every theta the
optimizer visits; the theta-dependence lives in the r x r core. Once per fit:
    K_g^U = U^T K_g U                                  (from the stacked pass on Q)
    rho_g = tr((I - U U^T) K_g (I - U U^T)) / (n - r)  (mean residual eigenvalue of K_g,
            Hutchinson with the fit's probes W, whose products K_g W exist already)
At theta:
    d = theta_e + sum_g theta_g rho_g,      core = d I_r + C = sum_g theta_g K_g^U + theta_e I_r
    M = d (I - U U^T) + U core U^T
so on span(U) M equals U^T H U and elsewhere the mean of H's residual spectrum. U being
orthonormal, Woodbury is exact and cheap:
    M^-1 = (I - U U^T) / d + U core^-1 U^T,     log|M| = (n - r) log d + log|core|,
    M^1/2 = sqrt(d) (I - U U^T) + U core^1/2 U^T  (to draw SLQ probes with covariance M).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from dreml.operators.protocol import GRMOperator


@jax.jit
def _woodbury(U, d, core_inv, R):
    UR = U.T @ R
    return (R - U @ UR) / d + U @ (core_inv @ UR)


@jax.jit
def _sqrt_apply(U, d, core_sqrt, Z):
    UZ = U.T @ Z
    return jnp.sqrt(d) * (Z - U @ UZ) + U @ (core_sqrt @ UZ)


@dataclass(frozen=True)
class CorePreconditioner:
    """M(theta) for one theta: apply M^-1 and M^1/2, and log|M| exactly."""

    U: jax.Array  # shape: (n, r)
    d: float
    core: np.ndarray  # shape: (r, r), sum_g theta_g K_g^U + theta_e I

    def __post_init__(self) -> None:
        lam, vecs = np.linalg.eigh(self.core)
        if lam.min() <= 0 or self.d <= 0:
            raise ValueError("the preconditioner core must be positive definite (theta_e > 0, theta_g >= 0)")
        object.__setattr__(self, "_core_inv", jnp.asarray((vecs / lam) @ vecs.T))
        object.__setattr__(self, "_core_sqrt", jnp.asarray((vecs * np.sqrt(lam)) @ vecs.T))
        object.__setattr__(self, "_logdet_core", float(np.sum(np.log(lam))))

    def solve(self, R: jax.Array) -> jax.Array:
        """M^-1 R, shape (n, k)."""
        return _woodbury(self.U, self.d, self._core_inv, R)

    def sqrt_apply(self, Z: np.ndarray) -> np.ndarray:
        """M^1/2 Z, shape (n, k)."""
        return np.asarray(_sqrt_apply(self.U, self.d, self._core_sqrt, jnp.asarray(Z)))

    def logdet(self) -> float:
        """log|M| = (n - r) log d + log|core|."""
        n, r = self.U.shape
        return (n - r) * float(np.log(self.d)) + self._logdet_core


@dataclass(frozen=True)
class ProjectedCore:
    """The theta-independent part, built once per fit.

    Fields:
        U: orthonormal columns, shape (n, r).
        KU: U^T K_g U, shape (G, r, r).
        rho: mean residual eigenvalue of each K_g outside span(U), shape (G,).
        ritz: Ritz values of Kbar on span(U), descending, shape (r,).
    """

    U: np.ndarray
    KU: np.ndarray
    rho: np.ndarray
    ritz: np.ndarray

    def at(self, theta: np.ndarray) -> CorePreconditioner:
        """M(theta) for theta = (theta_1..theta_G, theta_e)."""
        g, e = np.asarray(theta[:-1]), float(theta[-1])
        d = e + float(g @ self.rho)
        core = np.einsum("g,gij->ij", g, self.KU) + e * np.eye(self.U.shape[1])
        return CorePreconditioner(U=jnp.asarray(self.U), d=d, core=(core + core.T) / 2)


def range_basis(operator: GRMOperator, Omega: np.ndarray, power_iters: int) -> np.ndarray:
    """Orthonormal Q (n, l) spanning Kbar^(q+1) Omega: 1 + power_iters weighted passes.

    Arguments:
        operator: the GRM operator.
        Omega: Gaussian test matrix, shape (n, l).
        power_iters: q, subspace iterations (re-orthonormalised each time; Halko et al. Alg. 4.4).
    """
    weights = np.full(operator.n_components, 1.0 / operator.n_components)
    Q, _ = np.linalg.qr(operator.matmat(Omega, weights=weights))
    for _ in range(power_iters):
        Q, _ = np.linalg.qr(operator.matmat(Q, weights=weights))
    return Q


def build_projected_core(
    Q: np.ndarray, KQ: np.ndarray, W: np.ndarray, KW: np.ndarray, rank: int
) -> ProjectedCore:
    """Rayleigh-Ritz on span(Q), then K_g^U and rho_g without further passes.

    Arguments:
        Q: orthonormal basis from `range_basis`, shape (n, l), l >= rank.
        KQ: stacked K_g Q, shape (G, n, l).
        W: the fit's Rademacher probes, shape (n, B).
        KW: stacked K_g W, shape (G, n, B).
        rank: r, eigenvectors kept.

    Returns:
        `ProjectedCore`.
    """
    n = Q.shape[0]
    QKQ = np.einsum("ni,gnj->gij", Q, KQ)
    S = QKQ.mean(axis=0)
    lam, V = np.linalg.eigh((S + S.T) / 2)
    order = np.argsort(lam)[::-1][:rank]
    V = V[:, order]
    U = Q @ V
    KU_full = np.einsum("gnl,lr->gnr", KQ, V)  # K_g U
    KU = np.einsum("nr,gns->grs", U, KU_full)
    UW = U.T @ W
    W_res = W - U @ UW
    # w~^T K_g w~ with K_g w~ = K_g W - (K_g U)(U^T W)
    KW_res = KW - np.einsum("gnr,rb->gnb", KU_full, UW)
    tr_res = np.einsum("nb,gnb->g", W_res, KW_res) / W.shape[1]
    rho = np.maximum(tr_res, 0.0) / (n - U.shape[1])
    return ProjectedCore(U=U, KU=(KU + KU.transpose(0, 2, 1)) / 2, rho=rho, ritz=lam[order])
