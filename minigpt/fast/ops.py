"""Every op of the transformer as a forward/backward pair of free functions, written by hand.

Convention (after llm.c and CS231n):

    out, cache = op_forward(inputs..., hook=None)   # cache keeps exactly what the backward needs
    dinputs... = op_backward(dout, cache, record=None)

``hook`` (optional) is a ``HookContext`` (see ``minigpt.nn.hooks``): ``hook(name, value)`` returns the value
to use from then on (a hook may replace an activation), and ``hook.wants(name)`` says whether an
activation that costs extra work (``hook_result``) is asked for. ``record`` (optional) is called as
``record(name, grad)`` with the loss gradient with respect to each hooked activation.

Shapes: batch B, positions T, d_model D, heads H, d_head E, d_mlp M.

Speed (what the forms below are chosen for; they compute the same quantities):
- every matmul is 2-D (``[N, n_in] @ [n_in, n_out]`` with N = B*T rows): numpy runs ``x[B, T, n] @ W`` as
  a loop of B small matmuls;
- row sums and row means are BLAS gemv with a ones vector (``ones @ x2``), far faster than ``x2.sum(0)``
  or ``x.mean(-1)`` over a short axis;
- long element-wise chains (GELU) run block by block with ``out=``, so their temporaries stay in cache;
- attention keeps q, k, v contiguous per head (``[3, B, H, T, E]``) for the batched matmuls;
- an op writes in place only into arrays it made itself and that no hook has seen;
- results come from ``_empty`` / ``_matmul``: inside ``with using(Workspace()):`` (the model's
  ``loss_and_grad``) they reuse the arrays of the previous step instead of fresh memory.
"""
from __future__ import annotations

import contextlib
import math
import sys
import threading

import numpy as np
from scipy.special import erf

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


_BLOCK = 131072  # elements per block in the blocked element-wise loops: a block and its temporaries stay in L2
# (measured: as fast as or faster than 32768 on the paper and wide steps; whole arrays are slower)


def _hook(hook, name, value):
    return value if hook is None else hook(name, value)


_ONES: dict = {}


def _ones(n, dtype):
    """A cached vector of ``n`` ones (for row sums as one BLAS gemv)."""
    key = (n, np.dtype(dtype))
    v = _ONES.get(key)
    if v is None:
        if len(_ONES) > 64:
            _ONES.clear()
        v = _ONES[key] = np.ones(n, dtype)
    return v


def sum_rows(x2):
    """x2 [N, n] -> [n], the sum over rows, as ``ones @ x2`` (one gemv)."""
    return _ones(x2.shape[0], x2.dtype) @ x2


# ---------------------------------------------------------------------------------------------
# Workspace: the ops' result arrays, reused from one training step to the next
# ---------------------------------------------------------------------------------------------
class Workspace:
    """Hands out arrays for the ops' results and hands an array out again once nothing else refers to it.

    Fresh memory costs a page fault per 4 KiB page on first touch, and a training step of the ``paper``
    preset writes ~200 MB of activations and gradients: reusing them saves about a quarter of the step.
    An array is reused only when the workspace's own list holds the sole reference to it (no variable,
    cache, hook or view keeps it: a view refers to its base), so reuse never overwrites a live value.
    Holds at most what was alive at once, per shape."""

    def __init__(self):
        self.pools: dict = {}  # (shape, dtype) -> arrays handed out
        self._free_refs = self._refcount_when_free()
        self._lock = threading.Lock()  # two threads sharing a model never get the same array

    @staticmethod
    def _refcount_when_free():
        probe = [np.empty(1)]
        for a in probe:  # the same loop as in ``empty``: the count it sees for an array held only by the list
            return sys.getrefcount(a)

    def empty(self, shape, dtype):
        with self._lock:
            pool = self.pools.setdefault((shape, np.dtype(dtype)), [])
            for a in pool:
                if sys.getrefcount(a) == self._free_refs:
                    return a
            a = np.empty(shape, dtype)
            pool.append(a)
            return a

    def nbytes(self) -> int:
        return sum(a.nbytes for pool in self.pools.values() for a in pool)


_ACTIVE = threading.local()


@contextlib.contextmanager
def using(workspace):
    """``with using(ws):`` the ops of this thread take their result arrays from ``ws`` (None: fresh arrays)."""
    prev = getattr(_ACTIVE, "ws", None)
    _ACTIVE.ws = workspace
    try:
        yield workspace
    finally:
        _ACTIVE.ws = prev


