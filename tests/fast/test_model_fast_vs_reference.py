"""The whole model on the fast ops against the whole model on the reference ops (minigpt/nn/ops.py), float64.

The same parameters run in ``minigpt.Transformer(cfg)`` (the fast ops, with the workspace that reuses
arrays from step to step) and ``minigpt.Transformer(cfg, fast=False)`` (the reference ops).

Compared, to a relative 1e-10 (float64 round-off of the same formulas in another order; gradients
measured against at least 1e-3 of the largest gradient; see test_fast_vs_reference.py): the loss and every parameter gradient of ``loss_and_grad`` (twice: the second
step runs on the fast workspace's reused arrays), and every cached activation and its gradient of
``run_with_cache(incl_bwd=True)``, with every hook point, without ``hook_result`` (the fast attention then
skips it), and with a hook that replaces ``hook_v``.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import ModelConfig, Transformer
from minigpt.nn import ops as ref_ops
from minigpt.nn.gradcheck import nontrivial_model
from tests.fast.test_fast_vs_reference import REL, assert_same, grad_floor

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


def both(cfg, seed):
    """The non-trivial float64 model of ``cfg`` on the fast ops and on the reference ops (the same parameters)."""
    params = nontrivial_model(cfg, seed).params  # float64, biases != 0, LayerNorm gains != 1
    fast, ref = Transformer(cfg), Transformer(cfg, fast=False)
    fast.params = {k: v.copy() for k, v in params.items()}
    ref.params = {k: v.copy() for k, v in params.items()}
    return fast, ref


@pytest.mark.parametrize("name", list(CONFIGS))
@settings(max_examples=5)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(0, 2**16))
def test_model_on_fast_and_reference_ops(name, B, T, seed):
    cfg = ModelConfig(**{**BASE, **CONFIGS[name]})
    fast_model, ref_model = both(cfg, seed)
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-1, 1, (B, T, cfg.d_in)), rng.uniform(-1, 1, (B, T, cfg.d_out))
    if cfg.d_out == 1:
        y = y[..., 0]
    fast, ref = run(fast_model, x, y), run(ref_model, x, y)
    assert list(fast) == list(ref)  # the same hook points in the same order
    floor = grad_floor(*(ref[k] for k in ref if " grad " in k or k.endswith("_grad")))
    for k in ref:  # gradients against at least 1e-3 of the largest gradient (see test_fast_vs_reference.py)
        assert_same(fast[k], ref[k], k, floor if " grad " in k or k.endswith("_grad") else 0.0)
    assert abs(fast["step 1 loss"] - ref["step 1 loss"]) <= REL * ref["step 1 loss"]


def test_the_reference_run_really_uses_the_reference_ops(monkeypatch):
    """Guards the comparison above: a planted change in the reference ops shows in the fast=False model only."""
    fast_model, ref_model = both(ModelConfig(**BASE), 0)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5))
    base = fast_model(x)
    np.testing.assert_allclose(ref_model(x), base, rtol=1e-10)
    monkeypatch.setattr(ref_ops, "add", lambda a, b: a + 2 * b)
    assert not np.allclose(ref_model(x), base)
    np.testing.assert_array_equal(fast_model(x), base)
