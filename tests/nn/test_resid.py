"""minigpt.nn.resid: the residual-stream decompositions sum exactly to the cached residuals, each entry of the
accumulated residual is the residual before its block, and head outputs are recomputed from z when not cached."""
import numpy as np

from minigpt.nn.resid import accumulated_resid, apply_ln_to_stack, decompose_resid, head_results, stack_head_results
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


def test_accumulated_resid_is_the_residual_before_each_block(model):
    x, _ = inputs()
    _, cache = model.run_with_cache(x)
    L = model.cfg.n_layers
    want, names = [], []
    for l in range(L):
        want.append(cache["resid_pre", l])
        names.append(f"{l}_pre")
        if not model.cfg.attn_only:
            want.append(cache["resid_mid", l])
            names.append(f"{l}_mid")
    acc, labels = accumulated_resid(cache, incl_mid=True)
    assert labels == names + ["final_post"]
    np.testing.assert_array_equal(acc, np.stack(want + [cache["resid_post", L - 1]]))
    acc, labels = accumulated_resid(cache, layer=1)  # stop before block 1
    assert labels == ["0_pre", "1_pre"]
    np.testing.assert_array_equal(acc, np.stack([cache["resid_pre", 0], cache["resid_pre", 1]]))


def test_head_results_without_hook_result_come_from_z(model):
    x, _ = inputs()
    _, full = model.run_with_cache(x)
    _, part = model.run_with_cache(x, names_filter=lambda name: not name.endswith("hook_result"))
    for l in range(model.cfg.n_layers):
        assert f"blocks.{l}.attn.hook_result" not in part
        np.testing.assert_allclose(head_results(part, l), full["result", l], rtol=1e-12, atol=1e-13)
