"""minigpt.interp.claims (definitions v2, docs/interp.md) on heads whose answer is known by construction.

The planted heads are ``theory.heads.head_model``: one-layer, attention-only, no LayerNorm, so a head's direct
contribution *is* the prediction (OV gain = gamma exactly) and its pattern is the closed form of theory.heads.
"""
import numpy as np
import pytest

from minigpt.tasks.data import AffineRecurrence
from minigpt.experiments import claims as C
from theory.heads import fit_similarity_pattern, head_model, similarity_head, similarity_pattern

T = 12


def seqs(n=256, seed=0):
    return AffineRecurrence(length=T).sample(n, np.random.default_rng(seed)).x.astype(np.float64)  # [n, T]


def noisy(y, seed=1, sd=1e-3):
    return y + sd * np.random.default_rng(seed).standard_normal(y.shape)


# ----------------------------------------------------------------------------- statistics
def test_similarity_r_recovers_planted_logits_exactly():
    x = seqs(64)
    rng = np.random.default_rng(3)
    sim = -np.abs(x[:, :, None] - x[:, None, :])  # [B, T, T]
    pos = rng.standard_normal((T, T))  # any positional bias: removed by the cell means
    row = rng.standard_normal((64, T, 1))  # any per-row constant: removed by row centring
    assert C.similarity_r(2.0 * sim + pos + row, x) == pytest.approx(1.0, abs=1e-12)
    assert C.similarity_r(-0.5 * sim + pos + row, x) == pytest.approx(-1.0, abs=1e-12)
    assert C.similarity_r(pos + row, x) == 0.0  # position only: nothing left to correlate


def test_partial_corr_removes_the_control():
    rng = np.random.default_rng(0)
    c, e = rng.standard_normal((2, 5000))
    assert C.partial_corr(2 * c + e, -c + e, c[:, None]) == pytest.approx(1.0, abs=1e-12)  # same once c is removed
    assert C.corr(2 * c + e, -c + e) < 0.1  # ... although the raw correlation says otherwise
    f = rng.standard_normal(5000)
    assert abs(C.partial_corr(c + e, c + f, c[:, None])) < 0.05  # only the control in common
    res = C.residualise(3 + 2 * c + e, np.stack([c, f], 1))  # what is left is orthogonal to the controls and to 1
    assert abs(res.mean()) < 1e-12 and abs(res @ c) < 1e-9 and abs(res @ f) < 1e-9


def test_unique_r2_is_one_for_the_term_and_zero_for_its_correlates():
    x = seqs(512)
    w = C.window(x)  # [B, T', 3]: x_{t-2}, x_{t-1}, x_t
    np.testing.assert_array_equal(w[:, 0], x[:, :3])
    for k in C.OFFSETS:
        own = w[..., 2 - k : 3 - k]  # feats = the term itself
        assert C.unique_r2(own, x, k) == pytest.approx(1.0, abs=1e-9)
    # x_t carries everything about x_{t-1}?  No: given x_{t-2} and x_t, x_t adds nothing (it *is* one of the others)
    assert abs(C.unique_r2(w[..., 2:], x, 1)) < 1e-9
    # a random mix of the other two terms also adds nothing, however well it correlates with x_{t-1}
    mix = 0.7 * w[..., 2:] + 0.3 * w[..., :1]
    assert C.corr(mix, w[..., 1]) > 0.9
    assert abs(C.unique_r2(mix, x, 1)) < 1e-9
    # an encoding that changes with the position (the sign flips from one t to the next): each position's probe reads
    # it exactly; one probe pooled over positions cannot
    flip = w[..., 1:2] * np.where(np.arange(w.shape[1]) % 2, 1.0, -1.0)[None, :, None]
    assert C.unique_r2(flip, x, 1) == pytest.approx(1.0, abs=1e-9)
    assert C.unique_r2(flip, x, 1, pooled=True) < 0.2


# ----------------------------------------------------------------------------- claim 1 on planted heads
def copy_row(model, x, k):
    _, cache = model.run_with_cache(x)
    return next(r for r in C.copy_table(cache, x) if r["k"] == k)


@pytest.mark.parametrize("kind,k", [("previous", 1), ("copy", 0)])
def test_copy_table_finds_the_planted_term(kind, k):
    x = seqs(256)
    m = head_model(kind, T, gamma=1.0)
    hit = copy_row(m, x, k)
    assert hit["attend"] == pytest.approx(1.0, abs=1e-12) and hit["unique"] == pytest.approx(1.0, abs=1e-9)
    other = copy_row(m, x, 1 - k)
    assert other["attend"] < 1e-12 and abs(other["unique"]) < 1e-6  # x_{t-(1-k)} is not what it carries


def test_inert_head_attends_but_carries_nothing():
    x = seqs(256)
    row = copy_row(head_model("previous", T, gamma=0.0), x, 1)
    assert row["attend"] == pytest.approx(1.0, abs=1e-12) and abs(row["unique"]) < 1e-12


