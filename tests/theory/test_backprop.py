"""minigpt.ops backward passes against the sympy oracle in theory.backprop (float64, random dout)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigpt.fast import ops
from theory import backprop as TBP

bounded = st.floats(-3, 3, allow_nan=False)


def _arr(draw, shape, elements=bounded):
    return draw(hnp.arrays(np.float64, shape, elements=elements))


def _close(a, b, tol=1e-10):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.abs(a - b).max(initial=0.0) <= tol * (1 + np.abs(b).max(initial=0.0))


@settings(max_examples=25)
@given(st.data(), st.integers(1, 4), st.integers(1, 3), st.floats(1e-5, 1e-1))
def test_layernorm_backward_matches_sympy(data, D, rows, eps):
    x = _arr(data.draw, (rows, 2, D))
    w, b = _arr(data.draw, (D,)), _arr(data.draw, (D,))
    dout = _arr(data.draw, x.shape)
    out, cache = ops.layernorm_forward(x, w, b, eps)
    for got, want in zip(ops.layernorm_backward(dout, cache), TBP.layernorm_vjp(x, w, b, eps, dout)):
        _close(got, want, 1e-9)


@settings(max_examples=25)
@given(st.data(), st.integers(1, 5), st.integers(1, 3))
def test_softmax_backward_matches_sympy(data, n, rows):
    x = _arr(data.draw, (rows, n), st.floats(-8, 8))
    dp = _arr(data.draw, x.shape)
    _, cache = ops.softmax_forward(x.copy())
    _close(ops.softmax_backward(dp, cache), TBP.softmax_vjp(x, dp))


@settings(max_examples=25)
@given(st.data(), st.sampled_from(["gelu_new", "gelu"]))
def test_gelu_backward_matches_sympy(data, kind):
    x = _arr(data.draw, (3, 4), st.floats(-6, 6))
    dout = _arr(data.draw, x.shape)
    fwd, bwd = {"gelu_new": (ops.gelu_new_forward, ops.gelu_new_backward), "gelu": (ops.gelu_forward, ops.gelu_backward)}[kind]
    _, cache = fwd(x.copy())
    _close(bwd(dout, cache), TBP.gelu_vjp(x, dout, kind))


@pytest.mark.parametrize("kind", ["gelu_new", "gelu"])
def test_gelu_backward_matches_sympy_on_a_grid(kind):
    """Every x in [-6, 6] in steps of 0.05: hypothesis's arrays above often repeat one fill value (0, or
    |x| near 6 where GELU' saturates), which a wrong cubic coefficient hardly changes."""
    x = np.linspace(-6, 6, 241)
    dout = np.random.default_rng(0).normal(size=x.shape)
    fwd, bwd = ops.ACTIVATIONS[kind]
    _, cache = fwd(x.copy())
    _close(bwd(dout, cache), TBP.gelu_vjp(x, dout, kind))


SIZES = [(1, 1, 1, 1), (2, 1, 2, 2), (3, 2, 1, 1), (3, 2, 2, 2)]  # (pos, d_model, d_head, n_heads)


@settings(max_examples=20)
@given(st.data(), st.sampled_from(SIZES), st.integers(1, 3))
def test_attention_backward_matches_sympy(data, size, batch):
    T, D, E, H = size
    x = _arr(data.draw, (batch, T, D), st.floats(-2, 2))
    W = {n: _arr(data.draw, (H, D, E), st.floats(-1.5, 1.5)) for n in ("W_Q", "W_K", "W_V")}
    bias = {n: _arr(data.draw, (H, E), st.floats(-1, 1)) for n in ("b_Q", "b_K", "b_V")}
    W_O, b_O = _arr(data.draw, (H, E, D), st.floats(-1.5, 1.5)), _arr(data.draw, (D,), st.floats(-1, 1))
    args = dict(W_Q=W["W_Q"], b_Q=bias["b_Q"], W_K=W["W_K"], b_K=bias["b_K"], W_V=W["W_V"], b_V=bias["b_V"], W_O=W_O, b_O=b_O)
    dout = _arr(data.draw, x.shape)
    _, cache = ops.attention_forward(x.copy(), **args)
    dx, grads = ops.attention_backward(dout, cache)
    dx_ref, grads_ref = TBP.attention_vjp(x, **args, dout=dout)
    _close(dx, dx_ref)
    for name, g in grads_ref.items():
        _close(grads[name], g)


def _fd_vjp(f, arrays, dout, h=1e-6):
    """Central differences of sum(f(*arrays) * dout) in every entry of every array (checks the oracle itself)."""
    out = []
    for i, arr in enumerate(arrays):
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[i][idx] += h
            minus[i][idx] -= h
            g[idx] = ((f(*plus) - f(*minus)) * dout).sum() / (2 * h)
        out.append(g)
    return out


def test_oracle_itself_matches_finite_differences():
    rng = np.random.default_rng(0)
    x, w, b, g = rng.normal(size=(2, 3)), rng.normal(size=3), rng.normal(size=3), rng.normal(size=(2, 3))

    def ln(x, w, b):  # an independent numpy LayerNorm forward
        xc = x - x.mean(-1, keepdims=True)
        return xc / np.sqrt((xc**2).mean(-1, keepdims=True) + 1e-3) * w + b

    for got, want in zip(TBP.layernorm_vjp(x, w, b, 1e-3, g), _fd_vjp(ln, [x, w, b], g)):
        np.testing.assert_allclose(got, want, atol=1e-7)
    sm = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(TBP.softmax_vjp(x, g), _fd_vjp(sm, [x], g)[0], atol=1e-8)

    T, D, E = 3, 2, 2
    xa, dout = rng.normal(size=(1, T, D)), rng.normal(size=(1, T, D))
    P = [rng.normal(size=s) for s in [(1, D, E), (1, E), (1, D, E), (1, E), (1, D, E), (1, E), (1, E, D), (D,)]]

    def attn(x, WQ, bQ, WK, bK, WV, bV, WO, bO):  # an independent numpy forward, one head
        q, k, v = x[0] @ WQ[0] + bQ[0], x[0] @ WK[0] + bK[0], x[0] @ WV[0] + bV[0]
        s = q @ k.T / np.sqrt(E) + np.triu(np.full((T, T), -np.inf), 1)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return ((p @ v) @ WO[0] + bO)[None]

    fd = _fd_vjp(attn, [xa] + P, dout)
    dx, grads = TBP.attention_vjp(xa, *P, dout=dout)
    np.testing.assert_allclose(dx, fd[0], atol=1e-7)
    for name, want in zip(("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"), fd[1:]):
        np.testing.assert_allclose(grads[name], want, atol=1e-7)


def test_softmax_jacobian_is_diag_minus_outer():
    assert TBP.check_softmax_jacobian(3)
