"""Lesson 1: the task and the baselines.  x_{n+1} = a x_n + b with fresh (a, b, x0) per sequence; what copying,
linear extrapolation and the exact three-term rule achieve, against the Bayes floor from theory/."""
import numpy as np
from _common import out

import matplotlib.pyplot as plt
from minigpt import baselines
from minigpt.data import AffineRecurrence
from minigpt.interp import plots
from theory.bayes import bayes_mse

task = AffineRecurrence()  # a, b, x0 ~ U(-1, 1), 20 terms
batch = task.sample(2048, np.random.default_rng(0))

fig, ax = plt.subplots(figsize=(6, 3.5))
for i in range(6):
    ax.plot(batch.x[i], marker=".", label=f"a={batch.a[i]:+.2f} b={batch.b[i]:+.2f}")
ax.set_xlabel("n")
ax.set_ylabel("x_n")
ax.legend(fontsize=7)
ax.set_title("six sequences of the task")
fig.savefig(out("01_sequences.png"), dpi=110, bbox_inches="tight")

sq = {name: (p - batch.targets) ** 2 for name, p in baselines.all_predictions(batch, task).items() if name != "oracle"}
floor = [bayes_mse(t, task) for t in range(task.length - 1)]
plots.mse_by_position(sq, out("01_baselines.png"), title="baselines: MSE by position", floor=floor)
for name, s in sq.items():
    print(f"{name:14s} MSE t=0 {s[:, 0].mean():.3f}  t=1 {s[:, 1].mean():.3f}  t>=2 {s[:, 2:].mean():.3e}")
print(f"Bayes floor    t=0 {floor[0]:.3f}  t=1 {floor[1]:.3f}  t>=2 0")
print("figures in", out(""))
