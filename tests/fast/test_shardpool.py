"""minigpt.fast.shardpool: the helper processes of sharded steps: errors reach the caller, a dead helper is
reported then replaced, Ctrl-C is the caller's, no shared memory is left, scripts without a main guard work,
and two caller threads share one pool safely."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigpt.fast import shardpool
from tests.fast.helpers import shard_model

pytestmark = pytest.mark.usefixtures("four_cores")


def test_an_error_in_a_helper_reaches_the_caller_and_the_pool_keeps_serving():
    model = shard_model()
    x, y = np.ones((4, 5)), np.ones((4, 5))
    model.params["unembed.W_U"][:] = 1e300  # the squared error overflows in every shard
    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            model.loss_and_grad(x, y, threads=2)
    with np.errstate(over="ignore", invalid="ignore"):
        loss, _ = model.loss_and_grad(x, y, threads=2)  # the errstate travels to the helpers
    assert not np.isfinite(loss)
    good = shard_model()
    np.testing.assert_allclose(good.loss_and_grad(x, y, threads=2)[0], good.loss_and_grad(x, y, threads=1)[0], rtol=1e-12)


def test_a_dead_helper_is_reported_then_replaced():
    model = shard_model()
    x, y = np.zeros((4, 5)), np.ones((4, 5))
    model.loss_and_grad(x, y, threads=2)
    pool = shardpool.get_pool(model.cfg, 1)
    pool.procs[0].kill()
    pool.procs[0].wait()
    x3, t3 = model.prepare(x), y.astype(model.cfg.dtype)
    with pytest.raises(shardpool.ShardPoolError, match="died"):  # a step that finds the helper dead
        pool.submit(model.params, x3, t3, [slice(2, 4)])
        pool.collect(1)
    loss2, _ = model.loss_and_grad(x, y, threads=2)  # the next step starts a new helper
    assert shardpool.get_pool(model.cfg, 1) is not pool
    assert loss2 == pytest.approx(model.loss_and_grad(x, y, threads=1)[0], rel=1e-12)


def test_helpers_ignore_ctrl_c_and_leave_no_shared_memory():
    model = shard_model(d_model=8, d_mlp=8)
    x, y = np.zeros((4, 5)), np.ones((4, 5))
    model.loss_and_grad(x, y, threads=2)
    pool = shardpool.get_pool(model.cfg, 1)
    os.kill(pool.procs[0].pid, signal.SIGINT)  # Ctrl-C reaches the whole process group; the caller handles it
    time.sleep(0.2)
    assert pool.alive()
    maps = f"/proc/{pool.procs[0].pid}/maps"
    if os.path.exists(maps):  # Linux: the blocks are anonymous (memfd), never files in /dev/shm
        with open(maps) as f:
            text = f.read()
        assert "memfd:minigpt-shard" in text and "/dev/shm/" not in text
    procs = list(pool.procs)
    shardpool.drop_pool(pool)
    assert all(p.poll() is not None for p in procs) and not pool._blocks


def test_a_script_without_a_main_guard_can_use_helpers(tmp_path):
    """The helpers are fresh interpreters running minigpt.fast.shard_helper: they never re-run the caller's script."""
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import numpy as np\n"
        "from minigpt import ModelConfig, Transformer\n"
        "m = Transformer(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=8), seed=0)\n"
        "print('ran', m.loss_and_grad(np.zeros((4, 5)), np.ones((4, 5)), threads=2)[0] > 0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ran True") == 1


def test_growing_batches_and_two_caller_threads_share_one_pool_safely():
    """A larger batch makes a larger shared input block (the helpers remap it); two threads stepping the
    same configuration at once take turns on the pool."""
    import concurrent.futures

    model = shard_model()
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((b, 6)), rng.standard_normal((b, 6))) for b in (3, 30, 300, 4)]
    want = [model.loss_and_grad(x, y, threads=1)[0] for x, y in batches]
    assert [model.loss_and_grad(x, y, threads=2)[0] for x, y in batches] == pytest.approx(want, rel=1e-12)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        got = list(ex.map(lambda b: model.loss_and_grad(*b, threads=2)[0], batches * 3))
    assert got == pytest.approx(want * 3, rel=1e-12)
