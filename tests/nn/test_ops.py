"""The reference ops (minigpt/nn/ops.py), each on its own, in float64.

- every backward against central differences of the fake loss ``sum(op(inputs) * dout)``, with non-trivial
  parameters (non-zero biases, LayerNorm gains != 1) and hypothesis-drawn shapes;
- every forward against a direct, independent formula (a loop over heads and positions for attention,
  scipy's softmax / normal CDF, numpy's biased variance), since a backward check cannot see a wrong forward;
- the hook path: a replacing hook changes the output as computed by hand; ``record`` gets the gradient with
  respect to each hooked activation (central differences of a hook that shifts one entry), in the fast
  ops' order; and with a constant shift at every hook point the backward is still the exact gradient
  (in the backward a hook point is the identity).
"""
import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.special import ndtr
from scipy.special import softmax as scipy_softmax

from minigpt.nn.gradcheck import central_differences
from minigpt.nn import ops

H_FD = 1e-5  # ~ eps^(1/3): balances truncation (h^2) against round-off (eps / h) in float64
TOL = 1e-6  # as tests/fast/test_ops.py; the worst central-difference error over this file is 7e-8 (measured)

ATTN_PARAMS = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")
MLP_PARAMS = ("W_in", "b_in", "W_out", "b_out")
ATTN_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result")
dims = st.fixed_dictionaries({"B": st.integers(1, 3), "T": st.integers(1, 5), "D": st.integers(2, 6), "H": st.integers(1, 3),
                              "E": st.integers(1, 4), "M": st.integers(1, 5), "n_in": st.integers(1, 3), "seed": st.integers(0, 2**16)})


def vjp_numeric(forward, arrays, dout):
    """Central differences of sum(forward(*arrays) * dout) with respect to each array."""
    return [central_differences(lambda: np.sum(forward(*arrays) * dout), a, H_FD) for a in arrays]


def assert_close(analytic, numeric, name, scale=None, tol=TOL):
    """max |analytic - numeric| relative to the larger of the two (or to ``scale``)."""
    assert analytic.shape == numeric.shape, f"{name}: shape {analytic.shape} != {numeric.shape}"
    if scale is None:
        scale = max(np.abs(numeric).max(), np.abs(analytic).max(), 1e-3)
    err = np.abs(analytic - numeric).max() / scale
    assert err < tol, f"{name}: relative error {err:.2e}"


def assume_spread(x, eps=1e-5):
    """Skip inputs with a nearly constant row: LayerNorm varies on the scale of the row's spread, and the
    error of central differences with step H_FD grows as (H_FD / scale)^2 (measured: 5.6e-6 at scale 0.004,
    100 times less for each 10 times smaller step)."""
    assume(np.sqrt(x.var(-1) + eps).min() > 0.05)


def attention_params(rng, D, H, E):
    """W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O with every bias non-zero."""
    return [rng.normal(0, 0.7, (H, D, E)), rng.normal(0, 1, (H, E)), rng.normal(0, 0.7, (H, D, E)), rng.normal(0, 1, (H, E)),
            rng.normal(0, 0.7, (H, D, E)), rng.normal(0, 1, (H, E)), rng.normal(0, 0.7, (H, E, D)), rng.normal(0, 1, D)]


def mlp_params(rng, D, M):
    return [rng.normal(0, 0.8, (D, M)), rng.normal(0, 1, M), rng.normal(0, 0.8, (M, D)), rng.normal(0, 1, D)]


def ln_params(rng, D):
    return 1 + rng.normal(0, 0.5, D), rng.normal(0, 1, D)  # gains != 1, biases != 0


class Shift:
    """A hook that adds a fixed array to the activations it names (a masked -inf score stays -inf) and
    keeps the name and shape of every activation it saw."""

    def __init__(self, shifts=None):
        self.shifts, self.seen = shifts or {}, []

    def __call__(self, name, value):
        self.seen.append((name, value.shape))
        return value + self.shifts[name] if name in self.shifts else value


class Recorder:
    def __init__(self):
        self.grads = {}
        self.order = []

    def __call__(self, name, grad):
        self.order.append(name)
        self.grads[name] = np.array(grad)


