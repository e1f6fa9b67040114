"""AdamW against its formula on a hand-computed case; clipping; the warmup + cosine schedule."""
import math

import numpy as np
import pytest

from minigpt.nn.model import is_weight_matrix
from minigpt.nn.optim import AdamW, clip_grad_norm, lr_at


def test_adamw_hand_computed():
    """lr 0.1, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on a weight matrix and a bias.

    Step 1 (t = 1, bias corrections 0.1 and 0.001, so m_hat = g and sqrt(v_hat) = |g|):
        W = [1, -2] * (1 - 0.1 * 0.01) - 0.1 * g / (|g| + 1e-8),  g = [0.2, -0.4]
          = [0.999 - 0.1 * 0.2 / 0.20000001, -1.998 + 0.1 * 0.4 / 0.40000001]
          = [0.899000005, -1.898000002...]
        b = 0.5 - 0.1 * 1 / (1 + 1e-8) = 0.400000001        (no decay on biases)
    """
    W0, b0 = np.array([[1.0, -2.0]]), np.array([0.5])
    params = {"blocks.0.mlp.W_in": W0.copy(), "blocks.0.mlp.b_in": b0.copy()}
    opt = AdamW(params, lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    g1 = {"blocks.0.mlp.W_in": np.array([[0.2, -0.4]]), "blocks.0.mlp.b_in": np.array([1.0])}
    opt.step(g1)
    np.testing.assert_allclose(params["blocks.0.mlp.W_in"], [[0.999 - 0.02 / 0.20000001, -1.998 + 0.04 / 0.40000001]], rtol=1e-15)
    np.testing.assert_allclose(params["blocks.0.mlp.W_in"], [[0.899000005, -1.8980000025]], rtol=1e-9)
    np.testing.assert_allclose(params["blocks.0.mlp.b_in"], [0.400000001], rtol=1e-12)
    assert opt.t == 1

    # Step 2 (t = 2), scalar by scalar from the formula
    g2 = {"blocks.0.mlp.W_in": np.array([[-0.1, 0.3]]), "blocks.0.mlp.b_in": np.array([0.0])}
    opt.step(g2, lr=0.05)
    lr, b1, b2, eps, wd = 0.05, 0.9, 0.999, 1e-8, 0.01
    for name, p1, decay in (("blocks.0.mlp.W_in", [0.999 - 0.02 / 0.20000001, -1.998 + 0.04 / 0.40000001], True),
                            ("blocks.0.mlp.b_in", [0.5 - 0.1 / (1 + 1e-8)], False)):
        for i, p in enumerate(p1):
            ga, gb = g1[name].ravel()[i], g2[name].ravel()[i]
            m = b1 * (1 - b1) * ga + (1 - b1) * gb
            v = b2 * (1 - b2) * ga * ga + (1 - b2) * gb * gb
            m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
            expect = p * (1 - lr * wd if decay else 1) - lr * m_hat / (math.sqrt(v_hat) + eps)
            assert params[name].ravel()[i] == pytest.approx(expect, rel=1e-13, abs=1e-15)
    np.testing.assert_allclose(opt.m["blocks.0.mlp.W_in"], [[0.008, -0.006]], rtol=1e-12)
    np.testing.assert_allclose(opt.v["blocks.0.mlp.W_in"], [[4.996e-5, 2.4984e-4]], rtol=1e-12)


def test_weight_decay_only_on_weight_matrices():
    names = ["embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.b_Q", "blocks.0.ln1.w",
             "blocks.0.ln1.b", "unembed.W_U", "unembed.b_U"]
    params = {n: np.ones(2) for n in names}
    opt = AdamW(params, lr=0.1, weight_decay=0.5)
    opt.step({n: np.zeros(2) for n in names})  # zero gradient: only the decay moves anything
    for n in names:
        expect = 0.95 if is_weight_matrix(n) else 1.0
        np.testing.assert_array_equal(params[n], expect, err_msg=n)
    assert [n for n in names if is_weight_matrix(n)] == ["embed.W_E", "blocks.0.attn.W_Q", "unembed.W_U"]


def test_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(0)
    p0 = {"blocks.0.attn.W_Q": rng.standard_normal((2, 3)), "unembed.b_U": rng.standard_normal(1)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in p0.items()} for _ in range(6)]
    a = {k: v.copy() for k, v in p0.items()}
    opt_a = AdamW(a, lr=0.01, weight_decay=0.1)
    for g in grads:
        opt_a.step({k: v.copy() for k, v in g.items()})
    b = {k: v.copy() for k, v in p0.items()}
    opt_b = AdamW(b, lr=0.01, weight_decay=0.1)
    for g in grads[:3]:
        opt_b.step({k: v.copy() for k, v in g.items()})
    state, t = {k: v.copy() for k, v in opt_b.state_arrays().items()}, opt_b.t
    c = {k: v.copy() for k, v in b.items()}
    opt_c = AdamW(c, lr=0.01, weight_decay=0.1)
    opt_c.load_state_arrays(state, t)
    for g in grads[3:]:
        opt_c.step({k: v.copy() for k, v in g.items()})
    for k in a:
        assert a[k].tobytes() == c[k].tobytes()


def test_clip_grad_norm():
    g = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(g, 1.0) == 5.0
    np.testing.assert_allclose([g["a"][0], g["b"][0, 0]], [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-15)
    g = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(g, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(g["a"], [0.3, 0.4])  # under the limit: untouched
    g = {"a": np.array([30.0, 40.0])}
    clip_grad_norm(g, 0)  # 0 disables clipping
    np.testing.assert_array_equal(g["a"], [30.0, 40.0])


def test_schedule():
    assert [lr_at(s, 1.0, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, 1.0, 4, 20) == 1.0  # cosine starts at the peak
    assert lr_at(12, 1.0, 4, 20) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway
    assert lr_at(20, 1.0, 4, 20) == pytest.approx(0.1)  # the floor
    assert lr_at(500, 1.0, 4, 20) == pytest.approx(0.1)
    assert lr_at(0, 2.0, 0, 10, min_lr_ratio=0.0) == 2.0


def test_adamw_refuses_bad_hyperparameters():
    for kw in (dict(lr=0), dict(betas=(1.0, 0.9)), dict(eps=0), dict(weight_decay=-1)):
        with pytest.raises(ValueError):
            AdamW({"w": np.ones(1)}, **kw)
