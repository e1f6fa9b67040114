"""minigpt.tasks.baselines_ext: the baselines of the tasks beyond the paper (LinearRecurrence, PolynomialSequence)
are exact where the task is identifiable."""
import numpy as np
import pytest

from minigpt.tasks import baselines, baselines_ext
from minigpt.tasks.data import LinearRecurrence, PolynomialSequence, exact_from


@pytest.mark.parametrize("task", [LinearRecurrence(dim=1), LinearRecurrence(dim=2), LinearRecurrence(dim=4, scale="radius"),
                                  PolynomialSequence(degree=0), PolynomialSequence(degree=2), PolynomialSequence(degree=4)])
def test_exact_and_least_squares_baselines_are_exact_where_defined(task):
    batch = task.sample(256, np.random.default_rng(1))
    preds = baselines.all_predictions(batch, task)  # dispatches to baselines_ext
    assert set(preds) == set(baselines_ext.names_for(task))
    t0 = exact_from(task)
    y = batch.targets
    scale = np.abs(y).max() + 1
    for name in ("exact", "least_squares", "oracle"):
        assert preds[name].shape == y.shape
        assert np.abs(preds[name][:, t0:] - y[:, t0:]).max() < 1e-6 * scale, name
    np.testing.assert_array_equal(preds["copy"], batch.inputs)
    np.testing.assert_array_equal(preds["exact"][:, :t0], batch.inputs[:, :t0])  # copy before t0
    if t0 > 0:  # not identifiable before t0: the copy fallback errs somewhere
        assert np.abs(preds["copy"][:, :t0] - y[:, :t0]).max() > 1e-6


def test_exact_solver_survives_a_singular_difference_matrix():
    # A = c I in 2-D: the differences are parallel, D_0 is singular, the next term is still exact
    x0, b, c = np.array([0.3, -0.2]), np.array([0.5, 0.1]), 0.7
    x = [x0]
    for _ in range(6):
        x.append(c * x[-1] + b)
    x = np.array(x)[None]  # [1, 7, 2]
    pred = baselines_ext.linear_exact(x[:, :-1])
    np.testing.assert_allclose(pred[:, 3:], x[:, 4:], atol=1e-12)


def test_poly_least_squares_averages_noise_better_than_finite_differences():
    task = PolynomialSequence(degree=2, length=16, noise=0.01)
    batch = task.sample(2000, np.random.default_rng(3))
    p = baselines_ext.all_predictions(batch, task)
    err = {k: ((v - batch.targets) ** 2)[:, 8:].mean() for k, v in p.items()}
    assert err["least_squares"] < err["exact"]
