"""minigpt.fast.model: minigpt.Transformer's save/load, the reference ops with fast=False, and from_arrays's checks
(the two op sets giving the same numbers: tests/fast/test_model_fast_vs_reference.py)."""
import numpy as np
import pytest

import minigpt
from minigpt.fast import ops as fast_ops
from minigpt.io.checkpoint import save_checkpoint
from minigpt.nn import ops as reference_ops
from minigpt.nn.gradcheck import nontrivial_model
from tests.nn.helpers import small


def test_save_load_roundtrip_is_bitwise(tmp_path):
    model = minigpt.Transformer(small(), seed=0)
    model.params = nontrivial_model(small(), seed=4).params
    model.save(tmp_path / "m.npz")
    back = minigpt.Transformer.load(tmp_path / "m.npz")
    assert back.cfg == model.cfg
    for k, v in model.params.items():
        assert back.params[k].dtype == v.dtype
        np.testing.assert_array_equal(back.params[k], v)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5))
    np.testing.assert_array_equal(back(x), model(x))


def test_fast_false_runs_on_the_reference_ops_and_loads_as_asked(tmp_path):
    fast, ref = minigpt.Transformer(small(), seed=1), minigpt.Transformer(small(), seed=1, fast=False)
    assert (fast.fast, fast.ops, ref.fast, ref.ops) == (True, fast_ops, False, reference_ops)
    fast.save(tmp_path / "m.npz")
    back = minigpt.Transformer.load(tmp_path / "m.npz", fast=False)
    assert back.ops is reference_ops
    x, y = np.random.default_rng(0).uniform(-1, 1, (2, 2, 5))
    loss, grads = back.loss_and_grad(x, y, threads=2)  # the reference ops never shard: one step here
    want_loss, want = fast.loss_and_grad(x, y)
    assert loss == pytest.approx(want_loss, rel=1e-10)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-8, atol=1e-12, err_msg=k)


def test_from_arrays_and_load_refuse_what_does_not_fit(tmp_path):
    cfg = small()
    arrays = {"params/" + k: v for k, v in minigpt.Transformer(cfg).params.items()}
    with pytest.raises(ValueError, match="lacks parameter 'unembed.b_U'"):
        minigpt.Transformer.from_arrays(cfg, {k: v for k, v in arrays.items() if k != "params/unembed.b_U"})
    with pytest.raises(ValueError, match=r"parameter 'embed.W_E' has shape \(1, 9\) float64, expected \(1, 8\) float64"):
        minigpt.Transformer.from_arrays(cfg, {**arrays, "params/embed.W_E": np.zeros((1, 9))})
    with pytest.raises(ValueError, match="has shape .* float32, expected"):
        minigpt.Transformer.from_arrays(cfg, {**arrays, "params/embed.W_E": np.zeros((1, 8), np.float32)})
    save_checkpoint(tmp_path / "other.npz", {"w": np.zeros(2)}, {"note": "no model"})
    with pytest.raises(ValueError, match="not a minigpt checkpoint"):
        minigpt.Transformer.load(tmp_path / "other.npz")
