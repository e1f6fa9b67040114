"""One function that runs every analysis on one trained model and returns JSON-able results, plus the
claim tests (operational definitions in ``docs/interp.md``).  Used by ``minigpt reproduce`` and the demos."""
from __future__ import annotations

import os

import numpy as np

from theory.bayes import baseline_mse, bayes_mse
from theory.heads import (
    fit_gain,
    fit_similarity_pattern,
    positional_bias,
    previous_token_head,
    similarity_head,
    similarity_pattern,
)

from ..interp import plots
from ..interp.ablation import head_ablation, layer_ablation
from ..interp.attribution import head_direct
from ..interp.head_scores import (  # noqa: F401
    COLUMNS,
    classify_heads,
    head_labels,
    head_scores,
    pattern_score,
    similarity_fit,
)
from ..interp.lens import prediction_lens, probe_lens
from ..interp.patching import WHICH, make_pairs, patch_heads, patch_resid
from ..interp.plots import bootstrap_band
from ..tasks import baselines
from .claims import claims as claims_v2

EVAL_SEED = 12345
CLAIMS_STREAM = 7  # random stream of the claims-v2 batch (patching uses 0..2)
CLAIM_RATIO = 2.0  # an ablation "matters" if it at least doubles the MSE over positions t >= 2


def _sq(pred, y):
    d = np.asarray(pred, np.float64) - np.asarray(y, np.float64)
    return d * d


def _r2_affine(y, x):
    x, y = np.ravel(x), np.ravel(y)
    xc, yc = x - x.mean(), y - y.mean()
    if (xc * xc).sum() == 0 or (yc * yc).sum() == 0:
        return 0.0
    return float(((xc * yc).sum()) ** 2 / ((xc * xc).sum() * (yc * yc).sum()))


def bayes_floor(task, T):
    """Bayes-optimal MSE by position from ``theory.bayes`` ([T])."""
    return np.array([bayes_mse(t, task) for t in range(T)])


def baseline_closed_forms(task, T):
    """``{baseline: [T] expected MSE}`` from ``theory.bayes.baseline_mse``; ``None`` where no closed form
    exists (e.g. three_term / least_squares with noise at t >= 2)."""
    out = {}
    for name in baselines.NAMES:
        vals = []
        for t in range(T):
            try:
                vals.append(float(baseline_mse(name, t, task)))
            except (NotImplementedError, ValueError):
                vals.append(None)
        out[name] = vals
    return out


def closed_vs_measured(sq, closed, tiny=1e-12):
    """Compare Monte-Carlo MSEs (``sq {name: [batch, pos]}``) with closed forms (``closed {name: [pos]}``).

    Returns the largest relative gap |mc - cf| / cf over entries with cf > ``tiny`` (and where), the largest
    gap in Monte-Carlo standard errors (sd of the squared errors / sqrt(batch)), and the largest measured MSE
    where the closed form is 0."""
    best = dict(max_rel_gap=0.0, where=None, max_z=0.0, z_where=None, max_mc_where_zero=0.0, n_compared=0)
    for name, cf in closed.items():
        if name not in sq:
            continue
        se2 = sq[name]
        n = se2.shape[0]
        mc, sd = se2.mean(0), se2.std(0, ddof=1) / np.sqrt(n)
        for t, c in enumerate(cf):
            if c is None:
                continue
            best["n_compared"] += 1
            gap = abs(float(mc[t]) - c)
            if c > tiny:
                if gap / c > best["max_rel_gap"]:
                    best.update(max_rel_gap=gap / c, where=[name, t])
                if sd[t] > 0 and gap / sd[t] > best["max_z"]:
                    best.update(max_z=float(gap / sd[t]), z_where=[name, t])
            else:
                best["max_mc_where_zero"] = max(best["max_mc_where_zero"], float(mc[t]))
    return best


def _head_index(name):
    l, h = name[1:].split("H")
    return int(l), int(h)


