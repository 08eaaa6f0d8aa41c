"""Batched preconditioned conjugate gradients on the driver (the mBCG of Gardner et al. 2018).

Solves H X = B for an (n, k) block B, each column by its own CG recurrence, with one call of
`apply_H` on the block of still-active columns per iteration: one pass over the genotypes.
The operator may be a Dask round trip, so the loop is plain Python (a `lax.while_loop` would
trace it); the column-wise updates are jitted JAX.

Per column (r_0 = b - H x_0, z_j = M^-1 r_j, p_0 = z_0; Saad 2003, Alg. 9.1):
    alpha_j = r_j^T z_j / p_j^T H p_j,   x_{j+1} = x_j + alpha_j p_j,   r_{j+1} = r_j - alpha_j H p_j
    beta_j  = r_{j+1}^T z_{j+1} / r_j^T z_j,   p_{j+1} = z_{j+1} + beta_j p_j
A warm start x_0 comes with its product H x_0 (the caller often has it without a pass).
The alphas and betas are kept: for a column started at x_0 = 0 they are the Lanczos
tridiagonal of M^-1/2 H M^-1/2 started at M^-1/2 b / ||M^-1/2 b|| (Saad 2003, Sec. 6.7.3;
Gardner et al. 2018, Sec. 4), which `dreml.reml.slq` turns into log-determinants without
further passes.
Column c stops when ||r_j|| <= tol_c ||b_c|| (its own tolerance); it is then frozen
(alpha = beta = 0). The recursive residuals r_j are returned: H x = b - r without a pass.
Breakdown: a direction with p_j^T H p_j <= 0 proves that H is not positive definite (CG's
coefficients are then meaningless); the solve stops before using it and says so (`indefinite`).
By Sylvester's law of inertia on the Lanczos matrix T = L diag(1/alpha) L^T, this happens as
soon as a Ritz value of M^-1/2 H M^-1/2 is negative, so an indefinite H is caught once Lanczos
resolves a negative eigenvalue that the right-hand sides excite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class PCGResult:
    """Outcome of `block_pcg`. Failures are values: read `status` and `converged`.

    Fields:
        x: the solutions, shape (n, k).
        r: the recursive residuals b - H x, shape (n, k).
        converged: per column, whether ||r|| <= tol ||b||, shape (k,).
        iterations: operator calls made (= passes), the most iterations of any column.
        column_iterations: iterations of each column, shape (k,).
        residuals: final relative residuals ||r|| / ||b|| per column, shape (k,).
        alpha, beta: CG coefficients per iteration and column, shape (iterations, k);
            zero once a column has stopped.
        rz0: r_0^T M^-1 r_0 per column, the squared norm of the Lanczos start vector.
        status: "converged", or a message saying which columns did not converge or that H is
            not positive definite.
        indefinite: whether a direction with p^T H p <= 0 stopped the solve.
    """

    x: np.ndarray
    r: np.ndarray
    converged: np.ndarray
    iterations: int
    column_iterations: np.ndarray
    residuals: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    rz0: np.ndarray
    status: str
    indefinite: bool = False

    def stats(self) -> dict:
        """JSON-serialisable summary for a fit's history."""
        return {
            "iterations": int(self.iterations),
            "max_residual": float(self.residuals.max(initial=0.0)),
            "mean_column_iterations": float(self.column_iterations.mean()) if self.column_iterations.size else 0.0,
            "status": self.status,
        }


@jax.jit
def _step(X, R, P, Q, rz, active):
    """x += alpha p, r -= alpha H p for the active columns; returns alpha and ||r||."""
    alpha = jnp.where(active, rz / jnp.sum(P * Q, axis=0), 0.0)
    X = X + alpha * P
    R = R - alpha * Q
    return X, R, alpha, jnp.linalg.norm(R, axis=0)


@jax.jit
def _direction(Zr, R, P, rz, active):
    """p = z + beta p for the active columns; returns p, r^T z and beta."""
    rz_new = jnp.sum(R * Zr, axis=0)
    beta = jnp.where(active, rz_new / jnp.where(active, rz, 1.0), 0.0)
    P = jnp.where(active, Zr + beta * P, P)
    return P, jnp.where(active, rz_new, rz), beta


