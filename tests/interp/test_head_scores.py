"""minigpt.interp: exact identities, interventions, and head definitions on hand-built weights."""
import numpy as np
import pytest

from minigpt import ModelConfig, Transformer
from minigpt.tasks.data import AffineRecurrence
from minigpt.interp import (accumulated_resid, apply_ln_to_stack, classify_heads, decompose_resid, direct_attribution, head_ablation,
                            head_scores, make_pairs, patch_heads, patch_resid, prediction_lens, stack_head_results)
from minigpt.interp.ablation import ablate_hook
from minigpt.interp.head_scores import pattern_score, similarity_fit
from minigpt.interp.patching import patch_grid

from test_hooks import inputs, make_model


@pytest.fixture(params=[(False, "LN"), (True, None), (True, "LN")], ids=["mlp-LN", "attn-noLN", "attn-LN"])
def model(request):
    return make_model(*request.param)


def test_residual_identities(model):
    x, _ = inputs()
    out, cache = model.run_with_cache(x)
    L = model.cfg.n_layers
    for l in range(L):
        mlp = 0 if model.cfg.attn_only else cache["mlp_out", l]
        np.testing.assert_allclose(cache["resid_post", l], cache["resid_pre", l] + cache["attn_out", l] + mlp, atol=1e-12)
        heads, labels = stack_head_results(cache, l + 1)
        per_layer = heads[-model.cfg.n_heads:].sum(0) + model.params[f"blocks.{l}.attn.b_O"]
        np.testing.assert_allclose(per_layer, cache["attn_out", l], atol=1e-12)
        np.testing.assert_allclose(decompose_resid(cache, l)[0].sum(0), cache["resid_pre", l], atol=1e-12)
    stack, labels = decompose_resid(cache)
    np.testing.assert_allclose(stack.sum(0), cache["resid_post", L - 1], atol=1e-12)
    assert labels[:2] == ["embed", "pos_embed"]
    acc, labels = accumulated_resid(cache)
    assert labels == [f"{l}_pre" for l in range(L)] + ["final_post"]
    np.testing.assert_allclose(acc[-1], cache["resid_post", -1])
    full, labels = stack_head_results(cache, incl_remainder=True)
    np.testing.assert_allclose(full.sum(0), cache["resid_post", L - 1], atol=1e-12)
    assert labels[0] == "L0H0" and labels[-1] == "remainder"
    # cache methods delegate
    np.testing.assert_allclose(cache.decompose_resid(return_labels=False).sum(0), stack.sum(0))


def test_apply_ln_to_stack_sums_to_normalized(model):
    x, _ = inputs()
    _, cache = model.run_with_cache(x)
    stack, _ = decompose_resid(cache)
    normed = apply_ln_to_stack(cache, stack).sum(0)
    if model.cfg.normalization_type == "LN":
        P = model.params
        np.testing.assert_allclose(normed * P["ln_final.w"] + P["ln_final.b"], cache["ln_final.hook_normalized"], atol=1e-10)
    else:
        np.testing.assert_allclose(normed, cache["resid_post", -1])


def test_direct_attribution_sums_to_prediction(model):
    x, _ = inputs()
    out, cache = model.run_with_cache(x)
    contrib, labels = direct_attribution(model, cache)
    np.testing.assert_allclose(contrib.sum(0), out, atol=1e-10)
    assert labels[-1] == "bias" and "L1H1" in labels


def _hand_readout(m, resid, scale=None):
    """LN_final (own statistics, or the given scale) and W_U applied to a residual [B, T, D], written out by hand."""
    P = m.params
    if m.cfg.normalization_type == "LN":
        c = resid - resid.mean(-1, keepdims=True)
        s = np.sqrt((c * c).mean(-1, keepdims=True) + m.cfg.eps) if scale is None else scale
        resid = c / s * P["ln_final.w"] + P["ln_final.b"]
    return (resid @ P["unembed.W_U"] + P["unembed.b_U"])[..., 0]


@pytest.mark.parametrize("ln", ["recompute", "frozen"])
def test_lens_rows_read_every_block(model, ln):
    x, _ = inputs()
    out, cache = model.run_with_cache(x)
    preds, labels = prediction_lens(model, cache, ln)
    L = model.cfg.n_layers
    assert preds.shape == (L + 1,) + out.shape and labels == [f"{l}_pre" for l in range(L)] + ["final_post"]
    np.testing.assert_allclose(preds[-1], out, atol=1e-10)
    scale = cache["ln_final.hook_scale"] if ln == "frozen" and model.cfg.normalization_type == "LN" else None
    resids = [cache["hook_embed"] + cache["hook_pos_embed"]] + [cache["resid_post", l] for l in range(L)]  # before block 0, after each block
    for i, r in enumerate(resids):  # row i = the read-out of the residual before block i, not after it
        np.testing.assert_allclose(preds[i], _hand_readout(model, r, scale), atol=1e-10, err_msg=labels[i])
    assert np.abs(preds[0] - preds[1]).max() > 1e-3  # rows differ, so reading one block late would fail above


def test_lens_choices_in_the_middle():
    m = make_model()
    x, _ = inputs()
    _, cache = m.run_with_cache(x)
    a, _ = prediction_lens(m, cache, "recompute")
    b, _ = prediction_lens(m, cache, "frozen")
    r0 = cache["resid_pre", 0]
    np.testing.assert_allclose(a[0], _hand_readout(m, r0), atol=1e-10)  # the embeddings' own LayerNorm statistics
    np.testing.assert_allclose(b[0], _hand_readout(m, r0, cache["ln_final.hook_scale"]), atol=1e-10)  # the final residual's scale
    assert np.abs(a[0] - b[0]).max() > 1e-2  # and the two choices are different numbers here