def named_heads(res):
    """The heads the claims table names, with their roles: ``{"L0H1": ["L0 best copy score", ...]}``."""
    L = res["n_layers"]
    c = res["claims"]
    ratio0 = np.array(res["ablation"]["resample"]["ratio_t2"])[0]
    heads: dict = {}

    def add(name, role):
        heads.setdefault(name, [])
        if role not in heads[name]:
            heads[name].append(role)

    add(c["copy"]["best_head"], "L0 best copy score")
    add(f"L0H{int(np.argmax(ratio0))}", "L0 most important")
    add(c["last_layer_top"]["head"], f"L{L - 1} most important")
    for reading, v in c["negsim"].items():
        for name in v["heads"] + v["elsewhere"]:
            add(name, f"NS-{reading}")
    return heads


def _gain(dc, out):
    """``theory.heads.fit_gain`` with an intercept: the head's direct contribution and an idealised output, both
    centred (a constant offset, e.g. from b_V through LayerNorm, is not part of the OV gain)."""
    dc, out = np.ravel(dc), np.ravel(out)
    return fit_gain(dc - dc.mean(), out - out.mean())


NULL_MARGIN = 0.1  # a similarity fit counts when it removes >= 10% of the positional-only pattern's held-out error


def null_gain(A, x, t_min=1):
    """Does a similarity head (beta x_t x_j + P[t, j]) describe a pattern better than position alone?

    ``A [batch, T, T]`` one head's pattern on ``x [batch, T]``. Both models are fitted on the first half of the
    sequences: the similarity head by ``theory.heads.fit_similarity_pattern`` (positional), the null by the mean
    pattern at each (t, j) (the best beta = 0 pattern in squared error). On the second half, rows t >= t_min:
    ``null_gain = 1 - SSE(similarity fit) / SSE(null)``; ``null_counts``: null_gain >= NULL_MARGIN."""
    half = len(x) // 2
    fit = fit_similarity_pattern(A[:half], x[:half], positional=True)
    held, xh = A[half:, t_min:], x[half:]
    sse_sim = float(((similarity_pattern(xh, fit["beta"], fit["pos_bias"])[:, t_min:] - held) ** 2).sum())
    sse_null = float(((A[:half, t_min:].mean(0) - held) ** 2).sum())
    scale = float((held ** 2).sum())
    gain = 1.0 - sse_sim / sse_null if sse_null > 1e-12 * scale else 0.0  # a purely positional pattern: nothing for beta to explain
    return {"null_gain": gain, "null_counts": bool(gain >= NULL_MARGIN), "beta_train": fit["beta"]}


def idealised_fits(model, x, res, n_fit=128, t_min=1):
    """Fit the idealised heads of ``theory.heads`` to the heads named in the claims table (``named_heads``).

    Per head, on ``n_fit`` held-out sequences, query rows t >= ``t_min``:
    - similarity head: ``fit_similarity_pattern`` with and without a positional bias P[t, j] (fitted beta,
      R^2 of the pattern and of the row-centred log-pattern); the fitted bias on the current and on the previous
      key (mean over rows t >= 1 of P[t, t] and P[t, t-1], row-centred, nats);
    - the null: ``null_gain``, how much of a positional-only pattern's held-out error the similarity fit removes
      (half the sequences to fit, half to score); the fitted beta is read as a similarity head only when
      ``null_counts`` (>= NULL_MARGIN): a near-uniform head reaches a high R^2 around the global mean with beta ~ 0;
    - copy / previous-token head: ``pattern_score`` against the idealised one-hot patterns;
    - OV gain gamma and R^2 (``fit_gain``, centred) of the head's direct contribution to the prediction against
      the idealised outputs: the empirical pattern's mix sum_j A[t, j] x_j, the fitted similarity head's mix
      (beta and P as fitted), x_t (copy) and x_{t-1} (previous token).
    """


    xf = np.asarray(x[:n_fit], np.float64)
    _, cache = model.run_with_cache(xf)
    dc_all = head_direct(model, cache)  # [L, H, B, T]
    T = xf.shape[1]
    ideal = {k: similarity_pattern(np.zeros(T), 0.0, positional_bias(k, T)) for k in ("copy", "previous")}  # [T, T] idealised patterns
    sl = slice(t_min, None)
    out = []
    for name, roles in named_heads(res).items():
        l, h = _head_index(name)
        A = cache["pattern", l][:, h].astype(np.float64)  # [B, T, T]
        dc = dc_all[l, h][:, sl]
        row = {"head": name, "roles": roles}
        fp = fit_similarity_pattern(A, xf, positional=True)
        f0 = fit_similarity_pattern(A, xf, positional=False)
        null = null_gain(A, xf, t_min)
        P = fp["pos_bias"]
        idx = np.arange(1, T)
        row.update(beta=f0["beta"], r2=f0["r2"], r2_logits=f0["r2_logits"], beta_pos=fp["beta"], r2_pos=fp["r2"], r2_logits_pos=fp["r2_logits"],
                   bias_current=float(P[idx, idx].mean()), bias_previous=float(P[idx, idx - 1].mean()),
                   score_copy=pattern_score(A, ideal["copy"], t_min), score_previous=pattern_score(A, ideal["previous"], t_min),
                   **null)
        outs = {"pattern": np.einsum("btj,bj->bt", A, xf), "similarity": similarity_head(xf, fp["beta"], 1.0, P),
                "copy": xf, "previous": previous_token_head(xf)}
        for k, o in outs.items():
            g = _gain(dc, o[:, sl])
            row[f"gamma_{k}"], row[f"gain_r2_{k}"] = g["gamma"], g["r2"]
        out.append(row)
    return out


