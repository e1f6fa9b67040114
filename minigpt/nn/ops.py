"""The transformer's ops, written the textbook way: each forward next to its hand-written backward.

Convention (after llm.c and picoGPT):

    out, cache = op_forward(inputs..., hook=None)    # cache keeps exactly what the backward needs
    dinputs... = op_backward(dout, cache, record=None)

``hook`` (optional) is called as ``hook(name, value)`` at each named activation and returns the value the
forward goes on with (a ``minigpt.hooks.HookContext``; a hook may replace the activation).  ``record``
(optional) is called as ``record(name, grad)`` with the gradient of the loss with respect to each hooked
activation, in backward order.  Names and shapes are those of docs/hooks.md.

In the backward a hook point is the identity: the gradient passes through it unchanged, and each op's
local derivatives are taken at that op's own forward values.  So for a hook that shifts an activation by
a constant the backward is the exact gradient of the hooked forward.

Nothing here depends on whether a hook is present: every activation (also the per-head ``hook_result``)
is always computed and always passed to the hook.  No buffers are reused, nothing is written in place.

Shapes: batch B, positions T, d_model D, heads H, d_head E, d_mlp M; ``...`` is any leading shape.

These are the reference ops: the fast versions (2-D matmuls, fused QKV, blocked GELU, a reused
workspace) live in ``minigpt/fast/ops.py`` and are tested against these (tests/fast/test_fast_vs_reference.py).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import erf

Hook = Callable[[str, np.ndarray], np.ndarray]  # hook(name, value) -> the value the forward goes on with
Record = Callable[[str, np.ndarray], None]  # record(name, gradient of the loss with respect to that activation)


def _no_hook(name: str, value: np.ndarray) -> np.ndarray:
    return value


def _no_record(name: str, grad: np.ndarray) -> None:
    pass


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b (the residual stream's sums)."""
    return a + b


# ---------------------------------------------------------------------------------------------
# Linear map: out = x @ W + b
# ---------------------------------------------------------------------------------------------
def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
    """x [..., n_in], W [n_in, n_out], b [n_out] or None -> out [..., n_out]."""
    out = x @ W  # [..., n_out]
    if b is not None:
        out = out + b  # [..., n_out]
    return out, (x, W, b is not None)


def linear_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns (dx [..., n_in], dW [n_in, n_out], db [n_out] or None)."""
    x, W, has_bias = cache
    n_in, n_out = W.shape
    db = dout.reshape(-1, n_out).sum(0) if has_bias else None  # out = out + b  ->  db = sum over rows  [n_out]
    dW = x.reshape(-1, n_in).T @ dout.reshape(-1, n_out)  # out = x @ W  ->  dW = x^T dout  [n_in, n_out]
    dx = dout @ W.T  # out = x @ W  ->  dx = dout W^T  [..., n_in]
    return dx, dW, db


# ---------------------------------------------------------------------------------------------
# LayerNorm over the last axis (biased variance)
# ---------------------------------------------------------------------------------------------
def layernorm_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float, hook: Hook | None = None) -> tuple[np.ndarray, tuple]:
    """x [..., D], w [D], b [D] -> out [..., D].  Hooks: hook_scale [..., 1], hook_normalized [..., D]."""
    hook = _no_hook if hook is None else hook
    mean = x.mean(-1, keepdims=True)  # [..., 1]
    xc = x - mean  # [..., D]
    var = (xc * xc).mean(-1, keepdims=True)  # [..., 1]  biased: divides by D
    std = np.sqrt(var + eps)  # [..., 1]
    scale = hook("hook_scale", std)  # [..., 1]
    xhat = xc / scale  # [..., D]
    out = hook("hook_normalized", xhat * w + b)  # [..., D]
    return out, (xc, std, scale, xhat, w)


def layernorm_backward(dout: np.ndarray, cache: tuple, record: Record | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (dx [..., D], dw [D], db [D])."""
    record = _no_record if record is None else record
    xc, std, scale, xhat, w = cache
    D = xc.shape[-1]
    record("hook_normalized", dout)
    db = dout.reshape(-1, D).sum(0)  # out = xhat * w + b  ->  db = sum dout  [D]
    dw = (dout * xhat).reshape(-1, D).sum(0)  # out = xhat * w + b  ->  dw = sum dout * xhat  [D]
    dxhat = dout * w  # out = xhat * w + b  ->  dxhat = dout w  [..., D]
    dscale = -(dxhat * xc).sum(-1, keepdims=True) / scale**2  # xhat = xc / scale  [..., 1]
    record("hook_scale", dscale)
    dxc = dxhat / scale  # xhat = xc / scale  [..., D]
    dvar = dscale / (2 * std)  # std = sqrt(var + eps)  [..., 1]
    dxc = dxc + dvar * 2 * xc / D  # var = mean(xc^2)  [..., D]
    dx = dxc - dxc.mean(-1, keepdims=True)  # xc = x - mean(x)  [..., D]
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# Softmax over the last axis
# ---------------------------------------------------------------------------------------------
def softmax_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [..., n] -> p [..., n] = exp(x - max x) / sum exp(x - max x).  -inf entries get p = 0."""
    e = np.exp(x - x.max(-1, keepdims=True))  # [..., n]  shifting by the row max changes nothing but overflow
    p = e / e.sum(-1, keepdims=True)  # [..., n]
    return p, p


def softmax_backward(dp: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx_i = sum_j dp_j dp_j/dx_i = p_i (dp_i - sum_j p_j dp_j)."""
    p = cache
    return p * (dp - (p * dp).sum(-1, keepdims=True))  # p = softmax(x)  [..., n]


