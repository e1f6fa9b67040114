"""Write ``REPORT.md`` from the analysis dicts of ``minigpt.experiments.analysis.analyse`` (grouped by setting)."""
from __future__ import annotations

import os

import numpy as np

from ..interp import plots
from .analysis import CLAIM_RATIO, TABLE_HEADER, table_rows
from .sweep import MECHANISM_COLUMNS, copied_terms_text, load_results, load_table, mechanism_shares, wilson

READINGS = {
    "logit": "logit reading: attention logits fall with x_t*x_j similarity (sim effect <= -0.25 nats, partial R^2 >= 0.1)",
    "ov": "OV reading: the head writes minus what it reads (OV gain <= -0.2, R^2 >= 0.1, sd(dc) >= 5% sd(y))",
    "anti": "anti-copy reading: its direct output is anti-correlated with the layer-0 estimate (r <= -0.3, sd(dc) >= 5% sd(y))",
}


def _verdict(flags):
    k, n = sum(flags), len(flags)
    word = "holds" if k == n else ("does not hold" if k == 0 else ("mostly holds" if k * 2 > n else "rarely holds"))
    return dict(k=k, n=n, all=k == n, text=f"**{word}** ({k}/{n} seeds)")


def verdicts(results):
    """``{"copy": ..., "negsim": ..., "negsim_logit": ..., ...}`` aggregated over the seeds of one setting."""
    out = {"copy": _verdict([r["claims"]["copy"]["holds"] for r in results]),
           "copy_resid": _verdict([r["claims"]["copy_resid"]["holds"] for r in results]),
           "negsim": _verdict([r["claims"]["negsim_any_holds"] for r in results])}
    for reading in READINGS:
        out["negsim_" + reading] = _verdict([r["claims"]["negsim"][reading]["holds"] for r in results])
    return out


def _f(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(v)
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.{nd}g}" if isinstance(v, float) else str(v)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _copy_cell(r):
    c = r["claims"]["copy"]
    mark = "✓" if c["holds"] else "✗"
    return (f"s{r['seed']}: {c['best_head']} copy {c['copy_score']:.2f} ({c['kind']}), ablation ×{c['ablation_ratio']:.2f} {mark}")


def _ns_cell(r, reading):
    c = r["claims"]["negsim"][reading]
    if c["best"] is None:
        top = r["claims"]["last_layer_top"]
        return f"s{r['seed']}: none ✗ (top L{r['n_layers'] - 1} head {top['head']} ×{top['ablation_ratio']:.2f})"
    mark = "✓" if c["holds"] else "✗"
    return f"s{r['seed']}: {', '.join(c['heads'])}; best {c['best']} ablation ×{c['ablation_ratio']:.2f}, r(dc,need) {c['corr_need']:.2f} {mark}"


def claims_table(results):
    v = verdicts(results)
    L = results[0]["n_layers"]
    rows = [[
        "Layer 0 forms an initial estimate by copying",
        f"some layer-0 head has copy score >= 0.5 (attends to the current or previous term and its output carries that "
        f"term, linear R^2) **and** resample-ablating it multiplies the MSE at t >= 2 by >= {CLAIM_RATIO:g}",
        "<br>".join(_copy_cell(r) for r in results), v["copy"]["text"],
    ]]
    rows.append([
        "Layer 0 forms an initial estimate by copying (residual reading)",
        "the best linear estimate of x_{t+1} from the residual after block 0 (probe fitted on half the sequences, scored on "
        "the other half, t >= 2) is closer to x_t (a copy) than to x_{t+1}: mean squared distance to x_t < MSE",
        "<br>".join(f"s{r['seed']}: dist to x_t {r['claims']['copy_resid']['probe_dist_xt_after_l0']:.3g} vs MSE {r['claims']['copy_resid']['probe_mse_after_l0']:.3g} "
                    f"(copy baseline MSE {r['claims']['copy_resid']['copy_mse']:.3g}) {'✓' if r['claims']['copy_resid']['holds'] else '✗'}" for r in results),
        v["copy_resid"]["text"],
    ])
    for reading, desc in READINGS.items():
        rows.append([
            f"Negative similarity heads in layer {L - 1} refine it ({reading})",
            f"some layer-{L - 1} head meets the {desc}, **and** resample-ablating it multiplies the MSE at t >= 2 by >= {CLAIM_RATIO:g}",
            "<br>".join(_ns_cell(r, reading) for r in results), v["negsim_" + reading]["text"],
        ])
    rows.append([
        "Supporting: the residual after block 0 reads out as an affine function of x_t",
        "R^2 of the recomputed-LN lens after block 0 regressed on x_t (t >= 1); embeddings alone in brackets",
        "<br>".join(f"s{r['seed']}: {r['claims']['copy']['lens_r2_after_l0']:.3f} ({r['claims']['copy']['lens_r2_embed']:.3f})" for r in results),
        "-",
    ])
    return "\n".join(["| claim | operational test | result per seed | verdict |", "|---|---|---|---|"]
                     + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows])


