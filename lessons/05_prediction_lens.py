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
# # Lesson 5: the prediction lens: what the model "predicts" after each layer
#
# The residual stream after each block can be read out with the model's own final LayerNorm and
# unembedding: the *prediction lens* (the logit lens for a regression model). Rows are labelled by the
# stream they read: `0_pre` is the input to block 0 (the embeddings), `1_pre` the stream after block 0,
# and so on; `final_post` is the model's output. If layer 0 forms an initial estimate, the `1_pre` row
# should already beat guessing, and later blocks should sharpen it.
#
# Two LayerNorm choices: **recompute** normalises each partial stream by its own scale; **frozen** uses
# the final scale of the full stream, so the read-out is linear in the stream and the per-component
# pieces add up exactly (direct attribution, below).

# %%
from common import load_paper_model, n, out

import numpy as np
from minigpt.interp import direct_attribution, prediction_lens
from minigpt.interp.lens import probe_lens
from minigpt.interp.plots import lens_by_layer

model, task = load_paper_model()
batch = task.sample(n(2048, 512), np.random.default_rng(0))
x, y = batch.inputs, batch.targets
pred, cache = model.run_with_cache(x)

# %% [markdown]
# ## Yardsticks
# What simple estimates achieve at positions $t \ge 2$: copying $x_t$, the best multiple of $x_t$
# (lesson 1), and the best linear function of $x_t$ and $x_{t-1}$, which is what a stream holding the
# current term (embedding) and the previous one (the layer-0 copying head, lesson 3) allows linearly.

# %%
xt, xprev, target = x[:, 2:].ravel(), x[:, 1:-1].ravel(), y[:, 2:].ravel()
yardsticks = {"copy x_t": ((target - xt) ** 2).mean()}
for name, cols in (("best c x_t + d", [xt]), ("best linear in x_t, x_(t-1)", [xt, xprev])):
    F = np.stack(cols + [np.ones_like(xt)], 1)
    coef, *_ = np.linalg.lstsq(F, target, rcond=None)
    yardsticks[name] = ((F @ coef - target) ** 2).mean()
for name, m in yardsticks.items():
    print(f"{name:28s} MSE {m:.3e}")

# %% [markdown]
# ## The lens, row by row
# For each row: the MSE against the target $x_{t+1}$ and the mean squared distance from the current
# term $x_t$ (0 would be an exact copy), at positions $t \ge 2$.

# %%
mse = {}
for ln in ("recompute", "frozen"):
    p, labels = prediction_lens(model, cache, ln)
    assert np.allclose(p[-1], pred, atol=1e-5)  # the last row is the model's own output
    mse[ln] = ((p - y[None]) ** 2).mean(1)
    print(f"lens ({ln}):")
    for lab, row in zip(labels, p):
        print(f"  {lab:14s} MSE {((row - y)[:, 2:] ** 2).mean():.3e}   distance from x_t {((row - x)[:, 2:] ** 2).mean():.3e}")
lens_by_layer(mse, labels, out("05_lens.png"))

# %% [markdown]
# ## A linear-probe lens
# The read-out lens only looks along the model's own output direction. A probe fitted on half the
# sequences finds the best linear estimate of $x_{t+1}$ in *any* direction of each residual stream
# (scored on the other half).

# %%
pr = probe_lens(cache, x, y)
for lab, m, d in zip(pr["labels"], pr["mse"], pr["mse_vs_xt"]):
    print(f"  {lab:14s} probe MSE {m:.3e}   distance from x_t {d:.3e}")

# %% [markdown]
# What `paper_s0` shows (at the time of writing): read along the output direction, the stream after
# layer 0 is *not* yet a usable prediction (the `1_pre` rows of the read-out lens are far worse than
# copying); the final output is about 200 times better than copying. But the probe finds an estimate in
# the stream after layer 0 that already beats copying about fivefold, and beats the best linear function
# of $x_t$ and $x_{t-1}$ too (layer 0's MLP adds non-linear features). So "layer 0 forms an initial
# estimate" holds in the sense of *information present in the stream*, not of the model's read-out
# direction; later layers both improve the estimate and rotate it into the output direction.

# %% [markdown]
# ## Direct attribution
# With the frozen LayerNorm the prediction is a sum of one term per component (embeddings, each head,
# each MLP, biases): it adds up to the model's output exactly. The largest components:

# %%
contrib, names = direct_attribution(model, cache)
print(f"{len(names)} components; max |sum - prediction| = {np.abs(contrib.sum(0) - pred).max():.1e}")
size = np.abs(contrib[:, :, 2:]).mean((1, 2))
for i in np.argsort(-size)[:8]:
    print(f"  {names[i]:10s} mean |contribution| {size[i]:.3f}")
