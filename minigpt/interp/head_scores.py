"""Head scores and the operational definitions of "copying head" and "negative similarity head".

All scores are computed on a batch of sequences ``x [batch, pos]`` (what the model reads) with
targets ``y [batch, pos]`` (the next terms), over query positions ``t >= 1`` (at t = 0 every head
must attend to position 0, which says nothing).  One table row per head ``L{l}H{h}``:

Attention scores (mean attention weight over sequences and query positions t >= 1):
  ``current``  A[t, t];   ``previous``  A[t, t-1];   ``first``  A[t, 0].
  ``pattern_score(pattern, predicted)``: mean over rows of sum_j min(A[t, j], P[t, j]): 1 when the
  head's attention equals a predicted pattern P (e.g. from ``theory/``), 0 when disjoint.

Value-similarity fit (per query position t >= 2, pooled over sequences; then pooled over t):
  within each attention row the logits are only defined up to a constant (softmax), so logits and
  regressors are centred over the row's keys j <= t, and we fit
      s[t, j] ~ alpha * x_t x_j + beta * |x_t - x_j| + (c1 x_j + c2 x_j^2 + c3 |x_j|) + key-position effects
                + x_t * key-position effects
  (the controls absorb what a 1-d read-in with positional embeddings and LayerNorm produces from the key
  alone or from positions, so alpha and beta measure how the logit depends on x_t and x_j *jointly*).
  ``alpha``, ``beta``: mean coefficients over t;  ``r2``: R^2 of the full fit;  ``sim_r2``: partial
  R^2 of the two similarity regressors (how much of the rest they explain; 0 when the controls alone fit the
  logits exactly, e.g. a purely positional head);  ``sim_effect`` =
  alpha sd(x_t x_j) - beta sd(|x_t - x_j|), in nats: > 0 prefers similar keys, < 0 dissimilar ones.

Output scores (through the frozen final LayerNorm, see ``attribution``):
  ``dc`` the head's direct contribution to the prediction at t;  ``ov_gain``: slope of dc on the
  attention-weighted source value sum_j A[t, j] x_j (a unit of value read moves the prediction by
  ov_gain), with ``ov_r2``;  ``dc_rel``: sd(dc) / sd(y);  correlations of dc with ``x_t``, with
  ``x_{t+1} - x_t`` (``corr_dx``), with the layer-0 estimate (``corr_est0``: frozen lens after block 0)
  and with the correction still needed before the head's layer (``corr_need``: y - frozen lens before
  block l).
Copy scores:
  ``probe_cur`` / ``probe_prev``: R^2 of the best linear read-out of x_t / x_{t-1} from the head's
  output vector ``z_h W_O[h]``;  ``copy_cur = min(current, probe_cur)``, ``copy_prev = min(previous,
  probe_prev)``, ``copy = max`` of the two.

Definitions applied by ``classify_heads`` (thresholds in ``THRESHOLDS``):
  copying head:   copy >= 0.5 (attends mostly to one term, current or previous, and its output
                  carries that term's value linearly, R^2 >= 0.5).
  negative similarity head, three readings (paper.md), each reported separately:
    "logit": sim_effect <= -0.25 nats and sim_r2 >= 0.1 (attends to the terms least similar to x_t);
    "ov":    ov_gain <= -0.2 and ov_r2 >= 0.1 and dc_rel >= 0.05 (writes minus what it reads);
    "anti":  corr_est0 <= -0.3 and dc_rel >= 0.05 (its output opposes the layer-0 copy estimate).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..nn.resid import head_results
from .attribution import head_direct
from .lens import prediction_lens

if TYPE_CHECKING:
    from typing import Any

    from numpy.typing import ArrayLike

    from ..nn.config import ModelConfig
    from ..nn.model import Transformer

THRESHOLDS = dict(copy=0.5, sim_effect=-0.25, sim_r2=0.1, ov_gain=-0.2, ov_r2=0.1, dc_rel=0.05, corr_est0=-0.3)
COLUMNS = ("current", "previous", "first", "probe_cur", "probe_prev", "copy_cur", "copy_prev", "copy", "alpha", "beta", "r2", "sim_r2", "sim_effect",
           "ov_gain", "ov_r2", "dc_rel", "corr_x", "corr_dx", "corr_est0", "corr_need")


_EXACT = 1e-9  # a sum of squared residuals below this share of the total is a perfect fit (float32 rounding: ~1e-14)


def pattern_score(pattern: ArrayLike, predicted: ArrayLike, t_min: int = 1) -> float:
    """Mean over sequences and query rows t >= t_min of sum_j min(A[t, j], P[t, j]).

    ``pattern [batch, q, k]``; ``predicted [q, k]`` or ``[batch, q, k]`` (rows summing to 1)."""
    p = np.asarray(pattern)
    P = np.broadcast_to(np.asarray(predicted), p.shape)
    return float(np.minimum(p, P)[:, t_min:].sum(-1).mean())


def _corr(u, v):
    u, v = np.ravel(u) - np.mean(u), np.ravel(v) - np.mean(v)
    d = np.sqrt((u * u).sum() * (v * v).sum())
    return float((u * v).sum() / d) if d > 0 else 0.0


def _slope_r2(y, x):
    x, y = np.ravel(x), np.ravel(y)
    xc, yc = x - x.mean(), y - y.mean()
    vx = (xc * xc).sum()
    if vx == 0:
        return 0.0, 0.0
    g = (xc * yc).sum() / vx
    sst = (yc * yc).sum()
    r2 = 1 - ((yc - g * xc) ** 2).sum() / sst if sst > 0 else 0.0
    return float(g), float(r2)


def probe_r2(feats: np.ndarray, target: ArrayLike) -> float:
    """R^2 of a least-squares linear read-out (with intercept) of ``target [N]`` from ``feats [N, D]``."""
    F = np.concatenate([feats, np.ones((len(feats), 1))], 1).astype(np.float64)
    y = np.asarray(target, np.float64)
    coef, *_ = np.linalg.lstsq(F, y, rcond=None)
    r = y - F @ coef
    sst = ((y - y.mean()) ** 2).sum()
    return float(1 - (r * r).sum() / sst) if sst > 0 else 0.0


def similarity_fit(scores: ArrayLike, x: ArrayLike, t_min: int = 2) -> dict[str, Any]:
    """Fit the logits of one head (``scores [batch, q, k]``, causal, on inputs ``x [batch, pos]``).

    Returns ``dict(alpha, beta, r2, sim_r2, sim_effect, per_t)``; see the module docstring."""
    scores = np.asarray(scores, np.float64)
    x = np.asarray(x, np.float64)
    B, T = x.shape
    sse_f = sse_r = sst = 0.0
    alphas, betas, weights, per_t = [], [], [], []
    sd1 = sd2 = 0.0
    for t in range(t_min, T):
        n = t + 1
        y = scores[:, t, :n]  # [B, n]
        xq, xj = x[:, t : t + 1], x[:, :n]
        f1, f2, f3 = xq * xj, np.abs(xq - xj), np.broadcast_to(xj, (B, n))
        D = np.broadcast_to(np.eye(n)[None], (B, n, n))  # key-position dummies  [B, n(key), n(dummy)]
        XD = xq[:, :, None] * D
        cols_sim = np.stack([f1, f2], -1)  # [B, n, 2]
        f4, f5 = f3 * f3, np.abs(f3)  # functions of the key alone: the similarity terms must be x_t-x_j interactions
        cols_rest = np.concatenate([f3[..., None], f4[..., None], f5[..., None], D[..., 1:], XD[..., 1:]], -1)  # [B, n, 2n + 1]

        def centre(a):
            return a - a.mean(1, keepdims=True)

        yc = centre(y).reshape(-1)
        Xs, Xr = centre(cols_sim).reshape(B * n, -1), centre(cols_rest).reshape(B * n, -1)
        Xf = np.concatenate([Xs, Xr], 1)
        cf, *_ = np.linalg.lstsq(Xf, yc, rcond=None)
        cr, *_ = np.linalg.lstsq(Xr, yc, rcond=None)
        ef, er = yc - Xf @ cf, yc - Xr @ cr
        s_f, s_r, s_t = (ef * ef).sum(), (er * er).sum(), (yc * yc).sum()
        sse_f, sse_r, sst = sse_f + s_f, sse_r + s_r, sst + s_t
        alphas.append(cf[0])
        betas.append(cf[1])
        weights.append(B * n)
        sd1 += Xs[:, 0].var() * B * n
        sd2 += Xs[:, 1].var() * B * n
        per_t.append(dict(t=t, alpha=float(cf[0]), beta=float(cf[1]), r2=float(1 - s_f / s_t) if s_t > 0 else 0.0))
    w = np.array(weights, np.float64)
    alpha, beta = float(np.average(alphas, weights=w)), float(np.average(betas, weights=w))
    sd1, sd2 = np.sqrt(sd1 / w.sum()), np.sqrt(sd2 / w.sum())
    return dict(
        alpha=alpha, beta=beta,
        r2=float(1 - sse_f / sst) if sst > 0 else 0.0,
        # a perfect fit by the controls alone (sse_r at rounding level, e.g. a purely positional head) leaves
        # nothing for the similarity terms to explain: partial R^2 0, not a ratio of rounding errors
        sim_r2=float((sse_r - sse_f) / sse_r) if sse_r > _EXACT * sst else 0.0,
        sim_effect=float(alpha * sd1 - beta * sd2),
        per_t=per_t,
    )


def head_scores(model: Transformer, x: ArrayLike, y: ArrayLike, t_min: int = 1) -> dict[str, np.ndarray]:
    """x, y [batch, pos] -> ``{column: [n_layers, n_heads] array}`` for every column of ``COLUMNS`` (see the module docstring)."""
    cfg = model.cfg
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    _, cache = model.run_with_cache(x)
    L, H = cfg.n_layers, cfg.n_heads
    out = {c: np.zeros((L, H)) for c in COLUMNS}
    dc_all = head_direct(model, cache)  # [L, H, B, T]
    frozen, _ = prediction_lens(model, cache, ln="frozen")  # [L+1, B, T]
    est0 = frozen[1]
    sl = slice(t_min, None)
    dx = y - x
    sd_y = y[:, sl].std()
    for l in range(L):
        A = cache["pattern", l].astype(np.float64)  # [B, H, T, T]
        S = cache["attn_scores", l]
        R = head_results(cache, l)  # [B, T, H, D]
        need = y - frozen[l]
        for h in range(H):
            a = A[:, h]
            T = a.shape[-1]
            idx = np.arange(T)
            cur = a[:, idx, idx][:, sl].mean()
            prev = a[:, idx[1:], idx[:-1]][:, max(t_min, 1) - 1 :].mean()
            first = a[:, :, 0][:, sl].mean()
            r = R[:, sl, h].reshape(-1, R.shape[-1])
            p_cur = probe_r2(r, x[:, sl].reshape(-1))
            p_prev = probe_r2(R[:, max(t_min, 1) :, h].reshape(-1, R.shape[-1]), x[:, max(t_min, 1) - 1 : -1].reshape(-1))
            fit = similarity_fit(S[:, h], x) if T > 2 else dict(alpha=0.0, beta=0.0, r2=0.0, sim_r2=0.0, sim_effect=0.0)
            dc = dc_all[l, h][:, sl]
            xbar = np.einsum("btj,bj->bt", a, x)[:, sl]
            g, g_r2 = _slope_r2(dc, xbar)
            vals = dict(
                current=cur, previous=prev, first=first, probe_cur=p_cur, probe_prev=p_prev, copy_cur=min(cur, p_cur), copy_prev=min(prev, p_prev),
                alpha=fit["alpha"], beta=fit["beta"], r2=fit["r2"], sim_r2=fit["sim_r2"], sim_effect=fit["sim_effect"],
                ov_gain=g, ov_r2=g_r2, dc_rel=float(dc.std() / sd_y) if sd_y > 0 else 0.0,
                corr_x=_corr(dc, x[:, sl]), corr_dx=_corr(dc, dx[:, sl]), corr_est0=_corr(dc, est0[:, sl]),
                corr_need=_corr(dc, need[:, sl]),
            )
            vals["copy"] = max(vals["copy_cur"], vals["copy_prev"])
            for k, v in vals.items():
                out[k][l, h] = v
    return out


def classify_heads(scores: dict[str, np.ndarray], thresholds: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Apply the definitions: ``{"copy": bool [L, H], "copy_kind": str [L, H], "ns_logit", "ns_ov",
    "ns_anti", "ns_any": bool [L, H]}``."""
    th = dict(THRESHOLDS, **(thresholds or {}))
    s = scores
    copy = s["copy"] >= th["copy"]
    kind = np.where(~copy, "", np.where(s["copy_cur"] >= s["copy_prev"], "current", "previous"))
    ns_logit = (s["sim_effect"] <= th["sim_effect"]) & (s["sim_r2"] >= th["sim_r2"])
    ns_ov = (s["ov_gain"] <= th["ov_gain"]) & (s["ov_r2"] >= th["ov_r2"]) & (s["dc_rel"] >= th["dc_rel"])
    ns_anti = (s["corr_est0"] <= th["corr_est0"]) & (s["dc_rel"] >= th["dc_rel"])
    return dict(copy=copy, copy_kind=kind, ns_logit=ns_logit, ns_ov=ns_ov, ns_anti=ns_anti, ns_any=ns_logit | ns_ov | ns_anti)


def head_labels(cfg: ModelConfig) -> list[str]:
    """``["L0H0", "L0H1", ...]``: one label per head, layer-major (the order of a flattened ``[n_layers, n_heads]``)."""
    return [f"L{l}H{h}" for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
