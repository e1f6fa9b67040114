"""The theory of one refining head (``theory.refinement``) held against a trained model's last-layer heads.

    python -m minigpt.experiments.refinement --run report/checkpoints/paper_s0.npz --out report/refinement.md

For the trained model, on held-out sequences (query rows t >= 2):
- the estimate entering the last layer: a linear probe of x_{t+1} on ``resid_pre`` of the last layer (fitted on
  half of the sequences, scored on the other half), its MSE and its slope on x_t;
- per last-layer head: the similarity fit of its pattern (``theory.heads.fit_similarity_pattern``, product logits
  beta x_t x_j plus a positional bias) with its held-out gain over the positional-only pattern
  (``analysis.null_gain``), its OV gain, ``r_sim`` and the claims-v2 flags (``interp.claims``), and the MSE it buys
  (resample ablation at t >= 2).
For the theory, on the same prior: the best single head (product and distance logits, recency bias, gain) on top of
copying and on top of the best linear estimate from (x_t, x_{t-1}), with the positional-only head as the null.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from theory.heads import SIMILARITIES, fit_similarity_pattern
from theory.refinement import ESTIMATES, KINDS, refinement_fit

from ..io.checkpoint import CheckpointError
from .analysis import EVAL_SEED, null_gain
from .claims import THRESHOLDS, claims, probe_fit, similarity_substitution
from .extensions import load_run
from .sweep import run_folders, wilson

REPRODUCES = 0.5  # the theory's pattern reproduces a head's selectivity when it wins back >= half its cost (docs/interp.md)


def trained_side(model, task, n=1024, seed=0, t_min=2):
    """The measured side: the estimate entering the last layer and one row per last-layer head."""
    b = task.sample(n, np.random.default_rng([EVAL_SEED, seed, 11]))
    x, y = b.inputs.astype(np.float64), b.targets.astype(np.float64)
    last = model.cfg.n_layers - 1
    _, cache = model.run_with_cache(x)
    resid = cache["resid_pre", last].astype(np.float64)[:, t_min:]  # [B, T', D]
    target, xt = y[:, t_min:].ravel(), x[:, t_min:].ravel()
    est, cut = probe_fit(resid.reshape(len(target), -1), target, n)
    e, tt, xx = est[cut:], target[cut:], xt[cut:]
    slope = float(np.polyfit(xx, e, 1)[0])
    entering = dict(mse=float(((tt - e) ** 2).mean()), copy_mse=float(((tt - xx) ** 2).mean()), slope_on_xt=slope,
                    model_mse=float(((model(x)[:, t_min:] - y[:, t_min:]) ** 2).mean()))
    v2 = claims(model, x, y, seed=seed, t_min=t_min)
    heads = []
    for r in v2["negsim_rows"]:
        A = cache["pattern", last][:, r["h"]].astype(np.float64)  # [B, T, T]
        fit = fit_similarity_pattern(A[:256], x[:256], positional=True)
        heads.append(dict(head=r["head"], beta=fit["beta"], r2_logits=fit["r2_logits"], **null_gain(A[:512], x[:512], 1),
                          r_sim=r["r_sim"], ov_gain=r["ov_gain"], resample_ratio=r["resample_ratio"],
                          selective_ratio=r["selective_ratio"], pcorr_error=r["pcorr_error"], pcorr_step=r["pcorr_step"],
                          ns_similar=r["ns_similar"], ns_dissimilar=r["ns_dissimilar"],
                          substitution={k: similarity_substitution(model, x, y, last, r["h"], kind=k, t_min=t_min) for k in SIMILARITIES}))
    return dict(entering=entering, heads=heads)


def theory_side(task, nodes=16):
    """``refinement_fit`` for every first estimate and logit kind."""
    return [refinement_fit(task, est, kind, nodes=nodes) for est in ESTIMATES for kind in KINDS]


def _f(v):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if 1e-2 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"
    return str(v)


def _na(v):
    return "n/a" if v is None else v


def _table(header, rows):
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(_f(v) for v in r) + " |" for r in rows]


def render(label, trained, theory, command):
    e = trained["entering"]
    lines = [f"# What the refinement computes: theory against the trained heads of `{label}`", "",
             f"Command: `{command}`", "",
             "## The estimate entering the last layer", "",
             f"A linear probe of x_{{t+1}} on `resid_pre` of the last layer (held out, t >= 2): MSE {_f(e['mse'])}, slope on x_t "
             f"{_f(e['slope_on_xt'])}. Copying: MSE {_f(e['copy_mse'])}. The model's final MSE: {_f(e['model_mse'])}.", "",
             "## The trained last-layer heads", "",
             "beta: product-logit fit of the pattern (with a positional bias); null gain: share of the positional-only pattern's "
             "held-out squared error the fit removes (the fit counts at >= 0.1); r_sim, OV gain, ratios, partial correlations: "
             "`interp.claims` (docs/interp.md, definitions v2).", ""]
    lines += _table(["head", "beta", "null gain", "counts", "r_sim", "OV gain", "resample x", "pattern-avg x", "pcorr(error)",
                     "pcorr(step | x_t)", "NS similar", "NS dissimilar"],
                    [[h["head"], h["beta"], h["null_gain"], h["null_counts"], h["r_sim"], h["ov_gain"], h["resample_ratio"],
                      h["selective_ratio"], h["pcorr_error"], h["pcorr_step"], h["ns_similar"], h["ns_dissimilar"]] for h in trained["heads"]])
    lines += ["", "## The theory's pattern substituted into the trained heads", "",
              "The idealised similarity pattern softmax_j(beta s(x_t, x_j) + P[t, j]) fitted to each head on half the sequences "
              "replaces the head's own pattern on the other half (`claims.similarity_substitution`, docs/interp.md); the null is the "
              "head's position-average pattern. recovered: the share of the null's extra MSE the fitted pattern wins back "
              f"(reproduces at >= {REPRODUCES}, read for heads whose selectivity matters, x{THRESHOLDS['selective']}).", ""]
    lines += _table(["head", "pattern-avg x (held out)"] + [f"{k}: {c}" for k in SIMILARITIES for c in ("beta", "substituted x", "recovered")],
                    [[h["head"], h["substitution"][SIMILARITIES[0]]["avg_ratio"]]
                     + [v for k in SIMILARITIES for v in (h["substitution"][k]["beta"], h["substitution"][k]["sim_ratio"],
                                                          _na(h["substitution"][k]["recovered"]))] for h in trained["heads"]])
    lines += ["", "## The best single head in theory (same prior, exact quadrature)", "",
              "One head adds gamma sum_j softmax_j(beta s(x_t, x_j) + lam (j - t)) x_j (+ offset) to a first estimate; "
              "(beta, lam, gamma) minimise the MSE over t >= 2. `positional`: the best head with beta = 0.", ""]
    lines += _table(["first estimate", "logits", "beta", "lam", "gamma", "MSE before", "MSE after", "gain", "positional only MSE"],
                    [[r["estimate"], r["kind"], r["beta"], r["lam"], r["gamma"], r["mse_estimate"], r["mse_refined"], r["gain"],
                      r["mse_positional"]] for r in theory])
    best = min(theory, key=lambda r: r["mse_refined"])
    lin = next(r for r in theory if r["estimate"] == "linear")
    counts = [h["head"] for h in trained["heads"] if h["null_counts"]]
    lines += ["", "## Reading", "",
              f"In theory one similarity head on the best linear estimate from (x_t, x_{{t-1}}) lowers the MSE from "
              f"{_f(best['mse_estimate'])} to {_f(best['mse_refined'])} ({best['kind']} logits); a positional-only head already gets "
              f"{_f(best['mse_positional'])}, so value similarity itself adds {_f(best['mse_positional'] - best['mse_refined'])}. "
              f"The trained model is far beyond that: the estimate entering its last layer has MSE {_f(e['mse'])} "
              f"({_f(lin['mse_estimate'] / e['mse'])}x below the best linear estimate from two terms) and its final MSE is "
              f"{_f(e['model_mse'])}. Its last layer therefore refines an estimate that is already non-linear, and a single "
              "similarity head on a linear estimate is not a model of what it does. "
              + (f"Similarity fits that beat the positional null: {', '.join(counts)}." if counts else
                 "No last-layer head's product-logit similarity fit beats the positional-only pattern on held-out sequences "
                 "(null gain < 0.1 for every head), so the fitted betas above are not evidence of product-similarity attention; "
                 "r_sim (the position-controlled correlation with -|x_t - x_j|) is the measure of similarity attention here."),
              "",
              "Hand-built against trained: removing the theory's best head from its hand-built model (first estimate plus that "
              f"head) multiplies the MSE by {_f(best['mse_estimate'] / best['mse_refined'])}; resample-ablating the trained last-layer "
              f"heads multiplies the model's MSE by {_f(min(h['resample_ratio'] for h in trained['heads']))} to "
              f"{_f(max(h['resample_ratio'] for h in trained['heads']))}. A hand-built similarity head with fitted parameters does "
              "not reproduce the trained heads' ablation effect (the trained model's heads act on an estimate a single head "
              "cannot build), so no such reproduction is claimed. " + substitution_reading(trained["heads"]), ""]
    return "\n".join(lines)


def substitution_reading(heads):
    """One sentence: does the theory's fitted similarity pattern reproduce the selectivity of the heads whose selectivity
    matters (``selective_ratio`` >= the claims threshold), i.e. win back >= ``REPRODUCES`` of its cost?"""
    sel = [h for h in heads if h["selective_ratio"] >= THRESHOLDS["selective"]]
    if not sel:
        return "No last-layer head's selectivity matters, so substituting the theory's pattern tests nothing here."
    best = {h["head"]: best_kind({k: v["recovered"] for k, v in h["substitution"].items()}) for h in sel}
    ok = [name for name, (_, r) in best.items() if r is not None and r >= REPRODUCES]
    each = ", ".join(f"{name} {_f(r)} ({k})" if r is not None else f"{name} n/a" for name, (k, r) in best.items())
    verdict = (f"It reproduces the selectivity of {', '.join(ok)}" if ok else
               "It reproduces none of them: the trained heads' selectivity is not the theory's similarity head")
    return (f"Substituted into the model, the theory's similarity pattern fitted to each head whose selectivity matters wins "
            f"back at best {each} of what the position-average pattern loses (reproduces at >= {REPRODUCES}). {verdict}.")


# ----------------------------------------------------------------------------- over a sweep's seeds
def run_substitution(run_dir, n=1024, t_min=2):
    """``similarity_substitution`` (both kinds) for the last-layer heads whose selectivity matters in one sweep run
    (``is_selective`` in its ``analysis.json``, definitions v2), on a fresh held-out batch. Cached in
    ``run_dir/substitution.json`` (a generated file in the run folder), so an interrupted pass resumes."""
    cache = os.path.join(run_dir, "substitution.json")
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    with open(os.path.join(run_dir, "analysis.json")) as f:
        a = json.load(f)
    run = load_run(run_dir)
    model, task, last = run.model, run.task, run.model.cfg.n_layers - 1
    b = task.sample(n, np.random.default_rng([EVAL_SEED, int(a["seed"]), 13]))
    x, y = b.inputs.astype(np.float64), b.targets.astype(np.float64)
    rows = []
    for r in a["claims_v2"]["negsim_rows"]:
        if not r["is_selective"]:
            continue
        sub = {k: similarity_substitution(model, x, y, last, r["h"], kind=k, t_min=t_min) for k in SIMILARITIES}
        rows.append(dict(setting=a["setting"], seed=int(a["seed"]), head=r["head"], r_sim=r["r_sim"], ov_gain=r["ov_gain"],
                         selective_ratio=r["selective_ratio"], ns_similar=r["ns_similar"], ns_dissimilar=r["ns_dissimilar"],
                         **{f"{k}_{c}": sub[k][c] for k in SIMILARITIES for c in ("beta", "avg_ratio", "sim_ratio", "recovered")}))
    with open(cache + ".tmp", "w") as f:
        json.dump(rows, f)
    os.replace(cache + ".tmp", cache)
    return rows


def best_kind(recovered):
    """``{kind: recovered}`` -> (kind, recovered) of the kind that recovers most; (None, None) when none has a value."""
    vals = [(k, v) for k, v in recovered.items() if v is not None]
    return max(vals, key=lambda kv: kv[1]) if vals else (None, None)


def best_recovered(row):
    """The larger ``recovered`` of the two similarity kinds of a ``run_substitution`` row (None: nothing to recover)."""
    return best_kind({k: row[f"{k}_recovered"] for k in SIMILARITIES})[1]


def render_sweep(rows, runs, command):
    """Markdown: every selective head's substitution and the shares of heads the theory's pattern reproduces."""
    lines = ["# The theory's similarity pattern substituted into trained heads, over a sweep's seeds", "",
             f"Command: `{command}`", "",
             "For each run, every last-layer head whose selectivity matters (definitions v2: its position-average pattern costs "
             f"x{THRESHOLDS['selective']} or more) gets the idealised similarity pattern of `theory.heads` fitted to it and substituted "
             "for its own (`claims.similarity_substitution`, docs/interp.md): recovered is the share of the position-average "
             f"pattern's extra MSE that the fitted pattern wins back; the theory reproduces the head when the better kind recovers >= {REPRODUCES}.", ""]
    groups = [("every selective last-layer head", rows), ("negative similarity heads, similar row", [r for r in rows if r["ns_similar"]]),
              ("negative similarity heads, dissimilar row", [r for r in rows if r["ns_dissimilar"]])]
    summary = []
    for name, rs in groups:
        k = sum(1 for r in rs if best_recovered(r) is not None and best_recovered(r) >= REPRODUCES)
        lo, hi = wilson(k, len(rs))
        med = float(np.median([best_recovered(r) for r in rs if best_recovered(r) is not None])) if rs else float("nan")
        summary.append([name, len(rs), f"{k}/{len(rs)} [{lo:.2f}, {hi:.2f}]", med])
    settings = sorted({name for name, _ in runs})
    where = "; ".join(f"`{name}` seeds {seed_ranges(s for n, s in runs if n == name)}" for name in settings)
    lines += ["## Summary", "", f"{len(rows)} selective heads in {len(runs)} runs ({where}).", ""]
    lines += _table(["heads", "n", "reproduced (recovered >= %g)" % REPRODUCES, "median best recovered"], summary)
    lines += ["", "## Per head", ""]
    lines += _table(["setting", "seed", "head", "r_sim", "OV gain", "pattern-avg x", "NS similar", "NS dissimilar",
                     "product beta", "product recovered", "distance beta", "distance recovered"],
                    [[r["setting"], r["seed"], r["head"], r["r_sim"], r["ov_gain"], r["selective_ratio"], r["ns_similar"],
                      r["ns_dissimilar"], r["product_beta"], _na(r["product_recovered"]), r["distance_beta"],
                      _na(r["distance_recovered"])] for r in rows])
    return "\n".join(lines) + "\n"


def sweep_substitution(runs, log=print):
    """``run_substitution`` over every finished run (``analysis.json`` and a checkpoint) under ``runs/<setting>/seed*/``,
    seeds in numeric order. Returns (rows, runs as (setting label from ``setting.json``, seed) pairs)."""
    found = run_folders(runs, "analysis.json")
    rows, done = [], []
    for i, (setting_dir, seed, run_dir) in enumerate(found):
        rows += run_substitution(run_dir)
        done.append((setting_label(setting_dir), seed))
        log(f"substitution: {i + 1}/{len(found)} runs, {len(rows)} selective heads")
    return rows, done


def setting_label(setting_dir):
    """A sweep setting's label (``setting.json``), or the folder's name when it has none."""
    try:
        with open(os.path.join(setting_dir, "setting.json")) as f:
            return json.load(f)["setting"]
    except (OSError, ValueError, KeyError):
        return os.path.basename(setting_dir)


def seed_ranges(seeds):
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    out, seeds = [], sorted(set(seeds))
    for s in seeds:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m minigpt.experiments.refinement", description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="report/checkpoints/paper_s0.npz", help="run folder or checkpoint of a scalar affine model")
    ap.add_argument("--out", default="runs/refinement.md", help="markdown file to write (default runs/refinement.md)")
    ap.add_argument("--nodes", type=int, default=16, help="Gauss-Legendre nodes per prior axis (default 16)")
    ap.add_argument("--sweep", default=None, help="a sweep's runs folder (runs/<setting>/seed*/): substitute the theory's "
                    "pattern into every selective last-layer head of every run instead (cached per run, resumes)")
    args = ap.parse_args(argv)
    if args.sweep:
        rows, runs = sweep_substitution(args.sweep)
        if not runs:
            print(f"error: no finished runs (analysis.json) under {args.sweep}/<setting>/seed*/", file=sys.stderr)
            return 2
        text = render_sweep(rows, runs, f"python -m minigpt.experiments.refinement --sweep {args.sweep} --out {args.out}")
    else:
        try:
            run = load_run(args.run)
        except (CheckpointError, OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        label = os.path.basename(args.run.rstrip("/")).removesuffix(".npz")
        text = render(label, trained_side(run.model, run.task), theory_side(run.task, args.nodes),
                      f"python -m minigpt.experiments.refinement --run {args.run} --out {args.out}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
