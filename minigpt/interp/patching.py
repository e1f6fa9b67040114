"""Activation patching from one generic function.

Clean and corrupted sequences differ in exactly one generating parameter (``a``, ``b`` or ``x0``; the
other two and the random draws are shared).  We run the corrupted input, overwrite one activation (at
one position, or one head) with its value from the clean run, and measure how much of the clean
prediction comes back:

    restored = 1 - mean (pred_patched - pred_clean)^2 / mean (pred_corrupt - pred_clean)^2

at the positions ``metric_pos`` (default: the last position).  1 means the patched activation carries
everything the prediction needs to tell the clean run from the corrupted one; 0 means nothing.
Patching a run with its own cache changes nothing (restored fraction undefined; predictions identical).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..tasks.data import AffineRecurrence, sample_prior

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    from numpy.typing import ArrayLike

    from ..nn.hooks import ActivationCache
    from ..nn.model import Transformer

    # the positions a metric is taken at: one position, a slice, or several
    Positions = int | slice | Sequence[int] | np.ndarray

WHICH = ("a", "b", "x0")


def make_pairs(task: AffineRecurrence, n: int, which: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(clean [n, length], corrupt [n, length])``: sequences of ``task`` sharing every parameter but ``which``."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    par = {k: sample_prior(getattr(task, k), n, rng) for k in WHICH}
    alt = dict(par)
    alt[which] = sample_prior(getattr(task, which), n, rng)

    def seq(p):
        x = np.empty((n, task.length))
        x[:, 0] = p["x0"]
        for i in range(1, task.length):
            x[:, i] = p["a"] * x[:, i - 1] + p["b"]
        return x

    return seq(par), seq(alt)


def restored_fraction(pred: np.ndarray, clean: np.ndarray, corrupt: np.ndarray, metric_pos: Positions) -> float:
    """``1 - mean (pred - clean)^2 / mean (corrupt - clean)^2`` at ``metric_pos`` (nan when the runs agree).
    pred, clean, corrupt [batch, pos] -> a scalar."""
    num = ((pred - clean)[:, metric_pos] ** 2).mean()
    den = ((corrupt - clean)[:, metric_pos] ** 2).mean()
    return float(1.0 - num / den) if den > 0 else float("nan")


def patch_grid(model: Transformer, clean_x: ArrayLike, corrupt_x: ArrayLike, hook_name: Callable[[Any], str],
               index_fn: Callable[[Any], Any], indices: Iterable[Any], metric_pos: Positions = -1,
               clean_cache: ActivationCache | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The generic patcher.  For each ``idx`` in ``indices``, run ``corrupt_x`` with the hook at
    ``hook_name(idx)`` replacing ``act[index_fn(idx)]`` by the clean activation's same slice.
    clean_x, corrupt_x [batch, pos] -> ``(restored [len(indices)], patched predictions list of [batch, pos])``."""
    if clean_cache is None:
        _, clean_cache = model.run_with_cache(clean_x)
    clean_pred = model(clean_x)
    corrupt_pred = model(corrupt_x)
    out, preds = [], []
    for idx in indices:
        name, sl = hook_name(idx), index_fn(idx)
        src = clean_cache[name]

        def fn(act, hook, sl=sl, src=src):
            act = act.copy()
            act[sl] = src[sl]
            return act

        pred = model.run_with_hooks(corrupt_x, [(name, fn)])
        preds.append(pred)
        out.append(restored_fraction(pred, clean_pred, corrupt_pred, metric_pos))
    return np.array(out), preds


def patch_resid(model: Transformer, clean_x: ArrayLike, corrupt_x: ArrayLike, site: str = "resid_pre",
                metric_pos: Positions = -1) -> np.ndarray:
    """clean_x, corrupt_x [batch, pos] -> ``[n_layers, pos]``: patch ``blocks.{l}.hook_{site}`` at one position (site: resid_pre, attn_out,
    mlp_out, resid_mid, resid_post)."""
    L, T = model.cfg.n_layers, np.asarray(clean_x).shape[1]
    idx = [(l, t) for l in range(L) for t in range(T)]
    _, cache = model.run_with_cache(clean_x, names_filter=lambda n: n.endswith("hook_" + site))
    r, _ = patch_grid(model, clean_x, corrupt_x, lambda i: f"blocks.{i[0]}.hook_{site}", lambda i: (slice(None), i[1]),
                      idx, metric_pos, cache)
    return r.reshape(L, T)


def patch_heads(model: Transformer, clean_x: ArrayLike, corrupt_x: ArrayLike, metric_pos: Positions = -1,
                by_pos: bool = False) -> np.ndarray:
    """clean_x, corrupt_x [batch, pos] -> ``[n_layers, n_heads]`` (or ``[n_layers, n_heads, pos]`` with ``by_pos``): patch one head's ``hook_z``
    at every position (or at one position)."""
    cfg = model.cfg
    T = np.asarray(clean_x).shape[1]
    _, cache = model.run_with_cache(clean_x, names_filter=lambda n: n.endswith("attn.hook_z"))
    if by_pos:
        idx = [(l, h, t) for l in range(cfg.n_layers) for h in range(cfg.n_heads) for t in range(T)]
        sl = lambda i: (slice(None), i[2], i[1])  # noqa: E731
        shape = (cfg.n_layers, cfg.n_heads, T)
    else:
        idx = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
        sl = lambda i: (slice(None), slice(None), i[1])  # noqa: E731
        shape = (cfg.n_layers, cfg.n_heads)
    r, _ = patch_grid(model, clean_x, corrupt_x, lambda i: f"blocks.{i[0]}.attn.hook_z", sl, idx, metric_pos, cache)
    return r.reshape(shape)
