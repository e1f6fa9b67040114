"""Lesson 4: which heads matter (zero / mean / resample ablation) and what they carry (activation patching with
clean and corrupted sequences that differ only in a, b or x0)."""
import numpy as np
from _common import load_model, out

from minigpt.interp import head_ablation, make_pairs, patch_heads, patch_resid
from minigpt.interp.plots import heatmap

model, task = load_model()
batch = task.sample(512, np.random.default_rng(0))
L, H = model.cfg.n_layers, model.cfg.n_heads
rows, cols = [f"L{l}" for l in range(L)], [f"H{h}" for h in range(H)]
for method in ("zero", "mean", "resample"):
    ab = head_ablation(model, batch.inputs, batch.targets, method)
    heatmap(np.log10(ab["ratio"]), out(f"04_ablation_{method}.png"), rows, cols, f"{method} ablation: log10(MSE ratio)", "log10 ratio")
    print(f"{method:8s} ablation, MSE ratio (clean MSE {ab['base'].mean():.2e}):\n{np.round(ab['ratio'], 2)}")
for which in ("a", "b", "x0"):
    clean, corrupt = make_pairs(task, 128, which, np.random.default_rng(1))
    grid = patch_resid(model, clean[:, :-1], corrupt[:, :-1])
    heads = patch_heads(model, clean[:, :-1], corrupt[:, :-1])
    heatmap(grid, out(f"04_patch_resid_{which}.png"), [f"resid_pre {l}" for l in range(L)], list(range(grid.shape[1])),
            f"patch resid_pre, corrupt {which}", "restored", center=0.0, annotate=False)
    heatmap(heads, out(f"04_patch_heads_{which}.png"), rows, cols, f"patch head z, corrupt {which}", "restored", center=0.0)
    print(f"corrupt {which}: restored fraction by head\n{np.round(heads, 2)}")
