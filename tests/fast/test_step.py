"""minigpt.fast.step: a step takes its arrays from the model's workspace and the next step of the same shape reuses
them, without changing what is computed: reused buffers give bit-identical gradients, hooks that keep activations keep
them intact, and a float32 model stays float32 end to end.  (No timings here: speed lives in ``benchmarks/bench_step.py``.)"""
import numpy as np
import pytest

import minigpt
from minigpt.fast import step
from minigpt.nn.optim import AdamW, clip_grad_norm


def paper_like(**kw):
    base = dict(n_layers=2, d_model=16, n_heads=2, d_mlp=40, n_ctx=8)
    base.update(kw)
    return minigpt.ModelConfig(**base)


def batch(seed, B=5, T=7):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (B, T)).astype(np.float32), rng.uniform(-1, 1, (B, T)).astype(np.float32)


@pytest.mark.parametrize("kw", [{}, {"attn_only": True}, {"act_fn": "gelu"}, {"normalization_type": None}])
def test_reused_buffers_give_bit_identical_gradients(kw):
    cfg = paper_like(**kw)
    warm, fresh = minigpt.Transformer(cfg, seed=1), minigpt.Transformer(cfg, seed=1)
    x1, y1 = batch(0)
    x2, y2 = batch(1)
    g_first = {k: v.copy() for k, v in warm.loss_and_grad(x1, y1)[1].items()}
    kept = warm.loss_and_grad(x1, y1)[1]
    for _ in range(2):  # buffers of earlier steps are now reused
        loss_w, g_w = warm.loss_and_grad(x2, y2)
    loss_f, g_f = fresh.loss_and_grad(x2, y2)  # a fresh workspace: every array new
    assert loss_w == loss_f
    for k in g_f:
        np.testing.assert_array_equal(g_w[k], g_f[k], err_msg=k)
        np.testing.assert_array_equal(kept[k], g_first[k], err_msg=k)  # earlier results untouched


def test_activations_kept_by_a_hook_survive_later_steps():
    model = minigpt.Transformer(paper_like(), seed=2)
    kept = {}

    def keep(act, hook):
        kept.setdefault(hook.name, act)  # a reference, not a copy

    x1, y1 = batch(0)
    with model.hooks(fwd_hooks=[(lambda n: True, keep)]):
        model.loss_and_grad(x1, y1)
    snapshot = {k: np.array(v) for k, v in kept.items()}
    for seed in (1, 2, 3):
        model.loss_and_grad(*batch(seed))
    _, cache = model.run_with_cache(x1)
    for name, v in kept.items():
        np.testing.assert_array_equal(v, snapshot[name], err_msg=name)
        np.testing.assert_allclose(v, cache[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_float32_end_to_end():
    model = minigpt.Transformer(paper_like(), seed=0)
    x, y = batch(0)
    _, cache = model.run_with_cache(x, incl_bwd=True, target=y)
    promoted = [k for k in cache.keys() if np.asarray(cache[k]).dtype != np.float32]
    assert not promoted, promoted
    loss, grads = model.loss_and_grad(x, y)
    assert all(g.dtype == np.float32 for g in grads.values())
    opt = AdamW(model.params, weight_decay=0.01)
    clip_grad_norm(grads, 1.0)
    opt.step(grads)
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(m.dtype == np.float32 for m in opt.m.values()) and all(v.dtype == np.float32 for v in opt.v.values())


def test_a_second_step_reuses_the_arrays_of_the_first():
    model = minigpt.Transformer(paper_like(), seed=0)
    x, y = batch(0)
    shape = model.prepare(x).shape
    loss1, g1 = model.loss_and_grad(x, y)
    g1 = {k: v.copy() for k, v in g1.items()}  # copies: the step's own arrays are free again
    ws = step.workspace(model, shape)
    handed_out = {key: [id(a) for a in arrays] for key, arrays in ws.pools.items()}
    assert sum(map(len, handed_out.values())) > 10  # the first step took its arrays from the workspace
    loss2, g2 = model.loss_and_grad(x, y)
    assert step.workspace(model, shape) is ws and {key: [id(a) for a in arrays] for key, arrays in ws.pools.items()} == handed_out
    assert loss2 == loss1 and all(np.array_equal(g2[k], g1[k]) for k in g1)
    assert step.workspace(model, (2,) + shape[1:]) is not ws  # another input shape: a workspace of its own
