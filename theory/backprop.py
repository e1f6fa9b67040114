"""Symbolic Jacobians of the model's ops, lambdified: an oracle for the hand-written backward passes.

Shares no code with ``minigpt.fast.ops``: every forward is re-written here in sympy at a small fixed size,
differentiated by sympy, and turned into numpy by ``lambdify``. The vector-Jacobian product
J^T dout is obtained as the gradient of the scalar L = sum(out * dout) (the "fake loss").

- LayerNorm:  out_i = (x_i - mu) / sqrt(var + eps) w_i + b_i,  mu, var over the last axis (biased var)
- softmax:    p_i = exp(x_i) / sum_j exp(x_j);  Jacobian diag(p) - p p^T
- gelu_new:   0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));   gelu: 0.5 x (1 + erf(x / sqrt 2))
- attention (one head, causal): q = x W_Q + b_Q, k = x W_K + b_K, v = x W_V + b_V,
  s_tj = q_t . k_j / sqrt(d_head) (j <= t), p_t = softmax(s_t), out_t = (sum_j p_tj v_j) W_O + b_O
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from theory.steps import Step


def _vec(name: str, n: int):
    return list(sp.symbols(f"{name}_0:{n}", real=True))


def _mat(name: str, r: int, c: int):
    return sp.Matrix(r, c, lambda i, j: sp.Symbol(f"{name}_{i}_{j}", real=True))


def _lambdify(args, exprs):
    return sp.lambdify(args, exprs, modules=["numpy", "scipy"], cse=True)


def _stack(values, shape) -> np.ndarray:
    """Stack lambdify outputs (arrays or constants) along a new last axis, broadcast to ``shape``."""
    return np.stack([np.broadcast_to(np.asarray(v, dtype=float), shape) for v in values], -1)


# ----------------------------------------------------------------------------- forwards in sympy
def layernorm_expr(D: int):
    """(x, w, b, eps, out) symbols and expressions for LayerNorm of size D."""
    x, w, b = _vec("x", D), _vec("w", D), _vec("b", D)
    eps = sp.Symbol("epsilon", positive=True)
    mu = sum(x) / D
    var = sum((xi - mu) ** 2 for xi in x) / D
    out = [(xi - mu) / sp.sqrt(var + eps) * wi + bi for xi, wi, bi in zip(x, w, b)]
    return x, w, b, eps, out


def softmax_expr(n: int):
    x = _vec("x", n)
    Z = sum(sp.exp(xi) for xi in x)
    return x, [sp.exp(xi) / Z for xi in x]


_X = sp.Symbol("x", real=True)
GELU_NEW = sp.Rational(1, 2) * _X * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (_X + sp.Float("0.044715", 30) * _X**3)))
GELU = sp.Rational(1, 2) * _X * (1 + sp.erf(_X / sp.sqrt(2)))


def attention_expr(T: int, D: int, E: int):
    """Symbols and output [T, D] of one causal attention head on x [T, D] with d_head E."""
    X = _mat("x", T, D)
    WQ, WK, WV, WO = _mat("WQ", D, E), _mat("WK", D, E), _mat("WV", D, E), _mat("WO", E, D)
    bQ, bK, bV, bO = _mat("bQ", 1, E), _mat("bK", 1, E), _mat("bV", 1, E), _mat("bO", 1, D)
    ones = sp.ones(T, 1)
    Q, K, V = X * WQ + ones * bQ, X * WK + ones * bK, X * WV + ones * bV  # [T, E]
    rows = []
    for t in range(T):
        s = [(Q[t, :] * K[j, :].T)[0, 0] / sp.sqrt(E) for j in range(t + 1)]  # causal scores
        m = sp.exp  # no max-subtraction: symbolic softmax
        Z = sum(m(sj) for sj in s)
        z = sum(((m(sj) / Z) * V[j, :] for j, sj in enumerate(s)), sp.zeros(1, E))  # [1, E]
        rows.append(z * WO + bO)  # [1, D]
    out = sp.Matrix.vstack(*rows)  # [T, D]
    params = {"W_Q": WQ, "b_Q": bQ, "W_K": WK, "b_K": bK, "W_V": WV, "b_V": bV, "W_O": WO, "b_O": bO}
    return X, params, out


# ----------------------------------------------------------------------------- Jacobians
def layernorm_jacobian(D: int) -> sp.Matrix:
    """d out / d x, [D, D] sympy Matrix."""
    x, _, _, _, out = layernorm_expr(D)
    return sp.Matrix(out).jacobian(sp.Matrix(x))


def softmax_jacobian(n: int) -> sp.Matrix:
    """d p / d x = diag(p) - p p^T (checked by ``check_softmax_jacobian``)."""
    x, p = softmax_expr(n)
    return sp.Matrix(p).jacobian(sp.Matrix(x))


def check_softmax_jacobian(n: int) -> bool:
    x, p = softmax_expr(n)
    P = sp.Matrix(p)
    return sp.simplify(softmax_jacobian(n) - (sp.diag(*p) - P * P.T)) == sp.zeros(n, n)


def gelu_derivative(kind: str = "gelu_new") -> sp.Expr:
    """d/dx of GELU ("gelu_new" tanh approximation or "gelu" erf)."""
    return sp.diff({"gelu_new": GELU_NEW, "gelu": GELU}[kind], _X)


# ----------------------------------------------------------------------------- VJP oracles
@lru_cache(maxsize=None)
def _layernorm_vjp_fn(D: int):
    x, w, b, eps, out = layernorm_expr(D)
    g = _vec("g", D)
    L = sum(gi * oi for gi, oi in zip(g, out))
    grads = [[sp.diff(L, v) for v in group] for group in (x, w, b)]
    return _lambdify((x, w, b, eps, g), grads)


def layernorm_vjp(x, w, b, eps, dout):
    """Oracle (dx [..., D], dw [D], db [D]) of LayerNorm for upstream dout [..., D]."""
    x, dout = np.asarray(x, float), np.asarray(dout, float)
    D = x.shape[-1]
    cols = lambda a: [a[..., i] for i in range(D)]  # noqa: E731
    dx, dw, db = _layernorm_vjp_fn(D)(cols(x), list(w), list(b), float(eps), cols(dout))
    lead = x.shape[:-1]
    return _stack(dx, lead), _stack(dw, lead).reshape(-1, D).sum(0), _stack(db, lead).reshape(-1, D).sum(0)


@lru_cache(maxsize=None)
def _softmax_vjp_fn(n: int):
    x, p = softmax_expr(n)
    g = _vec("g", n)
    L = sum(gi * pi for gi, pi in zip(g, p))
    return _lambdify((x, g), [sp.diff(L, xi) for xi in x])


def softmax_vjp(x, dout):
    """Oracle dx [..., n] of the softmax over the last axis."""
    x, dout = np.asarray(x, float), np.asarray(dout, float)
    n = x.shape[-1]
    dx = _softmax_vjp_fn(n)([x[..., i] for i in range(n)], [dout[..., i] for i in range(n)])
    return _stack(dx, x.shape[:-1])


@lru_cache(maxsize=None)
def _gelu_grad_fn(kind: str):
    return _lambdify(_X, gelu_derivative(kind))


def gelu_vjp(x, dout, kind: str = "gelu_new"):
    """Oracle dx = GELU'(x) * dout, elementwise."""
    x = np.asarray(x, float)
    return np.broadcast_to(_gelu_grad_fn(kind)(x), x.shape) * np.asarray(dout, float)