def _mse_summary(results):
    names = ["model", "copy", "linear", "least_squares", "three_term", "prior_mean"]
    rows = []
    for r in results:
        m = r["mse_by_pos"]
        rows.append([f"s{r['seed']}", m["model"][0], m["model"][1], r["mse_t2"]["model"]] + [r["mse_t2"][n] for n in names[1:]])
    b = results[0].get("bayes_by_pos")
    if b:
        rows.append(["Bayes floor", b[0], b[1], 0.0] + ["" for _ in names[1:]])
    return _table(["seed", "model t=0", "model t=1", "model t>=2"] + [f"{n} t>=2" for n in names[1:]], rows)


def _lens_table(results):
    rows = []
    for r in results:
        for ln in ("recompute", "frozen"):
            d = r["lens"][ln]
            rows.append([f"s{r['seed']}", ln] + [f"{m:.2e} / {q:.2f}" for m, q in zip(d["mse_t2"], d["r2_on_xt"])])
    labels = results[0]["lens"]["recompute"]["labels"]
    return _table(["seed", "LN"] + [f"{l}: MSE t>=2 / R^2 on x_t" for l in labels], rows)


def _patch_summary(results):
    rows = []
    for r in results:
        for which, p in r["patching"].items():
            h = np.array(p["heads"])
            order = np.argsort(-h.ravel())[:3]
            H = r["n_heads"]
            top = ", ".join(f"L{i // H}H{i % H} {h.ravel()[i]:.2f}" for i in order)
            rp = np.array(p["resid_pre"])
            last = ", ".join(f"{rp[l, -1]:.2f}" for l in range(rp.shape[0]))
            rows.append([f"s{r['seed']}", which, top, last])
    return _table(["seed", "corrupted", "top heads (restored fraction at last position)", "resid_pre l=0.. at last position"], rows)


