"""Analysis of models trained on the tasks beyond the paper (``LinearRecurrence``, ``PolynomialSequence``)
and the report section ``report/extensions.md``.

    extensions_report({"linear2": "runs/ext_linear2", "poly2": "runs/ext_poly2"}, out="report/extensions.md")

or ``python -m minigpt.experiments.extensions --run linear2=runs/ext_linear2 --run poly2=runs/ext_poly2``.  A run is a
run folder (with ``checkpoint.npz``) or a checkpoint file; its data config names the task.

Per task it measures, on fresh held-out sequences:

* MSE by position of the model and of every baseline (``baselines_ext``); the headline number is the
  mean over positions t >= ``exact_from(task)`` (where the exact solver is defined), and the ratio
  copy / model there;
* attention: the mean pattern of every head and its ``current`` / ``previous`` / ``first`` scores
  (mean attention on key t, t-1, 0 over queries t >= 1);
* copy probes per head: R^2 of the best linear read-out (least squares with intercept, fitted on one
  half of the sequences, scored on the other) of x_t and of x_{t-1} from the head's output
  ``z_h W_O[h]``; ``copy = max(min(current, probe_cur), min(previous, probe_prev))`` as in
  ``interp.head_scores`` (>= 0.5: a copying head), generalised to vector terms;
* similarity of the logits (vector generalisation of ``interp.head_scores.similarity_fit``): within
  each attention row, centred logits regressed on x_t . x_j, ||x_t - x_j|| and key-position dummies;
  ``sim_effect`` = alpha sd(x_t . x_j) - beta sd(||x_t - x_j||) in nats (< 0: prefers the *least*
  similar terms) and ``sim_r2`` (partial R^2 of the two similarity regressors);
* head ablation (zero and mean): rise of the mean MSE at t >= exact_from;
* the residual stream, read two ways after every block: the prediction lens (``interp.lens.readout``,
  LayerNorm recomputed) scored against the target and against x_t, and linear probes (R^2 of x_t and
  of the correction x_{t+1} - x_t).  The probes of x_t are 1 from the embeddings on (the skip path
  carries x_t), so they cannot show a copy stage; the lens can: *copy-then-refine* is declared when
  (i) the lens after block 0 reads x_t (R^2 >= 0.9 against x_t, and closer to x_t than to the target),
  and (ii) the model's error at t >= exact_from is at least 10x below copying and the probe R^2 of the
  correction rises from after block 0 to the final residual.

For scalar tasks (polynomials) ``interp.head_scores`` and ``classify_heads`` are also reported (the
paper's copying / negative-similarity definitions, unchanged).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from ..interp import plots
from ..interp.ablation import ablate_hook
from ..interp.head_scores import classify_heads, head_labels, head_scores
from ..interp.lens import prediction_lens
from ..io.checkpoint import save_checkpoint
from ..nn.resid import accumulated_resid, head_results
from ..tasks import baselines_ext
from ..tasks.data import exact_from, task_name
from ..training.loop import predict
from ..training.run import load_run

FIG_DIR = "figures/extensions"
HEADER = """## Beyond the paper: vector recurrences and polynomial sequences

The two next steps the paper names, with the same measurements as the scalar task (``minigpt.experiments.extensions``).

* ``LinearRecurrence(dim=k)``: x_{n+1} = A x_n + b in R^k, read in and out through d_in = d_out = k. A = rho M / s(M)
  with M Gaussian, rho ~ U(0, 1) and s the spectral radius of M (so max |eigenvalue| = rho; draws whose powers
  grow past ||A^n|| = 4 are redrawn); b, x0 ~ U(-1, 1)^k. The exact solver needs the k + 2 terms x_{t-k-1} .. x_t:
  x_{t+1} = x_t + D_1 D_0^+ d_{t-1} (``theory.vector``), so it is defined from position t = k + 1.
* ``PolynomialSequence(degree=m)``: x_n = p(n / (length - 1)) with coefficients ~ U(-1, 1), so |x_n| <= m + 1.
  The exact solver is the order-(m+1) finite difference x_{t+1} = sum_i (-1)^{i+1} C(m+1, i) x_{t+1-i}
  (``theory.polynomial``), defined from t = m.