def _empty(shape, dtype):
    """np.empty, or an array of the active workspace."""
    ws = getattr(_ACTIVE, "ws", None)
    return np.empty(shape, dtype) if ws is None else ws.empty(tuple(shape), dtype)


def _matmul(a, b):
    """a @ b (2-D or batched) into an array from ``_empty``."""
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    return np.matmul(a, b, out=_empty(shape, np.result_type(a, b)))


def add(a, b):
    """a + b into an array from ``_empty`` (the residual stream's sums)."""
    return np.add(a, b, out=_empty(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b)))


def _copy(a):
    """A C-contiguous copy of ``a`` (e.g. of a transposed view), into an array from ``_empty``."""
    out = _empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def _row_blocks(n_rows, row_len):
    """Slices of rows of about ``_BLOCK`` elements each."""
    step = max(1, _BLOCK // max(row_len, 1))
    return [slice(i, i + step) for i in range(0, n_rows, step)]


# ---------------------------------------------------------------------------------------------
# Linear map: out = x @ W (+ b).  Read-in (no bias), MLP, read-out.
# ---------------------------------------------------------------------------------------------
def linear_forward(x, W, b=None):
    """x [..., n_in], W [n_in, n_out], b [n_out] or None -> out [..., n_out] = x @ W + b."""
    n_in, n_out = W.shape
    if n_in == 1:  # a scalar read-in: an outer product, much faster as a broadcast multiply than a K=1 matmul
        out = np.multiply(x.reshape(-1, 1), W, out=_empty((x.size, n_out), np.result_type(x, W)))  # [N, n_out]
    else:
        out = _matmul(x.reshape(-1, n_in), W)  # [N, n_out]  one 2-D matmul over all N = B*T rows
    if b is not None:
        out += b
    return out.reshape(*x.shape[:-1], n_out), (x, W, b is not None)


def linear_backward(dout, cache):
    """Returns (dx [..., n_in], dW [n_in, n_out], db [n_out] or None)."""
    x, W, has_bias = cache
    n_in, n_out = W.shape
    d2 = dout.reshape(-1, n_out)  # [N, n_out]
    dW = x.reshape(-1, n_in).T @ d2  # out = x @ W      ->  dW = x^T dout     [n_in, n_out]
    db = sum_rows(d2) if has_bias else None  # out += b      ->  db = sum over rows
    dx = _matmul(d2, W.T).reshape(x.shape)  # out = x @ W      ->  dx = dout W^T     [..., n_in]
    return dx, dW, db


# ---------------------------------------------------------------------------------------------
# LayerNorm over the last axis: out = (x - mean) / sqrt(var + eps) * w + b
# ---------------------------------------------------------------------------------------------
def layernorm_forward(x, w, b, eps, hook=None):
    """x [..., D], w [D], b [D] -> out [..., D].  Hooks: hook_scale [..., 1], hook_normalized [..., D]."""
    D = x.shape[-1]
    x2 = x.reshape(-1, D)  # [N, D]
    mean = (x2 @ _ones(D, x.dtype)) / D  # [N]  row means as one gemv
    xc = np.subtract(x2, mean[:, None], out=_empty(x2.shape, x2.dtype))  # [N, D]
    var = np.einsum("nd,nd->n", xc, xc) / D  # [N] biased variance
    std = np.sqrt(var + eps).reshape(*x.shape[:-1], 1)  # [..., 1]
    scale = _hook(hook, "hook_scale", std)
    rstd = 1.0 / scale  # [..., 1]
    xhat = xc.reshape(x.shape)  # [..., D]
    xhat *= rstd  # xhat = (x - mean) / scale, in place in xc
    out = np.multiply(xhat, w, out=_empty(x.shape, np.result_type(xhat, w)))  # [..., D]
    out += b
    out = _hook(hook, "hook_normalized", out)
    ratio = None if scale is std else scale / std  # a hook replaced the scale: std's own derivative is 1 / std
    return out, (xhat, rstd, w, ratio)


def layernorm_backward(dout, cache, record=None):
    """Returns (dx [..., D], dw [D], db [D])."""
    xhat, rstd, w, ratio = cache
    D = xhat.shape[-1]
    if record is not None:
        record("hook_normalized", dout)
    d2, xh2 = dout.reshape(-1, D), xhat.reshape(-1, D)  # [N, D]
    db = sum_rows(d2)  # out = xhat * w + b      -> db = sum dout
    dw = np.einsum("nd,nd->d", d2, xh2)  # out = xhat * w + b      -> dw = sum dout * xhat
    dxhat = np.multiply(d2, w, out=_empty(d2.shape, np.result_type(d2, w)))  # [N, D]  -> dxhat = dout * w
    proj = np.einsum("nd,nd->n", dxhat, xh2)  # [N] <dxhat, xhat>
    if record is not None:  # xhat = xc / scale  -> dscale = -<dxhat, xhat> / scale
        record("hook_scale", -proj.reshape(rstd.shape) * rstd)
    # xhat = (x - mean) * rstd, with mean and rstd depending on x:
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    mean = (dxhat @ _ones(D, dxhat.dtype)) / D  # [N]  mean(dxhat)
    if ratio is not None:  # scale = hook(std): dstd = dscale, and dstd/dvar = 1 / (2 std) = ratio / (2 scale)
        proj = proj * ratio.reshape(-1)
    tmp = np.multiply(xh2, (proj / D)[:, None], out=_empty(xh2.shape, dxhat.dtype))  # [N, D]  xhat * mean(dxhat * xhat)
    dx = dxhat  # in place: dxhat is ours
    dx -= mean[:, None]
    dx -= tmp
    dx = dx.reshape(xhat.shape)
    dx *= rstd
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# Softmax over the last axis (max-subtracted)
# ---------------------------------------------------------------------------------------------
def _rowmax(x2):
    """x2 [N, n] -> [N, 1], the max of each row.  For short rows a loop over the n columns is several
    times faster than ``x2.max(1)`` (which numpy reduces row by row)."""
    if x2.shape[1] > 32:
        return x2.max(1, keepdims=True)
    m = x2[:, :1].copy()  # [N, 1]
    for j in range(1, x2.shape[1]):
        np.maximum(m, x2[:, j : j + 1], out=m)
    return m


def softmax_forward(x, inplace=False):
    """x [..., n] -> p [..., n], p_i = exp(x_i - max x) / sum_j exp(x_j - max x).  -inf entries give 0.

    ``inplace=True`` overwrites ``x`` (when it is contiguous) with p."""
    n = x.shape[-1]
    x2 = x.reshape(-1, n)  # [N, n]
    e = np.subtract(x2, _rowmax(x2), out=x2 if inplace else _empty(x2.shape, x2.dtype))  # [N, n]  x - max x
    np.exp(e, out=e)
    e /= (e @ _ones(n, e.dtype))[:, None]  # row sums as one gemv
    e = e.reshape(x.shape)
    return e, e


def softmax_backward(dp, cache, inplace=False):
    """Jacobian of softmax, written out once: dx_i = p_i * (dp_i - sum_j p_j dp_j).

    ``inplace=True`` overwrites ``dp`` (when it is contiguous) with dx."""
    p = cache
    n = p.shape[-1]
    p2, dp2 = p.reshape(-1, n), dp.reshape(-1, n)  # [N, n]
    dot = np.einsum("in,in->i", dp2, p2)[:, None]  # [N, 1]  sum_j p_j dp_j
    dx = np.subtract(dp2, dot, out=dp2 if inplace else _empty(dp2.shape, np.result_type(dp2, p2)))  # [N, n]
    dx *= p2
    return dx.reshape(p.shape)


# ---------------------------------------------------------------------------------------------
# Activations.  Each backward takes ``out=`` (may be ``dout`` itself) to write dx into.
# ---------------------------------------------------------------------------------------------
def gelu_new_forward(x):
    """GELU, tanh approximation (GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Runs block by block; keeps ``t = tanh(...)`` for the backward."""
    n = x.shape[-1]
    x2 = x.reshape(-1, n)  # [N, n]
    out, t = _empty(x2.shape, x2.dtype), _empty(x2.shape, x2.dtype)
    for r in _row_blocks(*x2.shape):
        xb, tb, ob = x2[r], t[r], out[r]
        np.multiply(xb, xb, out=tb)  # x^2
        tb *= _SQRT_2_OVER_PI * _GELU_CUBIC
        tb += _SQRT_2_OVER_PI
        tb *= xb  # u = sqrt(2/pi) (x + 0.044715 x^3)
        np.tanh(tb, out=tb)  # t = tanh(u)
        np.add(tb, 1.0, out=ob)
        ob *= xb
        ob *= 0.5  # out = 0.5 x (1 + t)
    return out.reshape(x.shape), (x, t.reshape(x.shape))


def gelu_new_backward(dout, cache, out=None):
    """d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
            = (1 + t) * (0.5 + (1 - t) * 0.5 x sqrt(2/pi) (1 + 3 * 0.044715 x^2))     as 1 - t^2 = (1 - t)(1 + t),
    reusing t = tanh(u) from the forward.  Runs block by block."""
    x, t = cache
    n = x.shape[-1]
    x2, t2, d2 = x.reshape(-1, n), t.reshape(-1, n), dout.reshape(-1, n)  # [N, n]
    dx = _empty(d2.shape, d2.dtype) if out is None else out.reshape(-1, n)
    blocks = _row_blocks(*x2.shape)
    a = np.empty((blocks[0].stop - blocks[0].start, n), x2.dtype) if blocks else None  # scratch, one block
    c = np.empty_like(a) if blocks else None
    for r in blocks:
        xb, tb = x2[r], t2[r]
        ab, cb = a[: len(xb)], c[: len(xb)]
        np.multiply(xb, xb, out=ab)  # x^2
        ab *= 0.5 * _SQRT_2_OVER_PI * 3.0 * _GELU_CUBIC
        ab += 0.5 * _SQRT_2_OVER_PI
        ab *= xb  # 0.5 x du/dx = 0.5 x sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        np.subtract(1.0, tb, out=cb)
        ab *= cb  # * (1 - t)
        ab += 0.5
        np.add(tb, 1.0, out=cb)
        ab *= cb  # * (1 + t)  = d out / d x
        np.multiply(ab, d2[r], out=dx[r])  # dx = dout * d out / d x
    return dx.reshape(dout.shape)


def gelu_forward(x):
    """GELU, exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    cdf = erf(x / math.sqrt(2.0))
    cdf += 1.0
    cdf *= 0.5  # Phi(x)
    return x * cdf, (x, cdf)


def gelu_backward(dout, cache, out=None):
    """d/dx x Phi(x) = Phi(x) + x phi(x)."""
    x, cdf = cache
    g = x * x
    g *= -0.5
    np.exp(g, out=g)
    g *= x * (1.0 / math.sqrt(2.0 * math.pi))  # x phi(x)
    g += cdf
    return np.multiply(dout, g, out=out)


def relu_forward(x):
    """max(x, 0)."""
    return np.maximum(x, 0), x


def relu_backward(dout, cache, out=None):
    """1[x > 0] * dout."""
    return np.multiply(dout, cache > 0, out=out)


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
    # post = act(pre); dpost is ours, so dpre overwrites it unless it was recorded
    dpre = ACTIVATIONS[act_fn][1](dpost, c_act, out=dpost if record is None else None)
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


def causal_bias(T, dtype):
    """[T, T]: 0 where a query may attend, -inf where the key is after the query (added to the scores)."""
    key = (T, np.dtype(dtype))
    if key not in _MASKS:
        _MASKS[key] = np.where(causal_mask(T), -np.inf, 0.0).astype(dtype)
    return _MASKS[key]


def attention_forward(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, hook=None):
    """x [B, T, D]; W_Q/W_K/W_V [H, D, E]; b_Q/b_K/b_V [H, E]; W_O [H, E, D]; b_O [D] -> out [B, T, D].

    Hooks: hook_q/hook_k/hook_v [B, T, H, E], hook_attn_scores/hook_pattern [B, H, T, T],
    hook_z [B, T, H, E], hook_result [B, T, H, D] (per-head output, computed only when asked for).
    """
    B, T, D = x.shape
    H, _, E = W_Q.shape
    W_qkv = np.stack([W_Q, W_K, W_V]).transpose(2, 0, 1, 3).reshape(D, 3 * H * E)  # [D, 3HE] columns (qkv, h, e)
    b_qkv = np.stack([b_Q, b_K, b_V]).reshape(3 * H * E)  # [3HE]
    qkv = _matmul(x.reshape(B * T, D), W_qkv)  # [B*T, 3HE]  one fused matmul
    qkv += b_qkv
    heads = _copy(qkv.reshape(B, T, 3, H, E).transpose(2, 0, 3, 1, 4))  # [3, B, H, T, E] contiguous per head
    q = _hook(hook, "hook_q", heads[0].transpose(0, 2, 1, 3))  # [B, T, H, E]
    k = _hook(hook, "hook_k", heads[1].transpose(0, 2, 1, 3))  # [B, T, H, E]
    v = _hook(hook, "hook_v", heads[2].transpose(0, 2, 1, 3))  # [B, T, H, E]
    qh = q.transpose(0, 2, 1, 3)  # [B, H, T, E]
    kh = k.transpose(0, 2, 1, 3)  # [B, H, T, E]
    vh = v.transpose(0, 2, 1, 3)  # [B, H, T, E]
    scale = 1.0 / math.sqrt(E)
    scores = _matmul(qh, kh.transpose(0, 1, 3, 2))  # [B, H, T, T]
    scores *= scale
    scores += causal_bias(T, scores.dtype)  # -inf above the diagonal
    scores = _hook(hook, "hook_attn_scores", scores)
    probs, _ = softmax_forward(scores, inplace=hook is None)  # [B, H, T, T]
    pattern = _hook(hook, "hook_pattern", probs)  # the softmax's own output stays in probs for its backward
    z = _empty((B, T, H, E), x.dtype)  # [B, T, H, E]
    np.matmul(pattern, vh, out=z.transpose(0, 2, 1, 3))  # z = pattern v, written in [B, T, H, E] order
    z = _hook(hook, "hook_z", z)
    z2 = z.reshape(B * T, H * E)  # [B*T, HE] rows in (b, t) order (a copy only if a hook replaced z)
    if hook is not None and hook.wants("hook_result"):
        result = np.einsum("bthe,hed->bthd", z, W_O)  # [B, T, H, D]
        result = hook("hook_result", result)
        out = result.sum(2) + b_O  # [B, T, D]
    else:
        out = _matmul(z2, W_O.reshape(H * E, D))  # [B*T, D]
        out += b_O
        out = out.reshape(B, T, D)
    cache = (x, W_qkv, qh, kh, vh, probs, pattern, z2, W_O, scale)
    return out, cache


def attention_backward(dout, cache, record=None):
    """Returns (dx [B, T, D], grads dict with keys W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O)."""
    x, W_qkv, qh, kh, vh, probs, pattern, z2, W_O, scale = cache
    B, T, D = x.shape
    H, E, _ = W_O.shape
    dout2 = dout.reshape(B * T, D)  # [B*T, D]
    if record is not None:
        record("hook_result", np.broadcast_to(dout[:, :, None, :], (B, T, H, D)))
    g = {"b_O": sum_rows(dout2)}  # out = ... + b_O
    g["W_O"] = (z2.T @ dout2).reshape(H, E, D)  # out = z W_O  -> dW_O = z^T dout
    dz = _matmul(dout2, W_O.reshape(H * E, D).T)  # [B*T, HE]     out = z W_O  -> dz = dout W_O^T
    if record is not None:
        record("hook_z", dz.reshape(B, T, H, E))
    dzh = _copy(dz.reshape(B, T, H, E).transpose(0, 2, 1, 3))  # [B, H, T, E]
    dqkv = _empty((B, T, 3, H, E), dz.dtype)  # dq, dk, dv in the column order (qkv, h, e) of W_qkv
    dheads = dqkv.transpose(2, 0, 3, 1, 4)  # [3, B, H, T, E] view: the matmuls below write straight into dqkv
    dpattern = _matmul(dzh, vh.transpose(0, 1, 3, 2))  # z = pattern v  -> dpattern = dz v^T   [B, H, T, T]
    np.matmul(pattern.transpose(0, 1, 3, 2), dzh, out=dheads[2])  # z = pattern v  -> dv = pattern^T dz
    if record is not None:
        record("hook_pattern", dpattern)
    # pattern = softmax(scores); masked entries get 0
    dscores = softmax_backward(dpattern, probs, inplace=record is None)
    if record is not None:
        record("hook_attn_scores", dscores)
    dscores *= scale  # scores = q k^T * scale
    np.matmul(dscores, kh, out=dheads[0])  # dq = dscores k
    np.matmul(dscores.transpose(0, 1, 3, 2), qh, out=dheads[1])  # dk = dscores^T q
    if record is not None:
        for i, n in enumerate("qkv"):
            record("hook_" + n, dheads[i].transpose(0, 2, 1, 3))  # [B, T, H, E]
    dqkv = dqkv.reshape(B * T, 3 * H * E)  # [B*T, 3HE]
    dW = (x.reshape(B * T, D).T @ dqkv).reshape(D, 3, H, E)  # qkv = x W_qkv + b_qkv  -> dW_qkv = x^T dqkv
    db = sum_rows(dqkv).reshape(3, H, E)
    for i, n in enumerate("QKV"):
        g["W_" + n] = dW[:, i].transpose(1, 0, 2)  # [H, D, E]
        g["b_" + n] = db[i]  # [H, E]
    dx = _matmul(dqkv, W_qkv.T).reshape(B, T, D)  # dx = dqkv W_qkv^T
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
