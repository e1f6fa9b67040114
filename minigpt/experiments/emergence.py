"""Emergence of the mechanisms over training: a training callback that measures the head scores
(``minigpt.interp.head_scores``) and the prediction lens every K steps, the onset step of each
mechanism, and plots of every score and of the loss per position against the step.

One probe record (JSON-able)::

    {"step": 400,
     "mse_by_pos": [pos],                      # model MSE on the fixed probe batch, position t predicts x_{t+1}
     "mse_t2": float,                          # its mean over positions t >= 2
     "lens_t2": {"recompute": [L + 1], "frozen": [L + 1]},   # lens MSE over t >= 2 after each block
     "scores": {col: [L][H] for col in SCORE_KEYS},
     "flags": {mechanism: bool for mechanism in MECHANISMS},  # classify_heads, as in the final analysis
     "strength": {mechanism: float}}           # one number per mechanism, see STRENGTH

Mechanisms (the operational definitions of ``head_scores.classify_heads``; "last" is layer L - 1,
i.e. layer 2 of the paper's three-layer model):

* ``copy_l0``: some layer-0 head is a copying head;  strength: max over layer-0 heads of ``copy``.
* ``ns_logit_last`` / ``ns_ov_last`` / ``ns_anti_last``: some last-layer head is a negative similarity
  head by the logit / OV / anti-copy reading; strengths: min over last-layer heads of ``sim_effect``,
  ``ov_gain``, ``corr_est0`` (more negative = stronger).  ``ns_any_last``: any of the three.

The probe batch is drawn once per run from ``rng([PROBE_SEED, seed])``, so probes at different steps
(and of different runs with the same seed and task) see the same sequences.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..interp.head_scores import THRESHOLDS, classify_heads, head_scores
from ..interp.lens import prediction_lens
from ..interp.plots import plt
from ..io.checkpoint import write_text_atomic

PROBE_SEED = 24680
SCORE_KEYS = ("copy", "current", "previous", "sim_effect", "sim_r2", "ov_gain", "ov_r2", "corr_est0", "dc_rel")
MECHANISMS = ("copy_l0", "ns_logit_last", "ns_ov_last", "ns_anti_last", "ns_any_last")
# mechanism -> (score column, layer ("first"/"last"), reduction over heads, threshold key in THRESHOLDS)
STRENGTH = {
    "copy_l0": ("copy", "first", "max", "copy"),
    "ns_logit_last": ("sim_effect", "last", "min", "sim_effect"),
    "ns_ov_last": ("ov_gain", "last", "min", "ov_gain"),
    "ns_anti_last": ("corr_est0", "last", "min", "corr_est0"),
}


def probe_batch(task, n, seed):
    """The fixed probe sequences of one run: ``(x [n, pos], y [n, pos])``."""
    b = task.sample(n, np.random.default_rng([PROBE_SEED, seed]))
    return b.inputs, b.targets


def probe(model, x, y, step):
    """One probe record of ``model`` on ``(x, y)`` (see the module docstring)."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    with np.errstate(all="ignore"):
        s = head_scores(model, x64, y64)
        _, cache = model.run_with_cache(x64)
        c = classify_heads(s)
        lens = {}
        for ln in ("recompute", "frozen"):
            preds, _ = prediction_lens(model, cache, ln)  # [L + 1, B, T]
            lens[ln] = [float(v) for v in ((preds - y64[None]) ** 2)[:, :, 2:].mean(axis=(1, 2))]
    d = preds[-1] - y64  # the last lens row is exactly the model's output
    mse = (d * d).mean(0)  # [pos]
    last = model.cfg.n_layers - 1
    flags = {"copy_l0": bool(c["copy"][0].any())}
    for r in ("logit", "ov", "anti", "any"):
        flags[f"ns_{r}_last"] = bool(c["ns_" + r][last].any())
    strength = {}
    for mech, (col, layer, red, _) in STRENGTH.items():
        row = s[col][0 if layer == "first" else last]
        strength[mech] = float(row.max() if red == "max" else row.min())
    return {"step": int(step), "mse_by_pos": mse.tolist(), "mse_t2": float(mse[2:].mean()), "lens_t2": lens,
            "scores": {k: s[k].tolist() for k in SCORE_KEYS}, "flags": flags, "strength": strength}