def analyse(model, task, n_eval=1024, n_scores=512, n_abl=512, n_patch=128, fig_dir=None, label="", seed=0, figures=True, n_fit=128,
            n_claims=1024):
    """Every measurement on one model.  Returns a dict of lists/floats (JSON-able)."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    rng = np.random.default_rng([EVAL_SEED, seed])
    batch = task.sample(n_eval, rng)
    x, y = batch.inputs, batch.targets
    T = x.shape[1]
    res: dict = {"label": label, "n_layers": L, "n_heads": H, "T": T, "n_eval": n_eval}
    # --- MSE by position, model and baselines
    pred = model(x)
    sq = {"model": _sq(pred, y)}
    for name, p in baselines.all_predictions(batch, task).items():
        sq[name] = _sq(p, y)
    res["mse_by_pos"] = {k: v.mean(0).tolist() for k, v in sq.items()}
    res["mse_t2"] = {k: float(v[:, 2:].mean()) for k, v in sq.items()}
    try:
        res["bayes_by_pos"] = bayes_floor(task, T).tolist()
    except Exception as e:  # theory may not support a prior (e.g. noise): say so, do not fail the report
        res["bayes_by_pos"] = None
        res["bayes_error"] = f"{type(e).__name__}: {e}"
    try:  # closed-form expected MSE of every baseline, and how well the Monte-Carlo measurements agree with it
        res["baseline_closed"] = baseline_closed_forms(task, T)
        res["closed_vs_mc"] = closed_vs_measured(sq, res["baseline_closed"])
    except Exception as e:
        res["baseline_closed"] = None
        res["closed_error"] = f"{type(e).__name__}: {e}"

    res["mse_band"] = {}
    for k, v in sq.items():
        _, lo, hi = bootstrap_band(v)
        res["mse_band"][k] = {"lo": lo.tolist(), "hi": hi.tolist()}
    # --- head scores and classification
    xs, ys = x[:n_scores], y[:n_scores]
    scores = head_scores(model, xs, ys)
    cls = classify_heads(scores)
    res["scores"] = {k: v.tolist() for k, v in scores.items()}
    res["classes"] = {k: v.tolist() for k, v in cls.items()}
    # --- ablations (MSE over positions t >= 2 as the main number, plus per position)
    res["ablation"] = {}
    for method in ("zero", "mean", "resample"):
        ab = head_ablation(model, x[:n_abl], y[:n_abl], method, seed=seed)
        base2 = ab["base"][2:].mean()
        inc2 = ab["by_pos"][:, :, 2:].mean(-1)
        res["ablation"][method] = {
            "table": ab["table"].tolist(), "table_t2": inc2.tolist(), "ratio_t2": ((inc2 + base2) / base2).tolist(),
            "by_pos": ab["by_pos"].tolist(), "base_t2": float(base2),
        }
    res["layer_ablation_resample"] = layer_ablation(model, x[:n_abl], y[:n_abl], "resample", seed).tolist()
    # --- lens
    _, cache = model.run_with_cache(x)
    res["lens"] = {}
    for ln in ("recompute", "frozen"):
        preds, labels = prediction_lens(model, cache, ln)
        res["lens"][ln] = {"labels": labels, "mse_by_pos": _sq(preds, y[None]).mean(1).tolist(),
                           "mse_t2": [float(_sq(p, y)[:, 2:].mean()) for p in preds],
                           "r2_on_xt": [_r2_affine(p[:, 1:], x[:, 1:]) for p in preds],
                           "mse_vs_copy": [float(_sq(p, x)[:, 1:].mean()) for p in preds]}
    res["probe"] = probe_lens(cache, x, y)
    # --- patching
    res["patching"] = {}
    for which in WHICH:
        cl, co = make_pairs(task, n_patch, which, np.random.default_rng([EVAL_SEED, seed, WHICH.index(which)]))
        cl, co = cl[:, :-1], co[:, :-1]
        res["patching"][which] = {"resid_pre": patch_resid(model, cl, co).tolist(), "heads": patch_heads(model, cl, co).tolist()}
    res["claims"] = claim_tests(res)
    if T > 2:
        bc = task.sample(n_claims, np.random.default_rng([EVAL_SEED, seed, CLAIMS_STREAM]))  # its own batch: probes need many sequences
        res["claims_v2"] = claims_v2(model, bc.inputs, bc.targets, seed=seed)
        res["idealised_fits"] = idealised_fits(model, x, res, n_fit=n_fit)
    if figures and fig_dir is not None:
        res["figures"] = make_figures(model, res, sq, cache, x, fig_dir, label)
    return res


def claim_tests(res):
    """The per-model operational tests of the paper's two claims (see docs/interp.md)."""
    L, H = res["n_layers"], res["n_heads"]
    s = {k: np.array(v) for k, v in res["scores"].items()}
    c = {k: np.array(v) for k, v in res["classes"].items()}
    ratio = np.array(res["ablation"]["resample"]["ratio_t2"])
    ratio_zero = np.array(res["ablation"]["zero"]["ratio_t2"])
    out = {}
    # claim 1: layer 0 copies
    h0 = int(np.argmax(s["copy"][0]))
    out["copy"] = {
        "best_head": f"L0H{h0}", "copy_score": float(s["copy"][0, h0]), "kind": "current" if s["copy_cur"][0, h0] >= s["copy_prev"][0, h0] else "previous",
        "current": float(s["current"][0, h0]), "previous": float(s["previous"][0, h0]),
        "n_copy_heads_l0": int(c["copy"][0].sum()), "copy_heads_other_layers": [f"L{l}H{h}" for l in range(1, L) for h in range(H) if c["copy"][l, h]],
        "ablation_ratio": float(ratio[0, h0]), "zero_ablation_ratio": float(ratio_zero[0, h0]),
        "lens_r2_after_l0": res["lens"]["recompute"]["r2_on_xt"][1], "lens_r2_embed": res["lens"]["recompute"]["r2_on_xt"][0],
    }
    out["copy"]["holds"] = bool(out["copy"]["copy_score"] >= 0.5 and out["copy"]["ablation_ratio"] >= CLAIM_RATIO)
    # residual reading (added after the first paper-preset run showed diffuse layer-0 attention; see docs/interp.md):
    # the best linear estimate of x_{t+1} from the residual after block 0 is closer to a copy of x_t than to x_{t+1}
    pr = res["probe"]
    out["copy_resid"] = {"probe_mse_after_l0": pr["mse"][1], "probe_dist_xt_after_l0": pr["mse_vs_xt"][1], "copy_mse": res["mse_t2"]["copy"],
                         "probe_r2_after_l0": pr["r2_on_xt"][1], "probe_mse": pr["mse"], "probe_dist_xt": pr["mse_vs_xt"]}
    out["copy_resid"]["holds"] = bool(pr["mse_vs_xt"][1] < pr["mse"][1])
    # claim 2: layer-2 (last layer) negative similarity heads refine
    last = L - 1
    out["negsim"] = {}
    for reading in ("logit", "ov", "anti"):
        flagged = [h for h in range(H) if c["ns_" + reading][last, h]]
        best = max(flagged, key=lambda h: ratio[last, h]) if flagged else None
        elsewhere = [f"L{l}H{h}" for l in range(last) for h in range(H) if c["ns_" + reading][l, h]]
        out["negsim"][reading] = {
            "heads": [f"L{last}H{h}" for h in flagged], "elsewhere": elsewhere,
            "best": None if best is None else f"L{last}H{best}",
            "ablation_ratio": None if best is None else float(ratio[last, best]),
            "corr_need": None if best is None else float(s["corr_need"][last, best]),
            "holds": bool(best is not None and ratio[last, best] >= CLAIM_RATIO),
        }
    # the most important last-layer head, whatever it is, for context
    hb = int(np.argmax(ratio[last]))
    out["last_layer_top"] = {"head": f"L{last}H{hb}", "ablation_ratio": float(ratio[last, hb]),
                             **{k: float(s[k][last, hb]) for k in ("sim_effect", "sim_r2", "ov_gain", "corr_est0", "corr_need", "current", "previous", "first")}}
    out["negsim_any_holds"] = any(v["holds"] for v in out["negsim"].values())
    return out


