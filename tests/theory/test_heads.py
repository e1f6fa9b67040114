"""theory.heads: closed forms of idealised heads, their expansions, and minigpt models that implement them."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigpt.tasks.data import AffineRecurrence
from theory import heads as TH

values = st.floats(-2, 2, allow_nan=False)


@st.composite
def sequences(draw, max_T=8):
    T = draw(st.integers(1, max_T))
    B = draw(st.integers(1, 3))
    return draw(hnp.arrays(np.float64, (B, T), elements=values))


@settings(max_examples=25)
@given(sequences(), st.sampled_from(["copy", "previous", "similarity"]), st.floats(-3, 3), st.floats(-2, 2), st.booleans(), st.integers(0, 2**31))
def test_minigpt_head_models_reproduce_closed_forms(x, kind, beta, gamma, plus_copy, seed):
    n_ctx = x.shape[1] + 2
    P = np.random.default_rng(seed).normal(size=(n_ctx, n_ctx)) if kind == "similarity" else None
    model = TH.head_model(kind, n_ctx, beta=beta, gamma=gamma, pos_bias=P, plus_copy=plus_copy)
    got = np.asarray(model(x)).reshape(x.shape)
    want = TH.head_closed_form(kind, x, beta, gamma, P, plus_copy)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    # the closed forms themselves: hard positional heads are exact copies
    if kind == "copy":
        np.testing.assert_allclose(got, gamma * x + (x if plus_copy else 0), atol=1e-10)
    if kind == "previous":
        prev = np.concatenate([x[:, :1], x[:, :-1]], 1)
        np.testing.assert_allclose(got, gamma * prev + (x if plus_copy else 0), atol=1e-10)


def test_head_model_pattern_is_the_closed_form_pattern():
    x = np.random.default_rng(0).uniform(-1, 1, (2, 6))
    model = TH.head_model("similarity", 6, beta=-2.5)
    _, cache = model.run_with_cache(x)
    np.testing.assert_allclose(cache["pattern", 0][:, 0], TH.similarity_pattern(x, -2.5), atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 3, 4])
def test_small_beta_series_is_the_cumulant_expansion_symbolically(T):
    assert TH.check_expansion(T, order=3 if T <= 3 else 2)


@settings(max_examples=25)
@given(sequences(max_T=10), st.floats(1e-4, 0.05), st.sampled_from([-1.0, 1.0]))
def test_small_beta_expansion_error_is_of_the_next_order(x, mag, sign):
    x = x / 2  # |x| <= 1
    beta = sign * mag
    exact = TH.similarity_head(x, beta, 0.7)
    for order in range(4):
        err = np.abs(exact - TH.small_beta_expansion(x, beta, 0.7, order)).max()
        assert err <= 2.0 * mag ** (order + 1) + 1e-13, (order, err)


@settings(max_examples=25)
@given(st.integers(2, 8), st.integers(0, 2**31), st.sampled_from([-1.0, 1.0]))
def test_large_beta_limit(T, seed, sign):
    rng = np.random.default_rng(seed)
    x = rng.permutation(np.linspace(0.2, 1.0, T)) * rng.choice([-1, 1], T)  # distinct |x| >= 0.2
    x = np.sign(x) * (np.abs(x) + 0.1 * np.arange(T) / T)  # break sign-symmetric ties
    limit = TH.large_beta_limit(x[None], sign, 1.3)
    np.testing.assert_allclose(TH.similarity_head(x[None], sign * 1e5, 1.3), limit, atol=1e-9)
    # negative similarity attends to the least similar term: the min if x_t > 0, the max if x_t < 0
    if sign < 0:
        for t in range(T):
            ctx = x[: t + 1]
            want = ctx.min() if x[t] > 0 else ctx.max()
            assert limit[0, t] == pytest.approx(1.3 * want)


def test_arithmetic_family_copy_plus_scaled_mean_difference_is_exact():
    x = AffineRecurrence(a=1.0, length=10).sample(50, np.random.default_rng(0)).x
    mu = TH.small_beta_expansion(x, 0.0, 1.0, order=0)  # beta = 0: the context mean
    t = np.arange(x.shape[1])
    pred = x[:, 1:-1] + (2 / t[1:-1]) * (x[:, 1:-1] - mu[:, 1:-1])
    np.testing.assert_allclose(pred, x[:, 2:], atol=1e-12)
    mean, var = TH.arithmetic_context()
    assert str(mean) == "b*t/2 + x0"


def test_family_table_rows():
    rows = TH.family_table(betas=(-1.0, 1.0), length=8, batch=256)
    assert {r["family"] for r in rows} == set(TH.FAMILIES) and len(rows) == 6
    for r in rows:
        assert r["mse_copy_plus_head"] <= r["mse_copy"] + 1e-12  # least squares never worse than gamma = 0
        assert r["mse2"] <= r["mse_copy"] + 1e-12
        # each row against an independent least-squares fit on the same sequences (family_table samples with seed 0)
        pa, pb, px = TH.FAMILIES[r["family"]]
        x = AffineRecurrence(a=pa, b=pb, x0=px, length=8).sample(256, np.random.default_rng(0)).x
        head = TH.similarity_head(x[:, :-1], r["beta"])[:, 1:].ravel()
        cur, nxt = x[:, 1:-1].ravel(), x[:, 2:].ravel()
        (g,), *_ = np.linalg.lstsq(head[:, None], nxt - cur, rcond=None)
        mse_copy, mse_fit = np.mean((nxt - cur) ** 2), np.mean((nxt - cur - g * head) ** 2)
        assert r["gamma"] == pytest.approx(g, rel=1e-9) and r["mse_copy"] == pytest.approx(mse_copy, rel=1e-12)
        assert r["r2"] == pytest.approx(1 - mse_fit / mse_copy, abs=1e-9)
        (c, g2), *_ = np.linalg.lstsq(np.stack([cur, head], 1), nxt, rcond=None)
        assert r["copy_weight"] == pytest.approx(c, rel=1e-9) and r["gamma2"] == pytest.approx(g2, rel=1e-9)
        assert r["r2_2"] == pytest.approx(1 - np.mean((nxt - c * cur - g2 * head) ** 2) / mse_copy, abs=1e-9)
    # on the a = 1 family the similarity head adds information to a copy (the paper's mechanism): r2 well above 0
    assert max(r["r2_2"] for r in rows if r["family"] == "arithmetic") > 0.1


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="kind"):
        TH.head_model("induction", 4)
    with pytest.raises(ValueError, match="kind"):
        TH.similarity_features(np.zeros(3), "cosine")
    with pytest.raises(ValueError, match="pos_bias"):
        TH.head_model("similarity", 4, pos_bias=np.zeros((3, 3)))


@settings(max_examples=20)
@given(st.integers(2, 7), st.floats(-4, 4), st.booleans(), st.integers(0, 2**31), st.sampled_from(TH.SIMILARITIES))
def test_fit_similarity_pattern_recovers_an_idealised_head(T, beta, positional, seed, kind):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (64, T))
    P = rng.normal(size=(T, T)) if positional else None
    fit = TH.fit_similarity_pattern(TH.similarity_pattern(x, beta, P, kind), x, positional=positional, kind=kind)
    assert fit["beta"] == pytest.approx(beta, abs=1e-8)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-10) and fit["r2_logits"] == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(fit["fitted"], TH.similarity_pattern(x, beta, P, kind), atol=1e-9)
    g = TH.fit_gain(-0.6 * TH.similarity_head(x, beta, 1.0, P), TH.similarity_head(x, beta, 1.0, P))
    assert g["gamma"] == pytest.approx(-0.6) and g["r2"] == pytest.approx(1.0)


def test_fit_similarity_pattern_on_a_uniform_pattern_gives_beta_zero():
    x = np.random.default_rng(0).uniform(-1, 1, (32, 5))
    fit = TH.fit_similarity_pattern(TH.causal_softmax(np.zeros((32, 5, 5))), x)
    assert abs(fit["beta"]) < 1e-10