def findings(results):
    """A few sentences per setting, every number computed from the results."""
    L = results[0]["n_layers"]
    n = len(results)
    S = [{k: np.array(v) for k, v in r["scores"].items()} for r in results]
    R = [np.array(r["ablation"]["resample"]["ratio_t2"]) for r in results]
    C = [{k: np.array(v) for k, v in r["classes"].items()} for r in results]
    out = []
    cur0 = [s["current"][0].max() for s in S]
    prev0 = [s["previous"][0].max() for s in S]
    abl0 = [r[0].max() for r in R]
    out.append(f"- **Layer-0 attention.** Largest current-term score of a layer-0 head: {np.mean(cur0):.2f} on average over the "
               f"{n} seeds (range {min(cur0):.2f}-{max(cur0):.2f}); largest previous-term score {np.mean(prev0):.2f} "
               f"({min(prev0):.2f}-{max(prev0):.2f}). Copying heads (copy score >= 0.5) in layer 0: "
               f"{sum(int(c['copy'][0].sum()) for c in C)} over all seeds. Yet the most important layer-0 head multiplies the MSE at "
               f"t >= 2 by {np.mean(abl0):.1f} on average when resample-ablated (range {min(abl0):.1f}-{max(abl0):.1f}).")
    d_emb = [r["probe"]["mse_vs_xt"][0] for r in results]
    m_emb = [r["probe"]["mse"][0] for r in results]
    d_l0 = [r["probe"]["mse_vs_xt"][1] for r in results]
    m_l0 = [r["probe"]["mse"][1] for r in results]
    m_fin = [r["probe"]["mse"][-1] for r in results]
    cp = [r["mse_t2"]["copy"] for r in results]
    out.append(f"- **Where the copy lives.** A linear probe for x_(t+1) on the embeddings alone sits at mean squared distance "
               f"{np.mean(d_emb):.2e} from x_t (MSE {np.mean(m_emb):.2e}; copying scores {np.mean(cp):.2e}): the skip connection already "
               f"carries a copy. After block 0 the probe's estimate is at distance {np.mean(d_l0):.2e} from x_t and MSE {np.mean(m_l0):.2e} "
               f"from x_(t+1) (final residual: {np.mean(m_fin):.2e}), so block 0 already moves the estimate "
               f"{'most of the way' if np.mean(d_l0) > np.mean(m_l0) else 'part of the way'} from the copy toward the answer.")
    for reading in ("logit", "ov", "anti"):
        last = sum(len(r["claims"]["negsim"][reading]["heads"]) for r in results)
        other = sum(len(r["claims"]["negsim"][reading]["elsewhere"]) for r in results)
        held = sum(r["claims"]["negsim"][reading]["holds"] for r in results)
        out.append(f"- **Negative similarity, {reading} reading.** {last} head(s) in layer {L - 1} and {other} in earlier layers meet it "
                   f"over the {n} seeds; in {held} seed(s) one of the layer-{L - 1} ones matters (ablation >= x{CLAIM_RATIO:g}).")
    eff = [(s["sim_effect"][L - 1] * (R[i][L - 1] >= CLAIM_RATIO)).min() for i, s in enumerate(S)]
    top = [r["claims"]["last_layer_top"] for r in results]
    out.append(f"- **The most important layer-{L - 1} head** per seed (resample ablation ratio; similarity effect in nats; OV gain; "
               "r(dc, est0)): " + "; ".join(f"s{r['seed']} {t['head']} x{t['ablation_ratio']:.1f}, {t['sim_effect']:+.2f}, {t['ov_gain']:+.2f}, "
                                              f"{t['corr_est0']:+.2f}" for r, t in zip(results, top)) + ".")
    del eff
    tops = [(r, r["claims"]["last_layer_top"]["head"]) for r in results]
    rx, rdx, fz, cpm = [], [], [], []
    for r, name in tops:
        l, h = int(name[1]), int(name[3:])
        rx.append(r["scores"]["corr_x"][l][h])
        rdx.append(r["scores"]["corr_dx"][l][h])
        fz.append(r["lens"]["frozen"]["mse_t2"][1])
        cpm.append(r["mse_t2"]["copy"])
    out.append(f"- **Caveat on the anti-copy reading.** The same heads' direct outputs correlate with x_t itself at r = "
               f"{min(rx):+.2f} to {max(rx):+.2f} and with the needed step x_(t+1) - x_t at r = {min(rdx):+.2f} to {max(rdx):+.2f}; "
               f"the layer-0 estimate they oppose is the frozen-LN lens after block 0, whose MSE ({np.mean(fz):.2e} on average) is "
               f"{np.mean(fz) / np.mean(cpm):.1f}x that of copying ({np.mean(cpm):.2e}). So 'opposes the layer-0 estimate' cannot be "
               "told apart from 'cancels what the residual stream carries along the read-out direction' by these correlations alone.")
    return out


def _rel(path, out_dir):
    return os.path.relpath(path, out_dir)


FIT_HEADER = ["seed", "head", "role", "beta", "R^2 pattern", "beta (+P)", "R^2 pattern (+P)", "R^2 log-pattern (+P)", "P current", "P previous",
              "copy score", "prev score", "gamma (A x)", "R^2", "gamma (sim head)", "R^2", "gamma (copy x_t)", "R^2", "gamma (prev x_t-1)", "R^2"]


def fits_table(results):
    """The "Idealised-head fits" table (``analysis.idealised_fits``) of one setting; None if no seed has fits."""
    rows = []
    for r in results:
        for f in r.get("idealised_fits") or []:
            rows.append([f"s{r['seed']}", f["head"], ", ".join(f["roles"]), f["beta"], f["r2"], f["beta_pos"], f["r2_pos"], f["r2_logits_pos"],
                         f["bias_current"], f["bias_previous"], f["score_copy"], f["score_previous"]]
                        + [f.get(f"{k}_{o}") for o in ("pattern", "similarity", "copy", "previous") for k in ("gamma", "gain_r2")])
    return _table(FIT_HEADER, rows) if rows else None


