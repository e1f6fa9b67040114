"""The prediction lens: the read-out applied to the residual stream after every block.

Two LayerNorm choices (``ln=``), both stated because they answer different questions:

* ``"recompute"``: ``LN_final`` with statistics recomputed on the intermediate residual, i.e. "what
  would the model predict if it stopped here" (the usual logit lens).
* ``"frozen"``: centre the intermediate residual and divide by the *final* residual's LayerNorm scale
  (``ln_final.hook_scale`` of the real run), i.e. "what does this part of the stream contribute to the
  real prediction"; this is linear in the residual, so it decomposes additively (``attribution``).

Row ``i`` of the result reads ``resid_pre i`` (row 0: the embeddings only); the last row reads the
final residual and equals the model's output exactly under both choices.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..nn.resid import accumulated_resid

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..nn.hooks import ActivationCache
    from ..nn.model import Transformer

LN_CHOICES = ("recompute", "frozen")


def readout(model: Transformer, resid: np.ndarray, ln: str = "recompute", scale: np.ndarray | None = None) -> np.ndarray:
    """``resid [..., d_model]`` -> predictions ``[...]`` (or ``[..., d_out]``) through the final LN and W_U."""
    P, cfg = model.params, model.cfg
    h = resid
    if cfg.normalization_type == "LN":
        c = resid - resid.mean(-1, keepdims=True)
        if ln == "recompute":
            s = np.sqrt((c * c).mean(-1, keepdims=True) + cfg.eps)
        elif ln == "frozen":
            if scale is None:
                raise ValueError("the frozen lens needs the final LayerNorm scale (cache['ln_final.hook_scale'])")
            s = scale
        else:
            raise ValueError(f"ln must be one of {LN_CHOICES}, got {ln!r}")
        h = c / s * P["ln_final.w"] + P["ln_final.b"]
    out = h @ P["unembed.W_U"] + P["unembed.b_U"]
    return out[..., 0] if cfg.d_out == 1 else out


def prediction_lens(model: Transformer, cache: ActivationCache, ln: str = "recompute",
                    incl_mid: bool = False) -> tuple[np.ndarray, list[str]]:
    """``(preds [n_layers + 1 (+ mids), batch, pos], labels)``: the read-out of every accumulated residual."""
    stack, labels = accumulated_resid(cache, incl_mid=incl_mid)
    scale = cache["ln_final.hook_scale"] if (ln == "frozen" and model.cfg.normalization_type == "LN") else None
    return readout(model, stack, ln, scale), labels


def lens_mse(model: Transformer, cache: ActivationCache, target: ArrayLike, ln: str = "recompute") -> tuple[np.ndarray, list[str]]:
    """``(mse [n_layers + 1, pos], labels)``: MSE by position of each lens prediction against ``target [batch, pos]``."""
    preds, labels = prediction_lens(model, cache, ln)
    d = preds - np.asarray(target)[None]
    return (d * d).mean(1), labels


def probe_lens(cache: ActivationCache, x: ArrayLike, y: ArrayLike, t_min: int = 2, train_frac: float = 0.5) -> dict[str, list]:
    """A linear-probe ("tuned") lens: for every accumulated residual, the best linear read-out of the target
    ``y`` (least squares with intercept, fitted on the first ``train_frac`` of the sequences, scored on the rest,
    positions ``t >= t_min``).  Unlike the read-out lenses it finds an estimate in *any* direction of the stream.

    Returns ``{"labels", "mse" [rows], "mse_vs_xt" [rows], "r2_on_xt" [rows]}``: held-out MSE against the
    target, mean squared distance of the estimate from the current term x_t (0: the estimate is a copy), and
    the R^2 of the estimate regressed on x_t (not discriminative on its own: x_{t+1} itself is highly
    correlated with x_t).  ``x, y [batch, pos]``."""
    stack, labels = accumulated_resid(cache)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    B = x.shape[0]
    n_tr = max(1, int(B * train_frac))
    mse, r2, mse_xt = [], [], []
    for r in stack:
        F = r[:, t_min:].astype(np.float64)  # [B, T', D]
        F = np.concatenate([F, np.ones(F.shape[:2] + (1,))], -1)
        coef, *_ = np.linalg.lstsq(F[:n_tr].reshape(-1, F.shape[-1]), y[:n_tr, t_min:].ravel(), rcond=None)
        pred = F[n_tr:] @ coef  # [B', T']
        mse.append(float(((pred - y[n_tr:, t_min:]) ** 2).mean()))
        mse_xt.append(float(((pred - x[n_tr:, t_min:]) ** 2).mean()))
        xc, pc = x[n_tr:, t_min:].ravel(), pred.ravel()
        xc, pc = xc - xc.mean(), pc - pc.mean()
        den = (xc * xc).sum() * (pc * pc).sum()
        r2.append(float((xc * pc).sum() ** 2 / den) if den > 0 else 0.0)
    return {"labels": labels, "mse": mse, "r2_on_xt": r2, "mse_vs_xt": mse_xt}
