"""Reference solutions to the lesson exercises (lesson 6: backprop by hand).

Try the exercise first; ``MINIGPT_LESSON_SOLUTIONS=1`` makes the lessons use these (the tests do).
These are written for reading, not speed: ``minigpt.fast.ops`` has the in-place versions the model uses.
"""
import numpy as np


def layernorm_backward(dout, cache, record=None):
    """LayerNorm out = xhat * w + b, xhat = (x - mean) * rstd, over the last axis.

    dout [..., D], cache = (xc [..., D], std [..., 1], scale [..., 1], xhat [..., D], w [D]) (the reference
    op's, minigpt/nn/ops.py) -> (dx [..., D], dw [D], db [D]).  ``record`` (the model's backward-hook
    recorder) is ignored here, and so is a hook replacing the scale (then scale != std)."""
    xc, std, scale, xhat, w = cache
    rstd = 1.0 / scale  # [..., 1]
    D = xhat.shape[-1]
    db = dout.reshape(-1, D).sum(0)  # out = xhat * w + b  -> db = sum over rows of dout
    dw = (dout * xhat).reshape(-1, D).sum(0)  # -> dw = sum over rows of dout * xhat
    gw = dout * w  # [..., D]  dL/dxhat
    m1 = gw.mean(-1, keepdims=True)  # [..., 1]  mean of gw
    m2 = (gw * xhat).mean(-1, keepdims=True)  # [..., 1]  mean of gw * xhat
    dx = rstd * (gw - m1 - xhat * m2)  # `minigpt derive layernorm_jacobian`, last step
    return dx, dw, db
