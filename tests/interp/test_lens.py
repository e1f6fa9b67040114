"""minigpt.interp.lens: each row of the prediction lens is the read-out of the residual before its block."""
import numpy as np
import pytest

from minigpt.interp import prediction_lens
from tests.nn.helpers import inputs, make_model


def _hand_readout(m, resid, scale=None):
    """LN_final (own statistics, or the given scale) and W_U applied to a residual [B, T, D], written out by hand."""
    P = m.params
    if m.cfg.normalization_type == "LN":
        c = resid - resid.mean(-1, keepdims=True)
        s = np.sqrt((c * c).mean(-1, keepdims=True) + m.cfg.eps) if scale is None else scale
        resid = c / s * P["ln_final.w"] + P["ln_final.b"]
    return (resid @ P["unembed.W_U"] + P["unembed.b_U"])[..., 0]


@pytest.mark.parametrize("ln", ["recompute", "frozen"])
def test_lens_rows_read_every_block(model, ln):
    x, _ = inputs()
    out, cache = model.run_with_cache(x)
    preds, labels = prediction_lens(model, cache, ln)
    L = model.cfg.n_layers
    assert preds.shape == (L + 1,) + out.shape and labels == [f"{l}_pre" for l in range(L)] + ["final_post"]
    np.testing.assert_allclose(preds[-1], out, atol=1e-10)
    scale = cache["ln_final.hook_scale"] if ln == "frozen" and model.cfg.normalization_type == "LN" else None
    resids = [cache["hook_embed"] + cache["hook_pos_embed"]] + [cache["resid_post", l] for l in range(L)]  # before block 0, after each block
    for i, r in enumerate(resids):  # row i = the read-out of the residual before block i, not after it
        np.testing.assert_allclose(preds[i], _hand_readout(model, r, scale), atol=1e-10, err_msg=labels[i])
    assert np.abs(preds[0] - preds[1]).max() > 1e-3  # rows differ, so reading one block late would fail above


def test_lens_choices_in_the_middle():
    m = make_model()
    x, _ = inputs()
    _, cache = m.run_with_cache(x)
    a, _ = prediction_lens(m, cache, "recompute")
    b, _ = prediction_lens(m, cache, "frozen")
    r0 = cache["resid_pre", 0]
    np.testing.assert_allclose(a[0], _hand_readout(m, r0), atol=1e-10)  # the embeddings' own LayerNorm statistics
    np.testing.assert_allclose(b[0], _hand_readout(m, r0, cache["ln_final.hook_scale"]), atol=1e-10)  # the final residual's scale
    assert np.abs(a[0] - b[0]).max() > 1e-2  # and the two choices are different numbers here
