"""The task sampler and the baseline predictors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tasks import baselines
from minigpt.tasks.data import AffineRecurrence, check_prior, prior_moments, sample_prior


def test_sequences_follow_the_recurrence_and_are_seeded():
    task = AffineRecurrence(length=12)
    b1 = task.sample(64, np.random.default_rng(3))
    b2 = task.sample(64, np.random.default_rng(3))
    np.testing.assert_array_equal(b1.x, b2.x)
    np.testing.assert_allclose(b1.x[:, 1:], b1.a[:, None] * b1.x[:, :-1] + b1.b[:, None], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(b1.x[:, 0], b1.x0)
    assert b1.inputs.shape == b1.targets.shape == (64, 11)
    assert np.all(np.abs(b1.a) <= 1) and np.all(np.abs(b1.b) <= 1)


def test_inputs_and_targets_are_the_terms_shifted_by_one():
    batch = AffineRecurrence(length=7).sample(16, np.random.default_rng(5))
    np.testing.assert_array_equal(batch.inputs, batch.x[:, :6])
    # position t predicts term t + 1 = a x_t + b
    np.testing.assert_allclose(batch.targets, baselines.oracle(batch.inputs, batch.a, batch.b), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "prior, mean, var",
    [(("uniform", 0.2, 1.0), 0.6, 0.8**2 / 12), (("uniform", -3, -1), -2.0, 4 / 12), (("normal", 1.5, 0.5), 1.5, 0.25)],
)
def test_prior_moments_match_the_formulas_and_samples(prior, mean, var):
    prior = check_prior("p", prior)
    assert prior_moments(prior) == pytest.approx((mean, var), rel=1e-12)
    s = sample_prior(prior, 100_000, np.random.default_rng(0))
    assert abs(s.mean() - mean) < 0.01 and abs(s.var() - var) < 0.01


def test_normal_priors_and_noise():
    task = AffineRecurrence(a=("normal", 0.5, 0.1), b=("normal", 0, 0), x0=("uniform", 2, 2), length=5, noise=0.1)
    batch = task.sample(20000, np.random.default_rng(0))
    assert abs(batch.a.mean() - 0.5) < 0.01 and abs(batch.a.std() - 0.1) < 0.01
    assert np.all(batch.b == 0) and np.all(batch.x0 == 2)
    assert abs((batch.x[:, 0] - 2).std() - 0.1) < 0.01  # observation noise on every term


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(a=("beta", 0, 1)), "prior kind"),
        (dict(a=("uniform", 1, -1)), "lo <= hi"),
        (dict(b=("normal", 0, -1)), "std >= 0"),
        (dict(x0=("uniform", 0)), "a prior is"),
        (dict(x0=("uniform", "x", 1)), "numbers"),
        (dict(a=("uniform", 0, float("inf"))), "finite"),
        (dict(length=1), "length"),
        (dict(noise=-1.0), "noise"),
    ],
)
def test_bad_priors_raise_clear_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        AffineRecurrence(**kw)


def test_max_abs_term_bounds_every_sample():
    task = AffineRecurrence(a=("uniform", -1.2, 1.1), length=15)
    batch = task.sample(5000, np.random.default_rng(0))
    assert np.abs(batch.x).max() <= task.max_abs_term()


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
