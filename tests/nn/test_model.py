"""minigpt.nn.model: exact gradients for every configuration and both op sets, causality, batch independence,
determinism, the public API's names and shapes, and precise errors for bad input."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigpt
from minigpt.nn.gradcheck import gradcheck_config, nontrivial_model
from tests.nn.helpers import CONFIGS, OP_SETS, small


@OP_SETS
@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_every_parameter_gradient_matches_finite_differences(kw, ops):
    report = gradcheck_config(small(**kw), seed=3, ops=ops)
    bad = [(r.name, r.max_rel_diff) for r in report if not r.ok]
    assert not bad, bad
    assert len(report) == len(minigpt.Transformer(small(**kw)).params)


@OP_SETS
def test_multi_dimensional_input_and_output_gradients(ops):
    report = gradcheck_config(small(d_in=3, d_out=2, n_layers=1), seed=1, ops=ops)
    assert all(r.ok for r in report), [(r.name, r.max_rel_diff) for r in report if not r.ok]


def test_param_names_and_shapes():
    cfg = minigpt.ModelConfig(n_layers=3, d_model=16, n_heads=4, d_mlp=32, n_ctx=10)
    P = minigpt.Transformer(cfg).params
    assert P["embed.W_E"].shape == (1, 16)
    assert P["pos_embed.W_pos"].shape == (10, 16)
    assert P["blocks.2.attn.W_Q"].shape == (4, 16, 4)
    assert P["blocks.0.attn.b_V"].shape == (4, 4)
    assert P["blocks.1.attn.W_O"].shape == (4, 4, 16)
    assert P["blocks.1.attn.b_O"].shape == (16,)
    assert P["blocks.0.mlp.W_in"].shape == (16, 32) and P["blocks.0.mlp.W_out"].shape == (32, 16)
    assert P["ln_final.w"].shape == (16,) and P["unembed.W_U"].shape == (16, 1) and P["unembed.b_U"].shape == (1,)
    assert all(v.dtype == np.float32 for v in P.values())
    P2 = minigpt.Transformer(dataclasses.replace(cfg, attn_only=True, normalization_type=None)).params
    assert not any("mlp" in k or "ln" in k for k in P2)


@OP_SETS
@settings(max_examples=10)
@given(st.integers(1, 4), st.integers(2, 8), st.integers(0, 7), st.integers(0, 1000))
def test_causality(ops, B, T, t, seed):
    """Changing terms after position t never changes the predictions at positions <= t."""
    t = min(t, T - 2)
    model = nontrivial_model(small(n_ctx=8), seed=seed, ops=ops)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (B, T))
    y = x.copy()
    y[:, t + 1 :] = rng.uniform(-5, 5, (B, T - t - 1))
    np.testing.assert_array_equal(model(x)[:, : t + 1], model(y)[:, : t + 1])


@OP_SETS
def test_batch_independence(ops):
    model = nontrivial_model(small(), seed=0, ops=ops)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (5, 5))
    full = model(x)
    for i in range(5):
        np.testing.assert_allclose(model(x[i : i + 1])[0], full[i], rtol=1e-12, atol=1e-13)


def test_seeded_determinism_and_different_seeds():
    cfg = minigpt.ModelConfig(n_layers=2, d_model=8, n_heads=2, d_mlp=8, n_ctx=6)
    a, b, c = minigpt.Transformer(cfg, seed=5), minigpt.Transformer(cfg, seed=5), minigpt.Transformer(cfg, seed=6)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params)


def test_output_shapes_and_dtypes():
    model = minigpt.Transformer(minigpt.ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=6))
    assert model(np.zeros((3, 4))).shape == (3, 4)
    assert model(np.zeros((3, 4, 1))).shape == (3, 4)
    assert model(np.zeros((3, 4))).dtype == np.float32
    loss, grads = model.loss_and_grad(np.zeros((3, 4)), np.ones((3, 4)))
    assert isinstance(loss, float)
    assert {k: v.shape for k, v in grads.items()} == {k: v.shape for k, v in model.params.items()}
    vec = minigpt.Transformer(minigpt.ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=6, d_in=2, d_out=3))
    assert vec(np.zeros((2, 5, 2))).shape == (2, 5, 3)


def test_loss_is_mean_squared_error():
    model = nontrivial_model(small(), seed=2)
    rng = np.random.default_rng(0)
    x, t = rng.uniform(-1, 1, (3, 5)), rng.uniform(-1, 1, (3, 5))
    loss, _ = model.loss_and_grad(x, t)
    assert loss == pytest.approx(np.mean((model(x) - t) ** 2), rel=1e-12)


@pytest.mark.parametrize(
    "x, msg",
    [
        (np.zeros((2, 7)), "n_ctx"),
        (np.zeros((2, 3, 2)), "shape"),
        (np.zeros(3), "shape"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([["a", "b"]]), "real numbers"),
        (np.zeros((0, 3)), "at least one"),
    ],
)
def test_bad_inputs_raise_precise_errors(x, msg):
    model = minigpt.Transformer(small())
    with pytest.raises(ValueError, match=msg):
        model(x)


def test_target_shape_checked():
    model = minigpt.Transformer(small())
    with pytest.raises(ValueError, match="target"):
        model.loss_and_grad(np.zeros((2, 3)), np.zeros((2, 4)))
