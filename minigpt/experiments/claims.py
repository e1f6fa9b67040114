"""The paper's two claims under the definitions of ``docs/interp.md`` ("Definitions v2"), fixed before any run.

Claim 1, copying: a layer-0 head is a *copying head for term x_{t-k}* (k = 0, 1, 2) when
    attend   its mean attention on key t-k is >= 0.5,
    unique   its output vector z_h W_O[h] (probed through z_h) explains the part of x_{t-k} that the other terms of the window
             (x_{t-2}, x_{t-1}, x_t) do not: held-out partial R^2 >= 0.5 (``unique_r2``),
    matters  resample-ablating it at least doubles the MSE over t >= 2.
Claim 2, negative similarity: a last-layer head is a *negative similarity head* when
    similarity  |r_sim| >= 0.3, r_sim the position-controlled correlation of its logits with -|x_t - x_j|
                (> 0: attends to keys similar to x_t; < 0: to dissimilar ones; the two are separate rows),
    negative    its OV gain (slope of its direct contribution on sum_j A[t, j] x_j) is <= -0.2,
    matters     resample-ablating it at least doubles the MSE over t >= 2,
    selective   replacing its pattern by its position-average pattern multiplies the MSE over t >= 2 by >= 1.5.
Substitution (reported, not a criterion): ``similarity_substitution``, the share of the selectivity's cost that the
theory's similarity pattern, fitted to the head, wins back when it replaces the head's own pattern.
Refinement (reported, not a criterion of claim 2): partial correlations of a head's direct contribution with
the step x_{t+1} - x_t given x_t, and with the error of the estimate entering its layer given that estimate.

All statistics pool query positions t >= 2 (``T_MIN``) over sequences. Probes are fitted on the first half of
the sequences and scored on the second.
"""
from __future__ import annotations

import numpy as np

from theory.heads import fit_similarity_pattern, similarity_pattern

from ..interp.ablation import head_ablation
from ..interp.attribution import head_direct

T_MIN = 2
OFFSETS = (0, 1, 2)  # k: the copied term is x_{t-k}
THRESHOLDS = dict(attend=0.5, unique=0.5, matters=2.0, similarity=0.3, ov_gain=-0.2, selective=1.5, refines=0.3)


# ----------------------------------------------------------------------------- statistics
def _design(feats):
    """``[N, F]`` -> ``[N, F + 1]`` with an intercept column, float64."""
    F = np.asarray(feats, np.float64).reshape(len(feats), -1)
    return np.concatenate([F, np.ones((len(F), 1))], 1)


def residualise(y, controls):
    """``y [N]`` minus its least-squares fit on ``controls [N, C]`` (with an intercept)."""
    X = _design(controls)
    y = np.asarray(y, np.float64).ravel()
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return y - X @ coef


def corr(u, v):
    """Pearson r of two arrays (0 when either is constant)."""
    u, v = np.ravel(u) - np.mean(u), np.ravel(v) - np.mean(v)
    d = np.sqrt((u * u).sum() * (v * v).sum())
    return float((u * v).sum() / d) if d > 0 else 0.0


def partial_corr(u, v, controls):
    """Correlation of ``u`` and ``v`` after removing from both what ``controls [N, C]`` explains linearly."""
    return corr(residualise(u, controls), residualise(v, controls))


