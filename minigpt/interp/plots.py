"""PNG plots (matplotlib, Agg backend).  Each function saves to ``path`` and returns it.

Attention plots take CircuitsVis argument names: ``attention [head, dest, src]``, ``tokens`` (labels of
the positions) and ``head_names`` (``L0H1``).
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def attention_patterns(attention, path, tokens=None, head_names=None, n_cols=None, title=None):
    """Grid of heatmaps, one per head: ``attention [head, dest, src]`` (e.g. averaged over a batch)."""
    attention = np.asarray(attention)
    n = attention.shape[0]
    n_cols = n_cols or min(n, 4)
    n_rows = int(np.ceil(n / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.5 * n_rows), squeeze=False)
    T = attention.shape[-1]
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(attention[i], cmap="Blues", vmin=0, vmax=1)
        ax.set_title(head_names[i] if head_names else f"head {i}", fontsize=9)
        step = max(1, T // 6)
        ticks = list(range(0, T, step))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        if tokens is not None:
            ax.set_xticklabels([tokens[j] for j in ticks], fontsize=6, rotation=90)
            ax.set_yticklabels([tokens[j] for j in ticks], fontsize=6)
        else:
            ax.tick_params(labelsize=6)
        ax.set_xlabel("src", fontsize=7)
        ax.set_ylabel("dest", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def bootstrap_band(sq_err, n_boot=200, seed=0, q=(2.5, 97.5)):
    """``sq_err [batch, pos]`` -> (mean [pos], lo [pos], hi [pos]) by resampling sequences."""
    rng = np.random.default_rng(seed)
    B = sq_err.shape[0]
    boots = np.stack([sq_err[rng.integers(0, B, B)].mean(0) for _ in range(n_boot)])
    lo, hi = np.percentile(boots, q, axis=0)
    return sq_err.mean(0), lo, hi


def mse_by_position(sq_errs: dict, path, title="MSE by position", floor=None, clip=1e-7, closed=None):
    """``sq_errs {name: [batch, pos] squared errors}``: mean with 95% bootstrap bands, log scale.
    ``floor``: optional ``[pos]`` curve (e.g. the Bayes-optimal MSE) drawn dashed.  Values below ``clip``
    (exact predictors, MSE ~ 1e-30) are drawn at ``clip``.

    ``closed {name: [pos] expected MSE or None}`` (``theory.bayes.baseline_mse``): then the model is drawn as a
    line with its band, each baseline's closed form as a line and its Monte-Carlo measurement as points with
    bootstrap error bars (``mse_vs_theory``)."""
    if closed is not None:
        bands = {k: bootstrap_band(np.asarray(v, np.float64)) for k, v in sq_errs.items()}
        model = {k: v for k, v in bands.items() if k == "model"}
        measured = {k: v for k, v in bands.items() if k != "model"}
        return mse_vs_theory(model, measured, closed, path, floor=floor, title=title, clip=clip)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, se in sq_errs.items():
        m, lo, hi = bootstrap_band(np.asarray(se, np.float64))
        pos = np.arange(len(m))
        ax.plot(pos, np.maximum(m, clip), label=name, lw=2.2 if name == "model" else 1.2)
        ax.fill_between(pos, np.maximum(lo, clip), np.maximum(hi, clip), alpha=0.2)
    if floor is not None:
        ax.plot(np.arange(len(floor)), np.maximum(floor, clip), "k--", lw=1, label=f"Bayes floor (0 drawn at {clip:g})")
    ax.set_yscale("log")
    ax.set_xlabel("position t (predicting term t+1)")
    ax.set_ylabel("MSE")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def mse_vs_theory(model: dict, measured: dict, closed: dict, path, floor=None, title="MSE by position", clip=1e-7, model_lines=None):
    """Model against theory, log scale.

    ``model {label: (mean [pos], lo [pos], hi [pos])}``: thick lines with shaded bands;
    ``measured {baseline: (mean, lo, hi)}``: Monte-Carlo points with error bars (e.g. 95% bootstrap);
    ``closed {baseline: [pos] (None where undefined)}``: closed-form expected MSE, a line in the same colour;
    ``floor [pos]``: the Bayes-optimal MSE, dashed black;  ``model_lines {label: [pos]}``: thin extra lines (e.g.
    one per seed).  Values below ``clip`` are drawn at ``clip``."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    c = lambda v: np.maximum(np.asarray(v, np.float64), clip)  # noqa: E731
    for label, v in (model_lines or {}).items():
        ax.plot(np.arange(len(v)), c(v), color="k", lw=0.6, alpha=0.35)
    for label, (m, lo, hi) in model.items():
        pos = np.arange(len(m))
        ax.plot(pos, c(m), color="k", lw=2.4, label=label)
        ax.fill_between(pos, c(lo), c(hi), color="k", alpha=0.15)
    names = list(dict.fromkeys(list(measured) + list(closed or {})))
    for i, name in enumerate(names):
        col = f"C{i % 10}"
        cf = (closed or {}).get(name)
        if cf is not None:
            pos = np.array([t for t, v in enumerate(cf) if v is not None])
            if len(pos):
                ax.plot(pos, c([cf[t] for t in pos]), color=col, lw=1.2, label=f"{name} (closed form)")
        if name in measured:
            m, lo, hi = (np.asarray(v, np.float64) for v in measured[name])
            pos = np.arange(len(m)) + 0.08 * (i - len(names) / 2)  # small offsets so the error bars do not overlap
            mc = c(m)
            ax.errorbar(pos, mc, yerr=[mc - c(lo), c(hi) - mc], fmt="o", ms=3, color=col, elinewidth=0.8, capsize=1.5,
                        label=f"{name} (measured)" if cf is None else None)
    if floor is not None:
        ax.plot(np.arange(len(floor)), c(floor), "k--", lw=1.2, label=f"Bayes floor (0 drawn at {clip:g})")
    ax.set_yscale("log")
    ax.set_xlabel("position t (predicting term t+1)")
    ax.set_ylabel("MSE")
    ax.set_title(title, fontsize=10)
    ax.plot([], [], "o", color="gray", ms=3, label="points: Monte Carlo, 95% bootstrap bars")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def lens_by_layer(mse: dict, labels, path, title="Prediction lens: MSE by layer"):
    """``mse {ln_choice: [n_rows, pos]}``; one panel per LayerNorm choice, one curve per lens row."""
    fig, axes = plt.subplots(1, len(mse), figsize=(5.5 * len(mse), 3.8), squeeze=False)
    for ax, (name, m) in zip(axes[0], mse.items()):
        for i, lab in enumerate(labels):
            ax.plot(np.maximum(m[i], 1e-12), label=lab)
        ax.set_yscale("log")
        ax.set_title(f"lens, LayerNorm {name}")
        ax.set_xlabel("position t")
        ax.set_ylabel("MSE vs next term")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def heatmap(values, path, row_labels=None, col_labels=None, title="", cbar_label="", center=None, fmt="{:.2g}", annotate=True):
    """A labelled heatmap (ablation ``[n_layers, n_heads]``, patching ``[n_layers, pos]`` ...)."""
    values = np.asarray(values, np.float64)
    R, C = values.shape
    fig, ax = plt.subplots(figsize=(max(3.5, 0.45 * C + 2), max(2.5, 0.45 * R + 1.5)))
    if center is not None:
        lim = np.nanmax(np.abs(values - center)) or 1.0
        im = ax.imshow(values, cmap="RdBu_r", vmin=center - lim, vmax=center + lim, aspect="auto")
    else:
        im = ax.imshow(values, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_yticks(range(R))
    ax.set_yticklabels(row_labels or range(R), fontsize=8)
    ax.set_xticks(range(C))
    ax.set_xticklabels(col_labels or range(C), fontsize=7, rotation=90 if C > 8 else 0)
    if annotate and R * C <= 64:
        for i in range(R):
            for j in range(C):
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7, color="w")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def logit_vs_similarity(panels, path, title="Attention logit vs x_t x_j (row-centred)"):
    """``panels [(name, sim [N], logit [N])]``: one scatter per candidate head."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.1), squeeze=False)
    for ax, (name, s, lg) in zip(axes[0], panels):
        ax.scatter(s, lg, s=2, alpha=0.3)
        if len(s) > 1 and np.std(s) > 0:
            g = np.polyfit(s, lg, 1)
            xs = np.linspace(np.min(s), np.max(s), 2)
            ax.plot(xs, np.polyval(g, xs), "r-", lw=1)
            ax.set_title(f"{name}: slope {g[0]:.2f}", fontsize=9)
        ax.set_xlabel("x_t x_j (row-centred)", fontsize=8)
        ax.set_ylabel("logit (row-centred)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def training_curves(histories: dict, path, title="Training"):
    """``histories {label: [eval records with step, train_loss, eval_mse]}``."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, (name, hist) in enumerate(histories.items()):
        steps = [r["step"] for r in hist]
        ax.plot(steps, [r["eval_mse"] for r in hist], color=f"C{i % 10}", label=f"{name} eval")
        ax.plot(steps, [r["train_loss"] for r in hist], color=f"C{i % 10}", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (solid: held-out, dotted: train batch)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)
