"""The projected-core preconditioner P(theta) = d I + U C(theta) U^T (called M in the solvers).

U (n, r) holds approximate top eigenvectors of the average GRM  Kbar = (1/G) sum_g K_g, found
once per fit by randomised subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4 with
Rayleigh-Ritz, Alg. 5.3). The unweighted average is used because U must serve every theta the
optimizer visits; the theta-dependence lives in the r x r core. Once per fit:
    K_g^U = U^T K_g U                       (from the stacked pass on the range basis)
    t_g   = tr((I - U U^T) K_g)             (residual trace: tr(K_g) - tr(K_g^U) when the
                                             operator knows tr(K_g), else Hutchinson on the
                                             projected probes (I - U U^T) W)
At theta (rho_g = t_g / (n - r), the mean residual eigenvalue):
    d = theta_e + sum_g theta_g rho_g,      core = d I_r + C = sum_g theta_g K_g^U + theta_e I_r
    M = d (I - U U^T) + U core U^T
so on span(U) M equals U^T H U and elsewhere the mean of H's residual spectrum; hence
tr(M^-1 H) = n exactly when t_g is exact (the SLQ control variate relies on it). U being
orthonormal, Woodbury is exact and cheap:
    M^-1 = (I - U U^T) / d + U core^-1 U^T,     log|M| = (n - r) log d + log|core|,
    M^1/2 = sqrt(d) (I - U U^T) + U core^1/2 U^T  (to draw SLQ probes with covariance M),
    tr(M^-1 K_g) = t_g / d + tr(core^-1 K_g^U),   tr(M^-1) = (n - r) / d + tr(core^-1).
Rank 0 leaves the scalar preconditioner M = d I (CG iterates as without preconditioning).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from dreml.operators.protocol import GRMOperator
from dreml.reml.evaluation import IndefiniteError


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
    """M(theta) for one theta: M^-1, M^1/2, log|M| and the traces tr(M^-1 K_g), tr(M^-1)."""

    U: jax.Array  # shape: (n, r)
    d: float
    core: np.ndarray  # shape: (r, r), sum_g theta_g K_g^U + theta_e I
    KU: np.ndarray  # shape: (G, r, r)
    resid_trace: np.ndarray  # shape: (G,)
    # derived in __post_init__
    _core_inv: np.ndarray = field(init=False, repr=False, compare=False)  # shape: (r, r)
    _core_sqrt: jax.Array = field(init=False, repr=False, compare=False)  # shape: (r, r)
    _logdet_core: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lam, vecs = np.linalg.eigh(self.core)
        if self.d <= 0 or (lam.size and lam.min() <= 0):
            # M approximates H (U^T H U on span(U), H's mean residual eigenvalue elsewhere): at an
            # unconstrained theta it fails only where H itself is (nearly) indefinite
            raise IndefiniteError(
                f"the preconditioner M(theta) is not positive definite (d = {self.d:.3g}, "
                f"smallest core eigenvalue {lam.min(initial=np.inf):.3g})"
            )
        object.__setattr__(self, "_core_inv", (vecs / lam) @ vecs.T)
        object.__setattr__(self, "_core_sqrt", jnp.asarray((vecs * np.sqrt(lam)) @ vecs.T))
        object.__setattr__(self, "_logdet_core", float(np.sum(np.log(lam))))

    def solve(self, R: jax.Array) -> jax.Array:
        """M^-1 R, shape (n, k)."""
        return _woodbury(self.U, self.d, jnp.asarray(self._core_inv), R)

    def sqrt_apply(self, Z: np.ndarray) -> np.ndarray:
        """M^1/2 Z, shape (n, k)."""
        return np.asarray(_sqrt_apply(self.U, self.d, self._core_sqrt, jnp.asarray(Z)))

    def logdet(self) -> float:
        """log|M| = (n - r) log d + log|core|."""
        n, r = self.U.shape
        return (n - r) * float(np.log(self.d)) + self._logdet_core

    def traces(self) -> np.ndarray:
        """(tr(M^-1 K_1), .., tr(M^-1 K_G), tr(M^-1)), shape (G + 1,)."""
        n, r = self.U.shape
        genetic = self.resid_trace / self.d + np.einsum("ij,gji->g", self._core_inv, self.KU)
        return np.append(genetic, (n - r) / self.d + np.trace(self._core_inv))


@dataclass(frozen=True)
class ProjectedCore:
    """The theta-independent part, built once per fit.

    Fields:
        U: orthonormal columns, shape (n, r) (r may be 0).
        KU: U^T K_g U, shape (G, r, r).
        resid_trace: t_g = tr((I - U U^T) K_g), shape (G,).
        exact_traces: whether t_g came from the operator's exact tr(K_g).
        ritz: Ritz values of Kbar on span(U), descending, shape (r,).
    """

    U: np.ndarray
    KU: np.ndarray
    resid_trace: np.ndarray
    exact_traces: bool
    ritz: np.ndarray

    def at(self, theta: np.ndarray) -> CorePreconditioner:
        """M(theta) for theta = (theta_1..theta_G, theta_e)."""
        n, r = self.U.shape
        g, e = np.asarray(theta[:-1]), float(theta[-1])
        d = e + float(g @ self.resid_trace) / (n - r)
        core = np.einsum("g,gij->ij", g, self.KU) + e * np.eye(r)
        return CorePreconditioner(U=jnp.asarray(self.U), d=d, core=(core + core.T) / 2, KU=self.KU, resid_trace=self.resid_trace)


def range_basis(operator: GRMOperator, Omega: np.ndarray, power_iters: int) -> np.ndarray:
    """Orthonormal Q (n, l) spanning Kbar^(q+1) Omega: 1 + power_iters weighted passes.

    Arguments:
        operator: the GRM operator.
        Omega: Gaussian test matrix, shape (n, l); l = 0 costs nothing.
        power_iters: q, subspace iterations (re-orthonormalised each time; Halko et al. Alg. 4.4).
    """
    if Omega.shape[1] == 0:
        return Omega
    weights = np.full(operator.n_components, 1.0 / operator.n_components)
    Q, _ = np.linalg.qr(operator.matmat(Omega, weights=weights))
    for _ in range(power_iters):
        Q, _ = np.linalg.qr(operator.matmat(Q, weights=weights))
    return Q


def build_projected_core(
    Q: np.ndarray, KQ: np.ndarray, W: np.ndarray, KW: np.ndarray, rank: int, traces: np.ndarray | None
) -> ProjectedCore:
    """Rayleigh-Ritz on span(Q), then K_g^U and t_g without further passes.

    Arguments:
        Q: orthonormal basis from `range_basis`, shape (n, l), l >= rank.
        KQ: stacked K_g Q, shape (G, n, l).
        W: the fit's Rademacher probes, shape (n, B).
        KW: stacked K_g W, shape (G, n, B).
        rank: r, eigenvectors kept (0 for the scalar preconditioner).
        traces: exact tr(K_g), shape (G,), or None to estimate t_g by Hutchinson.

    Returns:
        `ProjectedCore`.
    """
    QKQ = np.einsum("ni,gnj->gij", Q, KQ)
    lam, V = np.linalg.eigh((QKQ.mean(axis=0) + QKQ.mean(axis=0).T) / 2)
    V = V[:, np.argsort(lam)[::-1][:rank]]
    U = Q @ V
    KU_full = np.einsum("gnl,lr->gnr", KQ, V)  # K_g U, shape (G, n, r)
    KU = np.einsum("nr,gns->grs", U, KU_full)
    # U^T K_g U is positive semi-definite; rounding (float32 workers) can leave eigenvalues
    # of -1e-7 ||K_g||, enough to make the core indefinite when theta_e nears its floor
    lam_g, vec_g = np.linalg.eigh((KU + KU.transpose(0, 2, 1)) / 2)
    KU = np.einsum("gij,gj,gkj->gik", vec_g, np.maximum(lam_g, 0.0), vec_g)
    if traces is not None:
        resid = np.asarray(traces, dtype=np.float64) - np.einsum("gii->g", KU)
    else:
        UW = U.T @ W
        # w~^T K_g w~ with w~ = (I - U U^T) w and K_g w~ = K_g W - (K_g U)(U^T W)
        resid = np.einsum("nb,gnb->g", W - U @ UW, KW - np.einsum("gnr,rb->gnb", KU_full, UW)) / W.shape[1]
    return ProjectedCore(
        U=U, KU=KU, resid_trace=np.maximum(resid, 0.0), exact_traces=traces is not None, ritz=np.sort(lam)[::-1][:rank]
    )
