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
# # Lesson 1: the task, the baselines and the floor
#
# Every training sequence follows its own affine recurrence
#
# $$x_{n+1} = a\,x_n + b, \qquad a, b, x_0 \sim U(-1, 1) \text{ drawn afresh per sequence.}$$
#
# The model sees $x_0 \dots x_t$ and predicts $x_{t+1}$ at every position $t$. It never sees $a$ or $b$:
# it must infer them *in context*. Before training anything, we ask what simple rules achieve, and
# what no predictor can beat (the Bayes floor), so that later lessons can tell learning from luck.
#
# Run as a script (`python lessons/01_data_and_baselines.py`) or open as a notebook
# (`jupytext --to notebook lessons/01_data_and_baselines.py`).

# %%
from common import n, out  # first: sets up paths and a headless backend for scripts

import numpy as np
import matplotlib.pyplot as plt
from minigpt.tasks import baselines
from minigpt.tasks.data import AffineRecurrence
from minigpt.interp import plots
from theory import bayes

task = AffineRecurrence()  # the paper's setting: a, b, x0 ~ U(-1, 1), 20 terms
batch = task.sample(n(20_000, 2_000), np.random.default_rng(0))
print(task)

# %% [markdown]
# ## What the sequences look like
# $|a| < 1$ converges to the fixed point $b / (1 - a)$; $a < 0$ oscillates around it; $a$ near 1 drifts
# almost linearly. (`minigpt derive fixed_point` derives this step by step.)

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for i in range(6):
    ax.plot(batch.x[i], marker=".", label=f"a={batch.a[i]:+.2f} b={batch.b[i]:+.2f}")
ax.set_xlabel("n")
ax.set_ylabel("$x_n$")
ax.legend(fontsize=7)
ax.set_title("six sequences of the task")
fig.savefig(out("01_sequences.png"), dpi=110, bbox_inches="tight")

# %% [markdown]
# ## Baselines against the Bayes floor
# * **copy** predicts $x_t$; **linear** extrapolates $2x_t - x_{t-1}$;
# * **three_term** solves the two equations $x_{t-1} = a x_{t-2} + b$, $x_t = a x_{t-1} + b$ for $a, b$
#   (`minigpt derive next_from_three`): exact from $t = 2$;
# * the **Bayes floor** is the best any predictor can do: $4/9$ at $t = 0$ (only $x_0$ seen),
#   $2/15$ at $t = 1$ (`minigpt derive bayes_floor_paper`), and 0 from $t = 2$ on.
#
# The measured MSEs below come from sampled sequences; the closed forms come from `theory.bayes`.

# %%
sq = {name: (p - batch.targets) ** 2 for name, p in baselines.all_predictions(batch, task).items() if name != "oracle"}
floor = [bayes.bayes_mse(t, task) for t in range(3)]
print(f"{'':14s} {'t=0':>8s} {'t=1':>8s} {'t>=2':>10s}")
for name, s in sq.items():
    print(f"{name:14s} {s[:, 0].mean():8.3f} {s[:, 1].mean():8.3f} {s[:, 2:].mean():10.3e}")
print(f"{'Bayes floor':14s} {floor[0]:8.3f} {floor[1]:8.3f} {floor[2]:10.3e}")
print(f"closed form, copy at t=2: {bayes.baseline_mse('copy', 2, task):.4f} (measured {sq['copy'][:, 2].mean():.4f})")
assert abs(floor[1] - 2 / 15) < 1e-12

# %%
plots.mse_by_position(sq, out("01_baselines.png"), title="baselines: MSE by position",
                      floor=[bayes.bayes_mse(t, task) for t in range(task.length - 1)])

# %% [markdown]
# ## Why copying is a good first estimate
# Suppose a predictor may only scale the current term: $\hat x_{t+1} = c\,x_t$. The best $c$ is
# $c_t = E[x_{t+1} x_t] / E[x_t^2]$ (`minigpt derive copy_first_estimate`). It is 0 at $t = 0$
# ($x_0$ says nothing linear about $x_1$ when $E[a] = E[b] = 0$), $3/4$ at $t = 1$, and close to 1 after:
# *copy the current term* is nearly the best single-term estimate, and it is what the model's first
# layer turns out to compute (lessons 3 and 5). Here from the exact moments and from a least-squares fit:

# %%
x = batch.x
for t in range(6):
    fit = (x[:, t + 1] @ x[:, t]) / (x[:, t] @ x[:, t])
    print(f"t={t}: c_t exact {bayes.copy_coefficient(t, task):.3f}, fitted on the sample {fit:.3f}")
