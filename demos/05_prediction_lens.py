"""Lesson 5: the prediction lens, both LayerNorm choices, the linear-probe lens, and the direct attribution
that sums exactly to the prediction."""
import numpy as np
from _common import load_model, out

from minigpt.interp import direct_attribution, prediction_lens
from minigpt.interp.lens import probe_lens
from minigpt.interp.plots import lens_by_layer

model, task = load_model()
batch = task.sample(1024, np.random.default_rng(0))
x, y = batch.inputs, batch.targets
pred, cache = model.run_with_cache(x)
mse = {}
for ln in ("recompute", "frozen"):
    p, labels = prediction_lens(model, cache, ln)
    assert np.allclose(p[-1], pred, atol=1e-5)  # the last row is the model's output
    mse[ln] = ((p - y[None]) ** 2).mean(1)
    print(f"lens ({ln:9s}) MSE t>=2 by row:", {lab: f"{m[2:].mean():.2e}" for lab, m in zip(labels, mse[ln])})
lens_by_layer(mse, labels, out("05_lens.png"))
pr = probe_lens(cache, x, y)
print("probe lens MSE t>=2:", {lab: f"{m:.2e}" for lab, m in zip(pr["labels"], pr["mse"])})
print("probe lens distance from x_t:", {lab: f"{m:.2e}" for lab, m in zip(pr["labels"], pr["mse_vs_xt"])})
contrib, names = direct_attribution(model, cache)
print(f"direct attribution: {len(names)} components, max |sum - prediction| = {np.abs(contrib.sum(0) - pred).max():.1e}")
size = np.abs(contrib[:, :, 2:]).mean((1, 2))
for i in np.argsort(-size)[:8]:
    print(f"  {names[i]:10s} mean |contribution| {size[i]:.3f}")
