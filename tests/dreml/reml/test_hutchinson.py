"""Hutchinson estimates with control variates against closed forms."""

import numpy as np

from dreml.reml.hutchinson import _regressors, hutchinson


def _samples(G: int, B: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a_ib = t_i + c_ib + small noise with mean-zero controls c: the truth t is known."""
    rng = np.random.default_rng(seed)
    controls = rng.standard_normal((G, B)) * 10
    truth = np.arange(1.0, G + 2)
    samples = truth[:, None] + np.vstack([controls, controls.sum(axis=0, keepdims=True)]) + 0.01 * rng.standard_normal((G + 1, B))
    return truth, samples, controls


def test_hutchinson__controls_remove_the_linear_part():
    truth, samples, controls = _samples(3, 100, 0)
    plain, plain_cov = hutchinson(samples, None)
    est, cov = hutchinson(samples, controls)
    # the controls' own sample means are O(10 / sqrt(B)); with them the error is O(0.01 / sqrt(B))
    assert np.abs(est - truth).max() < 5e-3 < np.abs(plain - truth).max()
    assert np.sqrt(np.diag(cov)).max() < 5e-3 and np.all(np.linalg.eigvalsh(cov) > -1e-15)
    np.testing.assert_allclose(np.sqrt(np.diag(plain_cov)), samples.std(axis=1, ddof=1) / 10)


def test_hutchinson__many_components_fall_back_to_two_regressors():
    """G + 1 > B / 4: each genetic row regresses on its own control and the sum, the residual
    row on the sum alone; at G = 99 with B = 100 (a full regression has no degree of freedom
    left) the estimates stay accurate and their variance finite."""
    _, _, controls = _samples(60, 100, 1)
    regressors = _regressors(controls, 61)
    total = controls.sum(axis=0)
    assert all(np.array_equal(R, np.vstack([controls[i], total])) for i, R in enumerate(regressors[:60]))
    assert np.array_equal(regressors[60], total[None])
    assert all(np.array_equal(R, controls[:3]) for R in _regressors(controls[:3], 4))  # few components: all
    truth, samples, controls = _samples(99, 100, 2)
    est, cov = hutchinson(samples, controls)
    assert np.isfinite(cov).all() and np.abs(est - truth).max() < 5e-3
    assert np.sqrt(np.diag(cov)).max() < 5e-3


def test_hutchinson__variance_counts_the_fitted_coefficients():
    """Monte Carlo check of the Lavenberg-Welch factor: over 400 draws of B = 20 probes with 4
    controls, the reported variance matches the spread of the estimate within 15%."""
    rng = np.random.default_rng(3)
    estimates, variances = [], []
    for _ in range(400):
        controls = rng.standard_normal((3, 20))
        samples = np.vstack([controls, controls.sum(axis=0, keepdims=True)]) + rng.standard_normal((4, 20))
        est, cov = hutchinson(samples, controls)
        estimates.append(est[0])
        variances.append(cov[0, 0])
    assert abs(np.mean(variances) / np.var(estimates, ddof=1) - 1) < 0.15
