"""Idealised attention heads on a scalar sequence, their closed forms, and minigpt weights for them.

On x [..., T] (terms x_0 .. x_{T-1}), a head at query t mixes the causal context j <= t:
- copying head:         out_t = gamma x_t
- previous-token head:  out_t = gamma x_{t-1}   (out_0 = gamma x_0: position 0 can only see itself)
- similarity head:      out_t = gamma sum_{j<=t} softmax_j(beta x_t x_j + P[t, j]) x_j
  With P = 0 the weights are an exponential tilt of the context by lambda = beta x_t, so the output is
  the derivative of the context's cumulant generating function K(lambda) = log mean_j exp(lambda x_j):
      out_t / gamma = K'(beta x_t) = mu_t + beta x_t k2_t + (beta x_t)^2 k3_t / 2 + (beta x_t)^3 k4_t / 6 + ...
  (k2 = variance, k3, k4 the context's cumulants): the small-beta expansion. As beta -> +-inf the
  head averages the context terms maximising sign(beta) x_t x_j (the large-beta limit): for beta < 0
  (a *negative similarity* head) the term least similar to x_t (the min of the context if x_t > 0,
  its max if x_t < 0).

``head_model`` builds an attention-only, normalisation-free one-layer minigpt that computes these
heads exactly (up to exp(-60) for the hard positional ones).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy as sp

import minigpt
from minigpt.tasks.data import AffineRecurrence
from theory.steps import Step

_HARD = 60.0  # positional logit making a head one-hot: leakage e^-60 ~ 1e-26


# ----------------------------------------------------------------------------- closed forms
def _causal(T: int) -> np.ndarray:
    return np.tril(np.ones((T, T), dtype=bool))  # [T, T] True where key j <= query t


def causal_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits [..., T, T] over keys j <= t (the rest get weight 0)."""
    T = logits.shape[-1]
    z = np.where(_causal(T), logits, -np.inf)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


SIMILARITIES = ("product", "distance")


def similarity_features(x, kind: str = "product") -> np.ndarray:
    """[..., T, T] similarity s(x_t, x_j) of query t and key j: ``product`` x_t x_j or ``distance`` -|x_t - x_j|."""
    x = np.asarray(x, dtype=float)
    if kind == "product":
        return x[..., :, None] * x[..., None, :]
    if kind == "distance":
        return -np.abs(x[..., :, None] - x[..., None, :])
    raise ValueError(f"kind must be one of {SIMILARITIES}, got {kind!r}")


def similarity_logits(x, beta: float, pos_bias=None, kind: str = "product") -> np.ndarray:
    """[..., T, T] logits beta s(x_t, x_j) (+ P[t, j]) for query t, key j (s: ``similarity_features``)."""
    x = np.asarray(x, dtype=float)
    logits = beta * similarity_features(x, kind)
    if pos_bias is not None:
        T = x.shape[-1]
        logits = logits + np.asarray(pos_bias, dtype=float)[:T, :T]
    return logits


def similarity_pattern(x, beta: float, pos_bias=None, kind: str = "product") -> np.ndarray:
    """Attention pattern [..., T, T] of the similarity head."""
    return causal_softmax(similarity_logits(x, beta, pos_bias, kind))


def similarity_head(x, beta: float, gamma: float = 1.0, pos_bias=None) -> np.ndarray:
    """out_t = gamma sum_{j<=t} softmax_j(beta x_t x_j + P[t, j]) x_j;  x [..., T] -> [..., T]."""
    x = np.asarray(x, dtype=float)
    return gamma * np.einsum("...tj,...j->...t", similarity_pattern(x, beta, pos_bias), x)


def copy_head(x, gamma: float = 1.0) -> np.ndarray:
    """out_t = gamma x_t."""
    return gamma * np.asarray(x, dtype=float)


def previous_token_head(x, gamma: float = 1.0) -> np.ndarray:
    """out_t = gamma x_{t-1}, out_0 = gamma x_0."""
    x = np.asarray(x, dtype=float)
    return gamma * np.concatenate([x[..., :1], x[..., :-1]], axis=-1)


