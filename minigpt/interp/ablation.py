"""Head ablation: replace one head's ``hook_z`` and measure how much the MSE rises.

Methods (the head's output is ``z_h W_O[h]``, so ablating z ablates exactly that head's output; ``b_O`` stays):

* ``zero``:     z_h = 0 (identical to zeroing ``W_O[h]``).
* ``mean``:     z_h = its mean over a reference batch, at the same position (the head's average output).
* ``resample``: z_h = its value on another sequence of the batch (a fixed random permutation), same
  position: the head still writes a plausible value, but about the wrong (a, b, x0).

Returns MSE increases as ``[n_layers, n_heads]`` (over all positions) and ``[n_layers, n_heads, pos]``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import ArrayLike

    from ..nn.hooks import HookFn
    from ..nn.model import Transformer

METHODS = ("zero", "mean", "resample")


def _mse_by_pos(pred, target):
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return (d * d).mean(0)


def ablate_hook(head: int, method: str, ref_z: np.ndarray | None = None, perm: np.ndarray | None = None) -> HookFn:
    """A ``hook_z`` hook function that ablates head ``head`` with ``method``: z [batch, pos, n_heads, d_head] ->
    [batch, pos, n_heads, d_head].  ``ref_z [ref_batch, pos, n_heads, d_head]`` (mean), ``perm [batch]`` (resample)."""

    def fn(z, hook):
        z = z.copy()
        if method == "zero":
            z[:, :, head] = 0.0
        elif method == "mean":
            z[:, :, head] = ref_z[:, : z.shape[1], head].mean(0)
        elif method == "resample":
            z[:, :, head] = z[perm, :, head]
        else:
            raise ValueError(f"ablation method must be one of {METHODS}, got {method!r}")
        return z

    return fn


def head_ablation(model: Transformer, x: ArrayLike, target: ArrayLike, method: str = "zero", seed: int = 0,
                  heads: Sequence[tuple[int, int]] | None = None) -> dict[str, np.ndarray | float]:
    """x, target [batch, pos] -> ``{"base": [pos], "by_pos": [L, H, pos], "table": [L, H], "ratio": [L, H]}``.

    ``table`` is the MSE increase over all positions, ``ratio`` the ablated MSE over the clean MSE.
    ``heads``: optional list of (layer, head) to ablate *together* (then ``{"base": [pos], "by_pos": [pos],
    "total": float, "ratio": float}``)."""
    cfg = model.cfg
    x, target = np.asarray(x), np.asarray(target)
    base = _mse_by_pos(model(x), target)
    ref = None
    if method == "mean":
        _, c = model.run_with_cache(x, names_filter=lambda n: n.endswith("attn.hook_z"))
        ref = {l: c["z", l] for l in range(cfg.n_layers)}
    sigma = np.random.default_rng(seed).permutation(len(x))
    perm = np.empty_like(sigma)
    perm[sigma] = np.roll(sigma, -1)  # a derangement when len(x) > 1: no sequence keeps its own head output

    def hooks_for(lh):
        return [(f"blocks.{l}.attn.hook_z", ablate_hook(h, method, None if ref is None else ref[l], perm)) for l, h in lh]

    if heads is not None:
        ab = _mse_by_pos(model.run_with_hooks(x, hooks_for(heads)), target)
        return {"base": base, "by_pos": ab - base, "total": float(ab.mean() - base.mean()), "ratio": float(ab.mean() / base.mean())}
    by_pos = np.zeros((cfg.n_layers, cfg.n_heads, len(base)))
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            by_pos[l, h] = _mse_by_pos(model.run_with_hooks(x, hooks_for([(l, h)])), target) - base
    table = by_pos.mean(-1)
    return {"base": base, "by_pos": by_pos, "table": table, "ratio": (table + base.mean()) / base.mean()}


def layer_ablation(model: Transformer, x: ArrayLike, target: ArrayLike, method: str = "zero", seed: int = 0) -> np.ndarray:
    """x, target [batch, pos] -> ``[n_layers]``: MSE increase when every head of a layer is ablated together."""
    cfg = model.cfg
    return np.array([head_ablation(model, x, target, method, seed, heads=[(l, h) for h in range(cfg.n_heads)])["total"]
                     for l in range(cfg.n_layers)])
