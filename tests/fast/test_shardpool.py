"""Sharded training steps (``loss_and_grad(threads=n)``: ``minigpt.threads``, ``minigpt.shardpool``): the
same numbers as one thread, every row counted once, hooks, errors and dead helpers handled."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import ModelConfig, Transformer
from minigpt.fast import shardpool, threads
from minigpt.fast.threads import limit_blas_threads, resolve_threads, shards


@pytest.fixture(autouse=True)
def four_cores(monkeypatch):
    """Three shards are tested on any machine: ``resolve_threads`` refuses more threads than the usable
    cores (tests/test_reliability_shm.py checks that), so count at least four here."""
    monkeypatch.setattr(threads, "usable_cores", lambda: max(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4))


@given(n_rows=st.integers(1, 300), n=st.integers(1, 12))
def test_shards_cover_every_row_once_nearly_evenly(n_rows, n):
    parts = shards(n_rows, n)
    assert len(parts) == min(n, n_rows)
    rows = np.concatenate([np.arange(n_rows)[p] for p in parts])
    np.testing.assert_array_equal(rows, np.arange(n_rows))  # in order, no gap, no overlap
    sizes = [p.stop - p.start for p in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def _model(**kw):
    """A float64 model with non-trivial parameters; the same few configurations throughout, so the helper
    processes started for one test are reused by the next (``shardpool.get_pool``)."""
    cfg = dict(n_layers=2, d_model=16, n_heads=2, d_mlp=32, n_ctx=8, dtype="float64")
    cfg.update(kw)
    model = Transformer(ModelConfig(**cfg), seed=3)
    rng = np.random.default_rng(7)
    for v in model.params.values():  # non-trivial parameters: biases != 0, LayerNorm gains != 1
        v += 0.1 * rng.standard_normal(v.shape)
    return model


@settings(max_examples=25)
@given(batch=st.integers(1, 9), n=st.integers(2, 3), attn_only=st.booleans(), seed=st.integers(0, 2**16))
def test_sharded_step_equals_one_thread(batch, n, attn_only, seed):
    model = _model(attn_only=attn_only)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((batch, 6)), rng.standard_normal((batch, 6))
    loss1, g1 = model.loss_and_grad(x, y, threads=1)
    loss_n, g_n = model.loss_and_grad(x, y, threads=n)
    assert loss_n == pytest.approx(loss1, rel=1e-12)
    assert g_n.keys() == g1.keys()
    for k in g1:
        np.testing.assert_allclose(g_n[k], g1[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_sharded_step_is_deterministic_and_does_not_reuse_live_arrays():
    model = _model()
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
    model = _model()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    _, g1 = model.loss_and_grad(x, y, threads=1)
    _, g_half = model.loss_and_grad(x[:3], y[:3], threads=1)  # one shard alone, unweighted
    assert not np.allclose(g_half["unembed.b_U"], g1["unembed.b_U"])


def test_hooks_see_the_whole_batch():
    model = _model()
    seen = []
    x, y = np.zeros((6, 5)), np.ones((6, 5))
    with model.hooks([("blocks.0.hook_resid_pre", lambda a, hook: seen.append(a.shape[0]))]):
        model.loss_and_grad(x, y, threads=3)
    assert seen == [6]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer or 'auto'"):
        resolve_threads(bad)
    with pytest.raises(ValueError, match="threads"):
        _model().loss_and_grad(np.zeros((2, 3)), np.zeros((2, 3)), threads=bad)


def test_auto_is_the_blas_thread_count_within_the_usable_cores():
    n = threads.blas_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    want = 1 if n is None else max(1, min(n, cores, threads.MAX_AUTO_THREADS))
    assert resolve_threads("auto") == want
    assert resolve_threads(None) == resolve_threads("auto")
    if n is not None:
        with limit_blas_threads(1):
            assert resolve_threads("auto") == 1  # e.g. a worker started with OPENBLAS_NUM_THREADS=1


def test_an_error_in_a_helper_reaches_the_caller_and_the_pool_keeps_serving():
    model = _model()
    x, y = np.ones((4, 5)), np.ones((4, 5))
    model.params["unembed.W_U"][:] = 1e300  # the squared error overflows in every shard
    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            model.loss_and_grad(x, y, threads=2)
    with np.errstate(over="ignore", invalid="ignore"):
        loss, _ = model.loss_and_grad(x, y, threads=2)  # the errstate travels to the helpers
    assert not np.isfinite(loss)
    good = _model()
    np.testing.assert_allclose(good.loss_and_grad(x, y, threads=2)[0], good.loss_and_grad(x, y, threads=1)[0], rtol=1e-12)


def test_a_dead_helper_is_reported_then_replaced():
    model = _model()
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
    model = _model(d_model=8, d_mlp=8)
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


@pytest.mark.skipif(threads.blas_threads() is None, reason="numpy's BLAS is not an OpenBLAS this process can control")
def test_limit_blas_threads_restores_the_count():
    before = threads.blas_threads()
    with limit_blas_threads(1):
        assert threads.blas_threads() == 1
    assert threads.blas_threads() == before
    with pytest.raises(KeyError):
        with limit_blas_threads(1):
            raise KeyError("inside")
    assert threads.blas_threads() == before


def test_growing_batches_and_two_caller_threads_share_one_pool_safely():
    """A larger batch makes a larger shared input block (the helpers remap it); two threads stepping the
    same configuration at once take turns on the pool."""
    import concurrent.futures

    model = _model()
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((b, 6)), rng.standard_normal((b, 6))) for b in (3, 30, 300, 4)]
    want = [model.loss_and_grad(x, y, threads=1)[0] for x, y in batches]
    assert [model.loss_and_grad(x, y, threads=2)[0] for x, y in batches] == pytest.approx(want, rel=1e-12)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        got = list(ex.map(lambda b: model.loss_and_grad(*b, threads=2)[0], batches * 3))
    assert got == pytest.approx(want * 3, rel=1e-12)


def test_reproduce_and_sweep_runs_use_one_shard(tmp_path, monkeypatch):
    """Runs started by the runner (``minigpt reproduce``/``sweep``) compute one shard per step, so their
    numbers do not depend on the worker count or the machine's cores."""
    from minigpt.experiments import pool as runner
    from minigpt.tasks import presets

    seen = []
    real = runner.train

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train", spy)
    spec = presets.apply_overrides(presets.get_preset("tiny"), ["train.steps=3", "train.eval_every=3"])
    assert runner.train_or_reuse(spec, str(tmp_path / "run"))[0] == "trained"
    assert seen == [1]