class EmergenceProbe:
    """Training callback ``fn(step, model, record)``: a probe record every ``every`` steps (and at the last
    step ``final_step``), kept in ``self.records`` and, if ``path`` is given, rewritten atomically to that
    JSON file after every probe (so an interrupted run keeps what it measured).

    Callbacks only run at evaluation steps, so ``every`` should be a multiple of ``train.eval_every``
    (``minigpt sweep`` sets ``train.eval_every = every``).  Records loaded from ``path`` are kept up to
    ``keep_until`` (the step a resumed run restarts from); later ones are dropped."""

    def __init__(self, task, seed, every, final_step=None, n=256, path=None, keep_until=None):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.x, self.y = probe_batch(task, n, seed)
        self.every, self.final_step, self.path = int(every), final_step, path
        self.records = []
        if path is not None and keep_until is not None and os.path.exists(path):
            self.records = [r for r in load(path) if r["step"] <= keep_until]

    def has(self, step):
        return any(r["step"] == step for r in self.records)

    def measure(self, step, model):
        self.records = [r for r in self.records if r["step"] < step]
        self.records.append(probe(model, self.x, self.y, step))
        if self.path is not None:
            save(self.path, self.records)

    def __call__(self, step, model, record=None):
        if step % self.every == 0 or step == self.final_step:
            self.measure(step, model)


def save(path, records):
    write_text_atomic(path, json.dumps(records))  # a per-process temporary name: two writers never share one


def load(path):
    with open(path) as f:
        return json.load(f)


def onset(records, mechanism):
    """First probe step from which ``mechanism``'s flag stays true to the end (None if it is false at the end)."""
    steps = [r["step"] for r in records]
    flags = [r["flags"][mechanism] for r in records]
    if not flags or not flags[-1]:
        return None
    i = len(flags) - 1
    while i > 0 and flags[i - 1]:
        i -= 1
    return steps[i]


def largest_jump(records, mechanism):
    """Largest change of the mechanism's strength between two consecutive probes, as a share of its total
    range over training (1: all of it in one interval, a phase change at this resolution; ~1/n_probes:
    gradual).  None with fewer than 3 probes or a flat strength."""
    v = np.array([r["strength"][mechanism] for r in records], np.float64)
    if len(v) < 3 or not np.isfinite(v).all():
        return None
    rng = v.max() - v.min()
    return float(np.abs(np.diff(v)).max() / rng) if rng > 0 else None


def summary(records):
    """``{mechanism: {"final": bool, "onset": step or None, "jump": float or None}}`` for one run."""
    out = {}
    for m in MECHANISMS:
        out[m] = {"final": bool(records[-1]["flags"][m]) if records else False, "onset": onset(records, m),
                  "jump": largest_jump(records, m) if m in STRENGTH else None}
    return out


# ----------------------------------------------------------------------------- plots
def _threshold(key):
    return THRESHOLDS[key]