def make_figures(model, res, sq, cache, x, fig_dir, label):
    cfg = model.cfg
    L, H, T = cfg.n_layers, cfg.n_heads, x.shape[1]
    os.makedirs(fig_dir, exist_ok=True)
    f = {}
    p = lambda name: os.path.join(fig_dir, f"{label}_{name}.png")  # noqa: E731
    att = np.concatenate([cache["pattern", l].mean(0) for l in range(L)])  # [L*H, T, T]
    f["attention"] = plots.attention_patterns(att, p("attention"), tokens=[f"x{t}" for t in range(T)], head_names=head_labels(cfg),
                                              n_cols=H, title=f"{label}: mean attention (dest rows, src columns)")
    floor = res.get("bayes_by_pos")
    keep = {k: v for k, v in sq.items() if k != "oracle"}
    f["mse"] = plots.mse_by_position(keep, p("mse"), title=f"{label}: MSE by position vs Bayes floor and closed forms", floor=floor,
                                     closed=res.get("baseline_closed"))
    labels = res["lens"]["recompute"]["labels"]
    rc = res["lens"]["recompute"]["mse_t2"]
    f["lens"] = plots.lens_by_layer({k: np.array(v["mse_by_pos"]) for k, v in res["lens"].items()}, labels, p("lens"), title=f"{label}: prediction lens",
                                    reference={"copy baseline (predict x_t)": res["mse_by_pos"]["copy"]},
                                    notes={"recompute": f"Early stages read out with fresh LayerNorm statistics (MSE t>=2 of the embeddings: {rc[0]:.2g}): "
                                                        "the final LayerNorm rescales a residual not yet aligned with the read-out, so a large MSE "
                                                        "means 'no read-out here', not 'a bad estimate'.",
                                           "frozen": "Centred and divided by the real final LayerNorm scale: each stage's linear share of the "
                                                     "prediction (sums to it at the last stage)."})
    rows = [f"L{l}" for l in range(L)]
    for method in ("zero", "resample"):
        f[f"ablation_{method}"] = plots.heatmap(np.log10(np.array(res["ablation"][method]["ratio_t2"])), p(f"ablation_{method}"), rows,
                                                [f"H{h}" for h in range(H)], f"{label}: {method}-ablation, log10(MSE ratio), t>=2",
                                                "log10(ablated MSE / clean MSE)", xlabel="head", ylabel="layer")
    bp = np.array(res["ablation"]["resample"]["by_pos"]).reshape(L * H, T)
    f["ablation_by_pos"] = plots.heatmap(np.log10(np.maximum(bp + res["ablation"]["resample"]["base_t2"], 1e-12) / res["ablation"]["resample"]["base_t2"]),
                                         p("ablation_by_pos"), head_labels(cfg), list(range(T)),
                                         f"{label}: resample ablation by position, log10((dMSE+base)/base)", "log10(ablated MSE / clean MSE)",
                                         annotate=False, xlabel="position t", ylabel="ablated head")
    for which in WHICH:
        f[f"patch_resid_{which}"] = plots.heatmap(np.array(res["patching"][which]["resid_pre"]), p(f"patch_resid_{which}"), [f"resid_pre {l}" for l in range(L)],
                                                  list(range(T)), f"{label}: patch resid_pre (clean vs corrupt {which}), restored fraction at last pos",
                                                  "restored fraction", center=0.0, annotate=False, xlabel="patched position", ylabel="residual stream")
        f[f"patch_heads_{which}"] = plots.heatmap(np.array(res["patching"][which]["heads"]), p(f"patch_heads_{which}"), rows, [f"H{h}" for h in range(H)],
                                                  f"{label}: patch head z (corrupt {which})", "restored fraction at the last position", center=0.0,
                                                  xlabel="head", ylabel="layer")
    # logit-vs-similarity scatter for the last layer's heads and the layer-0 best copy head
    panels = []
    rng = np.random.default_rng(0)
    for l in (L - 1,):
        S = cache["attn_scores", l]
        for h in range(H):
            sims, logits = [], []
            for t in range(2, T):
                s = S[:64, h, t, : t + 1].astype(np.float64)
                xx = x[:64, t : t + 1] * x[:64, : t + 1]
                sims.append((xx - xx.mean(1, keepdims=True)).ravel())
                logits.append((s - s.mean(1, keepdims=True)).ravel())
            sims, logits = np.concatenate(sims), np.concatenate(logits)
            k = rng.choice(len(sims), min(3000, len(sims)), replace=False)
            panels.append((f"L{l}H{h}", sims[k], logits[k]))
    f["logit_vs_sim"] = plots.logit_vs_similarity(panels, p("logit_vs_sim"), title=f"{label}: last-layer attention logits vs x_t x_j, rows t >= 2 (uncontrolled; the "
                                                                         "controlled fit is the head-score table's sim eff)")
    return f


