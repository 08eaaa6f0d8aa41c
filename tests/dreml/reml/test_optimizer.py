"""Step control and the Newton step against closed forms."""

import numpy as np

from dreml.reml.evaluation import Point
from dreml.reml.optimizer import _overshoot, _project, held_at_zero, monte_carlo_decrement, newton


def _point(theta, score):
    return Point(theta=np.asarray(theta, float), score=np.asarray(score, float), score_cov=np.zeros((2, 2)))


def test_overshoot__quadratic_along_the_line():
    """phi(t) = -(t - t*)^2 along delta = (1, 0): phi'(0) = 2 t*, a full step overshoots past
    twice the maximum exactly when t* < 1/2."""
    for t_star, expected in ((0.3, True), (0.7, False)):
        old = _point([1.0, 1.0], [2 * t_star, 0.0])
        new = _point([2.0, 1.0], [2 * (t_star - 1.0), 0.0])
        assert _overshoot(old, new) is expected


def test_newton__step_and_decrement_on_free_components():
    ai = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
    score = np.array([1.0, -2.0, 0.5])
    held = np.array([False, True, False])
    step, decrement = newton(score, ai, held)
    free = np.ix_([0, 2], [0, 2])
    expected = np.linalg.solve(ai[free], score[[0, 2]])
    np.testing.assert_allclose(step, [expected[0], 0.0, expected[1]])
    assert decrement == np.dot(score[[0, 2]], expected)
    assert held_at_zero(np.array([0.0, 0.0, 0.0]), np.array([-1.0, 1.0, -1.0])).tolist() == [True, False, False]


def test_monte_carlo_decrement__trace_formula():
    ai = np.diag([4.0, 2.0])
    cov = np.array([[1.0, 0.2], [0.2, 0.5]])
    assert monte_carlo_decrement(cov, ai, np.zeros(2, bool)) == 1.0 / 4 + 0.5 / 2


def test_project__constrained_clips_unconstrained_keeps_negative_variances():
    theta = np.array([0.4, -0.1, -0.2])
    np.testing.assert_allclose(_project(theta, constrain=True), [0.4, 0.0, 0.4e-6])
    np.testing.assert_allclose(_project(theta, constrain=False), [0.4, -0.1, 0.7e-6])  # only the residual floor
    assert _project(np.array([0.4, -0.1, 0.5]), constrain=False).tolist() == [0.4, -0.1, 0.5]
