"""PNG plots (matplotlib, Agg backend).  Each function saves to ``path`` and returns it.

One style for every figure: the Okabe-Ito colour-blind-safe palette for lines, ``cividis`` for sequential maps
and ``RdBu_r`` (centred) for signed ones, every axis labelled, a colorbar beside every map, annotations in dark
text on pale cells and white text on dark ones.

Attention plots take CircuitsVis argument names: ``attention [head, dest, src]``, ``tokens`` (labels of
the positions) and ``head_names`` (``L0H1``).
"""
from __future__ import annotations

import functools
import os
import textwrap
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    from numpy.typing import ArrayLike

    StrPath = str | os.PathLike[str]  # where a figure is saved (returned as given)
    Curve = Sequence[float] | np.ndarray  # a 1-d series (one value per position or point), measured with len()
    F = TypeVar("F", bound=Callable[..., Any])

# Okabe & Ito (2008): orange, sky blue, bluish green, yellow, blue, vermillion, reddish purple, black
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
LINES = [c for c in OKABE_ITO if c != "#F0E442"]  # for lines on white: without the pale yellow
SEQ_CMAP = "cividis"
DIV_CMAP = "RdBu_r"
STYLE = {"axes.prop_cycle": matplotlib.cycler(color=LINES), "axes.grid": True, "grid.alpha": 0.25, "axes.titlesize": 10,
         "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 7, "figure.dpi": 110,
         "savefig.bbox": "tight", "image.cmap": SEQ_CMAP}


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def styled(fn: F) -> F:
    """Run a plotting function under ``STYLE`` (colour cycle, grid, font sizes) without changing the global rcParams."""
    @functools.wraps(fn)
    def wrapper(*args, **kw):
        with plt.rc_context(STYLE):
            return fn(*args, **kw)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps fn's signature


def _text_colour(im, value):
    """Dark text on pale cells, white on dark ones (by the cell colour's luminance)."""
    r, g, b, _ = im.cmap(im.norm(value))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def plain_stage(label: str) -> str:
    """Lens labels ``0_pre``, ``1_pre``, ..., ``final_post`` -> "embeddings", "after layer 0", ..., "after the last layer"."""
    if label == "final_post":
        return "after the last layer (model)"
    if label.endswith("_pre"):
        l = int(label[:-4])
        return "embeddings" if l == 0 else f"after layer {l - 1}"
    if label.endswith("_mid"):
        return f"layer {label[:-4]} after attention"
    return label


@styled
def attention_patterns(attention: ArrayLike, path: StrPath, tokens: Sequence[str] | None = None, head_names: Sequence[str] | None = None,
                       n_cols: int | None = None, title: str | None = None) -> StrPath:
    """Grid of heatmaps, one per head: ``attention [head, dest, src]`` (e.g. averaged over a batch)."""
    attention = np.asarray(attention)
    n = attention.shape[0]
    n_cols = n_cols or min(n, 4)
    n_rows = int(np.ceil(n / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols + 0.8, 2.5 * n_rows), squeeze=False)
    T = attention.shape[-1]
    im = None
    for i, ax in enumerate(axes.flat):
        ax.grid(False)
        if i >= n:
            ax.axis("off")
            continue
        im = ax.imshow(attention[i], cmap=SEQ_CMAP, vmin=0, vmax=1)
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
        ax.set_xlabel("key position j", fontsize=7)
        ax.set_ylabel("query position t", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label="attention weight", shrink=0.8)
    return _save(fig, path)


