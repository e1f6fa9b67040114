"""The whole model on the fast ops against the whole model on the reference ops (minigpt/nn/ops.py), float64.

Until ``Transformer`` takes ``ops=`` (issue 13), the reference run swaps the module the model calls
(``minigpt.model.ops``) for the reference module with pytest's monkeypatch, and gives the reference
module the two names today's ``loss_and_grad`` uses besides the ops (``using`` and ``Workspace``, as
no-ops: the reference reuses no arrays).

Compared, to a relative 1e-10 (float64 round-off of the same formulas in another order; gradients
measured against at least 1e-3 of the largest gradient; see test_fast_vs_reference.py): the loss and every parameter gradient of ``loss_and_grad`` (twice: the second
step runs on the fast workspace's reused arrays), and every cached activation and its gradient of
``run_with_cache(incl_bwd=True)``, with every hook point, without ``hook_result`` (the fast attention then
skips it), and with a hook that replaces ``hook_v``.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fast_vs_reference import REL, assert_same, grad_floor

import minigpt.model
from minigpt import ModelConfig
from minigpt.gradcheck import nontrivial_model
from minigpt.nn import ops as ref_ops

BASE = dict(n_layers=2, d_model=8, n_heads=2, d_mlp=12, n_ctx=6, dtype="float64")
CONFIGS = {
    "LN gelu_new": {},
    "LN gelu": dict(act_fn="gelu"),
    "LN relu": dict(act_fn="relu"),
    "no LN": dict(normalization_type=None),
    "attn_only LN": dict(attn_only=True),
    "attn_only no LN": dict(attn_only=True, normalization_type=None),
    "d_in 2 d_out 3 d_head 3, 3 layers": dict(d_in=2, d_out=3, d_head=3, n_layers=3),
}


def halve(v, hook):
    return v * 0.5


def run(model, x, y):
    """Everything the model computes that the comparison checks, as plain dicts of copies."""
    out = {}
    for step in (1, 2):
        loss, grads = model.loss_and_grad(x, y)
        out[f"step {step} loss"] = np.array(loss)
        out.update({f"step {step} grad {k}": np.array(v) for k, v in grads.items()})
    runs = {"cache": {}, "cache without hook_result": dict(names_filter=lambda n: not n.endswith("hook_result"))}
    for what, kwargs in runs.items():
        _, cache = model.run_with_cache(x, incl_bwd=True, target=y, **kwargs)
        out.update({f"{what} {k}": np.array(v) for k, v in cache.items()})
    with model.hooks(fwd_hooks=[(f"blocks.{model.cfg.n_layers - 1}.attn.hook_v", halve)]):
        _, cache = model.run_with_cache(x, incl_bwd=True, target=y)
    out.update({f"hooked cache {k}": np.array(v) for k, v in cache.items()})
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=5)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**16))
def test_model_on_fast_and_reference_ops(name, B, T, seed):
    cfg = ModelConfig(**{**BASE, **CONFIGS[name]})
    model = nontrivial_model(cfg, seed)  # float64, biases != 0, LayerNorm gains != 1
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-1, 1, (B, T, cfg.d_in)), rng.uniform(-1, 1, (B, T, cfg.d_out))
    if cfg.d_out == 1:
        y = y[..., 0]
    fast = run(model, x, y)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(minigpt.model, "ops", ref_ops)
        mp.setattr(ref_ops, "using", contextlib.nullcontext, raising=False)
        mp.setattr(ref_ops, "Workspace", lambda: None, raising=False)
        ref = run(model, x, y)
    assert list(fast) == list(ref)  # the same hook points in the same order
    floor = grad_floor(*(ref[k] for k in ref if " grad " in k or k.endswith("_grad")))
    for k in ref:  # gradients against at least 1e-3 of the largest gradient (see test_fast_vs_reference.py)
        assert_same(fast[k], ref[k], k, floor if " grad " in k or k.endswith("_grad") else 0.0)
    assert abs(fast["step 1 loss"] - ref["step 1 loss"]) <= REL * ref["step 1 loss"]


def test_the_reference_run_really_uses_the_reference_ops(monkeypatch):
    """Guards the monkeypatch above: a planted change in the reference ops shows in the model's output."""
    model = nontrivial_model(ModelConfig(**BASE), 0)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5))
    base = model(x)
    monkeypatch.setattr(minigpt.model, "ops", ref_ops)
    np.testing.assert_allclose(model(x), base, rtol=1e-10)
    monkeypatch.setattr(ref_ops, "add", lambda a, b: a + 2 * b)
    assert not np.allclose(model(x), base)
