"""minigpt.interp.head_scores: the head definitions on hand-built weights (a copying head, a negative
similarity head), on random initialisations, and on the idealised heads of theory/heads.py."""
import numpy as np
import pytest

from minigpt import ModelConfig, Transformer
from minigpt.interp import classify_heads, head_scores
from minigpt.interp.head_scores import pattern_score, similarity_fit
from minigpt.tasks.data import AffineRecurrence


# ------------------------------------------------------------------ hand-built heads
def hand_built(kind, T=6, c=40.0, alpha=-5.0):
    """One attention-only layer, no LN.  d_model = 1 (x) + T (positions) + 1 (output slot)."""
    D, E = T + 2, T + 2
    cfg = ModelConfig(n_layers=1, d_model=D, n_heads=1, d_head=E, n_ctx=T, attn_only=True, normalization_type=None, dtype="float64")
    m = Transformer(cfg, seed=0)
    P = {k: np.zeros_like(v) for k, v in m.params.items()}
    P["embed.W_E"][0, 0] = 1.0  # x -> dim 0
    for t in range(T):
        P["pos_embed.W_pos"][t, 1 + t] = 1.0  # position t -> dim 1 + t
    if kind == "copy":
        for t in range(T):
            P["blocks.0.attn.W_Q"][0, 1 + t, t] = c  # query at t -> c f_t
            P["blocks.0.attn.W_K"][0, 1 + t, t] = 1.0  # key at j -> f_j: logit c [t == j] / sqrt(E)
    else:  # logits = alpha x_t x_j
        s = np.sqrt(abs(alpha) * np.sqrt(E))
        P["blocks.0.attn.W_Q"][0, 0, 0] = s
        P["blocks.0.attn.W_K"][0, 0, 0] = np.sign(alpha) * s
    P["blocks.0.attn.W_V"][0, 0, E - 1] = 1.0  # value carries x
    P["blocks.0.attn.W_O"][0, E - 1, D - 1] = 1.0  # written to the output slot
    P["unembed.W_U"][D - 1, 0] = 1.0
    m.params.update(P)
    return m


def _task_batch(T=6, n=256, seed=0):
    b = AffineRecurrence(length=T + 1).sample(n, np.random.default_rng(seed))
    return b.inputs, b.targets


def test_hand_built_copying_head_is_detected():
    m = hand_built("copy")
    x, y = _task_batch()
    np.testing.assert_allclose(m(x), x, atol=1e-4)  # the model copies x_t
    s = head_scores(m, x, y)
    assert s["current"][0, 0] > 0.999
    assert s["copy"][0, 0] >= 0.99
    assert s["ov_gain"][0, 0] == pytest.approx(1.0, abs=1e-3)
    assert s["corr_x"][0, 0] > 0.999
    c = classify_heads(s)
    assert c["copy"][0, 0] and c["copy_kind"][0, 0] == "current"
    assert not c["ns_logit"][0, 0]


def test_hand_built_negative_similarity_head_is_detected():
    m = hand_built("negsim", alpha=-5.0)
    x, y = _task_batch()
    fit = similarity_fit(m.run_with_cache(x)[1]["attn_scores", 0][:, 0], x)
    assert fit["alpha"] == pytest.approx(-5.0, rel=1e-6)
    assert fit["sim_r2"] > 0.99 and fit["r2"] > 0.999
    s = head_scores(m, x, y)
    c = classify_heads(s)
    assert s["sim_effect"][0, 0] < -0.25
    assert c["ns_logit"][0, 0] and not c["copy"][0, 0]
    # and a positive-similarity head is not a negative similarity head
    s2 = head_scores(hand_built("negsim", alpha=+5.0), x, y)
    assert s2["sim_effect"][0, 0] > 0.25 and not classify_heads(s2)["ns_logit"][0, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_init_heads_are_neither(seed):
    cfg = ModelConfig(n_layers=3, d_model=16, n_heads=2, d_mlp=32, n_ctx=10)
    m = Transformer(cfg, seed=seed)
    x, y = _task_batch(T=9, seed=seed)
    c = classify_heads(head_scores(m, x, y))
    for k in ("copy", "ns_logit", "ns_ov", "ns_anti", "ns_any"):
        assert not c[k].any(), k


def test_pattern_score():
    T = 5
    eye = np.eye(T)
    pat = np.broadcast_to(eye, (2, T, T))
    assert pattern_score(pat, eye) == pytest.approx(1.0)
    prev = np.zeros((T, T))
    prev[0, 0] = 1
    prev[np.arange(1, T), np.arange(T - 1)] = 1
    assert pattern_score(pat, prev) == pytest.approx(0.0)


# ------------------------------------------------------------------ the idealised heads of theory/heads.py
def test_theory_heads_are_classified_as_designed():
    from theory import heads as th

    x, y = _task_batch(T=8)
    cp = head_scores(th.head_model("copy", 8), x, y)
    assert cp["copy"][0, 0] >= 0.99 and classify_heads(cp)["copy_kind"][0, 0] == "current"
    pv = head_scores(th.head_model("previous", 8), x, y)
    assert pv["copy_prev"][0, 0] >= 0.99 and classify_heads(pv)["copy_kind"][0, 0] == "previous"
    neg = th.head_model("similarity", 8, beta=-4.0)
    s = head_scores(neg, x, y)
    assert s["alpha"][0, 0] == pytest.approx(-4.0, rel=1e-6)
    assert classify_heads(s)["ns_logit"][0, 0]
    # score against the pattern predicted in closed form: 1 for the model built from it
    _, cache = neg.run_with_cache(x)
    assert pattern_score(cache["pattern", 0][:, 0], th.similarity_pattern(x, -4.0)) == pytest.approx(1.0, abs=1e-9)
