"""Hutchinson trace estimates with regression control variates, and their Monte Carlo covariance.

Probes w_b (Rademacher, b = 1..B) give per-probe samples a_ib with E[a_ib] = tr(P K_i)
(`dreml.reml.randomised`). When the operator knows tr(K_h) exactly, c_hb = w_b^T K_h w_b - tr(K_h)
has mean zero and is free from K_h W, so it serves as a regression control variate
(Glasserman 2003, Sec. 4.1; coefficients by least squares over the B probes):
    tr(P K_i) ~ mean_b (a_ib - beta_i^T c_b),
which removes the part of P K_i linear in the K_h (a 3-4 fold smaller error, docs/validation.md).

Guard for many components: a regression on q controls over B probes costs q degrees of
freedom and overfits as q nears B (G = 80 components with 100 probes). All G controls are used
while G + 1 <= B / 4; beyond that each genetic row i uses its own control c_i and the sum
sum_h c_h, and the residual row (tr(P)) the sum alone: two regressors at most, whatever G.

Variance: with q coefficients fitted on the same B probes, the variance of the controlled
mean is (B - 2) / (B - q - 2) sigma_res^2 / B (Lavenberg & Welch 1981), sigma_res^2 the
residual variance; the covariance of the estimates is scaled row by row accordingly.
"""

from __future__ import annotations

import numpy as np


def _regressors(controls: np.ndarray, n_rows: int) -> list[np.ndarray]:
    """The control rows used for each of the n_rows estimates (see the module docstring)."""
    G, B = controls.shape
    if G + 1 <= B // 4:
        return [controls] * n_rows
    total = controls.sum(axis=0, keepdims=True)
    return [np.vstack([controls[i], total[0]]) for i in range(G)] + [total] * (n_rows - G)


def hutchinson(samples: np.ndarray, controls: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Trace estimates and the Monte Carlo covariance of the estimates.

    Arguments:
        samples: a_ib, shape (G + 1, B).
        controls: mean-zero control variates c_hb, shape (G, B), or None.

    Returns:
        (estimates, shape (G + 1,); covariance of the estimates, shape (G + 1, G + 1)).
    """
    rows, B = samples.shape
    q = np.zeros(rows)
    if controls is None:
        residual = samples
    else:
        residual = np.empty_like(samples)
        for i, C in enumerate(_regressors(controls, rows)):
            centred = C - C.mean(axis=1, keepdims=True)
            beta, *_ = np.linalg.lstsq(centred.T, samples[i] - samples[i].mean(), rcond=None)
            residual[i] = samples[i] - beta @ C
            q[i] = C.shape[0]
    estimates = residual.mean(axis=1)
    deviation = residual - estimates[:, None]
    # residual variance with 1 + q fitted parameters, then the Lavenberg-Welch inflation
    scale = np.sqrt(1.0 / np.maximum(B - 1 - q, 1) * np.where(q > 0, (B - 2) / np.maximum(B - q - 2, 1), 1.0))
    return estimates, (deviation @ deviation.T) * np.outer(scale, scale) / B
