"""Direct attribution of the prediction to the embeddings, every head, every MLP and the biases.

Through the final LayerNorm with its scale *frozen* at the value of the real run (the only choice under
which the prediction is a sum of per-component terms):

    pred = sum_c  centre(c) / scale * w_lnf @ W_U   +   (b_lnf @ W_U + b_U)

over the components c of the final residual: ``embed``, ``pos_embed``, each head ``L{l}H{h}``
(``z_h W_O[h]``), each block's ``L{l}.b_O`` and ``L{l}.mlp``.  The terms sum exactly to the prediction.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..nn.resid import apply_ln_to_stack, head_results

if TYPE_CHECKING:
    from ..nn.hooks import ActivationCache
    from ..nn.model import Transformer


def component_stack(cache: ActivationCache) -> tuple[np.ndarray, list[str]]:
    """``(stack [n_components, batch, pos, d_model], labels)`` summing to the final residual."""
    model = cache.model
    cfg, P = model.cfg, model.params
    parts, labels = [cache["hook_embed"], np.broadcast_to(cache["hook_pos_embed"], cache["hook_embed"].shape)], ["embed", "pos_embed"]
    for l in range(cfg.n_layers):
        r = head_results(cache, l)
        for h in range(cfg.n_heads):
            parts.append(r[:, :, h])
            labels.append(f"L{l}H{h}")
        parts.append(np.broadcast_to(P[f"blocks.{l}.attn.b_O"], r.shape[:2] + r.shape[3:]))
        labels.append(f"L{l}.b_O")
        if not cfg.attn_only:
            parts.append(cache["mlp_out", l])
            labels.append(f"L{l}.mlp")
    return np.stack(parts), labels


def direct_attribution(model: Transformer, cache: ActivationCache) -> tuple[np.ndarray, list[str]]:
    """``(contrib [n_components + 1, batch, pos], labels)``; the last row ``"bias"`` is
    ``b_lnf @ W_U + b_U``.  ``contrib.sum(0)`` equals the model's prediction."""
    stack, labels = component_stack(cache)
    P, cfg = model.params, model.cfg
    normed = apply_ln_to_stack(cache, stack)  # [C, B, T, D]
    W = P["unembed.W_U"][:, 0]  # [D]   (d_out = 1)
    bias = P["unembed.b_U"][0]
    if cfg.normalization_type == "LN":
        W = P["ln_final.w"] * W
        bias = bias + P["ln_final.b"] @ P["unembed.W_U"][:, 0]
    contrib = normed @ W  # [C, B, T]
    contrib = np.concatenate([contrib, np.full((1,) + contrib.shape[1:], bias, dtype=contrib.dtype)])
    return contrib, labels + ["bias"]


def head_direct(model: Transformer, cache: ActivationCache) -> np.ndarray:
    """``[n_layers, n_heads, batch, pos]``: each head's direct contribution to the prediction."""
    contrib, labels = direct_attribution(model, cache)
    cfg = model.cfg
    idx = {lab: i for i, lab in enumerate(labels)}
    return np.stack([[contrib[idx[f"L{l}H{h}"]] for h in range(cfg.n_heads)] for l in range(cfg.n_layers)])
