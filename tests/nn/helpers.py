"""Small float64 models with non-trivial parameters and inputs, shared by the tests of minigpt.nn and
minigpt.interp (``model`` is a fixture: import it into a test module or a conftest.py to use it)."""
import itertools

import numpy as np
import pytest

import minigpt
from minigpt import ModelConfig, Transformer
from minigpt.fast import ops as fast_ops
from minigpt.nn import ops as reference_ops


def make_model(attn_only=False, norm="LN", seed=0, dtype="float64"):
    cfg = ModelConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=12, n_ctx=6, attn_only=attn_only, normalization_type=norm, dtype=dtype)
    m = Transformer(cfg, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for k, v in m.params.items():  # non-trivial init: biases != 0, LN gains != 1, larger weights
        m.params[k] = (v + 0.3 * rng.standard_normal(v.shape)).astype(v.dtype)
    return m


def inputs(B=3, T=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (B, T)), rng.uniform(-1, 1, (B, T))


CONFIGS = [
    dict(attn_only=a, normalization_type=n, act_fn=f)
    for a, n, f in itertools.product((False, True), ("LN", None), ("gelu_new", "gelu", "relu"))
    if not (a and f != "gelu_new")
]


def small(**kw):
    base = dict(n_layers=2, d_model=8, n_heads=2, d_mlp=12, n_ctx=5, dtype="float64")
    base.update(kw)
    return minigpt.ModelConfig(**base)


OP_SETS = pytest.mark.parametrize("ops", [reference_ops, fast_ops], ids=["reference", "fast"])


@pytest.fixture(params=[(False, "LN"), (True, None), (True, "LN")], ids=["mlp-LN", "attn-noLN", "attn-LN"])
def model(request):
    return make_model(*request.param)
