"""Running many training runs: one BLAS thread per worker, a ``spawn`` process pool, and the
train-or-resume-or-reuse decision for one run folder.  Shared by ``minigpt reproduce`` and ``minigpt sweep``.

Why one BLAS thread: OpenBLAS starts one thread per core in every process, so N workers on N cores
would run N*N threads and thrash.  The variables must be set before numpy is imported, which is why
workers are started with ``spawn`` (a fresh interpreter that inherits the environment) after
``single_thread_env()``; Dask workers should be started with the same variables set (the sweep's test
does this for its ``LocalCluster``).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os

from ..fast.threads import BLAS_ENV
from ..io.checkpoint import load_checkpoint
from ..tasks import presets
from ..training.loop import train


def single_thread_env():
    """Set every BLAS thread-count variable to 1 (inherited by processes started afterwards)."""
    for k in BLAS_ENV:
        os.environ[k] = "1"


def pool_map(fn, jobs, workers, on_result=None):
    """``[fn(job) for job in jobs]`` in job order, on ``workers`` spawn processes with one BLAS thread each
    (in this process when ``workers <= 1`` or there is one job).  ``on_result(job, result)`` is called as
    each job finishes (in completion order), e.g. to log progress.  ``fn`` must be importable (module level)."""
    jobs = list(jobs)
    if not jobs:
        return []
    if workers <= 1 or len(jobs) == 1:
        out = []
        for j in jobs:
            out.append(fn(j))
            if on_result is not None:
                on_result(j, out[-1])
        return out

    single_thread_env()  # before spawning: every worker inherits one BLAS thread
    ctx = mp.get_context("spawn")
    out = [None] * len(jobs)
    with ctx.Pool(min(workers, len(jobs))) as pool:
        for i, r in pool.imap_unordered(_indexed, [(fn, i, j) for i, j in enumerate(jobs)], chunksize=1):
            out[i] = r
            if on_result is not None:
                on_result(jobs[i], r)
    return out


def _indexed(arg):
    fn, i, job = arg
    return i, fn(job)


def _norm(obj):
    return json.loads(json.dumps(obj))


def checkpoint_state(ckpt, mcfg, tcfg, task):
    """``"done"`` when ``ckpt`` holds a training checkpoint of exactly this run at its last step,
    ``"partial"`` when it holds this run at an earlier step (resumable), ``None`` otherwise (missing,
    unreadable, or another configuration)."""
    if not os.path.exists(ckpt):
        return None
    try:
        _, meta = load_checkpoint(ckpt)
    except Exception:
        return None
    want = _norm({"model": mcfg.to_dict(), "train": tcfg.to_dict(), "data": task.spec()})
    if "step" not in meta or any(meta.get(k) != want[k] for k in ("model", "train", "data")):
        return None
    return "done" if meta["step"] == tcfg.steps else "partial"


def train_or_reuse(spec, run_dir, callbacks=(), resume_partial=True):
    """Make sure ``run_dir`` holds the finished run of ``spec``: reuse a finished checkpoint, resume a
    partial one (``resume_partial``) or train from scratch (overwriting anything else in the folder).

    Returns ``(state, start_step)``: state is ``"reused"``, ``"resumed"`` or ``"trained"``; start_step
    is the step training started from (the checkpoint's step when resuming, 0 when training afresh,
    the final step when reused)."""
    mcfg, tcfg, task = presets.build(spec)
    ckpt = os.path.join(run_dir, "checkpoint.npz")
    state = checkpoint_state(ckpt, mcfg, tcfg, task)
    if state == "done":
        return "reused", tcfg.steps
    full = {"model": mcfg.to_dict(), "train": tcfg.to_dict(), "data": task.spec()}
    # one shard per step (threads=1), whatever the worker count or machine: a run's numbers then depend
    # on its spec alone, so runs from different invocations, pools or Dask workers can be compared and resumed
    if state == "partial" and resume_partial:
        start = int(load_checkpoint(ckpt)[1]["step"])
        train(mcfg, tcfg, task, out_dir=run_dir, resume=True, progress=False, callbacks=callbacks, spec=full, threads=1)
        return "resumed", start
    train(mcfg, tcfg, task, out_dir=run_dir, force=True, progress=False, callbacks=callbacks, spec=full, threads=1)
    return "trained", 0
