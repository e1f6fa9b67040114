"""minigpt.interp.ablation: each ablation equals the same intervention made another way (zeroing W_O[h],
swapping the head's output in attn_out)."""
import numpy as np
import pytest

from minigpt.interp import head_ablation
from minigpt.interp.ablation import ablate_hook
from tests.nn.helpers import inputs


def test_zero_ablation_hook_equals_zeroing_W_O(model):
    x, y = inputs()
    hooked = model.run_with_hooks(x, [("blocks.1.attn.hook_z", ablate_hook(1, "zero"))])
    saved = model.params["blocks.1.attn.W_O"].copy()
    model.params["blocks.1.attn.W_O"][1] = 0
    try:
        np.testing.assert_allclose(hooked, model(x), atol=1e-12)
    finally:
        model.params["blocks.1.attn.W_O"] = saved


def test_ablation_tables(model):
    x, y = inputs(B=8)
    _, cache = model.run_with_cache(x)
    base = ((model(x) - y) ** 2).mean(0)
    for method in ("zero", "mean"):
        ab = head_ablation(model, x, y, method)
        assert ab["table"].shape == (2, 2) and ab["by_pos"].shape == (2, 2, 5)
        np.testing.assert_allclose(ab["table"], ab["by_pos"].mean(-1))
        for l in range(2):
            for h in range(2):  # another route: swap head h's output z_h W_O[h] in attn_out for 0 / its batch mean per position
                r = cache["result", l][:, :, h]
                new = 0 * r if method == "zero" else np.broadcast_to(r.mean(0), r.shape)
                hook = (f"blocks.{l}.hook_attn_out", lambda a, hook, r=r, new=new: a - r + new)
                want = ((model.run_with_hooks(x, [hook]) - y) ** 2).mean(0) - base  # later layers see the ablated stream either way
                np.testing.assert_allclose(ab["by_pos"][l, h], want, atol=1e-10, err_msg=f"{method} L{l}H{h}")
        if method == "zero":  # every layer: zeroing W_O[h] is the same intervention
            for l in range(2):
                for h in range(2):
                    saved = model.params[f"blocks.{l}.attn.W_O"].copy()
                    model.params[f"blocks.{l}.attn.W_O"][h] = 0
                    try:
                        np.testing.assert_allclose(ab["by_pos"][l, h], ((model(x) - y) ** 2).mean(0) - base, atol=1e-10)
                    finally:
                        model.params[f"blocks.{l}.attn.W_O"] = saved
    ab = head_ablation(model, x, y, "resample")
    assert np.abs(ab["table"]).min() > 0  # a resampled head writes another sequence's output: the MSE moves (identity would give 0)
    with pytest.raises(ValueError):
        head_ablation(model, x, y, "bogus")