def bootstrap_band(sq_err: np.ndarray, n_boot: int = 200, seed: int = 0,
                   q: tuple[float, float] = (2.5, 97.5)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sq_err [batch, pos]`` -> (mean [pos], lo [pos], hi [pos]) by resampling sequences."""
    rng = np.random.default_rng(seed)
    B = sq_err.shape[0]
    boots = np.stack([sq_err[rng.integers(0, B, B)].mean(0) for _ in range(n_boot)])
    lo, hi = np.percentile(boots, q, axis=0)
    return sq_err.mean(0), lo, hi


@styled
def mse_by_position(sq_errs: dict, path: StrPath, title: str = "MSE by position", floor: Curve | None = None, clip: float = 1e-7,
                    closed: dict | None = None) -> StrPath:
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


@styled
def mse_vs_theory(model: dict, measured: dict, closed: dict, path: StrPath, floor: Curve | None = None, title: str = "MSE by position",
                  clip: float = 1e-7, model_lines: dict | None = None) -> StrPath:
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
        col = LINES[i % len(LINES)]
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


@styled
def lens_by_layer(mse: dict, labels: Sequence[str], path: StrPath, title: str = "Prediction lens: MSE by layer",
                  reference: dict | None = None, notes: dict[str, str] | None = None) -> StrPath:
    """``mse {ln_choice: [n_rows, pos]}``; one panel per LayerNorm choice, one curve per lens row (labels such as
    ``0_pre`` are shown in words: "embeddings", "after layer 0", ...).  ``reference {label: [pos]}``: dashed
    reference curves (e.g. the copy baseline) in every panel; ``notes {ln_choice: text}``: a line under a panel."""
    fig, axes = plt.subplots(1, len(mse), figsize=(5.5 * len(mse), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], mse.items()):
        for i, lab in enumerate(labels):
            last = i == len(labels) - 1
            ax.plot(np.maximum(m[i], 1e-12), label=plain_stage(lab), lw=2.2 if last else 1.3, color="black" if last else LINES[i % len(LINES)])
        for k, (lab, v) in enumerate((reference or {}).items()):
            ax.plot(np.maximum(np.asarray(v, np.float64), 1e-12), ls="--", color="0.35", lw=1.2, label=lab)
        ax.set_yscale("log")
        ax.set_title(f"read-out through the final LayerNorm, {name} statistics")
        ax.set_xlabel("position t (predicting term t+1)")
        ax.set_ylabel("MSE against the next term")
        ax.legend()
        if notes and name in notes:
            ax.text(0.0, -0.17, textwrap.fill(notes[name], 95), transform=ax.transAxes, fontsize=7, va="top")
    fig.suptitle(title)
    return _save(fig, path)


@styled
def heatmap(values: ArrayLike, path: StrPath, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None, title: str = "",
            cbar_label: str = "", center: float | None = None, fmt: str = "{:.2g}", annotate: bool = True, xlabel: str = "",
            ylabel: str = "") -> StrPath:
    """A labelled heatmap (ablation ``[n_layers, n_heads]``, patching ``[n_layers, pos]`` ...) with a colorbar;
    annotations are dark on pale cells and white on dark ones."""
    values = np.asarray(values, np.float64)
    R, C = values.shape
    fig, ax = plt.subplots(figsize=(max(3.8, 0.45 * C + 2.3), max(2.7, 0.45 * R + 1.7)))
    ax.grid(False)
    if center is not None:
        lim = np.nanmax(np.abs(values - center)) if np.isfinite(values).any() else 1.0
        lim = lim or 1.0
        im = ax.imshow(values, cmap=DIV_CMAP, vmin=center - lim, vmax=center + lim, aspect="auto")
    else:
        im = ax.imshow(values, cmap=SEQ_CMAP, aspect="auto")
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_yticks(range(R))
    ax.set_yticklabels(row_labels or range(R), fontsize=8)
    ax.set_xticks(range(C))
    ax.set_xticklabels(col_labels or range(C), fontsize=7, rotation=90 if C > 8 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if annotate and R * C <= 64:
        for i in range(R):
            for j in range(C):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=7, color=_text_colour(im, values[i, j]))
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


@styled
def logit_vs_similarity(panels: Sequence[tuple[str, Curve, Curve]], path: StrPath,
                        title: str = "Attention logit vs x_t x_j (row-centred)") -> StrPath:
    """``panels [(name, sim [N], logit [N])]``: one scatter per head, with its least-squares slope in the panel's title."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.4), squeeze=False, constrained_layout=True)
    for ax, (name, s, lg) in zip(axes[0], panels):
        ax.scatter(s, lg, s=2, alpha=0.3, color=OKABE_ITO[4])
        head = name
        if len(s) > 1 and np.std(s) > 0:
            g = np.polyfit(s, lg, 1)
            xs = np.linspace(np.min(s), np.max(s), 2)
            ax.plot(xs, np.polyval(g, xs), color=OKABE_ITO[5], lw=1.2)
            head = f"{name}: slope {g[0]:+.2f}"
        ax.set_title(head, fontsize=9)
        ax.set_xlabel("x_t x_j (row-centred)", fontsize=8)
        ax.set_ylabel("attention logit (row-centred)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


@styled
def training_curves(histories: dict, path: StrPath, title: str = "Training") -> StrPath:
    """``histories {label: [eval records with step, train_loss, eval_mse]}``; labels ``"<setting> s<seed>"`` share a
    colour per setting and a line style and marker per seed, so many runs stay distinguishable."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True, constrained_layout=True)
    settings = list(dict.fromkeys(k.rsplit(" s", 1)[0] for k in histories))
    styles, markers = ["-", "--", "-.", ":"], ["o", "s", "^", "D", "v", "P", "X"]
    seen: dict = {}
    for name, hist in histories.items():
        st = name.rsplit(" s", 1)[0]
        k = seen[st] = seen.get(st, -1) + 1
        kw = dict(color=LINES[settings.index(st) % len(LINES)], ls=styles[k % len(styles)], marker=markers[k % len(markers)], ms=3.5, lw=1.4,
                  label=name)
        steps = [r["step"] for r in hist]
        axes[0].plot(steps, [r["eval_mse"] for r in hist], **kw)
        axes[1].plot(steps, [r["train_loss"] for r in hist], **kw)
    for ax, what in zip(axes, ("held-out MSE", "training-batch MSE")):
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(what)
        ax.set_title(what)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="colour: setting; line and marker: seed", title_fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


# ----------------------------------------------------------------------------- story figures (minigpt.experiments.story)
def _attention_panel(ax, A, offset, x=None, title=""):
    """One attention map ``A [T, T]`` (query rows, key columns) with the copied cells (key = query - offset) outlined."""
    A = np.asarray(A, np.float64)
    T = A.shape[0]
    ax.grid(False)
    im = ax.imshow(A, cmap=SEQ_CMAP, vmin=0, vmax=1)
    for t in range(offset, T):
        ax.add_patch(Rectangle((t - offset - 0.5, t - 0.5), 1, 1, fill=False, edgecolor=OKABE_ITO[5], lw=1.1))
    step = max(1, T // 10)
    ticks = list(range(0, T, step))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    if x is not None:
        ax.set_yticklabels([f"{t}: {x[t]:+.2f}" for t in ticks], fontsize=6)
    ax.set_xlabel("key position j (term attended to)")
    ax.set_ylabel("query position t" + (": x_t" if x is not None else ""))
    ax.set_title(title)
    return im


@styled
def copy_head_figure(example: ArrayLike, mean: ArrayLike, head: str, offset: int, x: Curve, path: StrPath,
                     title: str = "") -> StrPath:
    """Layer 0's copying head: its attention on one sequence beside its mean pattern, the copied term outlined
    (``offset`` 0: the current term, 1: the previous one).  ``example, mean [pos, pos]`` (query rows, key columns),
    ``x [pos]`` (the sequence of ``example``)."""
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.6), constrained_layout=True)
    term = "x_t" if offset == 0 else "x_(t-1)"
    _attention_panel(axes[0], example, offset, x, f"{head} on one sequence")
    im = _attention_panel(axes[1], mean, offset, None, f"{head}, mean over sequences")
    fig.colorbar(im, ax=axes, label="attention weight", shrink=0.85)
    axes[1].plot([], [], "s", mfc="none", mec=OKABE_ITO[5], label=f"copied term {term}")
    axes[1].legend(loc="lower left")
    fig.suptitle(title)
    return _save(fig, path)


@styled
def refine_head_figure(x: ArrayLike, query: int, row: ArrayLike, sim_bins: ArrayLike, read_dc: Sequence[ArrayLike], slope: float,
                       head: str, path: StrPath, title: str = "") -> StrPath:
    """The last layer's head: (left) attention weights of one query over the earlier terms and each term's similarity
    x_t x_j; (middle) row-centred logit against row-centred similarity, that query's keys and the mean over all
    queries by similarity decile (``sim_bins [[centre, mean logit]]``); (right) what the head writes (its direct
    contribution to the prediction) against what it reads (sum_j A[t, j] x_j), pooled over queries, with its slope.
    ``x [pos]``, ``row [query + 1]``, ``sim_bins [n_bins, 2]``, ``read_dc ([N] read, [N] written)``."""
    x = np.asarray(x, np.float64)
    row = np.asarray(row, np.float64)
    j = np.arange(len(row))
    sim = x[query] * x[: len(row)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    ax = axes[0]
    ax.bar(j, row, color=LINES[4], label="attention weight")
    ax.set_xlabel(f"key position j (query t = {query})")
    ax.set_ylabel("attention weight", color=LINES[4])
    ax2 = ax.twinx()
    ax2.plot(j, sim, "o-", color=LINES[5], ms=3, lw=1, label="similarity x_t x_j")
    ax2.axhline(0, color="0.6", lw=0.6)
    ax2.set_ylabel("similarity x_t x_j", color=LINES[5])
    ax2.grid(False)
    ax.set_title(f"{head}: one query (x_t = {x[query]:+.2f})")
    ax = axes[1]
    lg = np.log(np.maximum(row, 1e-30))
    ax.scatter(sim - sim.mean(), lg - lg.mean(), color=LINES[4], s=22, zorder=3, label=f"the query above (t = {query})")
    b = np.asarray(sim_bins, np.float64).reshape(-1, 2)
    ax.plot(b[:, 0], b[:, 1], "s-", color=LINES[2], ms=4, lw=1.6, label="all queries t >= 2: mean by similarity decile")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xlabel("similarity x_t x_j (row-centred)")
    ax.set_ylabel("attention logit (row-centred)")
    ax.set_title("similarity attention (uncontrolled)")
    ax.legend()
    ax = axes[2]
    r, d = (np.asarray(v, np.float64) for v in read_dc)
    ax.scatter(r, d, s=3, alpha=0.35, color=LINES[2])
    if len(r) > 1:
        xs = np.linspace(r.min(), r.max(), 2)
        ax.plot(xs, slope * xs + (d.mean() - slope * r.mean()), color=LINES[5], lw=1.4, label=f"slope {slope:+.2f}")
        ax.legend()
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xlabel("what it reads: sum_j A[t, j] x_j")
    ax.set_ylabel("what it writes: direct contribution to the prediction")
    ax.set_title("the negative write: output vs input, all queries t >= 2")
    fig.suptitle(title)
    return _save(fig, path)


@styled
def estimate_lens_figure(x: ArrayLike, y: ArrayLike, estimates: ArrayLike, stages: Sequence[str], mse: ArrayLike, dist_xt: ArrayLike,
                         copy_mse: float, t_min: int, path: StrPath, title: str = "", pred: ArrayLike | None = None,
                         model_mse: float | None = None) -> StrPath:
    """The estimate through the layers: (left) on one sequence, each stage's estimate of the next term against x_t
    (copying), the target x_(t+1) and the model's prediction ``pred``; (right) each stage's MSE and its distance from
    x_t, with the copy baseline and the model's own MSE.  ``x, y, pred [pos]``, ``estimates [n_stages, pos]``,
    ``mse, dist_xt [n_stages]``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    est = np.asarray(estimates, np.float64)
    t = np.arange(len(x))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), constrained_layout=True)
    ax = axes[0]
    ax.plot(t, y, "k-", lw=2.4, label="target x_(t+1)")
    ax.plot(t, x, ls="--", color="0.45", lw=1.5, label="copy x_t")
    for i, lab in enumerate(stages):
        ax.plot(t[t_min:], est[i][t_min:], "o-", ms=3, lw=1.1, color=LINES[i % len(LINES)], label=f"estimate {lab}")
    if pred is not None:
        ax.plot(t, pred, ls=(0, (1, 1)), color="black", lw=1.4, label="the model's prediction")
    ax.set_xlabel("position t")
    ax.set_ylabel("value")
    ax.set_title("one sequence")
    ax.legend()
    ax = axes[1]
    k = np.arange(len(stages))
    ax.plot(k, mse, "o-", color=OKABE_ITO[4], lw=2, label="MSE against x_(t+1)")
    ax.plot(k, dist_xt, "s--", color=OKABE_ITO[0], lw=1.4, label="mean squared distance from x_t")
    ax.axhline(copy_mse, color="0.35", ls=":", lw=1.4, label=f"copy baseline MSE {copy_mse:.2e}")
    if model_mse is not None:
        ax.axhline(model_mse, color="black", ls="-.", lw=1.2, label=f"the model's MSE {model_mse:.2e}")
    ax.set_yscale("log")
    ax.set_xticks(k)
    ax.set_xticklabels(stages, rotation=20)
    ax.set_xlabel("stage of the residual stream")
    ax.set_ylabel(f"mean over held-out t >= {t_min}")
    ax.set_title("every sequence: linear read-out of each stage")
    ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def _edge(ax, p, q, text, colour, rad=0.0, value=None):
    w = 1.0 if value is None or not np.isfinite(value) else 0.8 + 4.0 * min(1.0, abs(value))
    ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=14, lw=w, color=colour, connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=30, shrinkB=30))
    (x1, y1), (x2, y2) = ax.transData.transform([p, q])  # arc3 bends in display space: its midpoint is halfway from the
    dx, dy = x2 - x1, y2 - y1  # chord's midpoint to the control point (chord midpoint + rad * (dy, -dx))
    mid = ax.transData.inverted().transform(((x1 + x2) / 2 + 0.5 * rad * dy, (y1 + y2) / 2 - 0.5 * rad * dx))
    ax.text(mid[0], mid[1], text, fontsize=7.5, ha="center", va="center", color="black",
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=colour, lw=1.0))


