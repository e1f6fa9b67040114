"""Path patching (Wang et al. 2022, "Interpretability in the Wild", the IOI circuit): the effect of one *path*,
sender head -> receiver head's queries, keys or values, rather than of a whole activation.

Like ``patching``, we run the corrupted input and bring back clean information, measuring

    restored = 1 - mean (pred_patched - pred_clean)^2 / mean (pred_corrupt - pred_clean)^2

at ``metric_pos``.  Here only one path carries the clean information:

1. The sender's output differs between the runs by  delta = (z_clean - z_corrupt)[sender] W_O[sender]
   (``[batch, pos, d_model]``; the sender's ``hook_z`` from both runs).
2. The receiver head (layer ``l_r > l_s``) reads  LN1(resid_pre_corrupt[l_r] + delta)  for the chosen inputs
   only (``into``: "q", "k", "v", "qk" or "qkv"); its other inputs, and every other head, read the corrupted
   residual.  So every other path from the sender (through the heads and MLPs of the layers in between, and
   through the receiver's other inputs) is frozen at its corrupted value.  LN1's statistics are recomputed on
   the patched residual (the receiver really sees a different input).
3. Everything after the receiver is recomputed as usual (the receiver's new output flows to the prediction).

``receiver=None`` is the direct path to the read-out: delta is added to the final residual (the final LN
recomputed).  Heads are ``(layer, head)`` tuples.

``path_patch_grid(..., direction="noise")`` runs the other way, as Wang et al. do: the *clean* run with the
sender's *corrupted* output routed along the path, scored by the damage done,

    damage = mean (pred_patched - pred_clean)^2 / mean (pred_corrupt - pred_clean)^2

(0: the path carries nothing the prediction needs; 1: as much damage as corrupting the whole input).  Denoising asks
"is this path sufficient to bring the answer back", noising "is it necessary"; with redundant paths the first can be
near 0 while the second is large.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .patching import restored_fraction

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from numpy.typing import ArrayLike

    from ..nn.hooks import ActivationCache, HookFn
    from ..nn.model import Transformer
    from .patching import Positions

INTO = ("q", "k", "v", "qk", "qkv")


def sender_delta(model: Transformer, clean_cache: ActivationCache, corrupt_cache: ActivationCache,
                 sender: tuple[int, int]) -> np.ndarray:
    """``[batch, pos, d_model]``: the sender head's clean output minus its corrupted output."""
    l, h = sender
    W_O = model.params[f"blocks.{l}.attn.W_O"][h]  # [E, D]
    dz = clean_cache["z", l][:, :, h] - corrupt_cache["z", l][:, :, h]  # [B, T, E]
    return dz @ W_O  # [B, T, D]


def _layernorm(model, resid, key):
    """LN with parameters ``key.w``, ``key.b`` and statistics recomputed on ``resid`` (identity without LN)."""
    cfg, P = model.cfg, model.params
    if cfg.normalization_type != "LN":
        return resid
    c = resid - resid.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True) + cfg.eps) * P[key + ".w"] + P[key + ".b"]


def _check(model, sender, receiver, into):
    cfg = model.cfg
    for name, hd in (("sender", sender), ("receiver", receiver)):
        if hd is None and name == "receiver":
            continue
        l, h = hd
        if not (0 <= l < cfg.n_layers and 0 <= h < cfg.n_heads):
            raise ValueError(f"{name} head {hd} is not in a model with {cfg.n_layers} layers of {cfg.n_heads} heads")
    if receiver is not None and receiver[0] <= sender[0]:
        raise ValueError(f"the receiver {receiver} must be in a later layer than the sender {sender}")
    if into not in INTO:
        raise ValueError(f"into must be one of {INTO}, got {into!r}")