def _fits_text(results):
    """Table and a sentence per setting on the idealised-head fits (empty if the analyses predate them)."""
    t = fits_table(results)
    if t is None:
        return ["(no idealised-head fits in these analyses: they were produced before `analysis.idealised_fits` existed; rerun "
                "`minigpt reproduce` to get them)", ""]
    fits = [f for r in results for f in r.get("idealised_fits") or []]
    best = {}
    for f in fits:
        k = max(("pattern", "similarity", "copy", "previous"), key=lambda o: f[f"gain_r2_{o}"])
        best[k] = best.get(k, 0) + 1
    out = ["The idealised heads of `theory/heads.py` fitted to the heads the claims table names (role), on held-out sequences, "
           "query rows t >= 1. Similarity head: logits beta x_t x_j, fitted by `fit_similarity_pattern` without and with a "
           "positional bias P[t, j] (+P); R^2 of the attention pattern itself and of the row-centred log-pattern; `P current` / "
           "`P previous`: the fitted bias on the current / previous key (mean over rows, row-centred, nats). `copy score` / "
           "`prev score`: `pattern_score` against the idealised copying / previous-token patterns (1 = identical). gamma and R^2: "
           "OV gain by `fit_gain` (with an intercept) of the head's direct contribution to the prediction against, in turn, the "
           "empirical mix sum_j A[t, j] x_j, the fitted similarity head's output (beta, P as fitted, gamma = 1), x_t and x_(t-1). "
           "beta is in nats per unit of x_t x_j (terms lie in about [-2, 2]).", "", t, ""]
    rp = [f["r2_pos"] for f in fits]
    r0 = [f["r2"] for f in fits]
    bl = [abs(f["beta"]) for f in fits]
    out += [f"Over the {len(fits)} fitted head(s): |beta| without P {min(bl):.3g} to {max(bl):.3g}; pattern R^2 {min(r0):.2f} to "
            f"{max(r0):.2f} without P and {min(rp):.2f} to {max(rp):.2f} with it, so "
            f"{'most of the pattern is positional, not value similarity' if np.mean(rp) - np.mean(r0) > 0.1 else 'the positional bias adds little'}. "
            "Idealised output that best explains each head's direct contribution (highest gain R^2): "
            + ", ".join(f"{k} {v}" for k, v in sorted(best.items(), key=lambda kv: -kv[1])) + ".", ""]
    return out


def _closed_text(results):
    """A sentence: closed-form baseline MSEs vs the Monte-Carlo measurements."""
    cv = [r["closed_vs_mc"] for r in results if r.get("closed_vs_mc")]
    if not cv:
        return []
    worst = max(cv, key=lambda c: c["max_rel_gap"])
    wz = max(cv, key=lambda c: c["max_z"])
    n = sum(c["n_compared"] for c in cv)
    zero = max(c["max_mc_where_zero"] for c in cv)
    w = worst["where"] or ["-", "-"]
    zw = wz["z_where"] or ["-", "-"]
    return [f"Closed forms against measurements: over {n} (baseline, position) pairs with a closed form ({len(cv)} seed(s), "
            f"{results[0].get('n_eval', '?')} held-out sequences each) the largest relative gap between the measured MSE and "
            f"`theory.bayes.baseline_mse` is {worst['max_rel_gap']:.1%} ({w[0]} at t = {w[1]}), the largest gap in Monte-Carlo "
            f"standard errors {wz['max_z']:.2f} ({zw[0]} at t = {zw[1]}); where the closed form is 0 the measured MSE is at most "
            f"{zero:.1e}. The relative gaps are sampling noise (heavy-tailed errors at late positions), not disagreement: "
            f"{'all' if wz['max_z'] < 4 else 'not all'} gaps are within 4 standard errors.", ""]


def _band(r, name):
    b = (r.get("mse_band") or {}).get(name)
    m = r["mse_by_pos"][name]
    return (m, b["lo"], b["hi"]) if b else (m, m, m)


def mse_figures(name, results, fig_dir):
    """Per-seed and summary figures of the MSE by position against theory, from the JSON results alone.
    Returns ``(summary_path or None, {seed: path})``."""
    closed = results[0].get("baseline_closed")
    floor = results[0].get("bayes_by_pos")
    if closed is None and floor is None:
        return None, {}
    base = [k for k in results[0]["mse_by_pos"] if k not in ("model", "oracle")]
    cl = {k: v for k, v in (closed or {}).items() if k != "oracle"}
    per = {}
    for r in results:
        per[r["seed"]] = plots.mse_vs_theory({f"model s{r['seed']}": _band(r, "model")}, {k: _band(r, k) for k in base}, cl,
                                             os.path.join(fig_dir, f"{name}_s{r['seed']}_mse_theory.png"), floor=floor,
                                             title=f"{name} seed {r['seed']}: MSE by position vs Bayes floor and closed forms")
    M = np.array([r["mse_by_pos"]["model"] for r in results])
    model = {f"model, mean of {len(results)} seed(s) (band: min-max)": (M.mean(0), M.min(0), M.max(0))}
    meas = {}
    for k in base:
        bands = [_band(r, k) for r in results]
        meas[k] = (np.mean([b[0] for b in bands], 0), np.min([b[1] for b in bands], 0), np.max([b[2] for b in bands], 0))
    summ = plots.mse_vs_theory(model, meas, cl, os.path.join(fig_dir, f"{name}_mse_theory_summary.png"), floor=floor,
                               model_lines={f"s{r['seed']}": r["mse_by_pos"]["model"] for r in results},
                               title=f"{name}: MSE by position over {len(results)} seed(s) (thin: each seed) vs theory")
    return summ, per


