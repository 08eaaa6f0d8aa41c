"""Hutchinson estimates with control variates against closed forms."""

import numpy as np

from dreml.reml.hutchinson import hutchinson


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
    """G = 60 controls with B = 100 probes: a full regression would leave 39 degrees of freedom."""
    truth, samples, controls = _samples(60, 100, 1)
    est, cov = hutchinson(samples, controls)
    assert np.isfinite(est).all() and np.isfinite(cov).all()
    assert np.abs(est - truth).max() < 5e-3  # each row still sees its own control and the total