def test_patching_with_own_cache_changes_nothing(model):
    x, _ = inputs()
    base = model(x)
    _, cache = model.run_with_cache(x)
    names = [k for k in cache.keys()]
    _, preds = patch_grid(model, x, x, lambda n: n, lambda n: (slice(None),), names, clean_cache=cache)
    for p in preds:  # equal up to summation order (a hooked attention sums per-head results, an unhooked one fuses them)
        np.testing.assert_allclose(p, base, rtol=0, atol=1e-13)


def test_patching_grids_shapes_and_full_restore():
    m = make_model()
    task = AffineRecurrence(length=6)
    cl, co = make_pairs(task, 16, "a", np.random.default_rng(0))
    np.testing.assert_array_equal(cl[:, 0], co[:, 0])  # x0 shared
    clean, corrupt = cl[:, :-1], co[:, :-1]
    g = patch_resid(m, clean, corrupt)
    assert g.shape == (2, 5)
    p_cl, p_co = m(clean), m(corrupt)

    def frac(pred):  # docs/interp.md: restored fraction at the last position
        return 1 - ((pred - p_cl)[:, -1] ** 2).mean() / ((p_co - p_cl)[:, -1] ** 2).mean()

    for t in range(5):  # resid_pre 0 at position t is the embedding of x_t: the same as feeding the corrupt input with clean x_t
        mixed = corrupt.copy()
        mixed[:, t] = clean[:, t]
        assert g[0, t] == pytest.approx(frac(m(mixed)), abs=1e-10), t
    np.testing.assert_allclose(patch_resid(m, clean, corrupt, site="resid_post")[-1], [0, 0, 0, 0, 1], atol=1e-10)  # read-out is per position
    # patching every position of resid_pre 0 restores fully:
    _, cache = m.run_with_cache(clean)
    r, _ = patch_grid(m, clean, corrupt, lambda i: "blocks.0.hook_resid_pre", lambda i: (slice(None),), [0], clean_cache=cache)
    assert r[0] == pytest.approx(1.0)
    # a head's z patched from the clean run = its output z_h W_O[h] swapped in attn_out (another hook point, same effect)
    ph, ph_pos = patch_heads(m, clean, corrupt), patch_heads(m, clean, corrupt, by_pos=True)
    assert ph.shape == (2, 2) and ph_pos.shape == (2, 2, 5)
    _, cc = m.run_with_cache(clean)
    _, cr = m.run_with_cache(corrupt)  # nothing upstream of a head changes when its z is patched
    for l in range(2):
        for h in range(2):
            for t in [slice(None)] + list(range(5)):
                def swap(a, hook, l=l, h=h, t=t):
                    a = a.copy()
                    a[:, t] += cc["result", l][:, t, h] - cr["result", l][:, t, h]
                    return a
                got = ph[l, h] if isinstance(t, slice) else ph_pos[l, h, t]
                assert got == pytest.approx(frac(m.run_with_hooks(corrupt, [(f"blocks.{l}.hook_attn_out", swap)])), abs=1e-10), (l, h, t)
    assert np.abs(ph).max() > 1e-3
    with pytest.raises(ValueError):
        make_pairs(task, 4, "c", np.random.default_rng(0))


def test_zero_ablation_hook_equals_zeroing_W_O(model):
    x, y = inputs()
    hooked = model.run_with_hooks(x, [("blocks.1.attn.hook_z", ablate_hook(1, "zero"))])
    saved = model.params["blocks.1.attn.W_O"].copy()
    model.params["blocks.1.attn.W_O"][1] = 0
    try:
        np.testing.assert_allclose(hooked, model(x), atol=1e-12)
    finally:
        model.params["blocks.1.attn.W_O"] = saved


def test_ablation_tables(model):
    x, y = inputs(B=8)
    _, cache = model.run_with_cache(x)
    base = ((model(x) - y) ** 2).mean(0)
    for method in ("zero", "mean"):
        ab = head_ablation(model, x, y, method)
        assert ab["table"].shape == (2, 2) and ab["by_pos"].shape == (2, 2, 5)
        np.testing.assert_allclose(ab["table"], ab["by_pos"].mean(-1))
        for l in range(2):
            for h in range(2):  # another route: swap head h's output z_h W_O[h] in attn_out for 0 / its batch mean per position
                r = cache["result", l][:, :, h]
                new = 0 * r if method == "zero" else np.broadcast_to(r.mean(0), r.shape)
                hook = (f"blocks.{l}.hook_attn_out", lambda a, hook, r=r, new=new: a - r + new)
                want = ((model.run_with_hooks(x, [hook]) - y) ** 2).mean(0) - base  # later layers see the ablated stream either way
                np.testing.assert_allclose(ab["by_pos"][l, h], want, atol=1e-10, err_msg=f"{method} L{l}H{h}")
        if method == "zero":  # every layer: zeroing W_O[h] is the same intervention
            for l in range(2):
                for h in range(2):
                    saved = model.params[f"blocks.{l}.attn.W_O"].copy()
                    model.params[f"blocks.{l}.attn.W_O"][h] = 0
                    try:
                        np.testing.assert_allclose(ab["by_pos"][l, h], ((model(x) - y) ** 2).mean(0) - base, atol=1e-10)
                    finally:
                        model.params[f"blocks.{l}.attn.W_O"] = saved
    ab = head_ablation(model, x, y, "resample")
    assert np.abs(ab["table"]).min() > 0  # a resampled head writes another sequence's output: the MSE moves (identity would give 0)
    with pytest.raises(ValueError):
        head_ablation(model, x, y, "bogus")


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
