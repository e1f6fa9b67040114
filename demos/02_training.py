"""Lesson 2: training, with a callback that measures head scores as the model learns (mechanisms forming)."""
import numpy as np
from _common import out

import matplotlib.pyplot as plt
from minigpt import presets
from minigpt.interp import head_scores
from minigpt.interp.plots import training_curves
from minigpt.training import train

spec = presets.apply_overrides(presets.get_preset("tiny"), ["train.steps=300", "train.eval_every=25"])
mcfg, tcfg, task = presets.build(spec)
probe = task.sample(256, np.random.default_rng(1))
track = []


def on_eval(step, model, record):  # called after every evaluation
    s = head_scores(model, probe.inputs, probe.targets)
    track.append((step, s["current"].max(), s["sim_effect"][-1].min(), record["eval_mse"]))


result = train(mcfg, tcfg, task, progress=False, callbacks=[on_eval])
training_curves({"tiny": result.history}, out("02_training_curve.png"))
steps, cur, sim, mse = map(np.array, zip(*track))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(steps, cur, label="max current-token score (any head)")
ax.plot(steps, sim, label="min similarity effect, last layer (nats)")
ax.set_xlabel("step")
ax.legend(fontsize=8)
ax.set_title("head scores during training")
fig.savefig(out("02_scores_during_training.png"), dpi=110, bbox_inches="tight")
for row in track:
    print("step %4d  max current %.3f  min last-layer sim effect %+.3f  eval MSE %.3e" % row)