# ---------------------------------------------------------------------------------------------
# backward against central differences
# ---------------------------------------------------------------------------------------------
@settings(max_examples=12)
@given(dims, st.booleans())
def test_linear_backward(s, bias):
    rng = np.random.default_rng(s["seed"])
    x, W, b = rng.normal(size=(s["B"], s["T"], s["n_in"])), rng.normal(size=(s["n_in"], s["M"])), rng.normal(size=s["M"])
    arrays = [x, W] + ([b] if bias else [])
    out, cache = ops.linear_forward(*arrays)
    np.testing.assert_allclose(out, np.einsum("bti,io->bto", x, W) + (b if bias else 0), rtol=1e-12, atol=1e-12)
    dout = rng.normal(size=out.shape)
    grads = ops.linear_backward(dout, cache)
    for a, n, name in zip(grads, vjp_numeric(lambda *args: ops.linear_forward(*args)[0], arrays, dout), "x W b".split()):
        assert_close(a, n, name)
    assert bias or grads[2] is None


@settings(max_examples=15)
@given(dims)
def test_layernorm(s):
    rng = np.random.default_rng(s["seed"])
    x, (w, b) = rng.normal(1, 2, (s["B"], s["T"], s["D"])), ln_params(rng, s["D"])
    assume_spread(x)
    out, cache = ops.layernorm_forward(x, w, b, 1e-5)
    direct = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b  # np.var: biased
    np.testing.assert_allclose(out, direct, rtol=1e-12, atol=1e-12)
    dout = rng.normal(size=out.shape)
    num = vjp_numeric(lambda *a: ops.layernorm_forward(*a, 1e-5)[0], [x, w, b], dout)
    for a, n, name in zip(ops.layernorm_backward(dout, cache), num, "x w b".split()):
        assert_close(a, n, name)


@settings(max_examples=15)
@given(dims)
def test_softmax(s):
    rng = np.random.default_rng(s["seed"])
    x = rng.normal(0, 3, (s["B"], s["T"], s["M"]))
    p, cache = ops.softmax_forward(x)
    np.testing.assert_allclose(p, scipy_softmax(x, axis=-1), rtol=1e-12)
    dp = rng.normal(size=p.shape)
    (num,) = vjp_numeric(lambda x: ops.softmax_forward(x)[0], [x], dp)
    assert_close(ops.softmax_backward(dp, cache), num, "x")
    x[..., 0] = -np.inf  # masked entries: probability 0, gradient 0, the rest renormalised
    if s["M"] > 1:
        p, cache = ops.softmax_forward(x)
        np.testing.assert_allclose(p[..., 1:], scipy_softmax(x[..., 1:], axis=-1), rtol=1e-12)
        assert np.all(p[..., 0] == 0) and np.all(ops.softmax_backward(dp, cache)[..., 0] == 0)


ACTIVATION_DEFS = {  # the definitions, independently of the module
    "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    "gelu": lambda x: x * ndtr(x),
    "relu": lambda x: np.where(x > 0, x, 0.0),
}


@pytest.mark.parametrize("act", sorted(ACTIVATION_DEFS))
def test_activation_on_a_grid(act):
    fwd, bwd = ops.ACTIVATIONS[act]
    x = np.linspace(-6, 6, 240)  # even count: 0 (relu's kink) is not on the grid
    out, cache = fwd(x)
    np.testing.assert_allclose(out, ACTIVATION_DEFS[act](x), rtol=1e-13, atol=1e-15)
    dout = np.random.default_rng(0).normal(size=x.shape)
    (num,) = vjp_numeric(lambda x: fwd(x)[0], [x], dout)
    assert_close(bwd(dout, cache), num, act)


@pytest.mark.parametrize("act", sorted(ACTIVATION_DEFS))
@settings(max_examples=8)
@given(dims)
def test_mlp(act, s):
    rng = np.random.default_rng(s["seed"])
    x, P = rng.normal(size=(s["B"], s["T"], s["D"])), mlp_params(rng, s["D"], s["M"])
    pre = x @ P[0] + P[1]
    if act == "relu":  # a kink within ~100 finite-difference steps makes the differences meaningless
        assume(np.abs(pre).min() > 100 * H_FD)
    out, cache = ops.mlp_forward(x, *P, act_fn=act)
    np.testing.assert_allclose(out, ACTIVATION_DEFS[act](pre) @ P[2] + P[3], rtol=1e-12, atol=1e-12)
    dout = rng.normal(size=out.shape)
    dx, g = ops.mlp_backward(dout, cache)
    num = vjp_numeric(lambda *a: ops.mlp_forward(*a, act_fn=act)[0], [x] + P, dout)
    assert_close(dx, num[0], "x")
    for name, n in zip(MLP_PARAMS, num[1:]):
        assert_close(g[name], n, name)


