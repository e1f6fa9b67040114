"""Every op of the transformer as a forward/backward pair of free functions, written by hand.

Convention (after llm.c and CS231n):

    out, cache = op_forward(inputs..., hook=None)   # cache keeps exactly what the backward needs
    dinputs... = op_backward(dout, cache, record=None)

``hook`` (optional) is a ``HookContext`` (see ``minigpt.hooks``): ``hook(name, value)`` returns the value
to use from then on (a hook may replace an activation), and ``hook.wants(name)`` says whether an
activation that costs extra work (``hook_result``) is asked for. ``record`` (optional) is called as
``record(name, grad)`` with the loss gradient with respect to each hooked activation.

Shapes: batch B, positions T, d_model D, heads H, d_head E, d_mlp M.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def _hook(hook, name, value):
    return value if hook is None else hook(name, value)


# ---------------------------------------------------------------------------------------------
# Linear map: out = x @ W (+ b).  Read-in (no bias), MLP, read-out.
# ---------------------------------------------------------------------------------------------
def linear_forward(x, W, b=None):
    """x [..., n_in], W [n_in, n_out], b [n_out] or None -> out [..., n_out] = x @ W + b."""
    out = x @ W  # [..., n_out]
    if b is not None:
        out += b
    return out, (x, W, b is not None)


def linear_backward(dout, cache):
    """Returns (dx [..., n_in], dW [n_in, n_out], db [n_out] or None)."""
    x, W, has_bias = cache
    n_in, n_out = W.shape
    d2 = dout.reshape(-1, n_out)  # [N, n_out]
    dW = x.reshape(-1, n_in).T @ d2  # out = x @ W      ->  dW = x^T dout
    db = d2.sum(0) if has_bias else None  # out += b      ->  db = sum over rows
    dx = dout @ W.T  # out = x @ W      ->  dx = dout W^T
    return dx, dW, db


# ---------------------------------------------------------------------------------------------
# LayerNorm over the last axis: out = (x - mean) / sqrt(var + eps) * w + b
# ---------------------------------------------------------------------------------------------
def layernorm_forward(x, w, b, eps, hook=None):
    """x [..., D], w [D], b [D] -> out [..., D].  Hooks: hook_scale [..., 1], hook_normalized [..., D]."""
    mean = x.mean(-1, keepdims=True)  # [..., 1]
    xc = x - mean  # [..., D]
    var = np.einsum("...d,...d->...", xc, xc)[..., None] / x.shape[-1]  # [..., 1] biased variance
    scale = np.sqrt(var + eps)  # [..., 1]
    scale = _hook(hook, "hook_scale", scale)
    rstd = 1.0 / scale  # [..., 1]
    xhat = xc * rstd  # [..., D]
    out = xhat * w + b  # [..., D]
    out = _hook(hook, "hook_normalized", out)
    return out, (xhat, rstd, w)


def layernorm_backward(dout, cache, record=None):
    """Returns (dx [..., D], dw [D], db [D])."""
    xhat, rstd, w = cache
    D = xhat.shape[-1]
    if record is not None:
        record("hook_normalized", dout)
    db = dout.reshape(-1, D).sum(0)  # out = xhat * w + b      -> db = sum dout
    dw = (dout * xhat).reshape(-1, D).sum(0)  # out = xhat * w + b      -> dw = sum dout * xhat
    dxhat = dout * w  # [..., D]                  -> dxhat = dout * w
    proj = np.einsum("...d,...d->...", dxhat, xhat)[..., None]  # [..., 1] <dxhat, xhat>
    if record is not None:
        record("hook_scale", -proj * rstd)  # xhat = xc / scale  -> dscale = -<dxhat, xhat> / scale
    # xhat = (x - mean) * rstd, with mean and rstd depending on x:
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    dx = dxhat - dxhat.mean(-1, keepdims=True)  # [..., D]
    dx -= xhat * (proj / D)
    dx *= rstd
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# Softmax over the last axis (max-subtracted)
# ---------------------------------------------------------------------------------------------
def softmax_forward(x):
    """x [..., n] -> p [..., n], p_i = exp(x_i - max x) / sum_j exp(x_j - max x).  -inf entries give 0."""
    e = np.exp(x - x.max(-1, keepdims=True))  # [..., n]
    e /= e.sum(-1, keepdims=True)
    return e, e


def softmax_backward(dp, cache):
    """Jacobian of softmax, written out once: dx_i = p_i * (dp_i - sum_j p_j dp_j)."""
    p = cache
    dx = dp - np.einsum("...n,...n->...", dp, p)[..., None]  # [..., n]
    dx *= p
    return dx


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------
def gelu_new_forward(x):
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))  # [...]
    return 0.5 * x * (1.0 + t), (x, t)


def gelu_new_backward(dout, cache):
    """d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x, t = cache
    x2 = x * x
    inner = (_SQRT_2_OVER_PI * 0.5) * x * (1.0 + (3.0 * _GELU_CUBIC) * x2)  # 0.5 x du/dx
    grad = 0.5 * (1.0 + t) + inner * (1.0 - t * t)  # d out / d x
    grad *= dout
    return grad