def block_pcg(
    apply_H: Callable[[np.ndarray], np.ndarray],
    B: np.ndarray,
    *,
    solve_M: Callable[[jax.Array], jax.Array] | None = None,
    tol: float | np.ndarray,
    max_iter: int,
    x0: np.ndarray | None = None,
    Hx0: np.ndarray | None = None,
) -> PCGResult:
    """Solve H X = B column by column with one `apply_H` call per iteration.

    Arguments:
        apply_H: V -> H V for an (n, j) NumPy block (the operator pass).
        B: right-hand sides, shape (n, k).
        solve_M: R -> M^-1 R on JAX arrays (the preconditioner); None for M = I.
        tol: relative residual at which a column stops: one value, or one per column (k,).
        max_iter: most iterations.
        x0: initial guess, shape (n, k) (default 0); a column whose x0 is 0 starts a Lanczos
            process at its right-hand side (what SLQ needs).
        Hx0: H x0, shape (n, k); required with x0.

    Returns:
        `PCGResult`.
    """
    B = np.asarray(B, dtype=np.float64)
    n, k = B.shape
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), (k,))
    precondition = solve_M if solve_M is not None else (lambda R: R)
    b_norm = np.linalg.norm(B, axis=0)
    if x0 is None:
        X, R = jnp.zeros((n, k)), jnp.asarray(B)
    else:
        if Hx0 is None or x0.shape != B.shape or Hx0.shape != B.shape:
            raise ValueError(f"x0 and Hx0 must both be given with shape {B.shape}")
        X, R = jnp.asarray(x0, dtype=jnp.float64), jnp.asarray(B - Hx0)
    Zr = precondition(R)
    P = Zr
    rz = jnp.sum(R * Zr, axis=0)
    rz0 = np.asarray(rz)
    safe_norm = np.where(b_norm > 0, b_norm, 1.0)
    residuals = np.asarray(jnp.linalg.norm(R, axis=0)) / safe_norm
    active = (b_norm > 0) & (residuals > tol)
    column_iterations = np.zeros(k, dtype=np.int64)
    alphas: list[np.ndarray] = []
    betas: list[np.ndarray] = []
    breakdown = ""
    while active.any() and len(alphas) < max_iter:
        idx = np.flatnonzero(active)
        HP = np.zeros((n, k))
        P_active = np.asarray(P)[:, idx]
        HP[:, idx] = apply_H(P_active)
        curvature = np.einsum("nj,nj->j", P_active, HP[:, idx])
        if (curvature <= 0).any():
            j = int(np.argmin(curvature))
            breakdown = (
                f"H is not positive definite: p^T H p = {curvature[j]:.3g} <= 0 in column {int(idx[j])} "
                f"at iteration {len(alphas) + 1}"
            )
            alphas.append(np.zeros(k))  # the pass was made: one (frozen) row keeps iterations = passes
            betas.append(np.zeros(k))
            break
        active_j = jnp.asarray(active)
        X, R, alpha, r_norm = _step(X, R, P, jnp.asarray(HP), rz, active_j)
        column_iterations += active
        residuals = np.where(active, np.asarray(r_norm) / safe_norm, residuals)
        active = active & (residuals > tol)
        active_j = jnp.asarray(active)
        P, rz, beta = _direction(precondition(R), R, P, rz, active_j)
        alphas.append(np.asarray(alpha))
        betas.append(np.asarray(beta))
    converged = (residuals <= tol) | (b_norm == 0)
    status = "converged"
    if breakdown:
        converged[:] = False
        status = breakdown
    elif not converged.all():
        status = (
            f"{int((~converged).sum())} of {k} columns did not reach their relative residual tolerance in "
            f"{max_iter} iterations (largest residual {residuals.max():.3g}); raise pcg_max_iter or the "
            f"preconditioner rank"
        )
    shape = (len(alphas), k)
    return PCGResult(
        x=np.asarray(X),
        r=np.asarray(R),
        converged=converged,
        iterations=len(alphas),
        column_iterations=column_iterations,
        residuals=residuals,
        alpha=np.stack(alphas) if alphas else np.zeros(shape),
        beta=np.stack(betas) if betas else np.zeros(shape),
        rz0=rz0,
        status=status,
        indefinite=bool(breakdown),
    )
