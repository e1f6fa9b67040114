"""minigpt.fast.ops: per-op vector-Jacobian checks in float64: for a random upstream gradient ``dout``, the
hand-written backward must equal the central-difference gradient of the fake loss ``sum(op(inputs) * dout)``
(each op against its reference op: tests/fast/test_fast_vs_reference.py); the Workspace never hands out a live array."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minigpt.fast import ops

H_FD = 1e-5  # ~ eps^(1/3): balances truncation (h^2) against round-off (eps / h) in float64


def numeric_vjp(f, arrays, dout, h=H_FD):
    """Central differences of sum(f(*arrays) * dout) with respect to each array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + h
            lp = np.sum(f(*arrays) * dout)
            a[i] = old - h
            lm = np.sum(f(*arrays) * dout)
            a[i] = old
            g[i] = (lp - lm) / (2 * h)
        grads.append(g)
    return grads


def assert_close(analytic, numeric, name):
    scale = max(np.abs(numeric).max(), np.abs(analytic).max(), 1e-3)
    err = np.abs(analytic - numeric).max() / scale
    assert err < 1e-6, f"{name}: relative error {err:.2e}"


shapes = st.fixed_dictionaries(
    {"B": st.integers(1, 3), "T": st.integers(1, 5), "H": st.integers(1, 3), "E": st.integers(1, 4), "D": st.integers(2, 6)}
)


def rand(rng, *shape, scale=1.0):
    return scale * rng.standard_normal(shape)


@settings(max_examples=15)
@given(shapes, st.integers(0, 2**16))
def test_layernorm_vjp(s, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rand(rng, s["B"], s["T"], s["D"]), 1 + rand(rng, s["D"], scale=0.5), rand(rng, s["D"])
    out, cache = ops.layernorm_forward(x, w, b, 1e-5)
    dout = rand(rng, *out.shape)
    dx, dw, db = ops.layernorm_backward(dout, cache)
    f = lambda x, w, b: ops.layernorm_forward(x, w, b, 1e-5)[0]  # noqa: E731
    for a, n, name in zip((dx, dw, db), numeric_vjp(f, [x, w, b], dout), "x w b".split()):
        assert_close(a, n, name)


@settings(max_examples=15)
@given(shapes, st.integers(0, 2**16))
def test_attention_vjp(s, seed):
    rng = np.random.default_rng(seed)
    B, T, H, E, D = s["B"], s["T"], s["H"], s["E"], s["D"]
    x = rand(rng, B, T, D)
    W = [rand(rng, H, D, E, scale=0.7), rand(rng, H, E), rand(rng, H, D, E, scale=0.7), rand(rng, H, E),
         rand(rng, H, D, E, scale=0.7), rand(rng, H, E), rand(rng, H, E, D, scale=0.7), rand(rng, D)]
    out, cache = ops.attention_forward(x, *W)
    dout = rand(rng, *out.shape)
    dx, g = ops.attention_backward(dout, cache)
    f = lambda x, *W: ops.attention_forward(x, *W)[0]  # noqa: E731
    num = numeric_vjp(f, [x] + W, dout)
    assert_close(dx, num[0], "x")
    overall = max(np.abs(v).max() for v in num)  # the size of this VJP's gradients
    for name, n in zip(("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"), num[1:]):
        if name == "b_K":  # exactly zero: b_K adds q . b_K to every score of a row, which softmax ignores;
            # its finite differences are round-off only, so they are compared with the VJP's scale
            assert np.abs(g[name]).max() <= 1e-12 * overall, "b_K gradient should vanish"
            assert np.abs(n).max() <= 1e-6 * overall, "finite differences of b_K should vanish"
        else:
            assert_close(g[name], n, name)


@pytest.mark.parametrize("act", ["gelu_new", "gelu", "relu"])
@settings(max_examples=10)
@given(shapes, st.integers(0, 2**16))
def test_mlp_vjp(act, s, seed):
    rng = np.random.default_rng(seed)
    B, T, D, M = s["B"], s["T"], s["D"], s["E"] + 1
    x = rand(rng, B, T, D)
    W = [rand(rng, D, M), rand(rng, M), rand(rng, M, D), rand(rng, D)]
    if act == "relu":  # a kink within ~100 finite-difference steps makes the differences meaningless: draw again
        assume(np.abs(x @ W[0] + W[1]).min() > 100 * H_FD)
    out, cache = ops.mlp_forward(x, *W, act_fn=act)
    dout = rand(rng, *out.shape)
    dx, g = ops.mlp_backward(dout, cache)
    f = lambda x, *W: ops.mlp_forward(x, *W, act_fn=act)[0]  # noqa: E731
    num = numeric_vjp(f, [x] + W, dout)
    assert_close(dx, num[0], "x")
    for name, n in zip(("W_in", "b_in", "W_out", "b_out"), num[1:]):
        assert_close(g[name], n, name)


@pytest.mark.parametrize("name", ["gelu_new", "gelu"])
def test_activation_derivatives(name):
    fwd, bwd = ops.ACTIVATIONS[name]
    x = np.linspace(-6, 6, 241)
    out, cache = fwd(x)
    d = bwd(np.ones_like(x), cache)
    num = (fwd(x + 1e-6)[0] - fwd(x - 1e-6)[0]) / 2e-6
    np.testing.assert_allclose(d, num, atol=1e-8)


@settings(max_examples=20)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**16))
def test_softmax_vjp_and_masking(B, n, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, B, n, scale=3)
    p, cache = ops.softmax_forward(x)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    dp = rand(rng, B, n)
    (num,) = numeric_vjp(lambda x: ops.softmax_forward(x)[0], [x], dp)
    assert_close(ops.softmax_backward(dp, cache), num, "x")
    x[:, n - 1] = -np.inf  # masked entries get probability 0 and gradient 0
    if n > 1:
        p, cache = ops.softmax_forward(x)
        assert np.all(p[:, -1] == 0)
        assert np.all(ops.softmax_backward(dp, cache)[:, -1] == 0)