def gelu_forward(x):
    """GELU, exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))  # Phi(x)
    return x * cdf, (x, cdf)


def gelu_backward(dout, cache):
    """d/dx x Phi(x) = Phi(x) + x phi(x)."""
    x, cdf = cache
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)  # phi(x)
    return dout * (cdf + x * pdf)


def relu_forward(x):
    """max(x, 0)."""
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """1[x > 0] * dout."""
    return dout * (cache > 0)


ACTIVATIONS = {
    "gelu_new": (gelu_new_forward, gelu_new_backward),
    "gelu": (gelu_forward, gelu_backward),
    "relu": (relu_forward, relu_backward),
}


# ---------------------------------------------------------------------------------------------
# MLP: out = act(x @ W_in + b_in) @ W_out + b_out
# ---------------------------------------------------------------------------------------------
def mlp_forward(x, W_in, b_in, W_out, b_out, act_fn="gelu_new", hook=None):
    """x [B, T, D] -> out [B, T, D].  Hooks: hook_pre, hook_post [B, T, M]."""
    act_forward, _ = ACTIVATIONS[act_fn]
    pre, c_in = linear_forward(x, W_in, b_in)  # [B, T, M]
    pre = _hook(hook, "hook_pre", pre)
    post, c_act = act_forward(pre)  # [B, T, M]
    post = _hook(hook, "hook_post", post)
    out, c_out = linear_forward(post, W_out, b_out)  # [B, T, D]
    return out, (c_in, c_act, c_out, act_fn)


def mlp_backward(dout, cache, record=None):
    """Returns (dx, {"W_in", "b_in", "W_out", "b_out"})."""
    c_in, c_act, c_out, act_fn = cache
    dpost, dW_out, db_out = linear_backward(dout, c_out)  # out = post @ W_out + b_out
    if record is not None:
        record("hook_post", dpost)
    dpre = ACTIVATIONS[act_fn][1](dpost, c_act)  # post = act(pre)
    if record is not None:
        record("hook_pre", dpre)
    dx, dW_in, db_in = linear_backward(dpre, c_in)  # pre = x @ W_in + b_in
    return dx, {"W_in": dW_in, "b_in": db_in, "W_out": dW_out, "b_out": db_out}


# ---------------------------------------------------------------------------------------------
# Causal multi-head self-attention
#   q, k, v = x W_Q + b_Q, x W_K + b_K, x W_V + b_V            (one fused matmul)
#   scores  = q k^T / sqrt(E), with -inf above the diagonal       [B, H, T, T]
#   pattern = softmax(scores)                                     [B, H, T, T]
#   z       = pattern v                                           [B, T, H, E]
#   out     = sum_h z_h W_O[h] + b_O                              [B, T, D]
# ---------------------------------------------------------------------------------------------
_MASKS: dict = {}


def causal_mask(T):
    """Boolean [T, T], True where the key position is after the query position (to be masked)."""
    if T not in _MASKS:
        _MASKS[T] = np.triu(np.ones((T, T), dtype=bool), k=1)
    return _MASKS[T]


def attention_forward(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, hook=None):
    """x [B, T, D]; W_Q/W_K/W_V [H, D, E]; b_Q/b_K/b_V [H, E]; W_O [H, E, D]; b_O [D] -> out [B, T, D].

    Hooks: hook_q/hook_k/hook_v [B, T, H, E], hook_attn_scores/hook_pattern [B, H, T, T],
    hook_z [B, T, H, E], hook_result [B, T, H, D] (per-head output, computed only when asked for).
    """
    B, T, D = x.shape
    H, _, E = W_Q.shape
    W_qkv = np.stack([W_Q, W_K, W_V], 1).transpose(2, 0, 1, 3).reshape(D, 3 * H * E)  # [D, 3HE] order (h, qkv, e)
    b_qkv = np.stack([b_Q, b_K, b_V], 1).reshape(3 * H * E)  # [3HE]
    qkv = (x.reshape(B * T, D) @ W_qkv + b_qkv).reshape(B, T, H, 3, E)  # [B, T, H, 3, E]
    q = _hook(hook, "hook_q", qkv[:, :, :, 0])  # [B, T, H, E]
    k = _hook(hook, "hook_k", qkv[:, :, :, 1])  # [B, T, H, E]
    v = _hook(hook, "hook_v", qkv[:, :, :, 2])  # [B, T, H, E]
    qh = q.transpose(0, 2, 1, 3)  # [B, H, T, E]
    kh = k.transpose(0, 2, 1, 3)  # [B, H, T, E]
    vh = v.transpose(0, 2, 1, 3)  # [B, H, T, E]
    scale = 1.0 / math.sqrt(E)
    scores = qh @ kh.transpose(0, 1, 3, 2)  # [B, H, T, T]
    scores *= scale
    scores[..., causal_mask(T)] = -np.inf
    scores = _hook(hook, "hook_attn_scores", scores)
    pattern, _ = softmax_forward(scores)  # [B, H, T, T]
    pattern = _hook(hook, "hook_pattern", pattern)
    z = (pattern @ vh).transpose(0, 2, 1, 3)  # [B, T, H, E]
    z = _hook(hook, "hook_z", z)
    if hook is not None and hook.wants("hook_result"):
        result = np.einsum("bthe,hed->bthd", z, W_O)  # [B, T, H, D]
        result = hook("hook_result", result)
        out = result.sum(2) + b_O  # [B, T, D]
    else:
        out = z.reshape(B * T, H * E) @ W_O.reshape(H * E, D)  # [B*T, D]
        out = out.reshape(B, T, D) + b_O  # [B, T, D]
    cache = (x, W_qkv, qh, kh, vh, pattern, z, W_O, scale)
    return out, cache


def attention_backward(dout, cache, record=None):
    """Returns (dx [B, T, D], grads dict with keys W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O)."""
    x, W_qkv, qh, kh, vh, pattern, z, W_O, scale = cache
    B, T, D = x.shape
    H, E, _ = W_O.shape
    dout2 = dout.reshape(B * T, D)  # [B*T, D]
    if record is not None:
        record("hook_result", np.broadcast_to(dout[:, :, None, :], (B, T, H, D)))
    g = {"b_O": dout2.sum(0)}  # out = ... + b_O
    g["W_O"] = (z.reshape(B * T, H * E).T @ dout2).reshape(H, E, D)  # out = z W_O  -> dW_O = z^T dout
    dz = (dout2 @ W_O.reshape(H * E, D).T).reshape(B, T, H, E)  # out = z W_O  -> dz = dout W_O^T
    if record is not None:
        record("hook_z", dz)
    dzh = dz.transpose(0, 2, 1, 3)  # [B, H, T, E]
    dpattern = dzh @ vh.transpose(0, 1, 3, 2)  # z = pattern v  -> dpattern = dz v^T   [B, H, T, T]
    dvh = pattern.transpose(0, 1, 3, 2) @ dzh  # z = pattern v  -> dv = pattern^T dz   [B, H, T, E]
    if record is not None:
        record("hook_pattern", dpattern)
    dscores = softmax_backward(dpattern, pattern)  # pattern = softmax(scores); masked entries get 0
    if record is not None:
        record("hook_attn_scores", dscores)
    dscores *= scale  # scores = q k^T * scale
    dqkv = np.empty((B, T, H, 3, E), dtype=dout.dtype)  # [B, T, H, 3, E]
    dqkv[:, :, :, 0] = (dscores @ kh).transpose(0, 2, 1, 3)  # dq = dscores k
    dqkv[:, :, :, 1] = (dscores.transpose(0, 1, 3, 2) @ qh).transpose(0, 2, 1, 3)  # dk = dscores^T q
    dqkv[:, :, :, 2] = dvh.transpose(0, 2, 1, 3)
    if record is not None:
        record("hook_q", dqkv[:, :, :, 0])
        record("hook_k", dqkv[:, :, :, 1])
        record("hook_v", dqkv[:, :, :, 2])
    dqkv2 = dqkv.reshape(B * T, 3 * H * E)  # [B*T, 3HE]
    dW = (x.reshape(B * T, D).T @ dqkv2).reshape(D, H, 3, E)  # qkv = x W_qkv + b_qkv
    db = dqkv2.sum(0).reshape(H, 3, E)
    for i, n in enumerate("QKV"):
        g["W_" + n] = dW[:, :, i].transpose(1, 0, 2)  # [H, D, E]
        g["b_" + n] = db[:, i]  # [H, E]
    dx = (dqkv2 @ W_qkv.T).reshape(B, T, D)  # dx = dqkv W_qkv^T
    return dx, g


# ---------------------------------------------------------------------------------------------
# Loss: mean squared error over every element
# ---------------------------------------------------------------------------------------------
def mse_forward(pred, target):
    """loss = mean((pred - target)^2) over every element."""
    diff = pred - target
    return float(np.mean(diff * diff)), diff


def mse_backward(cache):
    """d loss / d pred = 2 (pred - target) / N."""
    diff = cache
    return diff * (2.0 / diff.size)
