"""Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) from PCG coefficients.

For a symmetric positive definite A and a probe v with E[v v^T] = I,
    tr(log A) = E[v^T log(A) v],   v^T log(A) v ~ ||v||^2 e_1^T log(T) e_1 = ||v||^2 sum_k tau_k^2 log(lambda_k),
where T is the Lanczos tridiagonal of A started at v / ||v||, lambda_k its eigenvalues and
tau_k the first entries of its eigenvectors (Gauss quadrature). PCG on H with preconditioner
M started at r_0 = w runs Lanczos on A = M^-1/2 H M^-1/2 from v = M^-1/2 w, with
||v||^2 = w^T M^-1 w (`PCGResult.rz0`). The caller draws w = M^1/2 z, z Rademacher, so that
v = z and E[v v^T] = I; then log|H| = log|M| + tr(log A) (Gardner et al. 2018, Sec. 4).

Control variate: z^T A z = ||v||^2 T_11 comes free with each tridiagonal, and tr(A) is known
when the preconditioner's trace model is (`CorePreconditioner.traces`), so
    tr(log A) = tr(A) + E[v^T (log(A) - A) v]
whose Rademacher variance 2 sum_{i != j} (log A - A)_ij^2 is far smaller than that of log A
when A is near I: log(lambda) - lambda = -1 - (lambda - 1)^2 / 2 + ... (docs/math.md).

The tridiagonal of a column after J steps (Saad 2003, Sec. 6.7.3):
    T_jj = 1 / alpha_j + beta_{j-1} / alpha_{j-1},   T_{j,j+1} = sqrt(beta_j) / alpha_j.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh_tridiagonal

from dreml.reml.pcg import PCGResult


def lanczos_tridiagonal(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal and off-diagonal of the Lanczos matrix from J CG steps of one column.

    Arguments:
        alpha: the column's CG step sizes, shape (J,).
        beta: its CG direction coefficients, shape (J,) (the last one is not used).

    Returns:
        (diagonal, shape (J,); off-diagonal, shape (J - 1,)).
    """
    J = len(alpha)
    diag = 1.0 / alpha
    diag[1:] += beta[: J - 1] / alpha[: J - 1]
    off = np.sqrt(beta[: J - 1]) / alpha[: J - 1]
    return diag, off


def quadrature_log(result: PCGResult, columns: np.ndarray) -> np.ndarray:
    """||v_b||^2 e_1^T (log(T_b) - T_b) e_1 for the given columns of a PCG solve, shape (len(columns),)."""
    out = np.empty(len(columns))
    for i, c in enumerate(columns):
        J = int(result.column_iterations[c])
        diag, off = lanczos_tridiagonal(result.alpha[:J, c], result.beta[:J, c])
        lam, vecs = eigh_tridiagonal(diag, off)
        out[i] = result.rz0[c] * (float(np.sum(vecs[0] ** 2 * np.log(lam))) - diag[0])
    return out


def slq_logdet(result: PCGResult, columns: np.ndarray, trace_A: float) -> tuple[float, float]:
    """tr(log A) estimated from the probe columns, and its Monte Carlo standard error.

    Arguments:
        result: the PCG solve whose right-hand sides include the probes w_b = M^1/2 z_b.
        columns: the indices of those probe columns in the block.
        trace_A: tr(A) = tr(M^-1 H), the control variate's expectation.

    Returns:
        (tr(A) + mean_b of the quadratures, their standard deviation / sqrt(number of probes)).
    """
    q = quadrature_log(result, columns)
    se = float(q.std(ddof=1) / np.sqrt(len(q))) if len(q) > 1 else float("nan")
    return trace_A + float(q.mean()), se
