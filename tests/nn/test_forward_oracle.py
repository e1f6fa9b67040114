"""An independent forward oracle at the ``paper`` size.

``oracle`` below is a plain-numpy transformer written from the formulas of docs/hooks.md alone (per-head
einsums, an explicit "key after query" comparison for the causal mask, textbook LayerNorm, softmax and
activations).  It imports nothing from minigpt: the tests only build a minigpt model, read its ``params``
dict and compare, in float64, every cached activation, the prediction on every forward path (no hooks,
hooks, full and filtered caches) and ``loss`` / ``loss_and_grad`` with the oracle, plus ``loss_and_grad``'s
gradients with the oracle's own directional derivatives.

Why an oracle as well as gradient checks: a bug that the forward and the backward share (a causal mask
that lets a query see the next term, attention scaled by 1/sqrt(d_model) instead of 1/sqrt(d_head)) keeps
the gradients exact for the wrong function, so only an independent forward can see it.

Parameters are random and far from the initialisation (biases != 0, LayerNorm gains != 1, query/key
weights large enough that attention is sharp; ``test_parameters_are_nontrivial`` checks this), so a
mis-wired bias, gain or scale changes every number by far more than the float64 tolerance.
"""
import itertools
import math

import numpy as np
import pytest

import minigpt
from minigpt.tasks.presets import get_preset

SPEC = get_preset("paper")
SIZE = SPEC["model"]  # n_layers 3, d_model 64, n_heads 4, d_mlp 256, n_ctx 32
T = SPEC["data"]["length"] - 1  # 19 positions: the model reads x_0 .. x_18
B = 6  # sequences per batch
CONFIGS = [
    dict(attn_only=a, normalization_type=n, act_fn=f)
    for a, n, f in itertools.product((False, True), ("LN", None), ("gelu_new", "gelu", "relu"))
    if not (a and f != "gelu_new")  # attention-only models have no activation
]
IDS = ["-".join(str(v) for v in kw.values()) for kw in CONFIGS]
# Float64 throughout: the oracle and minigpt sum in different orders, so they differ by rounding only
# (measured: at most 1.2e-14 relative to each tensor's largest entry). Every planted bug in
# tests/mutation/bugs_model_theory.py moves some tensor by more than 1e-6 of its scale.
RTOL = 1e-9


# ----------------------------------------------------------------------------- the oracle
def _gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


_erf = np.vectorize(math.erf, otypes=[float])


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _relu(x):
    return np.where(x > 0, x, 0.0)


ACT = {"gelu_new": _gelu_new, "gelu": _gelu, "relu": _relu}


def oracle(P, cfg, x):
    """x [B, T] -> (pred [B, T], every hook activation by name, in the forward order of docs/hooks.md)."""
    acts = {}
    batch, n_pos = x.shape
    n_heads, _, d_head = P["blocks.0.attn.W_Q"].shape

    def layernorm(r, key):  # r [B, T, D]
        mean = r.mean(-1, keepdims=True)
        var = ((r - mean) ** 2).mean(-1, keepdims=True)  # biased
        scale = acts[key + "hook_scale"] = np.sqrt(var + cfg.eps)  # [B, T, 1]
        out = acts[key + "hook_normalized"] = (r - mean) / scale * P[key + "w"] + P[key + "b"]
        return out

    def norm(r, key):
        return layernorm(r, key) if cfg.normalization_type == "LN" else r

    embed = acts["hook_embed"] = x[:, :, None] * P["embed.W_E"][0]  # [B, T, D]  x W_E with d_in = 1
    pos = acts["hook_pos_embed"] = np.broadcast_to(P["pos_embed.W_pos"][:n_pos], embed.shape)
    resid = embed + pos
    key_after_query = np.arange(n_pos)[None, :] > np.arange(n_pos)[:, None]  # [q, k]
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}."
        acts[p + "hook_resid_pre"] = resid
        h = norm(resid, p + "ln1.")
        for n in "QKV":  # [B, T, H, E] each: h W_n[h] + b_n[h] per head
            acts[p + f"attn.hook_{n.lower()}"] = np.einsum("btd,hde->bthe", h, P[p + f"attn.W_{n}"]) + P[p + f"attn.b_{n}"]
        q, k, v = (acts[p + f"attn.hook_{n}"] for n in "qkv")
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(d_head)  # [B, H, Tq, Tk]
        scores = acts[p + "attn.hook_attn_scores"] = np.where(key_after_query, -np.inf, scores)
        e = np.exp(scores - scores.max(-1, keepdims=True))
        pattern = acts[p + "attn.hook_pattern"] = e / e.sum(-1, keepdims=True)
        z = acts[p + "attn.hook_z"] = np.einsum("bhqk,bkhe->bqhe", pattern, v)  # [B, T, H, E]
        result = acts[p + "attn.hook_result"] = np.einsum("bqhe,hed->bqhd", z, P[p + "attn.W_O"])  # [B, T, H, D]
        attn_out = acts[p + "hook_attn_out"] = result.sum(2) + P[p + "attn.b_O"]
        resid = resid + attn_out
        if not cfg.attn_only:
            acts[p + "hook_resid_mid"] = resid
            h = norm(resid, p + "ln2.")
            pre = acts[p + "mlp.hook_pre"] = h @ P[p + "mlp.W_in"] + P[p + "mlp.b_in"]  # [B, T, M]
            post = acts[p + "mlp.hook_post"] = ACT[cfg.act_fn](pre)
            mlp_out = acts[p + "hook_mlp_out"] = post @ P[p + "mlp.W_out"] + P[p + "mlp.b_out"]
            resid = resid + mlp_out
        acts[p + "hook_resid_post"] = resid
    h = norm(resid, "ln_final.")
    pred = (h @ P["unembed.W_U"] + P["unembed.b_U"])[..., 0]  # [B, T]
    return pred, acts


