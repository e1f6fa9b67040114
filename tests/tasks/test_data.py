"""minigpt.tasks.data: the task samplers (the paper's affine recurrence, LinearRecurrence, PolynomialSequence),
their priors, bounds and errors, and the task registry."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tasks import baselines, presets
from minigpt.tasks.data import AffineRecurrence, LinearRecurrence, PolynomialSequence, check_prior, make_task, prior_moments, sample_prior


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


# ----------------------------------------------------------------------------- tasks beyond the paper
@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.sampled_from(["norm", "radius"]), st.integers(3, 14), st.integers(0, 2**31))
def test_linear_recurrence_samples_obey_the_recurrence_and_bounds(k, scale, length, seed):
    task = LinearRecurrence(dim=k, scale=scale, length=length, rho=("uniform", 0.0, 0.99))
    batch = task.sample(64, np.random.default_rng(seed))
    assert batch.x.shape == (64, length, k) and batch.inputs.shape == (64, length - 1, k)
    A, b = batch.A, batch.b
    np.testing.assert_allclose(batch.x[:, 1:], np.einsum("bij,btj->bti", A, batch.x[:, :-1]) + b[:, None], atol=1e-12)
    np.testing.assert_array_equal(batch.x[:, 0], batch.x0)
    radius = np.abs(np.linalg.eigvals(A)).max(-1)
    assert np.all(radius <= 0.99 + 1e-9)
    if scale == "norm":
        assert np.all(np.linalg.norm(A, ord=2, axis=(1, 2)) <= 0.99 + 1e-9)
    assert np.abs(batch.x).max() <= task.max_abs_term() + 1e-9


def test_linear_dim1_is_the_scalar_task_in_law():
    lin = LinearRecurrence(dim=1, length=6).sample(20000, np.random.default_rng(0))
    a = lin.A[:, 0, 0]
    assert abs(a.mean()) < 0.02 and abs(a.var() - 1 / 3) < 0.01  # a ~ U(-1, 1)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 4), st.integers(2, 14), st.integers(0, 2**31))
def test_polynomial_samples_match_their_coefficients(m, length, seed):
    task = PolynomialSequence(degree=m, length=length)
    batch = task.sample(32, np.random.default_rng(seed))
    u = np.arange(length) / task.n_scale
    np.testing.assert_allclose(batch.x, batch.coeffs @ (u[:, None] ** np.arange(m + 1)).T, atol=1e-12)
    assert np.abs(batch.x).max() <= task.max_abs_term() + 1e-12 <= m + 1 + 1e-12


@pytest.mark.parametrize("task", [LinearRecurrence(dim=3, scale="radius", noise=0.1), PolynomialSequence(degree=3, scale=5.0)])
def test_spec_round_trips_through_the_registry_and_presets(task):
    assert make_task(task.spec()) == task
    assert presets.build_task(task.spec()) == task


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown data.task"):
        make_task({"task": "fibonacci"})
    with pytest.raises(ValueError, match="data.a"):
        make_task({"task": "linear", "a": 1})
    with pytest.raises(ValueError, match="data.dim"):
        LinearRecurrence(dim=0)
    with pytest.raises(ValueError, match="data.scale"):
        PolynomialSequence(scale=-1)
