"""minigpt.fast.sharded: a step cut into shards gives the one-thread numbers, the same every run; hooks see the whole batch."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fast.helpers import shard_model

pytestmark = pytest.mark.usefixtures("four_cores")


@settings(max_examples=25)
@given(batch=st.integers(1, 9), n=st.integers(2, 3), attn_only=st.booleans(), seed=st.integers(0, 2**16))
def test_sharded_step_equals_one_thread(batch, n, attn_only, seed):
    model = shard_model(attn_only=attn_only)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((batch, 6)), rng.standard_normal((batch, 6))
    loss1, g1 = model.loss_and_grad(x, y, threads=1)
    loss_n, g_n = model.loss_and_grad(x, y, threads=n)
    assert loss_n == pytest.approx(loss1, rel=1e-12)
    assert g_n.keys() == g1.keys()
    for k in g1:
        np.testing.assert_allclose(g_n[k], g1[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_sharded_step_is_deterministic_and_does_not_reuse_live_arrays():
    model = shard_model()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 6)), rng.standard_normal((8, 6))
    loss_a, g_a = model.loss_and_grad(x, y, threads=3)
    kept = {k: v.copy() for k, v in g_a.items()}
    loss_b, g_b = model.loss_and_grad(x, y, threads=3)  # reuses the workspaces of the first call
    assert loss_a == loss_b
    for k in kept:
        np.testing.assert_array_equal(g_b[k], kept[k])
        np.testing.assert_array_equal(g_a[k], kept[k])  # the first call's gradients were not overwritten


def test_a_wrong_shard_weight_would_be_caught():
    """The property above can fail: dropping a shard's share changes the gradient."""
    model = shard_model()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    _, g1 = model.loss_and_grad(x, y, threads=1)
    _, g_half = model.loss_and_grad(x[:3], y[:3], threads=1)  # one shard alone, unweighted
    assert not np.allclose(g_half["unembed.b_U"], g1["unembed.b_U"])


def test_hooks_see_the_whole_batch():
    model = shard_model()
    seen = []
    x, y = np.zeros((6, 5)), np.ones((6, 5))
    with model.hooks([("blocks.0.hook_resid_pre", lambda a, hook: seen.append(a.shape[0]))]):
        model.loss_and_grad(x, y, threads=3)
    assert seen == [6]