def positional_bias(kind: str, T: int, strength: float = _HARD) -> np.ndarray:
    """[T, T] bias P making a head attend to the current ("copy") or previous ("previous") term."""
    P = np.zeros((T, T))
    if kind == "copy":
        P[np.arange(T), np.arange(T)] = strength
    elif kind == "previous":
        P[np.arange(1, T), np.arange(T - 1)] = strength
        P[0, 0] = strength
    else:
        raise ValueError(f"positional bias kind must be 'copy' or 'previous', got {kind!r}")
    return P


def context_cumulants(x, order: int = 4) -> list[np.ndarray]:
    """Running cumulants [k1, .., k_order] of the context x_0..x_t (equal weights), each [..., T]."""
    x = np.asarray(x, dtype=float)
    cnt = np.arange(1, x.shape[-1] + 1)
    mu = np.cumsum(x, -1) / cnt
    m = {}
    for r in range(2, order + 1):  # central moments: mean_j (x_j - mu_t)^r, by the binomial theorem
        raw = [np.cumsum(x**i, -1) / cnt for i in range(r + 1)]
        m[r] = sum(math.comb(r, i) * raw[i] * (-mu) ** (r - i) for i in range(r + 1))
    out = [mu, m.get(2), m.get(3), m[4] - 3 * m[2] ** 2 if order >= 4 else None]
    return out[:order]


def small_beta_expansion(x, beta: float, gamma: float = 1.0, order: int = 1) -> np.ndarray:
    """gamma (mu_t + sum_{r=1..order} (beta x_t)^r k_{r+1,t} / r!); order 1: gamma (mean + beta x_t var)."""
    if not 0 <= order <= 3:
        raise ValueError("order must be 0..3")
    x = np.asarray(x, dtype=float)
    ks = context_cumulants(x, order + 1)
    lam = beta * x
    out = ks[0].copy()
    for r in range(1, order + 1):
        out = out + lam**r * ks[r] / math.factorial(r)
    return gamma * out


def large_beta_limit(x, beta: float, gamma: float = 1.0) -> np.ndarray:
    """gamma * (mean of the context terms maximising sign(beta) x_t x_j); all j if x_t = 0 or beta = 0."""
    x = np.asarray(x, dtype=float)
    s = np.sign(beta) * x[..., :, None] * x[..., None, :]  # [..., T, T]
    s = np.where(_causal(x.shape[-1]), s, -np.inf)
    best = s == s.max(-1, keepdims=True)  # [..., T, T] ties share the weight
    return gamma * (best * x[..., None, :]).sum(-1) / best.sum(-1)


# ----------------------------------------------------------------------------- symbolic
@lru_cache(maxsize=None)
def symbolic_expansion(T: int, order: int = 3):
    """Taylor series in beta of the similarity head (gamma = 1) at query t = T-1, with symbols x_0..x_{T-1}.

    Returns (series, cumulant_form) — equal by ``check_expansion``.
    """
    xs = sp.symbols(f"x_0:{T}", real=True)
    beta = sp.Symbol("beta", real=True)
    xt = xs[-1]
    w = [sp.exp(beta * xt * xj) for xj in xs]
    out = sum(wj * xj for wj, xj in zip(w, xs)) / sum(w)
    series = sp.series(out, beta, 0, order + 1).removeO()
    mu = sum(xs) / T
    cm = {r: sum((xj - mu) ** r for xj in xs) / T for r in (2, 3, 4)}
    kappa = [mu, cm[2], cm[3], cm[4] - 3 * cm[2] ** 2]
    cumulant_form = mu + sum((beta * xt) ** r * kappa[r] / sp.factorial(r) for r in range(1, order + 1))
    return series, cumulant_form


def check_expansion(T: int, order: int = 3) -> bool:
    series, form = symbolic_expansion(T, order)
    return sp.expand(series - form) == 0