def attention_by_loops(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O):
    """Causal attention one batch entry, head and query at a time: query t attends to keys 0..t."""
    B, T, _ = x.shape
    H, _, E = W_Q.shape
    out = np.tile(b_O, (B, T, 1))
    for b in range(B):
        for h in range(H):
            q, k, v = (x[b] @ W[h] + bias[h] for W, bias in ((W_Q, b_Q), (W_K, b_K), (W_V, b_V)))  # [T, E]
            for t in range(T):
                scores = k[: t + 1] @ q[t] / np.sqrt(E)  # [t + 1]
                weights = np.exp(scores - scores.max())
                out[b, t] += (weights / weights.sum()) @ v[: t + 1] @ W_O[h]
    return out


@settings(max_examples=15)
@given(dims)
def test_attention(s):
    rng = np.random.default_rng(s["seed"])
    B, T, D, H, E = s["B"], s["T"], s["D"], s["H"], s["E"]
    x, P = rng.normal(size=(B, T, D)), attention_params(rng, D, H, E)
    out, cache = ops.attention_forward(x, *P)
    np.testing.assert_allclose(out, attention_by_loops(x, *P), rtol=1e-11, atol=1e-11)
    dout = rng.normal(size=out.shape)
    dx, g = ops.attention_backward(dout, cache)
    num = vjp_numeric(lambda *a: ops.attention_forward(*a)[0], [x] + P, dout)
    assert_close(dx, num[0], "x")
    overall = max(np.abs(n).max() for n in num)
    for name, n in zip(ATTN_PARAMS, num[1:]):  # b_K's gradient is exactly 0 (softmax ignores a shift shared by
        assert_close(g[name], n, name, scale=overall if name == "b_K" else None)  # a row): measured on the op's scale
    assert np.abs(g["b_K"]).max() <= 1e-12 * overall


def test_causal_mask():
    np.testing.assert_array_equal(ops.causal_mask(3), [[False, True, True], [False, False, True], [False, False, False]])


def test_mse_and_add():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(3, 4, 2)), rng.normal(size=(3, 4, 2))
    loss, cache = ops.mse_forward(pred, target)
    assert isinstance(loss, float) and loss == pytest.approx(np.mean((pred - target) ** 2), rel=1e-14)
    num = central_differences(lambda: ops.mse_forward(pred, target)[0], pred)
    assert_close(ops.mse_backward(cache), num, "pred")
    np.testing.assert_array_equal(ops.add(pred, target), pred + target)


# ---------------------------------------------------------------------------------------------
# hooks and record
# ---------------------------------------------------------------------------------------------
def run_op(op, rng, B, T, D, H, E, M):
    """(forward(hook) -> out, backward(dout, cache, record), inputs) for op in layernorm / mlp / attention."""
    x = rng.normal(1, 2, (B, T, D))
    if op == "layernorm":
        assume_spread(x)
        w, b = ln_params(rng, D)
        return (lambda xx, hook=None: ops.layernorm_forward(xx, w, b, 1e-5, hook)), ops.layernorm_backward, x
    if op == "mlp":
        P = mlp_params(rng, D, M)
        return (lambda xx, hook=None: ops.mlp_forward(xx, *P, act_fn="gelu_new", hook=hook)), ops.mlp_backward, x
    P = attention_params(rng, D, H, E)
    return (lambda xx, hook=None: ops.attention_forward(xx, *P, hook=hook)), ops.attention_backward, x


HOOKS = {"layernorm": ("hook_scale", "hook_normalized"), "mlp": ("hook_pre", "hook_post"), "attention": ATTN_HOOKS}
RECORD_ORDER = {"layernorm": ["hook_normalized", "hook_scale"], "mlp": ["hook_post", "hook_pre"],  # as the fast ops
                "attention": ["hook_result", "hook_z", "hook_pattern", "hook_attn_scores", "hook_q", "hook_k", "hook_v"]}


