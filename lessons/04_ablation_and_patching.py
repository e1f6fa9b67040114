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
batch = task.sample(n(1024, 128), np.random.default_rng(0))
L, H = model.cfg.n_layers, model.cfg.n_heads
rows, cols = [f"L{l}" for l in range(L)], [f"H{h}" for h in range(H)]
h0 = int(np.argmax(head_scores(model, batch.inputs[:256], batch.targets[:256])["copy"][0]))  # the layer-0 copying head (lesson 3)
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
# By position: how much resample-ablating the copying head raises the MSE at each position $t$.
# At $t = 0$ there is no previous term to copy.

# %%
ab = ablations["resample"]
ratio_by_pos = 1 + ab["by_pos"][0, h0] / np.maximum(ab["base"], 1e-12)  # by_pos is the MSE increase
print(f"clean MSE by position:", np.array2string(ab["base"], precision=1, max_line_width=120))
print(f"resample-ablate L0H{h0}, MSE / clean MSE by position:", np.round(ratio_by_pos, 1))

# %% [markdown]
# In `paper_s0` (at the time of writing) this head has the largest effect of any head under resample
# ablation (overall MSE x4.3; no other head above x2.5), and from $t = 2$ on, where the clean model is
# nearly exact, its MSE rises about a hundredfold: the model's refinement depends on the copied term.

# %% [markdown]
# ## Patching
# For each corrupted parameter, the restored fraction of the last prediction when one head's output
# (at every position) is copied over from the clean run. Each corruption changes every term after it
# differently: a different $x_0$ shifts the whole sequence while keeping its rule; a different $a$ or
# $b$ changes the rule. A head that carries the rule ($a$, $b$) restores much under those corruptions;
# one that carries a single term restores less.

# %%
patched = {}
for which in ("a", "b", "x0"):
    clean, corrupt = make_pairs(task, n(256, 32), which, np.random.default_rng(1))
    patched[which] = patch_heads(model, clean[:, :-1], corrupt[:, :-1])
    heatmap(patched[which], out(f"04_patch_heads_{which}.png"), rows, cols, f"patch head z, corrupt {which}", "restored", center=0.0)
    print(f"corrupt {which}: restored fraction by head (L0H{h0}: {patched[which][0, h0]:+.2f})\n{np.round(patched[which], 2)}")

# %% [markdown]
# In `paper_s0` (at the time of writing) no single head restores much when $a$ or $b$ is corrupted: the
# rule is not carried by one head's output. With $x_0$ corrupted, patching the copying head alone
# restores about half of the clean prediction. Negative numbers mean patching one head
# alone moved the prediction further from the clean one: heads compensate for each other, which is
# why single-head patching gives a lower bound on what a group of heads carries.
