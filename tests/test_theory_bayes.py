"""theory.bayes: baseline MSE closed forms and the Bayes floor against Monte Carlo and quadrature.

Statistical checks use seeded generators and derandomized hypothesis, so they are reproducible; a
Monte Carlo mean must agree with its closed form within 4 standard errors.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from minigpt import baselines
from minigpt.data import AffineRecurrence
from theory import bayes as TB

N_MC = 20000


@st.composite
def priors(draw, a_max=1.0):
    def one(center_max, width_max, std_max):
        if draw(st.booleans()):
            lo = draw(st.floats(-center_max, center_max))
            return ("uniform", lo, lo + draw(st.floats(0.05, width_max)))
        return ("normal", draw(st.floats(-center_max, center_max)), draw(st.floats(0.05, std_max)))

    return dict(a=one(a_max * 0.6, a_max * 0.8, 0.3), b=one(1.0, 2.0, 1.0), x0=one(1.0, 2.0, 1.0))


def _within(samples, closed, k=4.0, floor=1e-12, true_se=0.0):
    """|MC mean - closed| <= k SE. Heavy tails (powers of normal a) make the sample SE too small, so
    the exact SE from the closed-form fourth moment is used when known."""
    se = max(samples.std() / np.sqrt(samples.size), true_se)
    assert abs(samples.mean() - closed) <= k * se + floor * (1 + abs(closed)), (samples.mean(), closed, se)


@settings(max_examples=20, derandomize=True)
@given(priors(), st.sampled_from([0.0, 0.0, 0.05]), st.integers(0, 2**32 - 1))
def test_baseline_mse_closed_forms_match_monte_carlo(pri, noise, seed):
    task = AffineRecurrence(**pri, length=7, noise=noise)
    batch = task.sample(N_MC, np.random.default_rng(seed))
    for name in TB.BASELINES:
        pred = baselines.predict(name, batch.inputs, batch.a, batch.b, task)  # [N, 6]
        err2 = (batch.targets - pred) ** 2
        for t in range(task.length - 1):
            try:
                closed = TB.baseline_mse(name, t, task)
            except NotImplementedError:
                assert noise > 0 and name in ("three_term", "least_squares") and t >= 2
                continue
            m4 = TB.baseline_error_moment(name, t, task, 4) if closed > 0 else 0.0
            _within(err2[:, t], closed, true_se=np.sqrt(max(m4 - closed**2, 0.0) / N_MC))


@settings(max_examples=15, derandomize=True)
@given(priors(), st.integers(0, 2**32 - 1))
def test_bayes_floor_matches_monte_carlo_and_beats_every_baseline(pri, seed):
    task = AffineRecurrence(**pri, length=4)
    batch = task.sample(N_MC, np.random.default_rng(seed))
    x = batch.x
    for t in (0, 1, 2):
        e_bayes = (x[:, t + 1] - TB.posterior_mean_next(x[:, : t + 1], task)) ** 2
        _within(e_bayes, TB.bayes_mse(t, task), floor=1e-10)
        for name in TB.BASELINES:
            if name == "oracle":
                continue  # knows a and b: not a predictor from the prefix
            e_base = (x[:, t + 1] - baselines.predict(name, batch.inputs, batch.a, batch.b, task)[:, t]) ** 2
            diff = e_bayes - e_base  # paired: same sequences
            assert diff.mean() <= 4 * diff.std() / np.sqrt(diff.size) + 1e-10, (name, t)
            assert TB.bayes_mse(t, task) <= TB.baseline_mse(name, t, task) + 1e-9


def _posterior_by_quadrature(x0, x1, task):
    """E[a | x0, x1] and Var by direct 1-D quadrature of p(a) p_b(x1 - a x0)."""
    def dens(av):
        return float(TB._density(task.a, av) * TB._density(task.b, x1 - av * x0))

    kind, p1, p2 = task.a
    lo, hi = (p1, p2) if kind == "uniform" else (p1 - 12 * p2, p1 + 12 * p2)
    pts = [v for v in ((x1 - task.b[1]) / x0, (x1 - task.b[2]) / x0) if lo < v < hi] if task.b[0] == "uniform" and x0 != 0 else None
    m = [integrate.quad(lambda av: av**k * dens(av), lo, hi, points=pts, epsabs=1e-13, limit=200)[0] for k in range(3)]
    mean = m[1] / m[0]
    return m[0], mean, m[2] / m[0] - mean**2


@settings(max_examples=20, derandomize=True)
@given(priors(), st.integers(0, 2**32 - 1))
def test_posterior_of_a_matches_direct_quadrature(pri, seed):
    task = AffineRecurrence(**pri, length=3)
    x = task.sample(3, np.random.default_rng(seed)).x
    dens, mean, var = TB.posterior_a(x[:, 0], x[:, 1], task)
    for i in range(3):
        z, m, v = _posterior_by_quadrature(x[i, 0], x[i, 1], task)
        assert dens[i] == pytest.approx(z, rel=1e-6, abs=1e-10)
        assert mean[i] == pytest.approx(m, rel=1e-6, abs=1e-8)
        assert var[i] == pytest.approx(v, rel=1e-5, abs=1e-8)


def _bayes_mse_1_nested(task):
    """Independent reference: nested scipy quad of p(x0) p(x1|x0) Var(a|x0,x1) (x1 - x0)^2."""
    (al, ah), (bl, bh) = task.a[1:], task.b[1:]

    def inner(v):
        f = lambda x1: float(np.nan_to_num(np.prod(TB.posterior_a(v, x1, task)[::2]) * (x1 - v) ** 2))  # noqa: E731
        c = sorted({al * v + bl, al * v + bh, ah * v + bl, ah * v + bh})
        return integrate.quad(f, c[0], c[-1], points=c[1:-1] or None, epsabs=1e-13, limit=200)[0]

    lo, hi = task.x0[1:]
    k = (bh - bl) / (ah - al)
    return integrate.quad(inner, lo, hi, points=[p for p in (0.0, k, -k) if lo < p < hi], epsabs=1e-13, limit=200)[0] / (hi - lo)


@pytest.mark.parametrize("pri", [dict(), dict(a=("uniform", 0.2, 1.3), b=("uniform", -0.5, 1.0), x0=("uniform", -2.0, 0.5))])
def test_uniform_bayes_floor_matches_nested_quadrature(pri):
    task = AffineRecurrence(**pri)
    assert TB.bayes_mse(1, task) == pytest.approx(_bayes_mse_1_nested(task), abs=1e-9)


def test_normal_bayes_floor_closed_form_matches_2d_quadrature():
    task = AffineRecurrence(a=("normal", 0.3, 0.4), b=("normal", -0.2, 0.6), x0=("uniform", -1.0, 1.5))
    (ma, sa), (mb, sb) = task.a[1:], task.b[1:]
    xs, ws = np.polynomial.legendre.leggauss(200)

    def inner(v):  # int p(x1|x0) Var (x1 - x0)^2 dx1 over +-14 std by Gauss-Legendre
        c, s = ma * v + mb, np.sqrt(sa**2 * v**2 + sb**2)
        x1 = c + 14 * s * xs
        dens, _, var = TB.posterior_a(v, x1, task)
        return float(np.sum(14 * s * ws * dens * var * (x1 - v) ** 2))

    ref = integrate.quad(inner, -1.0, 1.5, epsabs=1e-13)[0] / 2.5
    assert TB.bayes_mse(1, task) == pytest.approx(ref, abs=1e-10)


def test_known_values_and_degenerate_priors():
    task = AffineRecurrence()  # a, b, x0 ~ U(-1, 1)
    assert TB.bayes_mse(0, task) == pytest.approx(1 / 3 * 1 / 3 + 1 / 3)  # Var(a) E[x0^2] + Var(b)
    assert TB.bayes_mse(2, task) == 0.0
    assert TB.baseline_mse("copy", 0, task) == pytest.approx(7 / 9)  # E[((a-1)x0 + b)^2] = (4/3)/3 + 1/3
    assert TB.baseline_mse("oracle", 5, task) == 0.0
    known_a = AffineRecurrence(a=("uniform", 0.5, 0.5))
    assert TB.bayes_mse(1, known_a) == 0.0
    x = known_a.sample(10, np.random.default_rng(0)).x
    np.testing.assert_allclose(TB.posterior_mean_next(x[:, :2], known_a), x[:, 2], atol=1e-12)
    known_b = AffineRecurrence(b=("normal", 0.3, 0.0))
    x = known_b.sample(10, np.random.default_rng(0)).x
    np.testing.assert_allclose(TB.posterior_mean_next(x[:, :2], known_b), x[:, 2], atol=1e-12)
    # spec dicts work like the task
    assert TB.bayes_mse(1, task.spec()) == TB.bayes_mse(1, task)


def test_noise_baselines_and_errors():
    task = AffineRecurrence(noise=0.1)
    assert TB.baseline_mse("oracle", 3, task) == pytest.approx(0.01 * (1 + 1 / 3))  # e_{t+1} - a e_t
    with pytest.raises(NotImplementedError):
        TB.bayes_mse(1, task)
    with pytest.raises(NotImplementedError):
        TB.baseline_mse("three_term", 3, task)
    with pytest.raises(ValueError, match="unknown baseline"):
        TB.baseline_mse("nope", 0, AffineRecurrence())
    with pytest.raises(ValueError, match="no target"):
        TB.bayes_mse(19, AffineRecurrence(length=20))
    with pytest.raises(TypeError):
        TB.bayes_mse(0, "uniform")


def _beats_floor(pred, x, t, task, k=4.0):
    """True if predictions at position t beat the Bayes floor by more than k paired standard errors."""
    diff = (x[:, t + 1] - pred) ** 2 - (x[:, t + 1] - TB.posterior_mean_next(x[:, : t + 1], task)) ** 2
    return diff.mean() < -k * diff.std() / np.sqrt(diff.size)


def test_trained_model_does_not_beat_the_bayes_floor():
    """A model below the floor at positions 0 and 1 would see the future (a causality bug)."""
    import minigpt
    from minigpt.presets import get_preset

    spec = get_preset("tiny")
    task = AffineRecurrence(**spec["data"])
    cfg = minigpt.ModelConfig(**spec["model"], dtype="float64")
    model = minigpt.train(cfg, minigpt.TrainConfig(**spec["train"]), task, progress=False).model
    batch = task.sample(4000, np.random.default_rng(123))  # the model's forward is the slow part
    pred = np.asarray(model(batch.inputs)).reshape(batch.inputs.shape)  # [N, pos]
    for t in (0, 1):
        assert not _beats_floor(pred[:, t], batch.x, t, task)
    # the detector has teeth: a predictor that peeks at a and b (the oracle) is caught
    assert _beats_floor(batch.a * batch.x[:, 1] + batch.b, batch.x, 1, task)


@pytest.mark.parametrize("lo, hi", [(-30, -29), (-5, -4.999999), (0.1, 0.1000001), (-1, 1), (3, 40), (-np.inf, -3), (2, np.inf), (-1.01, -1.0), (-2.5, -0.999), (1000, 1000.5)])
def test_truncated_normal_moments_in_narrow_and_deep_tail_windows(lo, hi):
    """Regression: the textbook variance formula cancels catastrophically here (a bayes_mse of 50 instead of 1e-3)."""
    import mpmath

    mirror = lo > 0  # reference in the lower tail (1 - 1 cancels even at 60 digits), mean mirrored back
    rl, rh = (-hi, -lo) if mirror else (lo, hi)
    with mpmath.workdps(60):
        a_, b_ = (mpmath.mpf(v) if np.isfinite(v) else mpmath.inf * np.sign(v) for v in (rl, rh))
        Z = mpmath.ncdf(b_) - mpmath.ncdf(a_)
        pa = mpmath.npdf(a_) if np.isfinite(rl) else 0
        pb = mpmath.npdf(b_) if np.isfinite(rh) else 0
        m = (pa - pb) / Z
        v = 1 + ((a_ * pa if np.isfinite(rl) else 0) - (b_ * pb if np.isfinite(rh) else 0)) / Z - m**2
        want = [float(Z), float(-m if mirror else m), float(v)]
    got = TB._truncnorm(0.0, 1.0, lo, hi)
    for g, w in zip(got, want):
        assert float(g) == pytest.approx(w, rel=1e-9, abs=1e-300)
    # shifted and scaled: N(mu, sd^2)
    mass, mean, var = TB._truncnorm(0.7, 2.0, 0.7 + 2 * lo, 0.7 + 2 * hi)
    assert float(mean) == pytest.approx(0.7 + 2 * want[1], rel=1e-9) and float(var) == pytest.approx(4 * want[2], rel=1e-9)


@settings(max_examples=15)
@given(st.floats(-1, 1), st.floats(0.05, 1), st.floats(-1, 1), st.floats(0.05, 1), st.floats(-2, 1), st.floats(0.1, 3))
def test_normal_normal_closed_form_equals_quadrature(ma, sa, mb, sb, lo, width):
    task = AffineRecurrence(a=("normal", ma, sa), b=("normal", mb, sb), x0=("uniform", lo, lo + width))
    f = lambda v: ((ma - 1) * v + mb) ** 2 / (sa**2 * v**2 + sb**2)  # noqa: E731
    ref = sa**2 * sb**2 * (1 + integrate.quad(f, lo, lo + width, epsabs=1e-14, epsrel=1e-13)[0] / width)
    assert TB.bayes_mse(1, task) == pytest.approx(ref, rel=1e-10, abs=1e-13)