def oracle_mse(P, cfg, x, y):
    return float(np.mean((oracle(P, cfg, x)[0] - y) ** 2))


# ----------------------------------------------------------------------------- fixtures
def randomize(params, rng):
    """Every parameter random and far from the initialisation: weights ~ N(0, gain^2 / fan_in), biases
    ~ N(0, 0.3^2), LayerNorm gains 1 + N(0, 0.3^2).  Query/key gain 1.5: attention is sharp (score std
    3-30) without saturating; read-in gain 0.3 (terms reach |x| ~ 20 when a ~ 1) and output gains 0.5
    keep the residual stream of the models without LayerNorm from growing tenfold per block."""
    for name, p in params.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "w":
            p[...] = 1.0 + 0.3 * rng.standard_normal(p.shape)
        elif not leaf.startswith("W_"):
            p[...] = 0.3 * rng.standard_normal(p.shape)
        else:
            fan_in = {"W_O": p.shape[0] * p.shape[1], "W_E": 1, "W_pos": 1}.get(leaf, p.shape[-2])
            gain = {"W_Q": 1.5, "W_K": 1.5, "W_E": 0.3, "W_O": 0.5, "W_out": 0.5}.get(leaf, 1.0)
            p[...] = gain / math.sqrt(fan_in) * rng.standard_normal(p.shape)


def build(kw, seed=0):
    cfg = minigpt.ModelConfig(**SIZE, **kw, dtype="float64")
    model = minigpt.Transformer(cfg, seed=seed)
    randomize(model.params, np.random.default_rng(seed + 100))
    return model


def sequences(seed=0, n=B, length=T + 1):
    """n affine recurrences x_{k+1} = a x_k + b, a, b, x0 ~ U(-1, 1): [n, length]."""
    rng = np.random.default_rng(seed)
    a, b, x0 = rng.uniform(-1, 1, (3, n))
    x = np.empty((n, length))
    x[:, 0] = x0
    for k in range(1, length):
        x[:, k] = a * x[:, k - 1] + b
    return x


