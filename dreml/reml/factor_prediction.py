"""The factors of samples outside a factor-model fit, through their relatives (`predict_factors`).

A fit (`dreml.reml.factors`) on the samples O gives W = A^T alpha, shape (n_O, K), with
alpha = (A Sigma A^T + Psi)^-1 r and F^_O,k = Sigma_k[O, O] W_k. For samples N with no
observed trait (genotyped, but missing for every trait), f_k[N] and the observed residuals r are
jointly Gaussian with Cov(f_k[N], r) = Sigma_k[N, O] A_k^T (A_k: f_k -> its part lambda_kt f_ik of
the observed entries), so the posterior mean is (GBLUP)

    F^_N,k = Sigma_k[N, O] A_k^T (A Sigma A^T + Psi)^-1 r = Sigma_k[N, O] W_k = sum_g theta_gk K_g[N, O] W_k

(the theta_ek I part of Sigma_k has no N x O block: the factors' residual parts of the new
samples are not informed), and the components' BLUPs are U_gk[N] = theta_gk K_g[N, O] W_k. One
stacked pass of an operator over N and O together, with W padded by zeros on N, gives
K_g[:, O] W for every sample: on O it reproduces the fit's F^ (a check of the operator's
alignment), on N the prediction. The traits then follow as for the fitted samples,
Y^_N = X_N B + F^_N Lambda and G^_N = (sum_g U_g[N]) Lambda (`FactorModelResult.predicted`,
`FactorModelResult.genetic_values`).
"""

from __future__ import annotations

import numpy as np

from dreml.errors import InputError
from dreml.operators.protocol import GRMOperator
from dreml.reml.factors import FactorModelResult


def predict_factors(operator: GRMOperator, fitted: np.ndarray, result: FactorModelResult) -> tuple[np.ndarray, np.ndarray]:
    """F^ and U for every sample of `operator` from a fit on its samples `fitted` (module docstring).

    Arguments:
        operator: a GRM operator over N samples, the fit's among them.
        fitted: the fit's samples as indices into the operator's samples, in the fit's row order,
            shape (n,).
        result: the `FactorModelResult` of the fit on those samples.

    Returns:
        F^, shape (N, K), and U_gk, shape (G, N, K) (one pass over the genotypes).

    Raises:
        InputError: `fitted` does not match the fit's samples or the operator's.
    """
    fitted = np.asarray(fitted, dtype=np.int64)
    N = operator.shape[0]
    n, K = result.weights.shape
    if fitted.shape != (n,) or np.unique(fitted).size != n or fitted.min() < 0 or fitted.max() >= N:
        raise InputError(f"fitted must be the fit's {n} samples as distinct indices into the operator's {N}")
    if operator.n_components != result.h2.shape[1]:
        raise InputError(f"the operator has {operator.n_components} components, the fit {result.h2.shape[1]}")
    W = np.zeros((N, K))
    W[fitted] = result.weights
    theta_g, theta_e = result.theta[:, :-1].T, result.theta[:, -1]  # (G, K), (K,)
    blups = theta_g[:, None, :] * np.asarray(operator.matmat(W), dtype=np.float64)  # (G, N, K)
    return blups.sum(axis=0) + theta_e * W, blups


__all__ = ["predict_factors"]