SWEEP_KEY = ("copy_l0", "claim_copy", "claim_copy_resid", "claim_ns_logit", "claim_ns_ov", "claim_ns_anti", "claim_ns_any")


def _shares_from_json(js):
    """``{setting: {column: "k/n [low, high]"}}`` from the sweep's table ``sweep.json``."""
    return {st: {c: f"{sh[c]['k']}/{sh[c]['n']} [{sh[c]['low']:.2f}, {sh[c]['high']:.2f}]" for c in SWEEP_KEY}
            for st, sh in mechanism_shares(load_table(js)).items()}


def _shares_from_md(text):
    """The same cells read back from the per-setting mechanism tables of ``sweep.md`` (``None`` if it has none)."""
    out, setting = {}, None
    for ln in text.splitlines():
        if ln.startswith("## Setting `"):
            setting = ln.split("`")[1]
        elif setting and ln.startswith("| `"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            col = cells[0].split("`")[1]
            if col in SWEEP_KEY and len(cells) >= 4:
                out.setdefault(setting, {})[col] = f"{cells[1]} {cells[3]}"
    out = {st: v for st, v in out.items() if all(c in v for c in SWEEP_KEY)}
    return out or None


def sweep_section(out_dir, report_root, runs_dir):
    """Lines linking ``report_root/sweep.md`` with its headline table (share of seeds showing each mechanism, 95%
    Wilson interval).  The table reads ``runs_dir/sweep/sweep.json`` if present, else ``sweep.md``; both give the
    same text for the same numbers, so the report does not change with where the numbers were read from."""
    md = os.path.join(report_root, "sweep.md")
    js = os.path.join(runs_dir, "sweep", "sweep.json")
    lines = ["## Across many seeds: the sweep", ""]
    if os.path.exists(md):
        lines += [f"Full section: [`sweep.md`]({_rel(md, out_dir)}) (emergence over training, onset steps, every mechanism column).", ""]
    shares, note = None, None
    try:
        if os.path.exists(js):
            shares = _shares_from_json(js)
        elif os.path.exists(md):
            with open(md) as f:
                shares = _shares_from_md(f.read())
    except Exception as e:  # a half-written table must not break the report
        note = f"(could not read the sweep's table: {type(e).__name__}: {e})"
    if shares:
        n = {st: int(v[SWEEP_KEY[0]].split("/")[1].split()[0]) for st, v in shares.items()}
        desc = dict(MECHANISM_COLUMNS)
        lines += [f"Share of seeds showing each mechanism [95% Wilson interval] in the sweep ({sum(n.values())} finished run(s)):", "",
                  "| setting | seeds | " + " | ".join(f"`{c}`" for c in SWEEP_KEY) + " |", "|---|---|" + "---|" * len(SWEEP_KEY)]
        lines += [f"| `{st}` | {n[st]} | " + " | ".join(v[c] for c in SWEEP_KEY) + " |" for st, v in shares.items()]
        lines += [""] + [f"- `{c}`: {desc[c]}" for c in SWEEP_KEY] + [""]
    elif note:
        lines += [note, ""]
    elif not os.path.exists(md):
        lines += ["No sweep results yet: `minigpt sweep --seeds 20` writes them (`runs/sweep/sweep.json`, `report/sweep.md`).", ""]
    return lines


V2_SWEEPS = ("sweep_v2", "sweep_v2_alt")  # under the report root: <name>/results/<setting>/seed<s>/result.json
V2_KEY = (("v2_copy", "claim 1: copying in layer 0"), ("v2_ns_similar", "claim 2, similar row"),
          ("v2_ns_dissimilar", "claim 2, dissimilar row"), ("v2_both", "both claims in one run"))


def verdict_word(k, n):
    """The words for a share of seeds, from its 95% Wilson interval (docs/interp.md, "Verdicts over seeds"): most seeds
    when the interval lies above 1/2, a minority when it lies below 1/2 (rarely: below 0.2), about half otherwise."""
    if n == 0:
        return "not measured"
    lo, hi = wilson(k, n)
    if lo > 0.5:
        return "holds in most seeds"
    if hi < 0.2:
        return "rarely holds"
    if hi < 0.5:
        return "holds in a minority of seeds"
    return "holds in about half of the seeds"


def _md_sections(path):
    """``{heading: lines}`` of every ``## heading`` section of a markdown file, blank lines at either end dropped
    (``{}`` when the file does not exist)."""
    if not os.path.exists(path):
        return {}
    out, heading = {}, None
    with open(path) as f:
        for line in f.read().splitlines():
            if line.startswith("## "):
                heading = line[3:]
                out[heading] = []
            elif heading is not None:
                out[heading].append(line)
    for lines in out.values():
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
    return out


def verdict_section(out_dir, report_root):
    """The verdict of each claim under definitions v2: share of seeds [95% Wilson interval] per setting, from the
    committed sweep results (``report_root/sweep_v2*/results``), the circuit figure of the story, and what the
    last-layer heads compute beside the theory (the tables of ``report_root/refinement.md``)."""
    rows = []
    for name in V2_SWEEPS:
        rows += load_results(os.path.join(report_root, name, "results"))
    rows = [r for r in rows if r.get("v2_copy") is not None]
    lines = ["## The verdict (definitions v2)", ""]
    docs = _rel(os.path.join(os.path.dirname(os.path.abspath(report_root)), "docs", "interp.md"), os.path.abspath(out_dir))
    if not rows:
        return lines + ["No definitions-v2 sweep results yet (`minigpt sweep --preset paper --seeds 100 --out runs/sweep_v2 "
                        "--report report/sweep_v2`, then commit `report/sweep_v2/results`; docs/sweeps.md).", ""]
    shares = mechanism_shares(rows)
    lines += [f"Each claim under [definitions v2]({docs}#definitions-v2-issue-14-fixed-before-any-run-under-them), fixed before the runs "
              "that use them: the share of seeds for which it holds, with its 95% Wilson interval (the words name the interval: "
              "most seeds when it lies above 1/2, a minority below 1/2, rarely below 0.2, about half otherwise). Each seed trains "
              "the full preset (2000 steps for `paper`) with its own initialisation and data; the per-seed results are in "
              + ", ".join(f"[`{n}`]({_rel(os.path.join(report_root, n, 'sweep.md'), out_dir)})" for n in V2_SWEEPS
                          if os.path.exists(os.path.join(report_root, n, "sweep.md"))) + ".", ""]
    header = ["setting", "seeds"] + [d for _, d in V2_KEY] + ["term copied (runs)", "earlier readings, not counted: copying head / anti-copy"]
    body = []
    for setting, sh in shares.items():
        rs = [r for r in rows if r["setting"] == setting]
        cell = lambda c: f"**{verdict_word(sh[c]['k'], sh[c]['n'])}**: {sh[c]['k']}/{sh[c]['n']} [{sh[c]['low']:.2f}, {sh[c]['high']:.2f}]"  # noqa: E731
        terms = copied_terms_text(rs) or "-"
        old = f"{sh['copy_l0']['k']}/{sh['copy_l0']['n']} / {sh['ns_anti_last']['k']}/{sh['ns_anti_last']['n']}"
        body.append([f"`{setting}`", str(len(rs))] + [cell(c) for c, _ in V2_KEY] + [terms, old])
    lines += [_table(header, body), ""]
    lines += ["The earlier readings stay visible and are not counted: the residual reading of claim 1 fails whenever the "
              "copying head exists, and the anti-copy reading of claim 2 holds for nearly every last-layer head whatever it "
              f"attends to ([docs/interp.md]({docs}#definitions-v2-issue-14-fixed-before-any-run-under-them) says why). The "
              "per-setting sections below (5 seeds of `paper` at 1200 steps, 2 of each alternative) use those readings.", ""]
    story_dir = os.path.join(report_root, "figures", "story")
    fig = os.path.join(story_dir, "figures", "circuit.png")
    if os.path.exists(fig):
        lines += ["### The circuit, with path patching", "",
                  f"![the circuit of paper seed 0 with measured path effects]({_rel(fig, out_dir)})", "",
                  f"Paper seed 0 (the shipped checkpoint); every number on an edge is measured, the method and the rest of the "
                  f"story in [`STORY.md`]({_rel(os.path.join(story_dir, 'STORY.md'), out_dir)}).", ""]
    ref = os.path.join(report_root, "refinement.md")
    sections = _md_sections(ref)
    heads, theory = sections.get("The trained last-layer heads"), sections.get("The best single head in theory (same prior, exact quadrature)")
    reading = sections.get("Reading")
    if heads and theory:
        lines += ["### What the last-layer heads compute, beside the theory", "",
                  f"From [`refinement.md`]({_rel(ref, out_dir)}) (paper seed 0). The trained heads:", ""]
        lines += heads + [""]
        sub = sections.get("The theory's pattern substituted into the trained heads")
        if sub:
            lines += ["The theory's similarity pattern, fitted to each head and substituted for its own:", ""] + sub + [""]
        lines += ["The best single similarity head in theory on the same prior:", ""] + theory + [""]
        lines += (reading + [""]) if reading else []
        over = _md_sections(os.path.join(report_root, "substitution.md")).get("Summary")
        if over:
            lines += [f"Beyond seed 0, the same substitution over a sweep's seeds ([`substitution.md`]({_rel(os.path.join(report_root, 'substitution.md'), out_dir)})):", ""]
            lines += over + [""]
    return lines


def write_report(out_dir, groups, meta):
    os.makedirs(out_dir, exist_ok=True)

    fig_dir = os.path.join(out_dir, "figures")
    report_root = meta.get("report_root") or out_dir
    docs = _rel(os.path.join(os.path.dirname(os.path.abspath(report_root)), "docs", "interp.md"), os.path.abspath(out_dir))
    lines = ["# Reproduction report: copying in layer 0, negative similarity heads in the last layer", ""]
    lines += [f"Generated by `{meta['command']}` ({meta['mode']} mode; its run time is not written here, so the same numbers give the same "
              "file). Every number below is measured by "
              f"`minigpt.interp` on held-out sequences; the definitions are in [`docs/interp.md`]({docs}) and "
              "were fixed before these results were produced (the residual reading of the copy claim was added after a first "
              "paper-preset run, as the docs say). Nothing here is tuned to agree with the paper.", ""]
    if meta["mode"] == "quick":
        full = os.path.join(report_root, "REPORT.md")
        lines += ["**Quick mode**: small checkpoints shipped in `report/checkpoints/` (see its README) were re-analysed; they are "
                  "smaller and shorter-trained than the `paper` preset, so treat the verdicts as a smoke test of the pipeline, "
                  f"not as the result. The full report, from `minigpt reproduce`, is [`{os.path.basename(full)}`]({_rel(full, out_dir)}) "
                  "and is not touched by `--quick`.", ""]
    ext = os.path.join(report_root, "extensions.md")
    more = []
    if os.path.exists(os.path.join(report_root, "sweep.md")):
        more.append(f"[the sweep over many seeds]({_rel(os.path.join(report_root, 'sweep.md'), out_dir)})")
    if os.path.exists(ext):
        more.append(f"[Beyond the paper: vector recurrences and polynomial sequences]({_rel(ext, out_dir)})")
    if more:
        lines += ["See also: " + "; ".join(more) + ".", ""]
    lines += verdict_section(out_dir, report_root)
    # summary of the earlier readings across settings
    lines += ["## Earlier readings by setting (not the verdict)", ""]
    srows = []
    for name, results in groups.items():
        v = verdicts(results)
        cfg = results[0].get("config") or {}
        desc = "paper preset" if name == "paper" else meta.get("alternatives", {}).get(name, name)
        srows.append([f"`{name}`", desc, v["copy"]["text"], v["copy_resid"]["text"], v["negsim_logit"]["text"], v["negsim_ov"]["text"], v["negsim_anti"]["text"],
                      f"{np.mean([r['mse_t2']['model'] for r in results]):.2e}", str(results[0].get("step", cfg.get("train", {}).get("steps", "?")))])
    lines += [_table(["setting", "what", "L0 copying head", "L0 copy estimate (probe)", "NS logit", "NS OV", "NS anti-copy", "mean model MSE t>=2", "steps"], srows), ""]
    lines += ["NS = negative similarity heads in the last layer that matter (ablation at least doubles the MSE), under each of "
              "the three candidate readings of the term.", ""]
    # training curves
    hist = {f"{n} s{r['seed']}": r["history"] for n, rs in groups.items() for r in rs if r.get("history")}
    if hist:
        p = plots.training_curves(hist, os.path.join(fig_dir, "training_curves.png"), title="Training curves (all runs)")
        lines += [f"![training curves]({_rel(p, out_dir)})", ""]
    for name, results in groups.items():
        lines += [f"## Setting `{name}`", ""]
        cfg = results[0].get("config") or {}
        if cfg.get("model"):
            m, d = cfg["model"], cfg["data"]
            lines += [f"Model: {m['n_layers']} layers, d_model {m['d_model']}, {m['n_heads']} heads, "
                      f"{'attention-only' if m['attn_only'] else 'd_mlp ' + str(m['d_mlp'])}, {'LayerNorm' if m['normalization_type'] == 'LN' else 'no LayerNorm'}. "
                      f"Data: a ~ {tuple(d['a'])}, b ~ {tuple(d['b'])}, x0 ~ {tuple(d['x0'])}, {d['length']} terms. "
                      f"Steps: {results[0].get('step')}.", ""]
        lines += ["### Claims", "", claims_table(results), ""]
        lines += ["### Findings", ""] + findings(results) + [""]
        lines += [f"### MSE (held-out, {results[0].get('n_eval', 1024)} sequences)", "", _mse_summary(results), ""]
        summ, per = mse_figures(name, results, fig_dir)
        if summ:
            lines += ["Model against theory: the Bayes floor (`theory.bayes.bayes_mse`, dashed; 0 from t = 2 on, drawn at 1e-7) and every "
                      "baseline's closed-form expected MSE (`theory.bayes.baseline_mse`, lines), with the baselines' Monte-Carlo "
                      "measurements (points, 95% bootstrap bars; over seeds: the range of the per-seed bars).", "",
                      f"![MSE by position vs theory, all seeds]({_rel(summ, out_dir)})", "",
                      "Per seed: " + ", ".join(f"[s{s_}]({_rel(p_, out_dir)})" for s_, p_ in per.items()) + ".", ""]
        lines += _closed_text(results)
        lines += ["### Idealised-head fits", ""] + _fits_text(results)
        r0 = results[0]
        figs = r0.get("figures") or {}
        if figs:
            lines += [f"Figures for seed {r0['seed']}:", ""]
            for key, cap in (("mse", "MSE by position vs baselines"), ("attention", "attention patterns"), ("lens", "prediction lens"),
                             ("ablation_resample", "resample ablation"), ("ablation_zero", "zero ablation"),
                             ("ablation_by_pos", "ablation by position"), ("patch_heads_a", "head patching (a)"),
                             ("patch_resid_a", "residual patching (a)"), ("patch_heads_b", "head patching (b)"),
                             ("patch_heads_x0", "head patching (x0)"), ("logit_vs_sim", "logits vs similarity")):
                if key in figs:
                    lines.append(f"![{cap}]({_rel(figs[key], out_dir)})")
            lines.append("")
        lines += ["### Prediction lens", "", "Rows read the residual before each block and the final residual. `recompute`: final LN with "
                  "fresh statistics; `frozen`: the real run's final LN scale.", "", _lens_table(results), ""]
        lines += ["Linear-probe lens (held-out, t >= 2): MSE against x_{t+1} / mean squared distance from x_t:", "",
                  _table(["seed"] + results[0]["probe"]["labels"],
                         [[f"s{r['seed']}"] + [f"{m:.2e} / {q:.2e}" for m, q in zip(r["probe"]["mse"], r["probe"]["mse_vs_xt"])] for r in results]), ""]
        lines += ["### Activation patching", "", "Clean and corrupted sequences share two of (a, b, x0). Restored fraction of the clean "
                  "prediction at the last position.", "", _patch_summary(results), ""]
        lines += ["### Head scores (per seed)", "", "Columns as in `docs/interp.md`; `abl ratio` = MSE at t >= 2 after resample-ablating "
                  "the head / clean MSE.", ""]
        for r in results:
            lines += [f"Seed {r['seed']} (clean MSE t>=2 {r['mse_t2']['model']:.2e}; MSE increase, all positions, when all heads of a layer "
                      "are resample-ablated together: " + ", ".join(f"L{l} +{v:.2e}" for l, v in enumerate(r["layer_ablation_resample"])) + ")", "",
                      _table(TABLE_HEADER, table_rows(r)), ""]
    lines += sweep_section(out_dir, report_root, meta.get("runs") or "runs")
    if os.path.exists(ext):
        lines += ["## Beyond the paper", "", f"Vector recurrences and polynomial sequences: [`extensions.md`]({_rel(ext, out_dir)}).", ""]
    path = os.path.join(out_dir, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
