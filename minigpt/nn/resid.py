"""Residual-stream helpers (TransformerLens names): every function reads an ``ActivationCache``.

All stacks are ``[component, batch, pos, d_model]`` with a list of labels, and the identities hold
exactly (up to float rounding):

    accumulated_resid(cache)[i]          = the residual before block i (the last entry: after the last block)
    decompose_resid(cache, layer).sum(0) = cache["resid_pre", layer]   (layer = n_layers: the final residual)
    stack_head_results(cache, l).sum(0) + b_O[l] = cache["attn_out", l]
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .hooks import ActivationCache


def _n_layers(cache):
    return cache.model.cfg.n_layers


def _final_resid(cache):
    return cache["resid_post", _n_layers(cache) - 1]


def accumulated_resid(cache: ActivationCache, layer: int | None = None, incl_mid: bool = False,
                      return_labels: bool = True) -> np.ndarray | tuple[np.ndarray, list[str]]:
    """The residual stream as it accumulates: ``[resid_pre 0, (resid_mid 0,) resid_pre 1, ..., final]``.

    ``layer``: stop before block ``layer`` (``None`` or ``n_layers``: include the final residual).
    Returns ``(stack [n, batch, pos, d_model], labels)`` (or just the stack)."""
    L = _n_layers(cache)
    layer = L if layer is None else (layer + L + 1 if layer < 0 else layer)
    attn_only = cache.model.cfg.attn_only
    parts, labels = [], []
    for l in range(layer):
        parts.append(cache["resid_pre", l])
        labels.append(f"{l}_pre")
        if incl_mid and not attn_only:
            parts.append(cache["resid_mid", l])
            labels.append(f"{l}_mid")
    if layer == L:
        parts.append(_final_resid(cache))
        labels.append("final_post")
    else:
        parts.append(cache["resid_pre", layer])
        labels.append(f"{layer}_pre")
    stack = np.stack(parts)
    return (stack, labels) if return_labels else stack


def decompose_resid(cache: ActivationCache, layer: int | None = None, mode: str = "all", incl_embeds: bool = True,
                    return_labels: bool = True) -> np.ndarray | tuple[np.ndarray, list[str]]:
    """The residual before block ``layer`` (``None``: the final residual) as a sum of component outputs:
    ``embed, pos_embed, 0_attn_out, 0_mlp_out, 1_attn_out, ...``.  ``mode``: "all", "attn" or "mlp"
    keeps only those block outputs (then the sum is no longer the residual).  The full sum equals
    ``cache["resid_pre", layer]`` exactly.  Returns ``(stack [n_components, batch, pos, d_model], labels)``
    (or just the stack)."""
    L = _n_layers(cache)
    layer = L if layer is None else (layer + L + 1 if layer < 0 else layer)
    attn_only = cache.model.cfg.attn_only
    parts, labels = [], []
    if incl_embeds:
        parts += [cache["hook_embed"], cache["hook_pos_embed"]]
        labels += ["embed", "pos_embed"]
    for l in range(layer):
        if mode in ("all", "attn"):
            parts.append(cache["attn_out", l])
            labels.append(f"{l}_attn_out")
        if mode in ("all", "mlp") and not attn_only:
            parts.append(cache["mlp_out", l])
            labels.append(f"{l}_mlp_out")
    stack = np.stack([np.broadcast_to(p, parts[0].shape) for p in parts])
    return (stack, labels) if return_labels else stack


def head_results(cache: ActivationCache, layer: int) -> np.ndarray:
    """``[batch, pos, head, d_model]``: each head's output ``z_h W_O[h]`` (from ``hook_result`` if cached,
    else from ``hook_z`` and the weights)."""
    name = f"blocks.{layer}.attn.hook_result"
    if name in cache:
        return cache[name]
    z = cache["z", layer]  # [B, T, H, E]
    return np.einsum("bthe,hed->bthd", z, cache.model.params[f"blocks.{layer}.attn.W_O"])


def stack_head_results(cache: ActivationCache, layer: int | None = None, return_labels: bool = True,
                       incl_remainder: bool = False) -> np.ndarray | tuple[np.ndarray, list[str]]:
    """Every head's output as a stack ``[n_heads * layers, batch, pos, d_model]`` with labels ``L0H1``.

    ``layer``: heads of blocks ``0 .. layer-1`` (``None``: all blocks).  ``incl_remainder``: append
    the rest of the residual (embeddings, b_O, MLPs) so the stack sums to the residual before ``layer``."""
    L = _n_layers(cache)
    layer = L if layer is None else (layer + L + 1 if layer < 0 else layer)
    parts, labels = [], []
    for l in range(layer):
        r = head_results(cache, l)  # [B, T, H, D]
        for h in range(r.shape[2]):
            parts.append(r[:, :, h])
            labels.append(f"L{l}H{h}")
    if incl_remainder:
        total = _final_resid(cache) if layer == L else cache["resid_pre", layer]
        parts.append(total - np.sum(parts, axis=0) if parts else total)
        labels.append("remainder")
    stack = np.stack(parts)
    return (stack, labels) if return_labels else stack


def apply_ln_to_stack(cache: ActivationCache, stack: np.ndarray, layer: int | None = None) -> np.ndarray:
    """Apply a *frozen* LayerNorm to every component of a residual stack: centre each component over
    d_model and divide by the scale the real forward pass computed (``ln_final.hook_scale`` for
    ``layer=None``, else ``blocks.{layer}.ln1.hook_scale``).  Because centring is linear and the scale
    is fixed, the components of a decomposition still sum to the normalised residual (before the LN's
    gain w and bias b).  Without LayerNorm the stack is returned unchanged.
    ``stack [n, batch, pos, d_model]`` -> ``[n, batch, pos, d_model]``."""
    cfg = cache.model.cfg
    if cfg.normalization_type is None:
        return stack
    scale = cache["ln_final.hook_scale"] if layer is None else cache["scale1", layer]  # [B, T, 1]
    return (stack - stack.mean(-1, keepdims=True)) / scale