def probe_fit(feats, target, n_seq):
    """Predictions on every row of a least-squares read-out (with intercept) fitted on the first half of the
    sequences. ``feats [n_seq * m, F]`` and ``target [n_seq * m]`` are ordered sequence by sequence (``m`` rows
    each), so the split never puts one sequence on both sides. Returns ``(pred [n_seq * m], first held-out row)``."""
    X, y = _design(feats), np.asarray(target, np.float64).ravel()
    cut = (n_seq // 2) * (len(y) // n_seq)
    coef, *_ = np.linalg.lstsq(X[:cut], y[:cut], rcond=None)
    return X @ coef, cut


def window(x, t_min=T_MIN):
    """``[batch, T - t_min, 3]``: the terms x_{t-2}, x_{t-1}, x_t at every query position t >= t_min."""
    x = np.asarray(x, np.float64)
    T = x.shape[1]
    return np.stack([x[:, t_min - 2 + i : T - 2 + i] for i in range(3)], -1)


def unique_r2(feats, x, k, t_min=T_MIN, pooled=False):
    """How much of x_{t-k} that the other terms of the window do not explain, ``feats`` explain: the held-out
    partial R^2 ``1 - SSE(probe from feats and the other terms) / SSE(probe from the other terms alone)``.

    ``feats [batch, T - t_min, F]`` (e.g. a head's output at t >= t_min). 1 when feats carry x_{t-k} exactly; 0 when
    they carry nothing beyond the other terms (however well they correlate with x_{t-k}). The probes are fitted and
    scored at each position t separately (a trained head's encoding of a value depends on the position) and the
    squared errors summed over positions before the ratio is taken, so positions where almost nothing unique is
    left weigh little. ``pooled=True``: one probe over all positions (the first, pre-registered reading)."""
    w = window(x, t_min)  # [B, T', 3]
    B = w.shape[0]
    feats = np.asarray(feats, np.float64)
    feats = feats[..., None] if feats.ndim == 2 else feats  # [B, T', F]
    if pooled:
        full, reduced = _probe_sse(feats.reshape(B * w.shape[1], feats.shape[2]), w.reshape(-1, 3), k, B)
    else:
        full, reduced = np.sum([_probe_sse(feats[:, i], w[:, i], k, B) for i in range(w.shape[1])], axis=0)
    return float(1.0 - full / reduced) if reduced > 0 else 0.0


def _probe_sse(feats, w, k, n_seq):
    """``feats [N, F]``, ``w [N, 3]`` (x_{t-2}, x_{t-1}, x_t) ordered sequence by sequence: held-out squared error
    of x_{t-k} from (feats, other terms) and from the other terms alone."""
    own = 2 - k
    target = w[:, own]  # [N]
    others = np.delete(w, own, axis=-1)  # [N, 2]
    sse = []
    for F in (np.concatenate([feats, others], 1), others):
        pred, cut = probe_fit(F, target, n_seq)
        sse.append(((target[cut:] - pred[cut:]) ** 2).sum())
    return sse


def similarity_r(scores, x, t_min=T_MIN):
    """Position-controlled correlation of attention logits with -|x_t - x_j| over keys j <= t, rows t >= t_min.

    ``scores [batch, T, T]`` (one head's ``hook_attn_scores``), ``x [batch, T]``. Both are centred within each row
    (softmax ignores a row constant), then each (t, j) cell's mean over sequences is removed (what position alone
    explains), then one Pearson r is pooled over every cell and sequence."""
    s = np.asarray(scores, np.float64)
    x = np.asarray(x, np.float64)
    us, vs, scale = [], [], 0.0
    for t in range(t_min, x.shape[1]):
        a = s[:, t, : t + 1]  # [B, t+1] logits of row t
        b = -np.abs(x[:, t : t + 1] - x[:, : t + 1])  # [B, t+1] similarity of each key to x_t
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        scale = max(scale, float(np.abs(a).max()))
        us.append((a - a.mean(0)).ravel())
        vs.append((b - b.mean(0)).ravel())
    u = np.concatenate(us)
    if np.abs(u).max() <= 1e-9 * scale:  # logits fixed by position alone: what is left is rounding, not signal
        return 0.0
    return corr(u, np.concatenate(vs))


# ----------------------------------------------------------------------------- interventions
def _mse_t(pred, y, t_min=T_MIN):
    d = np.asarray(pred, np.float64)[:, t_min:] - np.asarray(y, np.float64)[:, t_min:]
    return float((d * d).mean())


def pattern_substitution_ratio(model, x, y, layer, head, pattern, t_min=T_MIN):
    """MSE over t >= t_min with head (layer, head)'s pattern replaced by ``pattern`` (``[T, T]`` for every sequence or
    ``[batch, T, T]``, e.g. an idealised head's pattern on x; the head still reads this sequence's values), over the
    clean MSE."""
    def fn(p, hook):  # p [B, H, T, T]
        p = p.copy()
        p[:, head] = pattern
        return p

    base = _mse_t(model(x), y, t_min)
    patched = _mse_t(model.run_with_hooks(x, [(f"blocks.{layer}.attn.hook_pattern", fn)]), y, t_min)
    return patched / base if base > 0 else float("inf")


def pattern_average_ratio(model, x, y, layer, head, t_min=T_MIN):
    """``pattern_substitution_ratio`` with the head's own pattern averaged over the batch at each (t, j)."""
    _, cache = model.run_with_cache(x)
    return pattern_substitution_ratio(model, x, y, layer, head, cache["pattern", layer][:, head].mean(0), t_min)


def similarity_substitution(model, x, y, layer, head, kind="distance", t_min=T_MIN):
    """Does the theory's similarity head account for what this head's selectivity buys?

    The head's pattern is fitted by an idealised similarity pattern softmax_j(beta s(x_t, x_j) + P[t, j])
    (``theory.heads.fit_similarity_pattern`` of ``kind``, positional bias P) on the first half of the sequences. On the
    second half the head's pattern is replaced by its position-average pattern (``avg_ratio``) and by the fitted
    similarity pattern on those sequences (``sim_ratio``), each as MSE over the clean MSE at t >= t_min.
    ``recovered`` = (avg_ratio - sim_ratio) / (avg_ratio - 1): the share of the selectivity's cost the idealised pattern
    wins back (1: all of it, 0: no better than position alone, < 0: worse); None when the average costs nothing."""
    half = len(x) // 2
    _, cache = model.run_with_cache(x)
    A = cache["pattern", layer][:, head].astype(np.float64)  # [B, T, T]
    fit = fit_similarity_pattern(A[:half], x[:half], positional=True, kind=kind)
    xh, yh = x[half:], y[half:]
    avg = pattern_substitution_ratio(model, xh, yh, layer, head, A[half:].mean(0), t_min)
    sim = pattern_substitution_ratio(model, xh, yh, layer, head, similarity_pattern(xh, fit["beta"], fit["pos_bias"], kind), t_min)
    cost = avg - 1.0
    return dict(kind=kind, beta=fit["beta"], avg_ratio=avg, sim_ratio=sim,
                recovered=(avg - sim) / cost if cost > 1e-9 else None)


def resample_ratios(model, x, y, seed=0, t_min=T_MIN):
    """``[n_layers, n_heads]``: MSE over t >= t_min with the head resample-ablated, over the clean MSE."""
    ab = head_ablation(model, x, y, "resample", seed=seed)
    base = ab["base"][t_min:].mean()
    return (ab["by_pos"][:, :, t_min:].mean(-1) + base) / base


# ----------------------------------------------------------------------------- the two claims
def output_coords(z, W_O, rtol=1e-9):
    """The head's output z W_O ``[..., d_model]`` in coordinates of its row space: ``[..., rank(W_O)]``.

    A linear probe on these spans exactly the read-outs of one on the output vector, with rank(W_O) <= d_head
    features instead of d_model (fewer parameters to fit on the same sequences); a head with W_O = 0 has none."""
    U, S, _ = np.linalg.svd(np.asarray(W_O, np.float64), full_matrices=False)  # W_O = U S V^T, V orthonormal
    keep = S > rtol * max(S.max(initial=0.0), 1e-300)
    return z @ (U[:, keep] * S[keep])  # (z W_O) V = z U S


def copy_table(cache, x, layer=0, t_min=T_MIN):
    """One row per (head, k): ``attend`` (mean attention on key t-k) and ``unique`` (held-out probe R^2 of the
    unique part of x_{t-k} from the head's output vector), over rows t >= t_min."""
    x = np.asarray(x, np.float64)
    B, T = x.shape
    A = cache["pattern", layer].astype(np.float64)  # [B, H, T, T]
    z = cache["z", layer].astype(np.float64)  # [B, T, H, d_head]
    t = np.arange(t_min, T)
    rows = []
    for k in OFFSETS:
        for h in range(A.shape[1]):
            attend = float(A[:, h, t, t - k].mean())
            out = output_coords(z[:, t_min:, h], cache.model.params[f"blocks.{layer}.attn.W_O"][h])  # [B, T', rank]
            rows.append(dict(head=f"L{layer}H{h}", h=h, k=k, attend=attend, unique=unique_r2(out, x, k, t_min),
                             unique_pooled=unique_r2(out, x, k, t_min, pooled=True)))
    return rows


def negsim_table(model, cache, x, y, ratios, layer, t_min=T_MIN):
    """One row per head of ``layer``: r_sim, OV gain, resample ratio, pattern-average ratio and the refinement
    partial correlations (see the module docstring)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    B, T = x.shape
    dc_all = head_direct(model, cache)  # [L, H, B, T]
    resid = cache["resid_pre", layer].astype(np.float64)[:, t_min:]  # [B, T', D]
    target, xt = y[:, t_min:].ravel(), x[:, t_min:].ravel()
    est, cut = probe_fit(resid.reshape(len(target), -1), target, B)  # the estimate entering the layer
    half = slice(cut, None)  # held-out sequences: the estimate was not fitted on them
    rows = []
    for h in range(model.cfg.n_heads):
        a = cache["pattern", layer][:, h].astype(np.float64)  # [B, T, T]
        dc = dc_all[layer, h][:, t_min:].ravel()
        read = np.einsum("btj,bj->bt", a, x)[:, t_min:].ravel()  # sum_j A[t, j] x_j
        rv = read - read.mean()
        ov = float(rv @ (dc - dc.mean()) / (rv @ rv)) if rv @ rv > 0 else 0.0
        rows.append(dict(
            head=f"L{layer}H{h}", h=h, r_sim=similarity_r(cache["attn_scores", layer][:, h], x, t_min), ov_gain=ov,
            resample_ratio=float(ratios[layer, h]), selective_ratio=pattern_substitution_ratio(model, x, y, layer, h, cache["pattern", layer][:, h].mean(0), t_min),
            pcorr_step=partial_corr(dc, target - xt, xt[:, None]),
            pcorr_error=partial_corr(dc[half], (target - est)[half], est[half, None]),
        ))
    return rows


def claims(model, x, y, seed=0, thresholds=None, t_min=T_MIN):
    """Both claims on one model and a batch ``x, y [batch, T]``. Returns a JSON-able dict:
    ``copy_rows``, ``negsim_rows`` (with per-criterion flags), and ``copy``, ``ns_similar``, ``ns_dissimilar``,
    ``refines``: each ``{"holds": bool, "heads": [...]}``."""
    th = dict(THRESHOLDS, **(thresholds or {}))
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    last = model.cfg.n_layers - 1
    _, cache = model.run_with_cache(x)
    ratios = resample_ratios(model, x, y, seed, t_min)
    crow = copy_table(cache, x, 0, t_min)
    for r in crow:
        r["resample_ratio"] = float(ratios[0, r["h"]])
        r.update(is_attend=r["attend"] >= th["attend"], is_unique=r["unique"] >= th["unique"], is_matters=r["resample_ratio"] >= th["matters"])
        r["copying"] = bool(r["is_attend"] and r["is_unique"] and r["is_matters"])
    nrow = negsim_table(model, cache, x, y, ratios, last, t_min)
    for r in nrow:
        r.update(is_similar=r["r_sim"] >= th["similarity"], is_dissimilar=r["r_sim"] <= -th["similarity"],
                 is_negative=r["ov_gain"] <= th["ov_gain"], is_matters=r["resample_ratio"] >= th["matters"],
                 is_selective=r["selective_ratio"] >= th["selective"], refines=r["pcorr_error"] >= th["refines"])
        core = r["is_negative"] and r["is_matters"] and r["is_selective"]
        r["ns_similar"], r["ns_dissimilar"] = bool(core and r["is_similar"]), bool(core and r["is_dissimilar"])
    flags = lambda rows, key: [r["head"] for r in rows if r[key]]  # noqa: E731
    out = dict(copy_rows=crow, negsim_rows=nrow, thresholds=th)
    copying = [r for r in crow if r["copying"]]
    out["copy"] = dict(holds=bool(copying), heads=[f"{r['head']} (x_t-{r['k']})" if r["k"] else f"{r['head']} (x_t)" for r in copying])
    for key in ("ns_similar", "ns_dissimilar", "refines"):
        out[key] = dict(holds=bool(flags(nrow, key)), heads=flags(nrow, key))
    return _jsonable(out)


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(w) for k, w in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(w) for w in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