def test_linear_vjp_with_and_without_bias():
    rng = np.random.default_rng(0)
    x, W, b = rand(rng, 2, 3, 4), rand(rng, 4, 5), rand(rng, 5)
    for bias in (b, None):
        out, cache = ops.linear_forward(x, W, bias)
        dout = rand(rng, *out.shape)
        dx, dW, db = ops.linear_backward(dout, cache)
        arrays = [x, W] + ([bias] if bias is not None else [])
        f = lambda x, W, *bb: ops.linear_forward(x, W, bb[0] if bb else None)[0]  # noqa: E731
        num = numeric_vjp(f, arrays, dout)
        assert_close(dx, num[0], "x")
        assert_close(dW, num[1], "W")
        if bias is not None:
            assert_close(db, num[2], "b")
        else:
            assert db is None


def test_mse():
    rng = np.random.default_rng(0)
    p, t = rand(rng, 3, 4), rand(rng, 3, 4)
    loss, c = ops.mse_forward(p, t)
    assert loss == pytest.approx(np.mean((p - t) ** 2))
    (num,) = numeric_vjp(lambda p: np.array(ops.mse_forward(p, t)[0]), [p], np.array(1.0))
    assert_close(ops.mse_backward(c), num, "pred")


# ----------------------------------------------------------------------------- the Workspace
def test_workspace_reuses_only_arrays_nobody_holds():
    ws = ops.Workspace()
    a = ws.empty((4, 3), np.float32)
    b = ws.empty((4, 3), np.float32)
    assert b is not a  # a is still held
    view = a[1:]
    del a
    c = ws.empty((4, 3), np.float32)
    assert c is not view.base  # a view keeps its base alive
    del view, c
    d = ws.empty((4, 3), np.float32)  # a's memory and c are free again; b is still held
    assert d is not b and len(ws.pools[((4, 3), np.dtype(np.float32))]) == 3  # reused, not grown
    assert ws.empty((4, 3), np.float64).dtype == np.float64  # dtypes never mix


def test_outside_a_workspace_ops_allocate_fresh_arrays():
    x = np.ones((3, 4), np.float32)
    W = np.ones((4, 2), np.float32)
    out1, _ = ops.linear_forward(x, W)
    out2, _ = ops.linear_forward(x, W)
    assert not np.shares_memory(out1, out2)