# ---------------------------------------------------------------------------------------------
# Activations (element-wise)
# ---------------------------------------------------------------------------------------------
SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)  # in the tanh approximation of GELU


def gelu_new_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    t = np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3))  # [...]
    return 0.5 * x * (1 + t), (x, t)


def gelu_new_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), with t = tanh(...)."""
    x, t = cache
    dt = (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)  # t = tanh(u)  ->  dt/dx = (1 - t^2) du/dx  [...]
    return dout * (0.5 * (1 + t) + 0.5 * x * dt)  # out = 0.5 x (1 + t)  [...]


def gelu_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """GELU, exact: x Phi(x) with Phi the standard normal CDF."""
    cdf = 0.5 * (1 + erf(x / np.sqrt(2.0)))  # [...]  Phi(x)
    return x * cdf, (x, cdf)


def gelu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """d/dx x Phi(x) = Phi(x) + x phi(x), phi the standard normal density."""
    x, cdf = cache
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)  # [...]  phi(x)
    return dout * (cdf + x * pdf)  # out = x Phi(x)  [...]


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max(x, 0)."""
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """1[x > 0] dout."""
    x = cache
    return dout * (x > 0)  # out = max(x, 0)  [...]


ACTIVATIONS = {
    "gelu_new": (gelu_new_forward, gelu_new_backward),
    "gelu": (gelu_forward, gelu_backward),
    "relu": (relu_forward, relu_backward),
}


# ---------------------------------------------------------------------------------------------
# MLP: out = act(x @ W_in + b_in) @ W_out + b_out
# ---------------------------------------------------------------------------------------------
def mlp_forward(x: np.ndarray, W_in: np.ndarray, b_in: np.ndarray, W_out: np.ndarray, b_out: np.ndarray,
                act_fn: str = "gelu_new", hook: Hook | None = None) -> tuple[np.ndarray, tuple]:
    """x [B, T, D] -> out [B, T, D].  Hooks: hook_pre, hook_post [B, T, M]."""
    hook = _no_hook if hook is None else hook
    act_forward, _ = ACTIVATIONS[act_fn]
    pre, c_in = linear_forward(x, W_in, b_in)  # [B, T, M]
    pre = hook("hook_pre", pre)
    post, c_act = act_forward(pre)  # [B, T, M]
    post = hook("hook_post", post)
    out, c_out = linear_forward(post, W_out, b_out)  # [B, T, D]
    return out, (c_in, c_act, c_out, act_fn)