@pytest.mark.parametrize("op", sorted(HOOKS))
@settings(max_examples=6)
@given(dims)
def test_record_is_the_gradient_of_each_hooked_activation(op, s):
    """record(name, g): g = d sum(out * dout) / d activation, by central differences of a hook that shifts
    one entry of that activation; called once per hook, in reverse forward order (the fast ops' order)."""
    rng = np.random.default_rng(s["seed"])
    forward, backward, x = run_op(op, rng, s["B"], s["T"], s["D"], s["H"], s["E"], s["M"])
    seen = Shift()
    out, cache = forward(x, seen)
    assert [n for n, _ in seen.seen] == list(HOOKS[op])
    dout = rng.normal(size=out.shape)
    rec = Recorder()
    backward(dout, cache, rec)
    assert rec.order == RECORD_ORDER[op]
    def loss_with_shift(name, delta):
        return np.sum(forward(x, Shift({name: delta}))[0] * dout)

    for name, shape in seen.seen:
        assert rec.grads[name].shape == shape, name
        delta = np.zeros(shape)
        num = central_differences(functools.partial(loss_with_shift, name, delta), delta)
        finite = np.ones(shape, bool)
        if name == "hook_attn_scores":  # a masked score stays -inf under any shift: its gradient is 0
            finite = ~np.broadcast_to(ops.causal_mask(s["T"]), shape)
            assert np.all(rec.grads[name][~finite] == 0)
        assert_close(rec.grads[name][finite], num[finite], name)


@pytest.mark.parametrize("op", sorted(HOOKS))
@settings(max_examples=6)
@given(dims)
def test_hooks_are_the_identity_in_the_backward(op, s):
    """With a constant added at every hook point the forward changes, and the backward is still its exact
    gradient (each op differentiates its own forward values; the shift has Jacobian 1)."""
    rng = np.random.default_rng(s["seed"])
    forward, backward, x = run_op(op, rng, s["B"], s["T"], s["D"], s["H"], s["E"], s["M"])
    probe = Shift()
    forward(x, probe)
    shifts = {n: rng.normal(0, 0.3, shape) for n, shape in probe.seen}
    if "hook_scale" in shifts:
        shifts["hook_scale"] = np.abs(shifts["hook_scale"])  # keep the scale positive
    out, cache = forward(x, Shift(shifts))
    assert not np.allclose(out, forward(x)[0])
    dout = rng.normal(size=out.shape)
    dx = backward(dout, cache)[0]
    assert_close(dx, central_differences(lambda: np.sum(forward(x, Shift(shifts))[0] * dout), x), "x")


def test_replacing_hooks_change_the_output_as_computed_by_hand():
    rng = np.random.default_rng(1)
    B, T, D, H, E, M = 2, 4, 5, 3, 2, 6
    x = rng.normal(size=(B, T, D))
    P = attention_params(rng, D, H, E)

    def zero_head_1(name, value):
        if name == "hook_z":
            value = value.copy()
            value[:, :, 1] = 0
        return value

    out, _ = ops.attention_forward(x, *P, hook=zero_head_1)
    W_O = P[6].copy()
    W_O[1] = 0  # head 1's z times W_O[1] is dropped either way
    np.testing.assert_allclose(out, attention_by_loops(x, *P[:6], W_O, P[7]), rtol=1e-12, atol=1e-12)
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]  # [T, T] each query averages keys 0..t
    out, _ = ops.attention_forward(x, *P, hook=lambda n, v: np.broadcast_to(uniform, v.shape) if n == "hook_pattern" else v)
    v = np.einsum("btd,hde->bthe", x, P[4]) + P[5]
    np.testing.assert_allclose(out, np.einsum("qk,bkhe,hed->bqd", uniform, v, P[6]) + P[7], rtol=1e-12, atol=1e-12)
    w, b = ln_params(rng, D)
    out, _ = ops.layernorm_forward(x, w, b, 1e-5, hook=lambda n, v: np.ones_like(v) if n == "hook_scale" else v)
    np.testing.assert_allclose(out, (x - x.mean(-1, keepdims=True)) * w + b, rtol=1e-12)
    Pm = mlp_params(rng, D, M)
    out, _ = ops.mlp_forward(x, *Pm, hook=lambda n, v: np.zeros_like(v) if n == "hook_post" else v)
    np.testing.assert_allclose(out, np.broadcast_to(Pm[3], out.shape))