def arithmetic_context():
    """a = 1 family x_j = x0 + j b: context mean and variance at query t (closed form, via sympy sums)."""
    t, j = sp.symbols("t j", integer=True, nonnegative=True)
    x0, b = sp.symbols("x0 b", real=True)
    xj = x0 + j * b
    mean = sp.simplify(sp.summation(xj, (j, 0, t)) / (t + 1))
    var = sp.factor(sp.simplify(sp.summation(xj**2, (j, 0, t)) / (t + 1) - mean**2))
    return mean, var


# ----------------------------------------------------------------------------- sequence families
FAMILIES = {
    # name: (a prior, b prior, x0 prior) as minigpt.tasks.data.AffineRecurrence specs
    "converging": (("uniform", 0.1, 0.9), ("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)),
    "oscillating": (("uniform", -0.9, -0.1), ("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)),
    "arithmetic": (("uniform", 1.0, 1.0), ("uniform", -1.0, 1.0), ("uniform", -1.0, 1.0)),
}


def copy_plus_head_fit(x, beta: float, pos_bias=None, start: int = 1) -> dict:
    """How much a similarity head adds to the copy estimate, by least squares over positions t >= start.

    x [batch, T+1] full sequences; the head (gamma = 1) reads x_0..x_t. Two fits of the next term:
    copy + gamma head (fit gamma on the copy error x_{t+1} - x_t), and c x_t + gamma head (fit both).
    Returns gamma, the MSE of copying, of copy + gamma head, r2 = 1 - mse_fit / mse_copy (share of the
    copy error explained), and copy_weight, gamma2, mse2, r2_2 for the two-coefficient fit.
    """
    x = np.asarray(x, dtype=float)
    head = similarity_head(x[:, :-1], beta, 1.0, pos_bias)[:, start:].ravel()  # [N] head outputs
    cur = x[:, start:-1].ravel()  # [N] x_t
    nxt = x[:, start + 1:].ravel()  # [N] x_{t+1}
    resid = nxt - cur  # copy errors
    gamma = float(head @ resid / max(head @ head, 1e-300))
    mse_copy = float(np.mean(resid**2))
    mse_fit = float(np.mean((resid - gamma * head) ** 2))
    (c, g2), *_ = np.linalg.lstsq(np.stack([cur, head], 1), nxt, rcond=None)
    mse2 = float(np.mean((nxt - c * cur - g2 * head) ** 2))
    return {"gamma": gamma, "mse_copy": mse_copy, "mse_copy_plus_head": mse_fit, "r2": 1.0 - mse_fit / mse_copy,
            "copy_weight": float(c), "gamma2": float(g2), "mse2": mse2, "r2_2": 1.0 - mse2 / mse_copy}


def family_table(betas=(-4.0, -1.0, -0.25, 0.25, 1.0, 4.0), length: int = 12, batch: int = 4096, seed: int = 0) -> list[dict]:
    """copy_plus_head_fit for every family in FAMILIES and every beta (one row each)."""
    rows = []
    for name, (pa, pb, px) in FAMILIES.items():
        x = AffineRecurrence(a=pa, b=pb, x0=px, length=length).sample(batch, np.random.default_rng(seed)).x
        for beta in betas:
            rows.append({"family": name, "beta": beta, **copy_plus_head_fit(x, beta)})
    return rows


# ----------------------------------------------------------------------------- fitting empirical heads
def fit_similarity_pattern(pattern, x, positional: bool = True, floor: float = 1e-12, kind: str = "product") -> dict:
    """Fit logits beta s(x_t, x_j) (+ P[t, j]) to an empirical causal pattern [batch, T, T] on inputs x [batch, T]
    (s: ``similarity_features`` of ``kind``, x_t x_j by default).

    Softmax is invariant to a per-row constant, so within each row (query t) the centred log-pattern
    log p_tj - mean_j log p_tj is regressed on the centred features (s(x_t, x_j) and, if positional, one-hot (t, j)):
    linear least squares, exact when the pattern is such a head. Entries with p <= ``floor`` are left out of the
    fit (censored, not clipped: clipping them to the floor would pull beta toward 0 for a head whose logits span
    more than -log(floor) nats in a row), and each row is centred over the entries it keeps. Returns beta,
    pos_bias [T, T] (row-centred over j <= t, zeros above the diagonal), r2_logits (on the centred log-pattern of
    the kept entries) and r2 (on the pattern itself: 1 - SSE / SST of the probabilities, rows with t >= 1).
    """
    p = np.asarray(pattern, dtype=float)
    x = np.asarray(x, dtype=float)
    Bn, T = x.shape
    causal = _causal(T)
    keep = causal & (p > floor)  # [B, T, T] entries that enter the fit
    cnt = np.maximum(keep.sum(-1, keepdims=True), 1)  # [B, T, 1] kept keys per row

    def centre(v):  # [B, T, T] -> centred over the kept keys of each row, zero elsewhere
        v = np.where(keep, v, 0.0)
        return np.where(keep, v - v.sum(-1, keepdims=True) / cnt, 0.0)

    y = centre(np.log(np.where(keep, p, 1.0)))  # [B, T, T]
    sim = centre(similarity_features(x, kind))  # [B, T, T]
    rows_t, cols_j = np.nonzero(causal & (np.arange(T)[:, None] >= 1))  # the fitted cells (t, j), t >= 1
    sel = keep[:, rows_t, cols_j].reshape(-1)  # [B * n_cells] rows of the regression that are kept
    feats = [sim[:, rows_t, cols_j].reshape(-1)]
    if positional:  # one-hot of (t, j), centred over the kept keys of its row: M[b, t, j, j'] = [j == j'] - keep/cnt
        M = np.eye(T)[None, None] - (keep / cnt)[:, :, None, :]  # [B, T, T(j), T(j')]
        onehot = np.zeros((Bn, len(rows_t), len(rows_t)))
        for t in range(1, T):
            here = np.nonzero(rows_t == t)[0]  # the cells of row t
            onehot[:, here[:, None], here[None, :]] = M[:, t][:, cols_j[here]][:, :, cols_j[here]]
        feats += list(onehot.reshape(Bn * len(rows_t), -1).T)
    A = np.stack(feats, 1)[sel]  # [n_kept, n_features]
    target = y[:, rows_t, cols_j].reshape(-1)[sel]
    coef, *_ = np.linalg.lstsq(A, target, rcond=None)
    beta = float(coef[0])
    P = np.zeros((T, T))
    if positional:
        P[rows_t, cols_j] = coef[1:]
        P = np.where(causal, P - np.where(causal, P, 0.0).sum(-1, keepdims=True) / causal.sum(-1, keepdims=True), 0.0)
    fitted = similarity_pattern(x, beta, P, kind)
    resid_logits = target - A @ coef
    sst_l = float(((target - target.mean()) ** 2).sum())
    obs = p[:, rows_t, cols_j]
    sse = float(((obs - fitted[:, rows_t, cols_j]) ** 2).sum())
    sst = float(((obs - obs.mean()) ** 2).sum())
    return {"beta": beta, "pos_bias": P, "r2_logits": _r2(float((resid_logits**2).sum()), sst_l),
            "r2": _r2(sse, sst), "fitted": fitted}


def _r2(sse: float, sst: float, tiny: float = 1e-20) -> float:
    """1 - SSE/SST; a constant target counts as fully explained when the fit is exact too."""
    if sst <= tiny:
        return 1.0 if sse <= tiny else 0.0
    return 1.0 - sse / sst


def fit_gain(output, mixed) -> dict:
    """Least-squares OV gain gamma in output ~ gamma * mixed (e.g. a head's output along the read-out
    direction against pattern @ x); returns gamma and R^2."""
    o, m = np.ravel(np.asarray(output, float)), np.ravel(np.asarray(mixed, float))
    gamma = float(m @ o / max(m @ m, 1e-300))
    sst = float(((o - o.mean()) ** 2).sum())
    return {"gamma": gamma, "r2": _r2(float(((o - gamma * m) ** 2).sum()), sst)}


# ----------------------------------------------------------------------------- minigpt weights
def head_model(kind: str, n_ctx: int, beta: float = 0.0, gamma: float = 1.0, pos_bias=None, plus_copy: bool = False, dtype: str = "float64"):
    """A one-layer attention-only minigpt (no LayerNorm) whose prediction is an idealised head.

    kind: "copy", "previous" or "similarity" (logits beta x_t x_j + pos_bias[t, j], OV gain gamma).
    Prediction at t = head_t (+ x_t if plus_copy).  Residual layout, d_model = 3 + n_ctx:
      dim 0: x_t (W_E);  dim 1: constant 1 (W_pos);  dim 2: head output;  dims 3..: one-hot position.
    q_t = (x_t, onehot(t)), k_j = sqrt(d_head) (beta x_j, P[:, j]), so q.k / sqrt(d_head) is the logit;
    v_j = x_j; W_O writes gamma v into dim 2; W_U reads dim 2 (+ dim 0).
    """
    if kind in ("copy", "previous"):
        P, beta = positional_bias(kind, n_ctx), 0.0
    elif kind == "similarity":
        P = np.zeros((n_ctx, n_ctx)) if pos_bias is None else np.asarray(pos_bias, dtype=float)
        if P.shape != (n_ctx, n_ctx):
            raise ValueError(f"pos_bias must be [n_ctx, n_ctx] = [{n_ctx}, {n_ctx}], got {list(P.shape)}")
    else:
        raise ValueError(f"kind must be 'copy', 'previous' or 'similarity', got {kind!r}")
    D, E = 3 + n_ctx, 1 + n_ctx
    cfg = minigpt.ModelConfig(n_layers=1, d_model=D, n_heads=1, d_head=E, d_mlp=1, n_ctx=n_ctx,
                              attn_only=True, normalization_type=None, dtype=dtype)
    model = minigpt.Transformer(cfg, seed=0)
    root = math.sqrt(E)
    p = {name: np.zeros_like(v, dtype=np.float64) for name, v in model.params.items()}
    p["embed.W_E"][0, 0] = 1.0  # dim 0 <- x
    p["pos_embed.W_pos"][:, 1] = 1.0  # dim 1 <- 1
    p["pos_embed.W_pos"][np.arange(n_ctx), 3 + np.arange(n_ctx)] = 1.0  # dims 3.. <- onehot(pos)
    W_Q, W_K, W_V, W_O = p["blocks.0.attn.W_Q"][0], p["blocks.0.attn.W_K"][0], p["blocks.0.attn.W_V"][0], p["blocks.0.attn.W_O"][0]
    W_Q[0, 0] = 1.0  # q_0 = x_t
    W_Q[3:, 1:] = np.eye(n_ctx)  # q_{1+i} = [t == i]
    W_K[0, 0] = root * beta  # k_0 = sqrt(E) beta x_j
    W_K[3:, 1:] = root * P.T  # k_{1+i} = sqrt(E) P[i, j]  (row 3+j of W_K is key position j)
    W_V[0, 0] = 1.0  # v_0 = x_j
    W_O[0, 2] = gamma  # dim 2 <- gamma z_0
    p["unembed.W_U"][2, 0] = 1.0
    if plus_copy:
        p["unembed.W_U"][0, 0] = 1.0
    model.params = {k: v.astype(cfg.dtype) for k, v in p.items()}
    return model


def head_closed_form(kind: str, x, beta: float = 0.0, gamma: float = 1.0, pos_bias=None, plus_copy: bool = False) -> np.ndarray:
    """What ``head_model(kind, ...)`` predicts on x [batch, T], from the closed forms above."""
    x = np.asarray(x, dtype=float)
    if kind == "copy":
        out = copy_head(x, gamma)
    elif kind == "previous":
        out = previous_token_head(x, gamma)
    else:
        out = similarity_head(x, beta, gamma, pos_bias)
    return out + x if plus_copy else out


# ----------------------------------------------------------------------------- teaching
# Each topic: a list of ``theory.steps.Step`` (equation, one-line reason, meaning of its symbols).
def derivation_steps(topic: str) -> list:
    """Steps of one of this module's ``TOPICS``, for ``minigpt derive``."""
    return TOPICS[topic]()


def _steps_similarity():
    """The similarity head as the slope of a cumulant generating function; its small-beta expansion."""
    xs = sp.symbols("x_0:3", real=True)
    beta, lam = sp.Symbol("beta", real=True), sp.Symbol("lambda", real=True)
    w = sp.symbols("w_0:3", positive=True)
    h, K = sp.Symbol("h"), sp.Function("K")
    h0, h1, h2 = sp.symbols("h_0 h_1 h_2")
    mu, var, k3 = sp.Symbol("mu"), sp.Symbol("sigma^2"), sp.Symbol("kappa_3")
    head = sum(wj * xj for wj, xj in zip(w, xs)) / sum(w)
    defs = {h: head, **{wj: sp.exp(beta * xs[2] * xj) for wj, xj in zip(w, xs)},
            K: sp.Lambda(lam, sp.log(sum(sp.exp(lam * xj) for xj in xs) / 3)),
            mu: sum(xs) / 3, var: sum((xj - mu) ** 2 for xj in xs) / 3, k3: sum((xj - mu) ** 3 for xj in xs) / 3}
    head_b = head.xreplace({wj: sp.exp(beta * xs[2] * xj) for wj, xj in zip(w, xs)})  # as a function of beta
    taylor = {h0: head_b.subs(beta, 0), h1: sp.diff(head_b, beta).subs(beta, 0), h2: sp.diff(head_b, beta, 2).subs(beta, 0) / 2}
    t, j = sp.symbols("t j", integer=True, nonnegative=True)
    x0, b = sp.symbols("x0 b", real=True)
    mean_t, var_t = arithmetic_context()
    mu_t, var_t_s, x_t = sp.Symbol("mu_t"), sp.Symbol("sigma_t^2"), sp.Symbol("x_t")
    arith = {mu_t: sp.Sum(x0 + j * b, (j, 0, t)) / (t + 1), var_t_s: sp.Sum((x0 + j * b) ** 2, (j, 0, t)) / (t + 1) - mu_t**2,
             x_t: x0 + t * b}
    return [
        Step(sp.Eq(h, head), "query x_2 averages the context x_0, x_1, x_2 with weights w_j = exp(beta x_2 x_j)", defs),
        Step(sp.Eq(sp.Matrix(w), sp.Matrix([sp.exp(beta * xs[2] * xj) for xj in xs]), evaluate=False),
             "the weights: beta > 0 favours keys similar to x_2, beta < 0 (negative similarity) dissimilar ones", defs),
        Step(sp.Eq(h, sp.Subs(sp.Derivative(K(lam), lam), lam, beta * xs[2])),
             "h is the slope of K(lambda) = log mean_j exp(lambda x_j), the context's cumulant generating function", defs),
        Step(sp.Eq(h0, mu), "order 0 in beta: every weight is 1, so the head returns the context mean", {**defs, **taylor}),
        Step(sp.Eq(h1, xs[2] * var), "order 1: the slope in beta is x_2 times the context variance", {**defs, **taylor}),
        Step(sp.Eq(h2, xs[2] ** 2 * k3 / 2), "order 2: (x_2^2 / 2) times the third central moment (cumulants of K)", {**defs, **taylor}),
        Step(sp.Eq(mu_t, mean_t), "a = 1 family x_j = x_0 + j b: the mean of the context x_0 .. x_t", arith),
        Step(sp.Eq(var_t_s, var_t), "and its variance", arith),
        Step(sp.Eq(x_t + 2 / t * (x_t - mu_t), x_t + b),
             "x_t - mu_t = t b / 2, so x_t + (2/t)(x_t - mu_t) is the next term x_(t+1) exactly", arith),
    ]


TOPICS = {"similarity_head": _steps_similarity}