def test_claims_copy_verdict_follows_the_planted_head():
    x = seqs(256)
    m = head_model("previous", T, gamma=1.0)
    y = noisy(m(x))  # the planted head is what the target needs
    res = C.claims(m, x, y)
    assert res["copy"] == {"holds": True, "heads": ["L0H0 (x_t-1)"]}
    # the same head against a target it does not serve: it attends and carries x_{t-1}, but ablating it (or not)
    # changes little relative to an MSE that is large anyway
    res = C.claims(m, x, noisy(np.zeros_like(x), sd=1.0))
    row = next(r for r in res["copy_rows"] if r["k"] == 1)
    assert row["is_attend"] and row["is_unique"] and not row["is_matters"] and not res["copy"]["holds"]


# ----------------------------------------------------------------------------- claim 2 on planted heads
def test_pattern_average_ratio_matches_closed_form():
    x = seqs(256)
    beta, gamma = 3.0, -0.5
    m = head_model("similarity", T, beta=beta, gamma=gamma)
    y = noisy(m(x))
    avg = similarity_pattern(x, beta).mean(0)  # [T, T] the position-average pattern
    pred_avg = gamma * np.einsum("tj,bj->bt", avg, x)
    want = ((pred_avg - y)[:, 2:] ** 2).mean() / ((m(x) - y)[:, 2:] ** 2).mean()
    assert C.pattern_average_ratio(m, x, y, 0, 0) == pytest.approx(want, rel=1e-9)
    # a positional head's pattern is the same for every sequence: replacing it by its average changes nothing
    p = head_model("previous", T)
    assert C.pattern_average_ratio(p, x, noisy(p(x)), 0, 0) == pytest.approx(1.0, abs=1e-12)


def value_only_head(beta=3.0, gamma=-0.5):
    """A planted head that selects keys by their value alone (logits beta x_j, not a similarity to x_t): the query
    of ``head_model`` reads the constant dimension instead of x_t."""
    m = head_model("similarity", T, beta=beta, gamma=gamma)
    p = dict(m.params)
    W_Q = p["blocks.0.attn.W_Q"].copy()
    W_Q[0, 0, 0], W_Q[0, 1, 0] = 0.0, 1.0  # q_0 = 1 instead of x_t
    p["blocks.0.attn.W_Q"] = W_Q
    m.params = p
    return m


@pytest.mark.parametrize("beta", [3.0, -3.0])
def test_similarity_substitution_recovers_a_planted_similarity_head_only(beta):
    x = seqs(512)
    m = head_model("similarity", T, beta=beta, gamma=-0.5)
    y = noisy(m(x))
    sub = C.similarity_substitution(m, x, y, 0, 0, kind="product")
    assert sub["beta"] == pytest.approx(beta, rel=1e-9)  # the fit finds the planted head ...
    assert sub["avg_ratio"] > 100 and sub["sim_ratio"] == pytest.approx(1.0, abs=1e-6)  # ... and substituting it costs nothing
    assert sub["recovered"] == pytest.approx(1.0, abs=1e-9)
    # distance logits -|x_t - x_j| are a different similarity: they win back much of the cost, not all of it
    dist = C.similarity_substitution(m, x, y, 0, 0, kind="distance")
    assert np.sign(dist["beta"]) == np.sign(beta) and 0.5 < dist["recovered"] < 0.99
    h = len(x) // 2  # the substituted pattern is the distance head fitted on the first half, scored on the second
    fit = fit_similarity_pattern(m.run_with_cache(x)[1]["pattern", 0][:h, 0], x[:h], kind="distance")
    want = C.pattern_substitution_ratio(m, x[h:], y[h:], 0, 0, similarity_pattern(x[h:], fit["beta"], fit["pos_bias"], "distance"))
    assert dist["beta"] == fit["beta"] and dist["sim_ratio"] == pytest.approx(want, rel=1e-12)
    # a head that is selective by value but not by similarity to x_t: the similarity pattern wins nothing back
    v = value_only_head(beta)
    yv = noisy(v(x))
    for kind in ("product", "distance"):
        sub = C.similarity_substitution(v, x, yv, 0, 0, kind=kind)
        assert sub["avg_ratio"] > 100 and sub["recovered"] < 0.2, kind
    # a positional head: its average pattern is itself, nothing to recover
    p = head_model("previous", T)
    assert C.similarity_substitution(p, x, noisy(p(x)), 0, 0)["recovered"] is None


