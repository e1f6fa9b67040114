"""minigpt.nn.gradcheck: central differences and the whole-model check can fail (the check itself passing on
every configuration: tests/nn/test_model.py)."""
import pytest

from minigpt.fast import ops as fast_ops
from minigpt.nn import ops as reference_ops
from minigpt.nn.gradcheck import gradcheck_config
from tests.nn.helpers import small


@pytest.mark.parametrize("ops", [reference_ops, fast_ops], ids=["reference", "fast"])
def test_gradcheck_detects_a_wrong_backward(monkeypatch, ops):
    """The check must be able to fail: break LayerNorm's backward slightly and it must notice, on both op sets."""
    real = ops.layernorm_backward

    def broken(dout, cache, record=None):
        dx, dw, db = real(dout, cache, record)
        return dx, dw * 1.001, db

    monkeypatch.setattr(ops, "layernorm_backward", broken)
    report = gradcheck_config(small(), seed=0, ops=ops)
    assert any(not r.ok for r in report if r.name.endswith("ln1.w"))
