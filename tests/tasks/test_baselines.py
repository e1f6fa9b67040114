"""minigpt.tasks.baselines: each predictor's definition by hand, exactness once identifiable, clear errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tasks import baselines
from minigpt.tasks.data import AffineRecurrence


@settings(max_examples=30)
@given(
    st.floats(-1.5, 1.5).filter(lambda v: abs(v - 1) > 1e-3),
    st.floats(-2, 2),
    st.floats(-2, 2),
)
def test_exact_baselines_are_exact_once_identifiable(a, b, x0):
    x = np.empty((1, 8))
    x[0, 0] = x0
    for n in range(1, 8):
        x[0, n] = a * x[0, n - 1] + b
    target = a * x + b  # the next term after every position
    for name in ("three_term", "least_squares"):
        pred = baselines.predict(name, x)
        d = x[0, 1] - x[0, 0]
        if abs(d) > 1e-3:  # identifiable: x_1 != x_0 (and the sequence is not constant)
            np.testing.assert_allclose(pred[0, 2:], target[0, 2:], rtol=1e-6, atol=1e-6 * (1 + np.abs(x).max()))
    np.testing.assert_allclose(baselines.predict("oracle", x, a=[a], b=[b]), target, rtol=1e-12)


def test_baseline_definitions():
    x = np.array([[1.0, 3.0, 7.0, 15.0]])  # a = 2, b = 1
    np.testing.assert_array_equal(baselines.copy(x), x)
    np.testing.assert_array_equal(baselines.linear(x), [[1.0, 5.0, 11.0, 23.0]])
    np.testing.assert_allclose(baselines.three_term(x), [[1.0, 3.0, 15.0, 31.0]])
    np.testing.assert_allclose(baselines.least_squares(x), [[1.0, 3.0, 15.0, 31.0]])
    task = AffineRecurrence(a=("uniform", 0, 1), b=("normal", 2, 1))
    np.testing.assert_allclose(baselines.prior_mean(x, task), 0.5 * x + 2)
    task = AffineRecurrence(a=("uniform", 0.2, 1), b=("uniform", -1, 3))  # lo != 0: mean = (lo + hi) / 2
    np.testing.assert_allclose(baselines.prior_mean(x, task), 0.6 * x + 1)


def test_three_term_fallback_where_denominator_vanishes():
    x = np.array([[0.5, 0.5, 0.5, 0.5]])  # a fixed point: the denominator is 0
    np.testing.assert_array_equal(baselines.three_term(x), x)


def test_unknown_baseline_and_missing_arguments():
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.predict("magic", np.zeros((1, 3)))
    with pytest.raises(ValueError, match="a and b"):
        baselines.predict("oracle", np.zeros((1, 3)))