def mlp_backward(dout: np.ndarray, cache: tuple, record: Record | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns (dx [B, T, D], {"W_in", "b_in", "W_out", "b_out"})."""
    record = _no_record if record is None else record
    c_in, c_act, c_out, act_fn = cache
    _, act_backward = ACTIVATIONS[act_fn]
    dpost, dW_out, db_out = linear_backward(dout, c_out)  # out = post @ W_out + b_out  [B, T, M]
    record("hook_post", dpost)
    dpre = act_backward(dpost, c_act)  # post = act(pre)  [B, T, M]
    record("hook_pre", dpre)
    dx, dW_in, db_in = linear_backward(dpre, c_in)  # pre = x @ W_in + b_in  [B, T, D]
    return dx, {"W_in": dW_in, "b_in": db_in, "W_out": dW_out, "b_out": db_out}


# ---------------------------------------------------------------------------------------------
# Causal multi-head self-attention
# ---------------------------------------------------------------------------------------------
def causal_mask(T: int) -> np.ndarray:
    """Boolean [T, T] (query, key): True where the key comes after the query (masked out)."""
    return np.triu(np.ones((T, T), dtype=bool), k=1)


def attention_forward(x: np.ndarray, W_Q: np.ndarray, b_Q: np.ndarray, W_K: np.ndarray, b_K: np.ndarray, W_V: np.ndarray,
                      b_V: np.ndarray, W_O: np.ndarray, b_O: np.ndarray, hook: Hook | None = None) -> tuple[np.ndarray, tuple]:
    """x [B, T, D]; W_Q/W_K/W_V [H, D, E]; b_Q/b_K/b_V [H, E]; W_O [H, E, D]; b_O [D] -> out [B, T, D].

    Hooks: hook_q/hook_k/hook_v [B, T, H, E], hook_attn_scores/hook_pattern [B, H, T, T] (query, key),
    hook_z [B, T, H, E], hook_result [B, T, H, D] (each head's output)."""
    hook = _no_hook if hook is None else hook
    E, T = W_Q.shape[-1], x.shape[1]
    q = hook("hook_q", np.einsum("btd,hde->bthe", x, W_Q) + b_Q)  # [B, T, H, E]
    k = hook("hook_k", np.einsum("btd,hde->bthe", x, W_K) + b_K)  # [B, T, H, E]
    v = hook("hook_v", np.einsum("btd,hde->bthe", x, W_V) + b_V)  # [B, T, H, E]
    scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(E)  # [B, H, T, T]
    scores = hook("hook_attn_scores", np.where(causal_mask(T), -np.inf, scores))  # [B, H, T, T]
    pattern, c_softmax = softmax_forward(scores)  # [B, H, T, T]
    pattern = hook("hook_pattern", pattern)  # [B, H, T, T]
    z = hook("hook_z", np.einsum("bhqk,bkhe->bqhe", pattern, v))  # [B, T, H, E]
    result = hook("hook_result", np.einsum("bthe,hed->bthd", z, W_O))  # [B, T, H, D]
    out = result.sum(2) + b_O  # [B, T, D]
    return out, (x, W_Q, W_K, W_V, W_O, q, k, v, c_softmax, pattern, z)


def attention_backward(dout: np.ndarray, cache: tuple, record: Record | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns (dx [B, T, D], grads dict with keys W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O)."""
    record = _no_record if record is None else record
    x, W_Q, W_K, W_V, W_O, q, k, v, c_softmax, pattern, z = cache
    B, T, H, E = q.shape
    g = {"b_O": dout.sum((0, 1))}  # out = sum_h result + b_O  [D]
    dresult = np.broadcast_to(dout[:, :, None, :], (B, T, H, dout.shape[-1]))  # out = sum_h result  [B, T, H, D]
    record("hook_result", dresult)
    g["W_O"] = np.einsum("bthe,bthd->hed", z, dresult)  # result = z W_O  [H, E, D]
    dz = np.einsum("bthd,hed->bthe", dresult, W_O)  # result = z W_O  [B, T, H, E]
    record("hook_z", dz)
    dpattern = np.einsum("bqhe,bkhe->bhqk", dz, v)  # z = pattern v  [B, H, T, T]
    dv = np.einsum("bhqk,bqhe->bkhe", pattern, dz)  # z = pattern v  [B, T, H, E]
    record("hook_pattern", dpattern)
    dscores = softmax_backward(dpattern, c_softmax)  # pattern = softmax(scores)  [B, H, T, T]
    record("hook_attn_scores", dscores)
    dscores = np.where(causal_mask(T), 0.0, dscores) / np.sqrt(E)  # scores = mask(q k^T / sqrt(E))
    dq = np.einsum("bhqk,bkhe->bqhe", dscores, k)  # scores = q k^T  [B, T, H, E]
    dk = np.einsum("bhqk,bqhe->bkhe", dscores, q)  # scores = q k^T  [B, T, H, E]
    for name, d in (("hook_q", dq), ("hook_k", dk), ("hook_v", dv)):
        record(name, d)
    dx = 0
    for n, d, W in (("Q", dq, W_Q), ("K", dk, W_K), ("V", dv, W_V)):  # q = x W_Q + b_Q, same for k, v
        g["W_" + n] = np.einsum("btd,bthe->hde", x, d)  # [H, D, E]
        g["b_" + n] = d.sum((0, 1))  # [H, E]
        dx = dx + np.einsum("bthe,hde->btd", d, W)  # [B, T, D]
    return dx, g


# ---------------------------------------------------------------------------------------------
# Loss: mean squared error over every element
# ---------------------------------------------------------------------------------------------
def mse_forward(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """loss = mean((pred - target)^2) over every element."""
    diff = pred - target  # [...]
    return float(np.mean(diff * diff)), diff


def mse_backward(cache: np.ndarray) -> np.ndarray:
    """d loss / d pred = 2 (pred - target) / N."""
    diff = cache
    return 2 * diff / diff.size  # loss = mean(diff^2)  [...]