def _node(ax, xy, text, colour):
    ax.add_patch(FancyBboxPatch((xy[0] - 0.11, xy[1] - 0.07), 0.22, 0.14, boxstyle="round,pad=0.01", fc=colour, ec="black", lw=0.8))
    ax.text(xy[0], xy[1], text, ha="center", va="center", fontsize=8, color="black")


def _pct(d):
    return f"{d['damage']:.0%} ({d['restored']:.0%})"


@styled
def circuit_figure(s: dict, path: StrPath, title: str = "") -> StrPath:
    """The circuit of ``story.measure``: input -> layer-0 copy head -> last-layer heads (values, queries/keys) ->
    prediction, each edge labelled with its measured damage (noising) and restored fraction (denoising)."""
    c = s["copy_head"]
    L = s["n_layers"]
    whole = s["patching"]["whole_head"]
    edges = {(d["receiver"], d["into"]): d for d in s["patching"]["edges"]}
    recv = list(dict.fromkeys(r for r, i in edges if r != "prediction"))
    heads = {d["head"]: d for d in s["last_heads"]}
    fig, ax = plt.subplots(figsize=(11, 3.4 + 1.4 * max(1, len(recv))))
    ax.grid(False)
    ax.set_xlim(-0.02, 1.3)
    ax.set_ylim(-0.12, 1.08)
    ax.axis("off")
    ys = np.linspace(0.95, 0.35, len(recv)) if len(recv) > 1 else [0.65]
    P = {"in": (0.1, 0.5), "copy": (0.42, 0.5), "out": (1.17, 0.5)}
    _node(ax, P["in"], "input terms\nx_0 .. x_t", "#e8e8e8")
    _node(ax, P["copy"], f"{c['head']} (layer 0)\ncopies {c['term']}\nablation x{c['ablation_ratio']:.1f}", "#f5d49a")
    _node(ax, P["out"], "prediction\nof x_(t+1)", "#e8e8e8")
    _edge(ax, P["in"], P["copy"], _pct(whole[c["head"]]), "0.3", value=whole[c["head"]]["damage"])
    direct = edges.get(("prediction", "direct"))
    if direct:
        _edge(ax, P["copy"], P["out"], "direct: " + _pct(direct), "0.3", rad=0.45, value=direct["damage"])
    for name, yy in zip(recv, ys):
        q = (0.8, yy)
        d = heads[name]
        _node(ax, q, f"{name} (layer {L - 1})\nablation x{d['ablation_ratio']:.1f}\nr(output, est0) {d['corr_est0']:+.2f}", "#b9dcf2")
        _edge(ax, P["copy"], q, "V: " + _pct(edges[(name, "v")]), OKABE_ITO[5], rad=-0.15, value=edges[(name, "v")]["damage"])
        _edge(ax, P["copy"], q, "QK: " + _pct(edges[(name, "qk")]), OKABE_ITO[4], rad=0.15, value=edges[(name, "qk")]["damage"])
        _edge(ax, q, P["out"], _pct(whole[name]), "0.3", value=whole[name]["damage"])
    ax.text(0.0, -0.1, f"Edge labels: damage when only that part carries the corrupted value (noising), restored fraction in brackets "
            f"(denoising); t >= {s['t_min']}, clean vs corrupted {s['patching']['corrupted']}.\nV / QK: path patching of {c['head']}'s output into the receiver's values / "
            "queries and keys only, other paths frozen. Line width grows with the damage. est0: the layer-0 estimate.", fontsize=7.5, va="top")
    ax.set_title(title)
    return _save(fig, path)


