"""Theory held against trained models: the shipped checkpoints and a model trained here.

Pythagoras for the Bayes predictor. m = posterior_mean_next(prefix) is E[x_{t+1} | x_0..x_t]; any predictor p that is a
function of the same prefix (a trained model is) satisfies

    E[(p - y)^2] = E[(m - y)^2] + E[(p - m)^2]          (the cross term E[(y - m)(m - p)] vanishes)

so the squared gap between the model and the Bayes prediction, sequence by sequence, must equal the model's MSE minus
the Bayes floor at t = 0 and t = 1. With a wrong posterior mean (a wrong E[a | x0, x1], a biased E[a]) the cross term
does not vanish and the identity fails by more than its Monte-Carlo error, whatever the model. The tolerance is
derived per draw: 4 standard errors of the mean of the per-sequence difference of both sides.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.training import load_run
from theory.bayes import bayes_mse, posterior_mean_next

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "report", "checkpoints")
CHECKPOINTS = ("paper_s0", "paper-small_s0", "attn-only-small_s0")
N = 20000


@pytest.fixture(scope="module", params=CHECKPOINTS)
def run(request):
    loaded = load_run(os.path.join(ROOT, request.param + ".npz"))
    return loaded.model, loaded.task


def pythagoras(model, task, rng, t, n=N):
    """Per-sequence ``(p - y)^2 - (m - y)^2 - (p - m)^2`` at position t (mean 0 in expectation) and the sizes."""
    b = task.sample(n, rng)
    x = b.x.astype(np.float64)
    p = model(x[:, : t + 1])[:, t].astype(np.float64)  # the model at position t sees x_0..x_t
    m = posterior_mean_next(x[:, : t + 1], task)
    y = x[:, t + 1]
    return (p - y) ** 2 - (m - y) ** 2 - (p - m) ** 2, ((m - y) ** 2).mean(), ((p - m) ** 2).mean()


@settings(max_examples=3)
@given(seed=st.integers(0, 2**32 - 1), t=st.sampled_from([0, 1]))
def test_model_minus_bayes_is_orthogonal_to_bayes_error(run, seed, t):
    model, task = run
    d, floor_mc, gap = pythagoras(model, task, np.random.default_rng(seed), t)
    assert abs(d.mean()) <= 4 * d.std() / np.sqrt(len(d)) + 1e-12
    assert floor_mc == pytest.approx(bayes_mse(t, task), rel=0.05)  # Monte Carlo of the floor against its closed form
    assert gap > 0  # the trained models are not exactly Bayes-optimal: the identity is not 0 = 0


def test_a_wrong_posterior_mean_breaks_the_identity(run):
    """The test above can fail: shift the Bayes prediction at t = 1 by a bias proportional to the step, as a wrong
    E[a | x0, x1] would, and the cross term no longer vanishes."""
    model, task = run
    b = task.sample(N, np.random.default_rng(0))
    x = b.x.astype(np.float64)
    p = model(x[:, :2])[:, 1].astype(np.float64)
    m = posterior_mean_next(x[:, :2], task) + 0.1 * (x[:, 1] - x[:, 0])
    y = x[:, 2]
    d = (p - y) ** 2 - (m - y) ** 2 - (p - m) ** 2
    assert abs(d.mean()) > 4 * d.std() / np.sqrt(len(d))
