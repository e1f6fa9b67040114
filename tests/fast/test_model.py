"""minigpt.fast.model: minigpt.Transformer's save/load, the reference ops with fast=False, and from_arrays's checks
(the two op sets giving the same numbers: tests/fast/test_model_fast_vs_reference.py)."""
import numpy as np

import minigpt
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