@pytest.mark.parametrize("beta,row", [(4.0, "ns_similar"), (-4.0, "ns_dissimilar"), (0.0, None)])
def test_negsim_verdict_follows_the_planted_head(beta, row):
    x = seqs(256)
    gamma = -0.5
    m = head_model("similarity", T, beta=beta, gamma=gamma)
    y = noisy(m(x))
    res = C.claims(m, x, y)
    r = res["negsim_rows"][0]
    assert r["ov_gain"] == pytest.approx(gamma, abs=1e-9)  # no LayerNorm: the direct contribution is gamma * read
    assert np.sign(r["r_sim"]) == np.sign(beta)
    if beta:
        assert abs(r["r_sim"]) >= 0.3 and r["selective_ratio"] >= 1.5 and r["resample_ratio"] >= 2
    else:
        assert r["r_sim"] == 0.0 and r["selective_ratio"] == pytest.approx(1.0, abs=1e-12)
    for key in ("ns_similar", "ns_dissimilar"):
        assert res[key]["holds"] == (key == row)
    if row:  # each criterion is part of the verdict: demand more than the head has of any one, and it drops out
        for crit, value in (("selective", r["selective_ratio"]), ("matters", r["resample_ratio"]), ("similarity", abs(r["r_sim"]))):
            assert not C.claims(m, x, y, thresholds={crit: 1.01 * value})[row]["holds"], crit
        assert not C.claims(m, x, y, thresholds={"ov_gain": 1.01 * gamma})[row]["holds"]
    # the same head with a positive gain is a similarity head, not a negative one
    pos = C.claims(head_model("similarity", T, beta=beta, gamma=0.5), x, noisy(head_model("similarity", T, beta=beta, gamma=0.5)(x)))
    assert not pos["ns_similar"]["holds"] and not pos["ns_dissimilar"]["holds"]


def test_refinement_reads_the_estimate_entering_the_layer():
    """The estimate entering layer 0 of a planted head is a linear read-out of resid_pre 0 = (x_t, 1, 0, onehot(t)):
    one slope on x_t and an intercept per position, fitted on the first half of the sequences. Recomputed here with
    plain least squares; the partial correlations must match on the held-out half."""
    x = seqs(512)
    beta, gamma = -2.0, 1.0
    m = head_model("similarity", T, beta=beta, gamma=gamma)
    out = similarity_head(x, beta, gamma)[:, 2:].ravel()  # [N] the head's direct contribution
    y = 0.9 * x + similarity_head(x, beta, gamma) + noisy(np.zeros_like(x), sd=0.05)
    xt, yt = x[:, 2:].ravel(), y[:, 2:].ravel()
    pos = np.tile(np.eye(T - 2), (len(x), 1))  # [N, T-2] onehot(t)
    X = np.concatenate([xt[:, None], pos], 1)
    cut = 256 * (T - 2)
    coef = np.linalg.lstsq(X[:cut], yt[:cut], rcond=None)[0]
    est = X @ coef

    def pc(u, v, c):
        Z = np.stack([c, np.ones_like(c)], 1)
        ru = u - Z @ np.linalg.lstsq(Z, u, rcond=None)[0]
        rv = v - Z @ np.linalg.lstsq(Z, v, rcond=None)[0]
        return np.corrcoef(ru, rv)[0, 1]

    r = C.claims(m, x, y)["negsim_rows"][0]
    assert r["pcorr_error"] == pytest.approx(pc(out[cut:], (yt - est)[cut:], est[cut:]), abs=1e-9)
    assert r["pcorr_step"] == pytest.approx(pc(out, yt - xt, xt), abs=1e-9)
    assert r["pcorr_error"] > 0.9 and r["refines"]  # the head's output is most of what the estimate misses


def stacked(layers, n_layers=3):
    """A ``n_layers`` model whose block l is ``layers[l]`` (a one-layer ``head_model``) and every other block is
    empty (zero weights: without LayerNorm an empty block adds nothing). All share head_model's residual layout,
    so the prediction is the sum of the planted heads' outputs."""
    import dataclasses

    from minigpt import Transformer

    first = next(iter(layers.values()))
    cfg = dataclasses.replace(first.cfg, n_layers=n_layers)
    m = Transformer(cfg)
    m.params = {k: np.zeros_like(v) for k, v in m.params.items()}
    for k in ("embed.W_E", "pos_embed.W_pos", "unembed.W_U", "unembed.b_U"):
        m.params[k] = first.params[k].copy()
    for l, hm in layers.items():
        for k, v in hm.params.items():
            if k.startswith("blocks.0."):
                m.params[k.replace("blocks.0.", f"blocks.{l}.")] = v.copy()
    return m


def test_claims_read_layer_0_for_copying_and_the_last_layer_for_negsim():
    x = seqs(256)
    m = stacked({0: head_model("previous", T), 2: head_model("similarity", T, beta=4.0, gamma=-0.5)})
    np.testing.assert_allclose(m(x), head_model("previous", T)(x) + head_model("similarity", T, beta=4.0, gamma=-0.5)(x), atol=1e-12)
    res = C.claims(m, x, noisy(m(x)))
    assert res["copy"]["heads"] == ["L0H0 (x_t-1)"]
    assert res["ns_similar"]["heads"] == ["L2H0"] and not res["ns_dissimilar"]["holds"]
    assert [r["head"] for r in res["negsim_rows"]] == ["L2H0"]
    # swap the layers: no layer-0 copying head (layer 0's similarity head attends diffusely), and the last layer's
    # head is positional (r_sim = 0, never selective)
    m = stacked({2: head_model("previous", T), 0: head_model("similarity", T, beta=4.0, gamma=-0.5)})
    res = C.claims(m, x, noisy(m(x)))
    assert not res["copy"]["holds"] and not res["ns_similar"]["holds"] and not res["ns_dissimilar"]["holds"]
