"""Shard helpers under hostile conditions (issue 15): SIGKILL of the whole process group leaves no shared
memory behind, a helper whose trainer dies during start-up exits without a traceback, and a forked child
never touches its parent's helpers."""
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigpt import ModelConfig, Transformer
from minigpt.fast import shardpool, threads

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
linux = pytest.mark.skipif(not os.path.isdir("/proc/self") or not os.path.isdir("/dev/shm"), reason="needs Linux /proc and /dev/shm")
two_cores = pytest.mark.skipif(threads.usable_cores() < 2, reason="--threads 2 needs two usable cores")


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def maps(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read()
    except OSError:
        return ""


def shm_paths(text):
    return {line.split(None, 5)[-1].strip() for line in text.splitlines() if "/dev/shm/" in line}


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def wait_for(cond, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def helpers_of(pid):
    """The shard helpers among ``pid``'s children (not, e.g., a resource tracker)."""
    out = []
    for c in children(pid):
        try:
            with open(f"/proc/{c}/cmdline") as f:
                if "shard_helper" in f.read():
                    out.append(c)
        except OSError:
            pass
    return out


def start_trainer(tmp_path, stderr):
    """``minigpt train --threads 2`` on the tiny preset (long enough to be killed mid-run), in its own
    session: its process group holds the trainer and its helpers."""
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "minigpt.cli", "train", "--preset", "tiny", "--threads", "2", "--quiet",
           "--out", str(tmp_path / "run"), "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)


@linux
@two_cores
def test_sigkill_of_the_process_group_leaves_dev_shm_as_it_was(tmp_path):
    before = set(os.listdir("/dev/shm"))
    proc = start_trainer(tmp_path, subprocess.DEVNULL)
    try:
        # wait until the helper has mapped its blocks and steps are running
        def stepping():
            helpers = helpers_of(proc.pid)
            text = maps(helpers[0]) if helpers else ""
            return ("minigpt-shard" in text or "/dev/shm/" in text) and (tmp_path / "run" / "metrics.jsonl").exists()

        assert wait_for(stepping, 60), "the trainer did not start its helper"
        helper = helpers_of(proc.pid)[0]
        time.sleep(0.3)
        mapped = shm_paths(maps(proc.pid)) | shm_paths(maps(helper))
        shared = "memfd:minigpt-shard" in maps(proc.pid) and "memfd:minigpt-shard" in maps(helper)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert wait_for(lambda: not alive(helper), 10)
    left = {p for p in mapped if os.path.exists(p)}
    assert not left, f"SIGKILL left {sorted(left)} in /dev/shm"
    assert shared  # the blocks were shared, anonymously: the test is not vacuous
    new = {n for n in set(os.listdir("/dev/shm")) - before if n.startswith(("psm_", "minigpt"))}
    assert not {n for n in new if any(n in p for p in mapped)}


@linux
@two_cores
def test_a_helper_whose_trainer_dies_during_start_up_exits_quietly(tmp_path):
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = start_trainer(tmp_path, f)
    try:
        assert wait_for(lambda: helpers_of(proc.pid), 60), "no helper started"
        helpers = helpers_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the trainer alone, while its helper is still importing numpy
        proc.wait(30)
        assert wait_for(lambda: not any(alive(h) for h in helpers), 60), "the orphaned helper did not exit"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert err.read_text() == ""  # no traceback, not one line


def _child_step(q):
    try:
        m = _model()
        x, y = np.ones((6, 5)), np.zeros((6, 5))
        q.put(("ok", m.loss_and_grad(x, y, threads=2)[0], [p.pid for p in shardpool.get_pool(m.cfg, 1).procs]))
    except BaseException as e:  # noqa: BLE001
        q.put(("error", f"{type(e).__name__}: {e}", []))
    finally:
        shardpool.close_all()  # a fork worker exits without atexit: close its own pool


def _model():
    return Transformer(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=8), seed=4)


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
@two_cores
def test_a_forked_child_never_touches_the_parents_helpers():
    m = _model()
    x, y = np.ones((6, 5)), np.zeros((6, 5))
    want = m.loss_and_grad(x, y, threads=2)[0]
    pool = shardpool.get_pool(m.cfg, 1)
    mine = [p.pid for p in pool.procs]
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    kids = [ctx.Process(target=_child_step, args=(q,)) for _ in range(2)]
    for k in kids:
        k.start()
    got = [q.get(timeout=120) for _ in kids]
    for k in kids:
        k.join(30)
    for status, loss, pids in got:
        assert status == "ok", loss
        assert loss == pytest.approx(want, rel=1e-6) and not set(pids) & set(mine)  # its own helpers
    assert m.loss_and_grad(x, y, threads=2)[0] == want  # the parent's pool still serves ...
    assert shardpool.get_pool(m.cfg, 1) is pool and pool.alive() and [p.pid for p in pool.procs] == mine  # ... unharmed
