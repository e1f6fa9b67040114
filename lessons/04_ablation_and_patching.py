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
# # Lesson 4: which heads matter (ablation) and what they carry (patching)
#
# Attention patterns (lesson 3) show where a head looks, not whether the model needs it.
# * **Ablation** removes one head's output (`hook_z`) and measures how much the MSE rises:
#   *zero* (set it to 0), *mean* (its average output at that position), *resample* (its output on another
#   sequence: plausible, but about the wrong $a, b, x_0$).
# * **Activation patching** runs a *corrupted* sequence that differs from a *clean* one in one generating
#   parameter ($a$, $b$ or $x_0$) and copies one activation over from the clean run: the *restored
#   fraction* says how much of the clean prediction that activation carries (1 = everything).

# %%
from common import load_paper_model, n, out

import numpy as np
from minigpt.interp import head_ablation, head_scores, make_pairs, patch_heads
from minigpt.interp.plots import heatmap

model, task = load_paper_model()
batch = task.sample(n(1024, 256), np.random.default_rng(0))
L, H = model.cfg.n_layers, model.cfg.n_heads
rows, cols = [f"L{l}" for l in range(L)], [f"H{h}" for h in range(H)]
h0 = int(np.argmax(head_scores(model, batch.inputs, batch.targets)["copy"][0]))  # the layer-0 copying head (lesson 3)
print(f"layer-0 copying head: L0H{h0}")

# %% [markdown]
# ## Ablation
# The ratio is ablated MSE / clean MSE over all positions; above 1 the head matters. Zero ablation
# also removes a head's constant offset, so it can exaggerate; resample ablation is the strictest test
# of whether the head carries *sequence-specific* information.

# %%
ablations = {}
for method in ("zero", "mean", "resample"):
    ab = head_ablation(model, batch.inputs, batch.targets, method)
    ablations[method] = ab
    heatmap(np.log10(ab["ratio"]), out(f"04_ablation_{method}.png"), rows, cols, f"{method} ablation: log10(MSE ratio)", "log10 ratio")
    print(f"{method:8s} ablation, MSE ratio (clean MSE {ab['base'].mean():.2e}):\n{np.round(ab['ratio'], 2)}")

# %% [markdown]
# By position: ablating the copying head hurts from the first positions on, where the copy is most of
# the prediction (lesson 1: at $t = 1$ the best multiple of $x_t$ is already 3/4).

# %%
ab = ablations["resample"]
print(f"resample-ablate L0H{h0}: MSE by position / clean:",
      np.round(ab["by_pos"][0, h0] / np.maximum(ab["base"], 1e-12), 1)[:8], "...")

# %% [markdown]
# ## Patching
# For each corrupted parameter, the restored fraction of the last prediction when one head's output
# (at every position) is copied from the clean run. The copying head carries $x_t$, so it should matter
# most when the corruption changes $x_t$ itself.

# %%
for which in ("a", "b", "x0"):
    clean, corrupt = make_pairs(task, n(256, 64), which, np.random.default_rng(1))
    heads = patch_heads(model, clean[:, :-1], corrupt[:, :-1])
    heatmap(heads, out(f"04_patch_heads_{which}.png"), rows, cols, f"patch head z, corrupt {which}", "restored", center=0.0)
    print(f"corrupt {which}: restored fraction by head (L0H{h0}: {heads[0, h0]:+.2f})\n{np.round(heads, 2)}")