@styled
def late_positions_figure(s: dict, path: StrPath, title: str = "") -> StrPath:
    """(left) MSE by position: the model, the model with the copy head forced onto the copied term from the breakdown
    on, sequences with small and large |a|, the copy baseline; (middle) where the copy head looks: its heaviest key
    and its weight on the copied term by query position; (right) why: the logit margin of the copied key and the
    share of the logit variance due to key position alone."""
    lt, c = s["late"], s["copy_head"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4), constrained_layout=True)
    ax = axes[0]
    pos = np.arange(len(s["mse_by_pos"]))
    tm = s["t_min"]
    cl = lambda v: np.maximum(np.asarray(v, np.float64), 1e-12)[tm:]  # noqa: E731
    ax.plot(pos[tm:], cl(s["mse_by_pos"]), "k-", lw=2.2, label="model")
    if lt.get("mse_forced_by_pos") is not None:
        ax.plot(pos[tm:], cl(lt["mse_forced_by_pos"]), "--", color=LINES[5 % len(LINES)], lw=1.8,
                label=f"model, {c['head']} forced onto {c['term']} from t = {lt['breakdown']}")
    ax.plot(pos[tm:], cl(lt["mse_fast_by_pos"]), color=LINES[2], lw=1.3, label=f"model, sequences with |a| < {lt['a_threshold']}")
    if lt["mse_slow_by_pos"] is not None:
        ax.plot(pos[tm:], cl(lt["mse_slow_by_pos"]), color=LINES[0], lw=1.3, label=f"model, |a| >= {lt['a_threshold']} ({lt['share_slow']:.0%})")
    ax.plot(pos[tm:], cl(s["copy_by_pos"]), ls=":", color="0.45", lw=1.3, label="copy baseline")
    if lt["breakdown"] is not None:
        ax.axvline(lt["breakdown"] - 0.5, color="0.6", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("position t (predicting term t+1)")
    ax.set_ylabel("MSE")
    ax.set_title("MSE by position")
    ax.legend()
    ax = axes[1]
    dp = np.asarray(lt["diag_pos"])
    off = 0 if c["kind"] == "current" else 1
    ax.plot(dp, dp - off, ls="--", color="0.5", lw=1.2, label=f"copied key ({c['term']})")
    ax.plot(dp, lt["diag_top_key"], "o", color=LINES[4], ms=5, label="heaviest key (mean pattern)")
    ax.set_xlabel("query position t")
    ax.set_ylabel("key position")
    ax5 = ax.twinx()
    ax5.plot(dp, lt["diag_mean"], "-", color=LINES[5], lw=1.6, label=f"weight on {c['term']}")
    ax5.set_ylim(0, 1.05)
    ax5.set_ylabel(f"mean weight on {c['term']}", color=LINES[5])
    ax5.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax5.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left")
    ax.set_title(f"where {c['head']} looks")
    ax = axes[2]
    nan = lambda v: np.array([np.nan if u is None else u for u in v], np.float64)  # noqa: E731
    ax.plot(dp, nan(lt["diag_margin"]), "o-", ms=3, color=LINES[5], label="logit margin of the copied key over the best other key")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xlabel("query position t")
    ax.set_ylabel("logit margin (nats)")
    ax4 = ax.twinx()
    ax4.plot(dp, nan(lt["diag_pos_share"]), "s--", ms=3, color=LINES[4], label="share of logit variance from key position")
    ax4.set_ylim(0, 1.05)
    ax4.set_ylabel("share of logit variance from key position", color=LINES[4])
    ax4.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax4.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower left")
    ax.set_title("why: the positional signal")
    fig.suptitle(title)
    return _save(fig, path)