def plot_run(records, path, title=""):
    """One run: loss per position, lens per layer, and every head's copy (layer 0), sim effect, OV gain and
    r(dc, est0) (last layer) against the step, with the definitions' thresholds dashed.  Returns ``path``."""
    steps = np.array([r["step"] for r in records])
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax = axes[0, 0]
    mse = np.array([r["mse_by_pos"] for r in records])  # [probes, pos]
    cmap = plt.get_cmap("viridis")
    for t in range(mse.shape[1]):
        ax.plot(steps, np.maximum(mse[:, t], 1e-12), color=cmap(t / max(1, mse.shape[1] - 1)), lw=1, label=f"t={t}" if t in (0, 1, 2, mse.shape[1] - 1) else None)
    ax.set(yscale="log", xlabel="step", ylabel="MSE", title="loss per position (probe batch)")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for ln, style in (("recompute", "-"), ("frozen", ":")):
        lens = np.array([r["lens_t2"][ln] for r in records])
        for i in range(lens.shape[1]):
            ax.plot(steps, np.maximum(lens[:, i], 1e-12), style, color=f"C{i}", label=f"{'embed' if i == 0 else f'after block {i - 1}'} ({ln})" if ln == "recompute" or i == 0 else None)
    ax.set(yscale="log", xlabel="step", ylabel="MSE t>=2", title="prediction lens (solid recompute, dotted frozen)")
    ax.legend(fontsize=7)
    panels = [("copy", 0, "copy", "layer-0 copy score"), ("sim_effect", -1, "sim_effect", "last-layer sim effect (nats)"),
              ("ov_gain", -1, "ov_gain", "last-layer OV gain"), ("corr_est0", -1, "corr_est0", "last-layer r(dc, layer-0 estimate)")]
    for ax, (col, layer, th, label) in zip(axes.ravel()[2:], panels):
        v = np.array([r["scores"][col][layer] for r in records])  # [probes, H]
        L = len(records[0]["scores"][col]) if records else 0
        li = layer if layer >= 0 else L + layer
        for h in range(v.shape[1]):
            ax.plot(steps, v[:, h], marker=".", label=f"L{li}H{h}")
        ax.axhline(_threshold(th), ls="--", color="k", lw=0.8)
        ax.set(xlabel="step", title=label)
        ax.legend(fontsize=7)
    return _finish(plt, fig, path, title)


def plot_setting(runs, path, title=""):
    """Several runs of one setting (``runs``: a list of record lists): each mechanism's strength per seed
    (thin) and the median (thick) against the step, the share of seeds with each mechanism, and the
    median loss per position.  Returns ``path``."""
    runs = [r for r in runs if r]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (mech, (col, _, _, th)) in zip(axes.ravel()[:4], STRENGTH.items()):
        curves = []
        for recs in runs:
            s = [r["step"] for r in recs]
            v = [r["strength"][mech] for r in recs]
            ax.plot(s, v, color="C0", alpha=0.25, lw=0.8)
            curves.append((s, v))
        _median_line(ax, curves)
        ax.axhline(_threshold(th), ls="--", color="k", lw=0.8)
        ax.set(xlabel="step", title=f"{mech}: {'max' if mech == 'copy_l0' else 'min'} {col} per seed")
    ax = axes[1, 1]
    for i, mech in enumerate(MECHANISMS):
        curves = [([r["step"] for r in recs], [float(r["flags"][mech]) for r in recs]) for recs in runs]
        _median_line(ax, curves, mean=True, color=f"C{i}", label=mech)
    ax.set(xlabel="step", ylabel="share of seeds", ylim=(-0.05, 1.05), title="share of seeds with each mechanism")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    if runs:
        T = len(runs[0][-1]["mse_by_pos"])
        cmap = plt.get_cmap("viridis")
        for t in range(T):
            curves = [([r["step"] for r in recs], [r["mse_by_pos"][t] for r in recs]) for recs in runs]
            _median_line(ax, curves, color=cmap(t / max(1, T - 1)), lw=1, label=f"t={t}" if t in (0, 1, 2, T - 1) else None)
    ax.set(yscale="log", xlabel="step", ylabel="median MSE over seeds", title="loss per position")
    ax.legend(fontsize=7)
    return _finish(plt, fig, path, title)


def _finish(plt, fig, path, title):
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _median_line(ax, curves, mean=False, color="k", lw=2, label=None):
    """Median (or mean) over runs at the steps every run probed."""
    if not curves:
        return
    common = sorted(set.intersection(*(set(s) for s, _ in curves)))
    if not common:
        return
    vals = np.array([[dict(zip(s, v))[c] for c in common] for s, v in curves])
    y = vals.mean(0) if mean else np.median(vals, 0)
    ax.plot(common, np.maximum(y, 1e-12) if ax.get_yscale() == "log" else y, color=color, lw=lw, label=label)