def table_rows(res):
    """Markdown rows of the head-score table of one model."""
    s, c = res["scores"], res["classes"]
    abl = res["ablation"]["resample"]["ratio_t2"]
    L, H = res["n_layers"], res["n_heads"]
    rows = []
    for l in range(L):
        for h in range(H):
            tags = []
            if c["copy"][l][h]:
                tags.append("copy-" + c["copy_kind"][l][h])
            tags += [f"NS-{r}" for r in ("logit", "ov", "anti") if c["ns_" + r][l][h]]
            rows.append([f"L{l}H{h}"] + [s[k][l][h] for k in ("current", "previous", "first", "copy", "alpha", "beta", "sim_r2", "sim_effect",
                                                                   "ov_gain", "dc_rel", "corr_x", "corr_dx", "corr_est0", "corr_need")]
                        + [abl[l][h], ", ".join(tags) or "-"])
    return rows


TABLE_HEADER = ["head", "cur", "prev", "first", "copy", "alpha", "beta", "sim R2", "sim eff", "OV gain", "dc/sd(y)", "r(dc,x_t)",
                "r(dc,dx)", "r(dc,est0)", "r(dc,need)", "abl ratio", "class"]
__all__ = ["analyse", "claim_tests", "idealised_fits", "named_heads", "baseline_closed_forms", "closed_vs_measured", "table_rows", "TABLE_HEADER", "COLUMNS"]