def assert_close(got, want, name):
    """Equal up to float64 rounding: |got - want| <= RTOL * max|want| (-inf entries must coincide)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    masked = np.isneginf(want)
    np.testing.assert_array_equal(np.isneginf(got), masked, err_msg=f"{name}: masked entries differ")
    g, w = got[~masked], want[~masked]
    scale = max(np.abs(w).max(), 1e-300)
    err = np.abs(g - w).max() / scale
    assert err <= RTOL, f"{name}: max |minigpt - oracle| = {err:.2e} x max|oracle| (tolerance {RTOL:g})"


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_parameters_are_nontrivial(kw):
    """The comparison has teeth only if nothing is at its trivial value and attention is far from uniform."""
    model = build(kw)
    for name, p in model.params.items():
        leaf = name.rsplit(".", 1)[-1]
        assert np.all(p != 0), name
        if leaf == "w":  # LayerNorm gains
            assert np.sqrt(np.mean((p - 1) ** 2)) > 0.2, name
        elif not leaf.startswith("W_"):  # biases
            assert np.sqrt(np.mean(p**2)) > 0.1, name
    x = sequences()[:, :-1]
    pred, acts = oracle(model.params, model.cfg, x)
    for layer in range(model.cfg.n_layers):
        pattern = acts[f"blocks.{layer}.attn.hook_pattern"][:, :, 8:]  # queries with >= 9 keys: uniform gives <= 1/9
        assert pattern.max(-1).mean() > 0.4, (layer, pattern.max(-1).mean())
    assert np.std(pred) > 0.1


@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_every_cached_activation_matches_the_oracle(kw):
    model = build(kw, seed=1)
    x = sequences(seed=1)[:, :-1]
    want_pred, want = oracle(model.params, model.cfg, x)
    pred, cache = model.run_with_cache(x)
    assert list(cache.keys()) == list(want), "hook names or their forward order differ from docs/hooks.md"
    for name, value in want.items():
        assert_close(cache[name], value, name)
    assert_close(pred, want_pred, "prediction")


@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_every_forward_path_matches_the_oracle(kw):
    """The ops take other branches when nothing watches (in-place softmax, no per-head results, reused
    workspace arrays): each path must give the oracle's numbers."""
    model = build(kw, seed=2)
    xy = sequences(seed=2)
    x, y = xy[:, :-1], xy[:, 1:]
    want, _ = oracle(model.params, model.cfg, x)
    seen = []

    def watch(value, hook):  # watches without replacing: the hooked branch of every op
        seen.append(hook.name)

    assert_close(model(x), want, "model(x), no hooks")
    assert_close(model.run_with_hooks(x, fwd_hooks=[(lambda n: True, watch)]), want, "every hook watched")
    assert len(seen) == len(model.hook_names())
    assert_close(model.run_with_hooks(x, fwd_hooks=[("blocks.1.attn.hook_pattern", watch)]), want, "one hook")
    for only in ("blocks.0.attn.hook_result", "blocks.2.attn.hook_z", "hook_embed"):
        assert_close(model.run_with_cache(x, names_filter=only)[0], want, f"cache of {only} only")
    mse = oracle_mse(model.params, model.cfg, x, y)
    assert model.loss(x, y) == pytest.approx(mse, rel=1e-12)
    for step in range(2):  # the second call reuses the first call's workspace arrays
        loss, _ = model.loss_and_grad(x, y)
        assert loss == pytest.approx(mse, rel=1e-12), step
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", watch)]):
        assert model.loss_and_grad(x, y)[0] == pytest.approx(mse, rel=1e-12)


@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_gradients_are_directional_derivatives_of_the_oracle(kw):
    """loss_and_grad's gradient, dotted with a random direction over every parameter, equals the
    derivative of the oracle's loss along it (an independent check of the backward at the paper size).

    Richardson-extrapolated central differences (error ~ h^4; measured <= 1e-10 relative here); with
    ReLU, h shrinks until no pre-activation changes sign within +-h, so no kink lies in the stencil."""
    model = build(kw, seed=3)
    xy = sequences(seed=3)
    x, y = xy[:, :-1], xy[:, 1:]
    _, grads = model.loss_and_grad(x, y)
    rng = np.random.default_rng(4)

    def shifted(direction, h):
        return {n: p + h * direction[n] for n, p in model.params.items()}

    def relu_signs(P):
        _, acts = oracle(P, model.cfg, x)
        return [acts[n] > 0 for n in acts if n.endswith("mlp.hook_pre")] if model.cfg.act_fn == "relu" else []

    def slope(direction, h):  # central difference of the oracle's loss
        loss = [oracle_mse(shifted(direction, s), model.cfg, x, y) for s in (h, -h)]
        return (loss[0] - loss[1]) / (2 * h)

    for _ in range(2):
        direction = {n: rng.standard_normal(p.shape) for n, p in model.params.items()}
        h, signs = 1e-5, relu_signs(model.params)
        while not all(np.array_equal(a, b) for s in (h, -h) for a, b in zip(relu_signs(shifted(direction, s)), signs)):
            h /= 4
        assert h > 1e-10, "a ReLU kink sits on the unperturbed point"
        numeric = (4 * slope(direction, h / 2) - slope(direction, h)) / 3
        analytic = sum(float(np.sum(grads[n] * direction[n])) for n in grads)
        assert analytic == pytest.approx(numeric, rel=1e-7)


def test_sharded_loss_and_grad_matches_the_oracle():
    """threads=2: half the batch here, half in a helper process, the losses weighted by their shares."""
    model = build(CONFIGS[0], seed=5)
    xy = sequences(seed=5, n=7)  # an odd batch: unequal shares
    x, y = xy[:, :-1], xy[:, 1:]
    loss, grads = model.loss_and_grad(x, y, threads=2)
    assert loss == pytest.approx(oracle_mse(model.params, model.cfg, x, y), rel=1e-12)
    _, one = model.loss_and_grad(x, y, threads=1)
    scale = max(np.abs(g).max() for g in one.values())  # b_K's gradient is 0 up to rounding: compare on this scale
    for name, g in one.items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-10, atol=1e-12 * scale, err_msg=name)
