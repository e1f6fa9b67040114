"""minigpt.nn.gradcheck: central differences of a known function, the report, and a whole-model check that can fail
(the check passing on every configuration and both op sets: tests/nn/test_model.py)."""
import numpy as np
import pytest

from minigpt.fast import ops as fast_ops
from minigpt.nn import ops as reference_ops
from minigpt.nn.gradcheck import TensorCheck, central_differences, check_model, format_report, gradcheck_config, nontrivial_model
from tests.nn.helpers import small


def test_central_differences_of_a_known_function():
    rng = np.random.default_rng(0)
    v, w = rng.uniform(-2, 2, (3, 4)), rng.uniform(-1, 1, (3, 4))
    before = v.copy()
    g = central_differences(lambda: float(np.sum(np.sin(v) * w)), v)
    np.testing.assert_allclose(g, np.cos(before) * w, rtol=0, atol=1e-9)  # truncation error ~ h^2 / 6 = 2e-11
    np.testing.assert_array_equal(v, before)  # every entry put back exactly


def test_the_report_and_float32_models():
    model = nontrivial_model(small(n_layers=1))
    assert model.cfg.dtype == "float64" and all(np.abs(p).min() > 0 for p in model.params.values() if p.ndim == 1)  # biases != 0
    with pytest.raises(ValueError, match="float64"):
        check_model(type(model)(small(dtype="float32")), np.zeros((1, 3)), np.zeros((1, 3)))
    text = format_report([TensorCheck("embed.W_E", 1e-9, 2e-8, True), TensorCheck("blocks.0.ln1.w", 1e-3, 5e-2, False)])
    lines = text.splitlines()
    assert len(lines) == 3 and lines[1].endswith("OK") and lines[2].startswith("blocks.0.ln1.w") and lines[2].endswith("FAIL")


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