Baselines: copy (x_t), exact (above), least squares (regress x_{i+1} on (x_i, 1) over the prefix / fit a degree-m
polynomial to the prefix), linear extrapolation 2 x_t - x_{t-1} (polynomials), oracle (true parameters). All MSEs
are per term (averaged over the k coordinates) on fresh held-out sequences. Definitions of the head scores and of
the copy-then-refine criterion: the docstring of ``minigpt/experiments/extensions.py``.
"""


# ----------------------------------------------------------------------------- loading
def export_model(run, path):
    """Save the model of a run (folder or checkpoint) as a bare model file that keeps its data config
    (no optimizer state: about a third of the size); ``load_run`` reads it back."""
    loaded = load_run(run)
    model, task = loaded.model, loaded.task
    save_checkpoint(path, model.params, {"model": model.cfg.to_dict(), "data": task.spec()})
    return path


def _vec(a):
    a = np.asarray(a, np.float64)
    return a[..., None] if a.ndim == 2 else a  # [B, T, k]


# ----------------------------------------------------------------------------- error by position
def errors(model, task, n=4096, seed=12345):
    """``{name: squared errors [n, pos]}`` (summed over vector coordinates / dim, i.e. the MSE per term) for the
    model and every baseline, on ``n`` fresh sequences (seed ``seed``)."""
    batch = task.sample(n, np.random.default_rng(seed))
    y = _vec(batch.targets)
    preds = {"model": predict(model, batch.inputs)}
    preds.update(baselines_ext.all_predictions(batch, task))
    return {k: ((_vec(p) - y) ** 2).mean(-1) for k, p in preds.items()}, batch


def summary(sq: dict, task) -> dict:
    """Means over positions t >= exact_from(task) and the copy / model ratio there."""
    t0 = exact_from(task)
    means = {k: float(v[:, t0:].mean()) for k, v in sq.items()}
    return {"exact_from": t0, "mean_from_t0": means, "copy_over_model": means["copy"] / means["model"]}


# ----------------------------------------------------------------------------- probes and head scores
def probe_r2(feats, target, train_frac=0.5):
    """Held-out R^2 of the least-squares linear read-out (with intercept) of ``target [N, k]`` from ``feats [N, d]``."""
    feats = np.asarray(feats, np.float64).reshape(len(feats), -1)
    target = np.asarray(target, np.float64).reshape(len(target), -1)
    n = int(len(feats) * train_frac)
    Z = np.concatenate([feats, np.ones((len(feats), 1))], 1)
    W, *_ = np.linalg.lstsq(Z[:n], target[:n], rcond=None)
    res = target[n:] - Z[n:] @ W
    tot = target[n:] - target[:n].mean(0)
    return float(1 - (res**2).sum() / max((tot**2).sum(), 1e-300))


def _seq_split(a, t_min):
    """[B, T, ...] -> [T', B, ...] rows for t >= t_min, flattened position-major so halves split by sequence."""
    return np.swapaxes(a[:, t_min:], 0, 1)


def _flat_by_sequence(a):
    """[B, T', ...] -> [B * T', ...] with sequences contiguous (first half of rows = first half of sequences)."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def similarity_fit(scores, x, t_min=2):
    """Vector version of ``interp.head_scores.similarity_fit``: ``scores [B, T, T]``, ``x [B, T, k]``."""
    B, T, _ = x.shape
    sse_f = sse_r = 0.0
    alphas, betas, w, sd1, sd2 = [], [], [], 0.0, 0.0
    for t in range(t_min, T):
        n = t + 1
        y = scores[:, t, :n]
        f1 = np.einsum("bk,bjk->bj", x[:, t], x[:, :n])  # x_t . x_j
        f2 = np.linalg.norm(x[:, t : t + 1] - x[:, :n], axis=-1)  # ||x_t - x_j||
        D = np.broadcast_to(np.eye(n)[None], (B, n, n))[..., 1:]

        def centre(a):
            return a - a.mean(1, keepdims=True)

        yc = centre(y).reshape(-1)
        Xs = centre(np.stack([f1, f2], -1)).reshape(B * n, 2)
        Xr = centre(D).reshape(B * n, -1)
        Xf = np.concatenate([Xs, Xr], 1)
        cf, *_ = np.linalg.lstsq(Xf, yc, rcond=None)
        cr, *_ = np.linalg.lstsq(Xr, yc, rcond=None) if Xr.shape[1] else (np.zeros(0),)
        ef, er = yc - Xf @ cf, yc - (Xr @ cr if Xr.shape[1] else 0)
        sse_f, sse_r = sse_f + (ef * ef).sum(), sse_r + (er * er).sum()
        alphas.append(cf[0])
        betas.append(cf[1])
        w.append(B * n)
        sd1 += Xs[:, 0].var() * B * n
        sd2 += Xs[:, 1].var() * B * n
    if not w:
        return dict(alpha=0.0, beta=0.0, sim_r2=0.0, sim_effect=0.0)
    w = np.array(w, np.float64)
    alpha, beta = float(np.average(alphas, weights=w)), float(np.average(betas, weights=w))
    return dict(alpha=alpha, beta=beta, sim_r2=float((sse_r - sse_f) / sse_r) if sse_r > 0 else 0.0,
                sim_effect=float(alpha * np.sqrt(sd1 / w.sum()) - beta * np.sqrt(sd2 / w.sum())))


def head_table(model, x, y, t_min=1):
    """``{column: [L, H]}`` with current, previous, first, probe_cur, probe_prev, copy, sim_effect, sim_r2."""
    xv = _vec(x)
    _, cache = model.run_with_cache(x)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    cols = ("current", "previous", "first", "probe_cur", "probe_prev", "copy", "sim_effect", "sim_r2")
    out = {c: np.zeros((L, H)) for c in cols}
    T = xv.shape[1]
    idx = np.arange(T)
    for l in range(L):
        A = cache["pattern", l].astype(np.float64)  # [B, H, T, T]
        S = cache["attn_scores", l].astype(np.float64)
        R = head_results(cache, l).astype(np.float64)  # [B, T, H, D]
        for h in range(H):
            a = A[:, h]
            cur = a[:, idx, idx][:, t_min:].mean()
            prev = a[:, idx[1:], idx[:-1]][:, max(t_min, 1) - 1 :].mean()
            first = a[:, :, 0][:, t_min:].mean()
            p_cur = probe_r2(_flat_by_sequence(R[:, t_min:, h]), _flat_by_sequence(xv[:, t_min:]))
            p_prev = probe_r2(_flat_by_sequence(R[:, 1:, h]), _flat_by_sequence(xv[:, :-1]))
            fit = similarity_fit(S[:, h], xv)
            vals = dict(current=cur, previous=prev, first=first, probe_cur=p_cur, probe_prev=p_prev,
                        copy=max(min(cur, p_cur), min(prev, p_prev)), sim_effect=fit["sim_effect"], sim_r2=fit["sim_r2"])
            for k, v in vals.items():
                out[k][l, h] = v
        out.setdefault("pattern", []).append(A.mean(0))  # [H, T, T]
    out["pattern"] = np.concatenate(out["pattern"])  # [L * H, T, T]
    return out


def ablation_table(model, x, y, t0, methods=("zero", "mean")):
    """``{method: [L, H]}`` rise of the mean MSE at t >= t0 when one head's z is ablated."""
    yv = _vec(y)
    base = ((_vec(model(x)) - yv) ** 2)[:, t0:].mean()
    _, c = model.run_with_cache(x, names_filter=lambda nm: nm.endswith("attn.hook_z"))
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out = {"base": float(base)}
    for m in methods:
        tab = np.zeros((L, H))
        for l in range(L):
            for h in range(H):
                hook = ablate_hook(h, m, c["z", l], None)
                pred = model.run_with_hooks(x, [(f"blocks.{l}.attn.hook_z", hook)])
                tab[l, h] = ((_vec(pred) - yv) ** 2)[:, t0:].mean() - base
        out[m] = tab
    return out


def residual_reading(model, x, y, t0):
    """Per accumulated residual (embeddings, after block 0, .., final): lens MSE vs target and vs x_t, probe R^2
    of x_t and of the target, all at t >= t0."""
    xv, yv = _vec(x), _vec(y)
    _, cache = model.run_with_cache(x)
    lens, labels = prediction_lens(model, cache, ln="recompute")
    stack, _ = accumulated_resid(cache)
    rows = []
    var_x = float(xv[:, t0:].var(axis=(0, 1)).mean())
    for i, lab in enumerate(labels):
        p = _vec(lens[i])
        r = stack[i][:, t0:].astype(np.float64)
        mse_copy = float(((p - xv) ** 2)[:, t0:].mean())
        rows.append(dict(
            site=lab,
            lens_mse_target=float(((p - yv) ** 2)[:, t0:].mean()),
            lens_mse_copy=mse_copy,
            lens_r2_x_t=1 - mse_copy / var_x,
            probe_x_t=probe_r2(_flat_by_sequence(r), _flat_by_sequence(xv[:, t0:])),
            probe_correction=probe_r2(_flat_by_sequence(r), _flat_by_sequence((yv - xv)[:, t0:])),
        ))
    return rows


def analyse(model, task, n_eval=4096, n_mech=512, seed=12345, fig_dir=None, label=None):
    """Everything ``extensions_report`` prints for one model, as a dict (figures saved under ``fig_dir``)."""
    label = label or task_name(task)
    sq, _ = errors(model, task, n_eval, seed)
    res = {"label": label, "task": task.spec(), "model_cfg": model.cfg.to_dict(), "by_pos": {k: v.mean(0) for k, v in sq.items()}}
    res.update(summary(sq, task))
    t0 = res["exact_from"]
    mb = task.sample(n_mech, np.random.default_rng(seed + 1))
    x, y = mb.inputs, mb.targets
    res["heads"] = head_table(model, x, y)
    res["ablation"] = ablation_table(model, x, y, t0)
    res["resid"] = residual_reading(model, x, y, t0)
    if _vec(x).shape[-1] == 1:  # the scalar toolkit's own definitions apply unchanged

        sc = head_scores(model, x, y)
        res["interp_scores"] = sc
        res["interp_classes"] = classify_heads(sc)
    res["verdict"] = copy_then_refine(res)
    if fig_dir:

        os.makedirs(fig_dir, exist_ok=True)
        res["fig_mse"] = plots.mse_by_position(sq, os.path.join(fig_dir, f"{label}_mse_by_position.png"),
                                               title=f"{label}: MSE by position (exact solver from t = {t0})")
        res["fig_attn"] = plots.attention_patterns(res["heads"]["pattern"], os.path.join(fig_dir, f"{label}_attention.png"),
                                                   head_names=head_labels(model.cfg), n_cols=model.cfg.n_heads,
                                                   title=f"{label}: mean attention patterns")
    return res


def copy_then_refine(res) -> dict:
    """The criteria of the module docstring, with the numbers they rest on."""
    h = res["heads"]
    copy0 = float(h["copy"][0].max())
    after0, final = res["resid"][1], res["resid"][-1]
    copy_stage = after0["lens_r2_x_t"] >= 0.9 and after0["lens_mse_copy"] < after0["lens_mse_target"]
    refine = res["copy_over_model"] >= 10 and final["probe_correction"] > after0["probe_correction"]
    return dict(copy_stage=bool(copy_stage), layer0_best_copy=copy0, lens_r2_x_t_after_block0=after0["lens_r2_x_t"],
                lens_mse_copy_after_block0=after0["lens_mse_copy"], lens_mse_target_after_block0=after0["lens_mse_target"],
                probe_correction_after_block0=after0["probe_correction"], probe_correction_final=final["probe_correction"],
                refine=bool(refine), copy_then_refine=bool(copy_stage and refine))


# ----------------------------------------------------------------------------- markdown
def _f(v):
    return f"{v:.2e}" if (abs(v) < 1e-2 or abs(v) >= 1e3) and v != 0 else f"{v:.3f}"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def section(res, out_dir=".") -> str:
    lab, t0 = res["label"], res["exact_from"]
    names = list(res["by_pos"])
    T = len(res["by_pos"]["model"])
    lines = [f"### {lab}: `{res['task']}`", ""]
    m = res["mean_from_t0"]
    lines.append(f"Mean MSE per term over positions t >= {t0} (where the exact solver is defined): "
                 + ", ".join(f"{k} {_f(v)}" for k, v in m.items())
                 + f". **Copy / model = {res['copy_over_model']:.1f}x.**")
    lines += ["", "MSE by position (t predicts term t + 1):", ""]
    lines.append(_table(["t"] + names, [[t] + [_f(float(res["by_pos"][k][t])) for k in names] for t in range(T)]))
    if "fig_mse" in res:
        lines += ["", f"![MSE by position]({os.path.relpath(res['fig_mse'], out_dir)})",
                  f"![attention]({os.path.relpath(res['fig_attn'], out_dir)})"]
    h, ab = res["heads"], res["ablation"]
    L, H = h["copy"].shape
    lines += ["", f"Heads (queries t >= 1; ablation: rise of the mean MSE at t >= {t0}, base {_f(ab['base'])}):", ""]
    rows = []
    for l in range(L):
        for hh in range(H):
            rows.append([f"L{l}H{hh}"] + [_f(float(h[c][l, hh])) for c in ("current", "previous", "first", "probe_cur", "probe_prev", "copy", "sim_effect", "sim_r2")]
                        + [_f(float(ab["zero"][l, hh])), _f(float(ab["mean"][l, hh]))])
    lines.append(_table(["head", "current", "previous", "first", "probe x_t", "probe x_{t-1}", "copy", "sim_effect", "sim_r2", "zero-abl dMSE", "mean-abl dMSE"], rows))
    if "interp_classes" in res:
        c = res["interp_classes"]
        lab_of = [f"L{l}H{hh}" for l in range(L) for hh in range(H)]
        pick = lambda key: ", ".join(n for n, v in zip(lab_of, np.asarray(c[key]).reshape(-1)) if v) or "none"  # noqa: E731
        lines += ["", "`interp.classify_heads` (the scalar definitions): copying heads: " + pick("copy")
                  + "; negative similarity (logit): " + pick("ns_logit") + "; (OV): " + pick("ns_ov") + "; (anti-copy): " + pick("ns_anti") + "."]
    lines += ["", f"Residual stream at t >= {t0} (lens with LayerNorm recomputed; probes: held-out R^2 of a linear read-out):", ""]
    lines.append(_table(["after", "lens MSE vs target", "lens MSE vs x_t", "lens R^2 of x_t", "probe R^2 x_t", "probe R^2 x_{t+1} - x_t"],
                        [[r["site"], _f(r["lens_mse_target"]), _f(r["lens_mse_copy"]), _f(r["lens_r2_x_t"]), _f(r["probe_x_t"]), _f(r["probe_correction"])]
                         for r in res["resid"]]))
    v = res["verdict"]
    lines += ["", f"Copy-then-refine: **{'yes' if v['copy_then_refine'] else 'no'}**. Copy stage "
              f"{'yes' if v['copy_stage'] else 'no'}: after block 0 the lens reads x_t with R^2 {v['lens_r2_x_t_after_block0']:.3f} "
              f"(MSE {_f(v['lens_mse_copy_after_block0'])} to x_t vs {_f(v['lens_mse_target_after_block0'])} to the target); best layer-0 "
              f"head copy score {v['layer0_best_copy']:.2f}. Refinement {'yes' if v['refine'] else 'no'}: copy/model "
              f"{res['copy_over_model']:.1f}x, probe R^2 of the correction x_{{t+1}} - x_t {v['probe_correction_after_block0']:.3f} after "
              f"block 0 -> {v['probe_correction_final']:.3f} at the end.", ""]
    return "\n".join(lines)


def extensions_report(runs: dict, out="report/extensions.md", n_eval=4096, n_mech=512, seed=12345, figures=True, header=None) -> str:
    """Analyse each run (``{label: run folder or checkpoint}``) and write the markdown section to ``out``
    (figures under ``<dir of out>/figures/extensions``).  Returns the markdown; ``out=None`` writes nothing."""
    out_dir = os.path.dirname(out) if out else "."
    fig_dir = os.path.join(out_dir or ".", FIG_DIR) if (figures and out) else None
    parts = [header if header is not None else HEADER]
    for lab, path in runs.items():
        run = load_run(path)
        model, task = run.model, run.task
        res = analyse(model, task, n_eval, n_mech, seed, fig_dir, lab)
        parts.append(section(res, out_dir or "."))
    md = "\n".join(parts)
    if out:
        os.makedirs(out_dir or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write(md)
    return md


def main(argv=None):
    p = argparse.ArgumentParser(description="analyse models trained on the linear / polynomial tasks")
    p.add_argument("--run", action="append", required=True, metavar="LABEL=PATH", help="run folder or checkpoint")
    p.add_argument("--out", default="report/extensions_results.md")
    p.add_argument("--n-eval", type=int, default=4096)
    p.add_argument("--no-figures", action="store_true")
    a = p.parse_args(argv)
    runs = dict(r.split("=", 1) for r in a.run)
    print(extensions_report(runs, a.out, n_eval=a.n_eval, figures=not a.no_figures))


if __name__ == "__main__":
    main()
