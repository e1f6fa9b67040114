"""Tasks beyond the paper: LinearRecurrence / PolynomialSequence samplers, registry, presets, baselines."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tasks import baselines, baselines_ext, presets
from minigpt.tasks.data import LinearRecurrence, PolynomialSequence, make_task, exact_from, task_d_in


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


@pytest.mark.parametrize("name", ["linear2", "poly2"])
def test_presets_build_and_fit_the_model(name):
    mcfg, _, task = presets.build(presets.get_preset(name))
    assert mcfg.d_in == mcfg.d_out == task_d_in(task)
    bad = presets.apply_overrides(presets.get_preset(name), [f"model.d_in={task_d_in(task) + 1}"])
    with pytest.raises(ValueError, match="d_in"):
        presets.build(bad)


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


def test_training_accepts_the_new_tasks(tmp_path):
    from minigpt.training.loop import train

    for name in ("linear2", "poly2"):
        spec = presets.apply_overrides(presets.get_preset(name), [
            "model.d_model=16", "model.d_mlp=16", "model.n_layers=1", "train.steps=3", "train.eval_every=3",
            "train.eval_size=64", "train.batch_size=8"])
        mcfg, tcfg, task = presets.build(spec)
        res = train(mcfg, tcfg, task, out_dir=tmp_path / name, progress=False)
        rec = res.history[-1]
        assert set(rec["baselines_by_pos"]) == set(baselines_ext.names_for(task))
        assert len(rec["eval_mse_by_pos"]) == task.length - 1
        res2 = train(mcfg, tcfg, task, out_dir=tmp_path / name, resume=True, progress=False)  # checkpoint's data config validates
        assert res2.history == res.history
