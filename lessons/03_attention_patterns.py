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
# # Lesson 3: attention patterns, and the copying head in layer 0
#
# The paper's story: **layer 0 forms an initial estimate by copying**, and later layers refine it.
# Copying is a good first estimate (lesson 1: the best multiple of $x_t$ alone is close to 1 from
# $t = 2$). Here we look for the head that copies, in the shipped `paper` checkpoint (3 layers, 4 heads,
# d_model 64, 2000 steps, seed 0: `report/checkpoints/paper_s0.npz`).
#
# A head's *pattern* $A[t, j]$ is how much query position $t$ attends to key position $j \le t$.
# A copying head attends to one term, the current one ($A[t, t] \approx 1$, the diagonal) or the
# previous one ($A[t, t-1] \approx 1$, just below it), **and** its output carries that term's value
# (a linear read-out of the term from the head's output has a high $R^2$).

# %%
from common import load_paper_model, n, out

import numpy as np
from minigpt.interp import classify_heads, head_scores
from minigpt.interp.head_scores import head_labels
from minigpt.interp.plots import attention_patterns

model, task = load_paper_model()
batch = task.sample(n(1024, 128), np.random.default_rng(0))
L, H = model.cfg.n_layers, model.cfg.n_heads
print(model.cfg)

# %% [markdown]
# ## Every head's mean pattern
# `run_with_cache` records every hook (TransformerLens names: `blocks.{l}.attn.hook_pattern`, shape
# `[batch, head, query, key]`). The mean over sequences shows each head's positional habit.

# %%
_, cache = model.run_with_cache(batch.inputs, names_filter=lambda name: name.endswith("hook_pattern"))
mean_pattern = np.concatenate([cache["pattern", l].mean(0) for l in range(L)])  # [layer * head, query, key]
T = batch.inputs.shape[1]
attention_patterns(mean_pattern, out("03_attention_mean.png"), tokens=[f"x{t}" for t in range(T)],
                   head_names=head_labels(model.cfg))

# %% [markdown]
# ## Head scores and the operational definition of a copying head
# `head_scores` measures, for every head, the mean attention to the current / previous / first term
# (query positions $t \ge 1$) and `probe_cur`, the $R^2$ of the best linear read-out of $x_t$ from the
# head's output. `copy = max(min(current, probe_cur), min(previous, probe_prev))`, and
# `classify_heads` calls a head *copying* when `copy >= 0.5` (definitions: `docs/interp.md`).

# %%
scores = head_scores(model, batch.inputs, batch.targets)
classes = classify_heads(scores)
print("head   current probe_cur  previous probe_prev  first   copy   class")
for l in range(L):
    for h in range(H):
        tag = "copy-" + classes["copy_kind"][l, h] if classes["copy"][l, h] else "-"
        print(f"L{l}H{h}   {scores['current'][l, h]:.3f}   {scores['probe_cur'][l, h]:.3f}     {scores['previous'][l, h]:.3f}"
              f"    {scores['probe_prev'][l, h]:.3f}    {scores['first'][l, h]:.3f}  {scores['copy'][l, h]:.3f}  {tag}")

# %% [markdown]
# ## The layer-0 copying head
# Take the layer-0 head with the highest copy score and look at it on one sequence.

# %%
h0 = int(np.argmax(scores["copy"][0]))
kind = "current" if scores["copy_cur"][0, h0] >= scores["copy_prev"][0, h0] else "previous"
print(f"layer-0 head with the highest copy score: L0H{h0}, copy = {scores['copy'][0, h0]:.3f}, it copies the {kind} term; "
      f"a copying head by the definition: {bool(classes['copy'][0, h0])}")
one = cache["pattern", 0][0, h0]  # [query, key] on the first sequence
attention_patterns(one[None], out("03_copy_head_one_sequence.png"), tokens=[f"{v:+.2f}" for v in batch.inputs[0]],
                   head_names=[f"L0H{h0}"], title="one sequence")
mean_h0 = cache["pattern", 0][:, h0].mean(0)  # [query, key]
print("attention to the current term by query position: ", np.round(np.diag(mean_h0), 2))
print("attention to the previous term by query position:", np.round(np.diag(mean_h0, -1), 2))

# %% [markdown]
# In `paper_s0` (at the time of writing) the copying head is **L0H0 and it copies the previous term**:
# about 0.68 of its attention goes to $x_{t-1}$ and its output carries $x_{t-1}$ linearly; no layer-0 head
# attends to the current term. That is not a contradiction of "copy first": the current term needs no
# head, the embedding at position $t$ already puts $x_t$ in the residual stream there. What layer 0 adds
# is the previous term, so that position $t$ holds $x_t$ *and* $x_{t-1}$, hence the last difference
# $x_t - x_{t-1}$, the raw material of linear extrapolation and of the exact three-term rule (lesson 1).
#
# Lessons 4 and 5 test whether this head *matters* (ablation, patching) and what estimate the stream
# holds after layer 0 (the prediction lens and a linear probe).
