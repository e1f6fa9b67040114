"""Lesson 3: attention patterns of every head (CircuitsVis argument names) and the head-score table."""
import numpy as np
from _common import load_model, out

from minigpt.interp import classify_heads, head_scores
from minigpt.interp.head_scores import head_labels
from minigpt.interp.plots import attention_patterns

model, task = load_model()
batch = task.sample(512, np.random.default_rng(0))
_, cache = model.run_with_cache(batch.inputs, names_filter=lambda n: n.endswith("hook_pattern"))
L, T = model.cfg.n_layers, batch.inputs.shape[1]
attention = np.concatenate([cache["pattern", l].mean(0) for l in range(L)])  # [head, dest, src]
attention_patterns(attention, out("03_attention_mean.png"), tokens=[f"x{t}" for t in range(T)], head_names=head_labels(model.cfg))
attention_patterns(np.concatenate([cache["pattern", l][0] for l in range(L)]), out("03_attention_one_sequence.png"),
                   tokens=[f"{v:+.2f}" for v in batch.inputs[0]], head_names=head_labels(model.cfg), title="one sequence")
s = head_scores(model, batch.inputs, batch.targets)
c = classify_heads(s)
print("head   current previous first  copy   sim_eff  OV_gain  r(dc,est0)  class")
for l in range(L):
    for h in range(model.cfg.n_heads):
        tags = (["copy-" + c["copy_kind"][l, h]] if c["copy"][l, h] else []) + [r for r in ("ns_logit", "ns_ov", "ns_anti") if c[r][l, h]]
        print(f"L{l}H{h}   {s['current'][l, h]:.3f}   {s['previous'][l, h]:.3f}   {s['first'][l, h]:.3f}  {s['copy'][l, h]:.3f}  "
              f"{s['sim_effect'][l, h]:+.3f}   {s['ov_gain'][l, h]:+.3f}   {s['corr_est0'][l, h]:+.3f}     {', '.join(tags) or '-'}")
