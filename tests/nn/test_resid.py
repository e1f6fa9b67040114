"""minigpt.nn.resid: the residual-stream decompositions sum exactly to the cached residuals."""
import numpy as np

from minigpt.nn.resid import accumulated_resid, apply_ln_to_stack, decompose_resid, stack_head_results
from tests.nn.helpers import inputs


def test_residual_identities(model):
    x, _ = inputs()
    out, cache = model.run_with_cache(x)
    L = model.cfg.n_layers
    for l in range(L):
        mlp = 0 if model.cfg.attn_only else cache["mlp_out", l]
        np.testing.assert_allclose(cache["resid_post", l], cache["resid_pre", l] + cache["attn_out", l] + mlp, atol=1e-12)
        heads, labels = stack_head_results(cache, l + 1)
        per_layer = heads[-model.cfg.n_heads:].sum(0) + model.params[f"blocks.{l}.attn.b_O"]
        np.testing.assert_allclose(per_layer, cache["attn_out", l], atol=1e-12)
        np.testing.assert_allclose(decompose_resid(cache, l)[0].sum(0), cache["resid_pre", l], atol=1e-12)
    stack, labels = decompose_resid(cache)
    np.testing.assert_allclose(stack.sum(0), cache["resid_post", L - 1], atol=1e-12)
    assert labels[:2] == ["embed", "pos_embed"]
    acc, labels = accumulated_resid(cache)
    assert labels == [f"{l}_pre" for l in range(L)] + ["final_post"]
    np.testing.assert_allclose(acc[-1], cache["resid_post", -1])
    full, labels = stack_head_results(cache, incl_remainder=True)
    np.testing.assert_allclose(full.sum(0), cache["resid_post", L - 1], atol=1e-12)
    assert labels[0] == "L0H0" and labels[-1] == "remainder"
    # cache methods delegate
    np.testing.assert_allclose(cache.decompose_resid(return_labels=False).sum(0), stack.sum(0))


def test_apply_ln_to_stack_sums_to_normalized(model):
    x, _ = inputs()
    _, cache = model.run_with_cache(x)
    stack, _ = decompose_resid(cache)
    normed = apply_ln_to_stack(cache, stack).sum(0)
    if model.cfg.normalization_type == "LN":
        P = model.params
        np.testing.assert_allclose(normed * P["ln_final.w"] + P["ln_final.b"], cache["ln_final.hook_normalized"], atol=1e-10)
    else:
        np.testing.assert_allclose(normed, cache["resid_post", -1])
