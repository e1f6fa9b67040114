"""minigpt.interp.attribution: the direct contributions sum to the prediction (planted heads: tests/interp/test_planted_circuits.py)."""
import numpy as np

from minigpt.interp import direct_attribution
from tests.nn.helpers import inputs


def test_direct_attribution_sums_to_prediction(model):
    x, _ = inputs()
    out, cache = model.run_with_cache(x)
    contrib, labels = direct_attribution(model, cache)
    np.testing.assert_allclose(contrib.sum(0), out, atol=1e-10)
    assert labels[-1] == "bias" and "L1H1" in labels
