# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 6: backprop by hand (LayerNorm)
#
# minigpt has no autograd: every op has a forward and a hand-written backward, and every backward is
# checked against float64 central differences, $\partial L/\partial \theta_i \approx (L(\theta + h e_i) - L(\theta - h e_i)) / 2h$.
# In this lesson you write LayerNorm's backward pass yourself and check it the same way.
#
# **The exercise** is the cell marked `EXERCISE`. The reference solution is in `lessons/solutions.py`;
# run with `MINIGPT_LESSON_SOLUTIONS=1` to use it (the tests do).

# %%
from common import SOLUTIONS

import numpy as np
from minigpt.nn import ops  # the reference ops: the textbook LayerNorm (minigpt.fast.ops has the fast one)
from minigpt.nn.config import ModelConfig
from minigpt.nn.gradcheck import format_report, gradcheck_config
from theory import derive

# %% [markdown]
# ## The derivation
# LayerNorm over the last axis (size $D$): $\mu$ the mean, $\sigma^2$ the biased variance,
# $r = 1/\sqrt{\sigma^2 + \epsilon}$, $\hat x_i = (x_i - \mu)\,r$, $\text{out}_i = w_i \hat x_i + b_i$.
# Given the upstream gradient $g = \partial L / \partial \text{out}$, sympy derives every piece
# (each step is checked by `tests/theory/test_derive.py`):

# %%
print(derive.text("layernorm_jacobian"))

# %% [markdown]
# ## EXERCISE: write `layernorm_backward`
# The forward pass `ops.layernorm_forward(x, w, b, eps)` (the reference op, `minigpt/nn/ops.py`) returns
# `(out, cache)` with `cache = (xc [..., D], std [..., 1], scale [..., 1], xhat [..., D], w [D])`: the centred
# input, its standard deviation, the scale used (`std` itself unless a hook replaced it), the normalised
# input and the gain. Return `(dx [..., D], dw [D], db [D])`: `dw` and `db` sum over every leading axis
# (batch and position). Use the last step above with $r = 1 / \text{scale}$ and $gw = g \cdot w$:
# $dx = r\,(gw - \text{mean}(gw) - \hat x\, \text{mean}(gw\,\hat x))$.

# %%
def layernorm_backward(dout, cache, record=None):
    xc, std, scale, xhat, w = cache
    D = xhat.shape[-1]
    # EXERCISE: compute db, dw and dx (about six lines of numpy)
    raise NotImplementedError("write layernorm_backward (or run with MINIGPT_LESSON_SOLUTIONS=1)")


if SOLUTIONS:  # the reference solution, lessons/solutions.py
    from solutions import layernorm_backward  # noqa: F811

# %% [markdown]
# ## Check 1: against central differences on the op alone
# Non-trivial parameters matter: with $w = 1$, $b = 0$ some wrong formulas still pass. The loss is
# $L = \sum g \cdot \text{out}$ for a random $g$, so $\partial L/\partial \text{out} = g$ exactly.

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 5))  # [batch, pos, D]
w, b, eps = 1 + 0.5 * rng.standard_normal(5), 0.3 * rng.standard_normal(5), 1e-5
g = rng.standard_normal(x.shape)


def loss(x, w, b):
    return float((ops.layernorm_forward(x, w, b, eps)[0] * g).sum())


def central_differences(f, v, h=1e-6):
    """df/dv entry by entry: (f(v + h e_i) - f(v - h e_i)) / 2h (v is changed in place and restored)."""
    grad = np.zeros_like(v)
    for i in np.ndindex(v.shape):
        old = v[i]
        v[i] = old + h
        up = f()
        v[i] = old - h
        down = f()
        v[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def check_op(backward):
    """Max relative error of (dx, dw, db) from ``backward`` against central differences."""
    _, cache = ops.layernorm_forward(x, w, b, eps)
    analytic = backward(g, cache)
    numeric = [central_differences(lambda: loss(x, w, b), v) for v in (x, w, b)]
    return {name: float(np.abs(a - nu).max() / np.abs(nu).max()) for name, a, nu in zip(("dx", "dw", "db"), analytic, numeric)}


errors = check_op(layernorm_backward)
print("relative errors:", {k: f"{v:.1e}" for k, v in errors.items()})
assert max(errors.values()) < 1e-7, "the backward pass disagrees with central differences"

# %% [markdown]
# ## Check 2: inside the whole model, with the project's gradcheck
# `minigpt.nn.gradcheck` perturbs every parameter of a small float64 model (biases $\ne 0$, LayerNorm
# gains $\ne 1$) and compares the model's gradients with central differences of its loss. We swap
# your function in for `ops.layernorm_backward`, so every LayerNorm in the model uses it.

# %%
cfg = ModelConfig(n_layers=1, d_model=6, n_heads=2, d_mlp=8, n_ctx=4, dtype="float64")
original = ops.layernorm_backward
ops.layernorm_backward = layernorm_backward
try:
    report = gradcheck_config(cfg)
finally:
    ops.layernorm_backward = original
print(format_report(report))
assert all(r.ok for r in report)

# %% [markdown]
# ## The check can fail
# A classic mistake forgets that $\mu$ and $r$ depend on $x$ too, i.e. drops the mean terms: the
# gradient of $x$ becomes just $r\,gw$. Central differences catch it at once:

# %%
def forgot_the_means(dout, cache, record=None):
    dx, dw, db = layernorm_backward(dout, cache)
    xc, std, scale, xhat, w = cache
    return dout * w / scale, dw, db


wrong = check_op(forgot_the_means)
print("relative errors of the wrong version:", {k: f"{v:.1e}" for k, v in wrong.items()})
assert wrong["dx"] > 1e-2

# %% [markdown]
# And inside the model, the project's gradcheck flags the LayerNorm gains and everything upstream of them:

# %%
ops.layernorm_backward = forgot_the_means
try:
    report = gradcheck_config(cfg)
finally:
    ops.layernorm_backward = original
print("tensors failing with the wrong LayerNorm backward:", [r.name for r in report if not r.ok])
assert not all(r.ok for r in report)