def path_patch_hooks(model: Transformer, clean_cache: ActivationCache, corrupt_cache: ActivationCache, sender: tuple[int, int],
                     receiver: tuple[int, int] | None, into: str = "v") -> list[tuple[str, HookFn]]:
    """The forward hooks that, on the corrupted input, route the sender's clean output into ``receiver``'s
    ``into`` inputs only (see the module docstring)."""
    _check(model, sender, receiver, into)
    delta = sender_delta(model, clean_cache, corrupt_cache, sender)  # [B, T, D]
    if receiver is None:
        name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        return [(name, lambda act, hook: act + delta.astype(act.dtype))]
    l, h = receiver
    P = model.params
    ln_in = _layernorm(model, corrupt_cache["resid_pre", l].astype(np.float64) + delta, f"blocks.{l}.ln1")  # [B, T, D]
    hooks: list[tuple[str, HookFn]] = []
    for n in into:
        new = ln_in @ P[f"blocks.{l}.attn.W_{n.upper()}"][h] + P[f"blocks.{l}.attn.b_{n.upper()}"][h]  # [B, T, E]

        def fn(act, hook, new=new):
            act = act.copy()
            act[:, :, h] = new
            return act

        hooks.append((f"blocks.{l}.attn.hook_{n}", fn))
    return hooks


def _runs(model, clean_x, corrupt_x):
    """Predictions and caches (``hook_z``, ``hook_resid_pre``) of the clean and the corrupted run."""
    names = lambda n: n.endswith(("attn.hook_z", "hook_resid_pre"))  # noqa: E731
    return model.run_with_cache(clean_x, names_filter=names) + model.run_with_cache(corrupt_x, names_filter=names)


def path_patch(model: Transformer, clean_x: ArrayLike, corrupt_x: ArrayLike, sender: tuple[int, int],
               receiver: tuple[int, int] | None, into: str = "v", metric_pos: Positions = -1) -> tuple[float, np.ndarray]:
    """clean_x, corrupt_x [batch, pos] -> ``(restored fraction, patched predictions [batch, pos])`` of the path sender -> receiver's ``into``."""
    clean_pred, clean_cache, corrupt_pred, corrupt_cache = _runs(model, clean_x, corrupt_x)
    pred = model.run_with_hooks(corrupt_x, path_patch_hooks(model, clean_cache, corrupt_cache, sender, receiver, into))
    return restored_fraction(pred, clean_pred, corrupt_pred, metric_pos), pred


def damage_fraction(pred: np.ndarray, clean: np.ndarray, corrupt: np.ndarray, metric_pos: Positions) -> float:
    """``mean (pred - clean)^2 / mean (corrupt - clean)^2`` at ``metric_pos`` (nan when the runs agree).
    pred, clean, corrupt [batch, pos] -> a scalar."""
    return 1.0 - restored_fraction(pred, clean, corrupt, metric_pos)


def path_patch_grid(model: Transformer, clean_x: ArrayLike, corrupt_x: ArrayLike, senders: Iterable[tuple[int, int]],
                    receivers: Sequence[tuple[int, int] | None], intos: Sequence[str] = ("qk", "v"), metric_pos: Positions = -1,
                    direction: str = "denoise") -> dict[tuple[tuple[int, int], tuple[int, int] | None, str], float]:
    """``{(sender, receiver, into): value}`` for every sender, receiver in a later layer (or ``None``: the direct path
    to the read-out, ``into`` = "direct") and input, sharing the two cached runs.  ``direction``: "denoise" (the
    corrupted run, the clean sender routed along the path; restored fraction) or "noise" (the clean run, the
    corrupted sender routed along the path; damage fraction).  clean_x, corrupt_x [batch, pos]."""
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    clean_pred, clean_cache, corrupt_pred, corrupt_cache = _runs(model, clean_x, corrupt_x)
    base_x, src, dst = (corrupt_x, clean_cache, corrupt_cache) if direction == "denoise" else (clean_x, corrupt_cache, clean_cache)
    score = restored_fraction if direction == "denoise" else damage_fraction
    out = {}
    for s in senders:
        for r in receivers:
            if r is not None and r[0] <= s[0]:
                continue
            for into in (intos if r is not None else ("v",)):
                pred = model.run_with_hooks(base_x, path_patch_hooks(model, src, dst, s, r, into))
                out[(s, r, into if r is not None else "direct")] = score(pred, clean_pred, corrupt_pred, metric_pos)
    return out
