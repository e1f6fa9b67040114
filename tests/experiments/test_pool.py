"""minigpt.experiments.pool: the worker pool's map keeps the job order, a checkpoint is told finished, partial or
foreign, a run folder is trained, resumed or reused accordingly, and runs compute one shard per step."""
import dataclasses
import time

import pytest

from minigpt.experiments.pool import checkpoint_state, pool_map, train_or_reuse
from minigpt.fast.threads import BLAS_ENV
from minigpt.tasks import presets
from minigpt.training import train

SPEC = presets.apply_overrides(presets.get_preset("tiny"), [
    "train.steps=4", "train.eval_every=1", "train.checkpoint_every=2", "train.eval_size=16", "train.batch_size=8"])


def square_after(job):
    """``job = (value, seconds)``: value ** 2 after a nap (at module level: spawn workers import it)."""
    value, seconds = job
    time.sleep(seconds)
    return value * value


class Stop(Exception):
    """Raised by a callback at step 3: the run stops after its step-2 checkpoint."""


def stop_at_3(step, model, record):
    if step == 3:
        raise Stop


def test_pool_map_returns_the_results_in_job_order(monkeypatch):
    for k in BLAS_ENV:  # pool_map sets them to 1 for its workers; put them back afterwards
        monkeypatch.setenv(k, "1")
    jobs = [(3, 0.3), (1, 0.0), (2, 0.0), (4, 0.0)]  # the first job finishes last when two workers share them
    for workers in (1, 2):
        done = []
        assert pool_map(square_after, jobs, workers, on_result=lambda job, r: done.append((job[0], r))) == [9, 1, 4, 16]
        assert sorted(done) == [(1, 1), (2, 4), (3, 9), (4, 16)]  # each job reported once, with its own result
    assert pool_map(square_after, [], 2) == []


def test_checkpoint_state_and_train_or_reuse(tmp_path):
    mcfg, tcfg, task = presets.build(SPEC)
    run = tmp_path / "run"
    with pytest.raises(Stop):
        train(mcfg, tcfg, task, out_dir=run, progress=False, callbacks=[stop_at_3], threads=1)
    ckpt = str(run / "checkpoint.npz")
    assert checkpoint_state(ckpt, mcfg, tcfg, task) == "partial"
    assert checkpoint_state(ckpt, dataclasses.replace(mcfg, d_mlp=8), tcfg, task) is None  # another run's checkpoint
    assert checkpoint_state(ckpt, mcfg, dataclasses.replace(tcfg, lr=1e-2), task) is None
    assert checkpoint_state(ckpt, mcfg, tcfg, dataclasses.replace(task, length=9)) is None
    assert checkpoint_state(str(tmp_path / "missing.npz"), mcfg, tcfg, task) is None
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    assert checkpoint_state(str(tmp_path / "junk.npz"), mcfg, tcfg, task) is None
    assert train_or_reuse(SPEC, str(run)) == ("resumed", 2)
    assert checkpoint_state(ckpt, mcfg, tcfg, task) == "done"
    assert train_or_reuse(SPEC, str(run)) == ("reused", 4)
    assert train_or_reuse(presets.apply_overrides(SPEC, ["train.lr=0.01"]), str(run)) == ("trained", 0)  # another spec: afresh


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