def attention_from_qkv(T: int, E: int, D: int):
    """The head as a function of its queries, keys and values: (Q, K, V [T, E], W_O, b_O, out [T, D])."""
    Q, K, V = _mat("q", T, E), _mat("k", T, E), _mat("v", T, E)
    WO, bO = _mat("WO", E, D), _mat("bO", 1, D)
    rows = []
    for t in range(T):
        s = [(Q[t, :] * K[j, :].T)[0, 0] / sp.sqrt(E) for j in range(t + 1)]  # causal scores
        Z = sum(sp.exp(sj) for sj in s)
        z = sum(((sp.exp(sj) / Z) * V[j, :] for j, sj in enumerate(s)), sp.zeros(1, E))  # [1, E]
        rows.append(z * WO + bO)  # [1, D]
    return Q, K, V, WO, bO, sp.Matrix.vstack(*rows)


@lru_cache(maxsize=None)
def _attention_vjp_fn(T: int, D: int, E: int):
    """Two lambdified pieces, composed by the chain rule in ``attention_vjp`` (sympy is slow on the
    fully substituted expression):
      outer: dL/d(q, k, v, W_O, b_O) for L = sum(g * out(q, k, v, W_O, b_O));
      inner: the Jacobian d(q, k, v)/d(x, W_Q, b_Q, W_K, b_K, W_V, b_V) of q = x W_Q + b_Q etc.
    """
    Q, K, V, WO, bO, out = attention_from_qkv(T, E, D)
    G = _mat("g", T, D)
    L = sum(G[i, j] * out[i, j] for i in range(T) for j in range(D))
    u = list(Q) + list(K) + list(V)
    outer = _lambdify((u, list(WO), list(bO), list(G)), [[sp.diff(L, s) for s in group] for group in (u, list(WO), list(bO))])
    X, params, _ = attention_expr(1, D, E)  # symbols only (the output of a 1-token head is not used)
    X = _mat("x", T, D)
    ones = sp.ones(T, 1)
    WQ, bQ, WK, bK, WV, bV = (params[k] for k in ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V"))
    qkv = list(X * WQ + ones * bQ) + list(X * WK + ones * bK) + list(X * WV + ones * bV)
    theta = list(X) + list(WQ) + list(bQ) + list(WK) + list(bK) + list(WV) + list(bV)
    J = sp.Matrix(qkv).jacobian(sp.Matrix(theta))  # [3TE, n_theta], linear in x and W
    inner_fwd = _lambdify((theta,), qkv)
    inner_jac = _lambdify((theta,), [J[i, j] for i in range(J.rows) for j in range(J.cols)])
    sizes = [T * D, D * E, E, D * E, E, D * E, E]
    return outer, inner_fwd, inner_jac, J.shape, sizes


def attention_vjp(x, W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O, dout):
    """Oracle (dx [B, T, D], grads dict) for causal attention with H heads (sum of one-head oracles).

    x [B, T, D]; W_Q/W_K/W_V [H, D, E]; b_* [H, E]; W_O [H, E, D]; b_O [D]; dout [B, T, D].
    dL/dtheta = J_inner(theta)^T dL/du(u(theta)), u = (q, k, v), per sequence.
    """
    x, dout = np.asarray(x, float), np.asarray(dout, float)
    Bn, T, D = x.shape
    H, _, E = np.shape(W_Q)
    outer, inner_fwd, inner_jac, jshape, sizes = _attention_vjp_fn(T, D, E)
    names = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V")
    grads = {k: np.zeros(np.shape(v)) for k, v in zip(names + ("W_O", "b_O"), (W_Q, b_Q, W_K, b_K, W_V, b_V, W_O, b_O))}
    dx = np.zeros_like(x)
    gs = list(dout.reshape(Bn, T * D).T)  # [T*D] arrays of [B]
    for h in range(H):
        ws = [np.asarray(W)[h].ravel() for W in (W_Q, b_Q, W_K, b_K, W_V, b_V)]
        theta = list(x.reshape(Bn, T * D).T) + [w for arr in ws for w in arr]  # scalars broadcast over B
        u = [np.broadcast_to(np.asarray(v, float), (Bn,)) for v in inner_fwd(theta)]
        du, dWO, dbO = outer(u, list(np.asarray(W_O)[h].ravel()), list(np.ravel(b_O)), gs)
        du = _stack(du, (Bn,))  # [B, 3TE]
        J = _stack(inner_jac(theta), (Bn,)).reshape(Bn, *jshape)  # [B, 3TE, n_theta]
        dtheta = np.einsum("bu,but->bt", du, J)  # [B, n_theta]
        parts = np.split(dtheta, np.cumsum(sizes)[:-1], axis=1)
        dx += parts[0].reshape(Bn, T, D)
        for name, part in zip(names, parts[1:]):
            grads[name][h] = part.sum(0).reshape(np.shape(grads[name])[1:])
        grads["W_O"][h] = _stack(dWO, (Bn,)).sum(0).reshape(E, D)
        if h == 0:
            grads["b_O"] = _stack(dbO, (Bn,)).sum(0)
    return dx, grads


# ----------------------------------------------------------------------------- teaching
# Each topic: a list of ``theory.steps.Step`` (equation, one-line reason, meaning of its symbols).
def derivation_steps(topic: str) -> list:
    """Steps of one of this module's ``TOPICS``, for ``minigpt derive``."""
    return TOPICS[topic]()


def _steps_softmax():
    """The softmax Jacobian diag(p) - p p^T and its backward pass without the Jacobian."""
    x, p_expr = softmax_expr(3)
    p, g = _vec("p", 3), _vec("g", 3)
    Z, s, L = sp.Symbol("Z"), sp.Symbol("s"), sp.Symbol("L")
    dx = _vec("dx", 3)
    J = sp.MatrixSymbol("J", 3, 3)
    P = sp.Matrix(p)
    defs = {**dict(zip(p, p_expr)), Z: sum(sp.exp(xi) for xi in x), L: sum(gi * pi for gi, pi in zip(g, p)),
            s: sum(gi * pi for gi, pi in zip(g, p)), J: sp.ImmutableMatrix(sp.Matrix(p_expr).jacobian(sp.Matrix(x))),
            **{dxi: sp.Derivative(L, xi) for dxi, xi in zip(dx, x)}}
    return [
        Step(sp.Eq(p[0], sp.exp(x[0]) / Z), "softmax of 3 logits: p_i = exp(x_i) / Z with Z = exp(x_0) + exp(x_1) + exp(x_2)", defs),
        Step(sp.Eq(sp.Derivative(p[0], x[0]), p[0] * (1 - p[0])), "quotient rule: x_0 is in the numerator and in Z", defs),
        Step(sp.Eq(sp.Derivative(p[0], x[1]), -p[0] * p[1]), "x_1 is only in Z", defs),
        Step(sp.Eq(J, sp.diag(*p) - P * P.T), "all nine entries at once: J = diag(p) - p p^T", defs),
        Step(sp.Eq(s, sum(gi * pi for gi, pi in zip(g, p))), "backward pass: upstream gradient g, loss L = sum_i g_i p_i; s = p . g", defs),
        Step(sp.Eq(dx[0], p[0] * (g[0] - s)), "dL/dx_i = p_i (g_i - s) (shown for i = 0): J^T g without forming J", defs),
    ]


def _steps_layernorm():
    """LayerNorm's backward pass dx = r (g w - mean(g w) - xhat mean(g w xhat)), in named pieces."""
    D = 3
    x, w, b, eps, out = layernorm_expr(D)
    g = _vec("g", D)
    mu, var, r, L = sp.Symbol("mu"), sp.Symbol("sigma^2"), sp.Symbol("r"), sp.Symbol("L")
    xhat, gw, dx = _vec("xhat", D), _vec("gw", D), _vec("dx", D)
    m1, m2 = sp.Symbol("m_1"), sp.Symbol("m_2")
    defs = {mu: sum(x) / D, var: sum((xi - mu) ** 2 for xi in x) / D, r: 1 / sp.sqrt(var + eps),
            **{xh: (xi - mu) * r for xh, xi in zip(xhat, x)}, L: sum(gi * (wi * xh + bi) for gi, wi, xh, bi in zip(g, w, xhat, b)),
            **{gwi: gi * wi for gwi, gi, wi in zip(gw, g, w)}, m1: sum(gw) / D, m2: sum(gwi * xh for gwi, xh in zip(gw, xhat)) / D,
            **{dxi: sp.Derivative(L, xi) for dxi, xi in zip(dx, x)}}
    return [
        Step(sp.Eq(mu, sum(x) / D), "LayerNorm of 3 values: the mean", defs),
        Step(sp.Eq(var, sum((xi - mu) ** 2 for xi in x) / D), "the (biased) variance", defs),
        Step(sp.Eq(r, 1 / sp.sqrt(var + eps)), "r: the reciprocal standard deviation", defs),
        Step(sp.Eq(xhat[0], (x[0] - mu) * r), "normalised value xhat_i = (x_i - mu) r (shown for i = 0); the output is out_i = w_i xhat_i + b_i", defs),
        Step(sp.Eq(L, sum(gi * (wi * xh + bi) for gi, wi, xh, bi in zip(g, w, xhat, b))), "loss seen by the op: upstream gradient g", defs),
        Step(sp.Eq(sp.Derivative(L, b[0]), g[0]), "db_i = g_i (shown for i = 0)", defs),
        Step(sp.Eq(sp.Derivative(L, w[0]), g[0] * xhat[0]), "dw_i = g_i xhat_i (shown for i = 0)", defs),
        Step(sp.Eq(sp.Derivative(r, x[0]), -(r**3) * (x[0] - mu) / D), "r depends on every x_i through the variance: dr/dx_i = -r^3 (x_i - mu)/D", defs),
        Step(sp.Eq(sp.Derivative(xhat[0], x[0]), r * (1 - (1 + xhat[0] ** 2) / D)), "diagonal: d xhat_i / d x_i = r (1 - (1 + xhat_i^2)/D)", defs),
        Step(sp.Eq(sp.Derivative(xhat[0], x[1]), -r * (1 + xhat[0] * xhat[1]) / D), "off-diagonal: d xhat_i / d x_j = -r (1 + xhat_i xhat_j)/D", defs),
        Step(sp.Eq(m1, sum(gw) / D), "with gw_i = g_i w_i, the mean m_1 of gw", defs),
        Step(sp.Eq(m2, sum(gwi * xh for gwi, xh in zip(gw, xhat)) / D), "and m_2, the mean of gw_i xhat_i", defs),
        Step(sp.Eq(dx[0], r * (gw[0] - m1 - xhat[0] * m2)), "chain rule summed over i: dx_j = r (gw_j - m_1 - xhat_j m_2) (shown for j = 0)", defs),
    ]


def _steps_gelu():
    """Derivatives of gelu_new (tanh approximation) and gelu (erf)."""
    x = _X
    u, du = sp.Symbol("u"), sp.Symbol("u'")
    gelu_new, gelu, Phi, phi = sp.Function("gelu_new"), sp.Function("gelu"), sp.Function("Phi"), sp.Function("phi")
    c = sp.Float("0.044715", 30)
    defs = {u: sp.sqrt(2 / sp.pi) * (x + c * x**3), du: sp.sqrt(2 / sp.pi) * (1 + 3 * c * x**2),
            gelu_new: sp.Lambda(x, GELU_NEW), gelu: sp.Lambda(x, GELU),
            Phi: sp.Lambda(x, (1 + sp.erf(x / sp.sqrt(2))) / 2), phi: sp.Lambda(x, sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi))}
    return [
        Step(sp.Eq(gelu_new(x), x * (1 + sp.tanh(u)) / 2), "gelu_new, with u = sqrt(2/pi) (x + 0.044715 x^3)", defs),
        Step(sp.Eq(sp.Derivative(u, x), du), "u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)", defs),
        Step(sp.Eq(sp.Derivative(gelu_new(x), x), (1 + sp.tanh(u)) / 2 + x * (1 - sp.tanh(u) ** 2) * du / 2),
             "product rule, with tanh' = 1 - tanh^2", defs),
        Step(sp.Eq(gelu(x), x * Phi(x)), "exact gelu: x times the standard normal CDF Phi", defs),
        Step(sp.Eq(sp.Derivative(gelu(x), x), Phi(x) + x * phi(x)), "product rule, with Phi' = phi (the normal density)", defs),
    ]


TOPICS = {"softmax_jacobian": _steps_softmax, "layernorm_jacobian": _steps_layernorm, "gelu_derivative": _steps_gelu}
