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
# # Lesson 2: training a model that beats copying
#
# We train a small transformer (3 layers, d_model 32, 2 heads; the `tiny` preset made a little wider)
# on 10-term sequences for a few hundred steps, about ten seconds on one core. The question to
# watch: does the held-out MSE at positions $t \ge 2$ fall **below the copy baseline**? Copying is the
# natural first guess (lesson 1); anything better means the model uses more than the current term,
# i.e. it has started to infer $a$ and $b$ in context.

# %%
from common import n, out

import numpy as np
import matplotlib.pyplot as plt
from minigpt.tasks import presets
from minigpt.interp import head_scores
from minigpt.training.loop import train

steps = n(400, 150)
spec = presets.apply_overrides(presets.get_preset("tiny"), [
    f"train.steps={steps}", "train.eval_every=25", "train.batch_size=64", "model.d_model=32", "model.d_mlp=64",
    f"train.checkpoint_every={steps}"])
mcfg, tcfg, task = presets.build(spec)
print(mcfg)

# %% [markdown]
# A callback runs after every evaluation; here it records the eval MSE at $t \ge 2$, and the largest
# layer-0 copy score (lesson 3 defines it; a head counts as copying from 0.5) on a small probe batch, to
# see whether a copying head forms. The trainer also records the baselines on the held-out batch at
# the last step.

# %%
curve = []
probe = task.sample(128, np.random.default_rng(1))


def on_eval(step, model, record):
    copy0 = float(head_scores(model, probe.inputs, probe.targets)["copy"][0].max())
    curve.append((step, float(np.mean(record["eval_mse_by_pos"][2:])), copy0))


result = train(mcfg, tcfg, task, progress=False, callbacks=[on_eval])
copy = float(np.mean(result.history[-1]["baselines_by_pos"]["copy"][2:]))
steps_seen, mse, copy0 = map(np.array, zip(*curve))

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(steps_seen, mse, marker=".", label="model, held-out MSE (t >= 2)")
ax.axhline(copy, color="k", ls="--", label="copy x_t")
ax.set_xlabel("step")
ax.set_ylabel("MSE")
ax.legend()
ax.set_title("training against the copy baseline")
fig.savefig(out("02_training_vs_copy.png"), dpi=110, bbox_inches="tight")
for s, m, c0 in curve[:: max(1, len(curve) // 8)]:
    print(f"step {s:4d}: MSE(t>=2) {m:.4f}  ({'below' if m < copy else 'above'} copy {copy:.4f}); best layer-0 copy score {c0:.2f}")
crossed = next((s for s, m, _ in curve if m < copy), None)
print(f"first evaluation below copying: step {crossed}; final ratio copy / model = {copy / mse[-1]:.2f}")

# %% [markdown]
# With the full 400 steps the model ends about 7.7 times below copying (seed 0, measured when this
# lesson was written; a different seed or machine changes the last digits). Two things to notice: (1) early on the model is *worse* than copying, it has to learn even
# that; (2) the MSE at positions $t \ge 2$ can in principle reach 0 (three terms determine the next,
# lesson 1), so there is much left to learn: the `paper` preset (2000 steps, d_model 64) gets much
# closer, and lessons 3-5 open up that trained model. (3) In this short run one layer-0 head leans
# towards the previous term (a copy score around 0.4 at the time of writing), but no head reaches the
# 0.5 of a copying head: the model beats copying before a clean copying head exists. The `paper`
# checkpoint of lesson 3 has one (0.64).
