"""theory.refinement: quadrature, the similarity-head mixture and the best head on top of a first estimate."""
import numpy as np
import pytest

from minigpt.tasks.data import AffineRecurrence
from theory import refinement as R
from theory.bayes import baseline_mse
from theory.heads import similarity_head


def test_quadrature_reproduces_the_closed_form_copy_error():
    """E[(x_{t+1} - x_t)^2] is a polynomial of degree 2t + 2 in a: 24 Gauss-Legendre nodes are exact up to degree 47."""
    task = AffineRecurrence(length=20)
    a, b, x0, w = R.prior_nodes(task, 24)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    x = R.sequences(a, b, x0, task.length)
    err = x[:, 1:] - R.first_estimate(x, w, "copy")
    for t in (0, 1, 2, 9, 18):
        assert (w * err[:, t] ** 2).sum() == pytest.approx(baseline_mse("copy", t, task), rel=1e-10)


def test_head_mix_limits_and_the_theory_heads_similarity_head():
    x = AffineRecurrence(length=10).sample(64, np.random.default_rng(0)).x
    np.testing.assert_allclose(R.head_mix(x, 0.0, 60.0), x, atol=1e-12)  # strong recency: attends to x_t
    np.testing.assert_allclose(R.head_mix(x, 0.0, -60.0), np.broadcast_to(x[:, :1], x.shape), atol=1e-12)  # to x_0
    np.testing.assert_allclose(R.head_mix(x, 0.0, 0.0), np.cumsum(x, 1) / np.arange(1, 11), atol=1e-12)  # running mean
    np.testing.assert_allclose(R.head_mix(x, 1.7, 0.0, "product"), similarity_head(x, 1.7), atol=1e-12)
    # distance kind: a large beta attends to the most similar key (x_t itself), a large negative one to the farthest
    v = np.random.default_rng(2).permutation(np.linspace(-1, 1, 10))[None]  # distinct terms 0.22 apart
    np.testing.assert_allclose(R.head_mix(v, 200.0, 0.0, "distance"), v, atol=1e-12)
    far = [v[0, : t + 1][np.argmax(np.abs(v[0, : t + 1] - v[0, t]))] for t in range(10)]
    np.testing.assert_allclose(R.head_mix(v, -200.0, 0.0, "distance")[0], far, atol=1e-12)


def test_linear_estimate_is_exact_when_a_is_known():
    """With a fixed, x_{t+1} = (1 + a) x_t - a x_{t-1}: the best linear estimate from (x_t, x_{t-1}) is exact at t >= 1."""
    task = AffineRecurrence(a=("uniform", 0.5, 0.5), length=8)
    a, b, x0, w = R.prior_nodes(task, 6)
    x = R.sequences(a, b, x0, task.length)
    err = x[:, 1:] - R.first_estimate(x, w, "linear")
    assert np.abs(err[:, 1:]).max() < 1e-12
    assert np.abs(err[:, 0]).max() > 0.1  # at t = 0 b is unknown


def test_gain_fit_is_weighted_least_squares():
    rng = np.random.default_rng(1)
    m, e, w = rng.standard_normal(500), rng.standard_normal(500), rng.uniform(0.1, 1, 500)
    err = 0.3 - 1.2 * m + 0.1 * e
    gamma, c, mse = R._gain_fit(err, m, w)
    coef = np.polyfit(m, err, 1, w=np.sqrt(w))
    assert gamma == pytest.approx(coef[0], rel=1e-10) and c == pytest.approx(coef[1], rel=1e-9)
    assert mse == pytest.approx((w * (err - np.polyval(coef, m)) ** 2).sum() / w.sum(), rel=1e-9)


@pytest.mark.parametrize("kind", R.KINDS)
def test_refinement_fit_orders_the_estimates(kind):
    task = AffineRecurrence(length=8)
    r = R.refinement_fit(task, "copy", kind, nodes=8, betas=(-2.0, 0.0, 2.0), lams=(0.0, 2.0))
    assert r["mse_refined"] <= r["mse_positional"] + 1e-12 <= r["mse_estimate"] + 2e-12
    assert 0 <= r["gain"] < 1 and abs(r["beta"]) <= R.BOUND and abs(r["lam"]) <= R.BOUND
    # the reported optimum is what refined_mse gives at those parameters
    a, b, x0, w = R.prior_nodes(task, 8)
    x = R.sequences(a, b, x0, task.length)
    err = x[:, 1:] - R.first_estimate(x, w, "copy")
    assert R.refined_mse(x, w, err, r["beta"], r["lam"], kind)[2] == pytest.approx(r["mse_refined"], rel=1e-12)
    assert r["mse_estimate"] == pytest.approx(np.mean([baseline_mse("copy", t, task) for t in range(2, 7)]), rel=1e-9)


def test_refined_mse_reads_only_the_visible_terms():
    """A head that attends to x_t (beta = 0, strong recency) on top of copying: the best gain on x_t, by plain
    weighted least squares on the terms x_t (t >= 2) the model can see."""
    task = AffineRecurrence(length=8)
    a, b, x0, w = R.prior_nodes(task, 8)
    x = R.sequences(a, b, x0, task.length)
    err = x[:, 1:] - R.first_estimate(x, w, "copy")
    m, e = x[:, 2:-1].ravel(), err[:, 2:].ravel()  # x_t and x_{t+1} - x_t for t = 2 .. T-2
    W = np.repeat(w, x.shape[1] - 3)
    coef = np.polyfit(m, e, 1, w=np.sqrt(W))
    want = (W * (e - np.polyval(coef, m)) ** 2).sum() / W.sum()
    assert R.refined_mse(x, w, err, 0.0, 60.0, "product")[2] == pytest.approx(want, rel=1e-9)


def test_linear_estimate_matches_monte_carlo_least_squares():
    """The per-position best (1, x_t, x_{t-1}) estimate under the paper prior, against plain least squares on
    200k sampled sequences (MSE agrees to a few Monte-Carlo standard errors)."""
    task = AffineRecurrence(length=8)
    a, b, x0, w = R.prior_nodes(task, 16)
    x = R.sequences(a, b, x0, task.length)
    err = x[:, 1:] - R.first_estimate(x, w, "linear")
    mc = task.sample(200_000, np.random.default_rng(0)).x
    for t in (2, 5):
        q = (w * err[:, t] ** 2).sum()
        F = np.stack([np.ones(len(mc)), mc[:, t], mc[:, t - 1]], 1)
        r = mc[:, t + 1] - F @ np.linalg.lstsq(F, mc[:, t + 1], rcond=None)[0]
        se = (r**2).std() / np.sqrt(len(mc))
        assert abs((r**2).mean() - q) < 4 * se, (t, q, (r**2).mean(), se)
