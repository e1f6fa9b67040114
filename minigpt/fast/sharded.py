"""A training step cut into shards computed side by side: this process and helper processes.

    step = ShardedStep(model, threads=2)     # threads: an int or "auto" (as many as BLAS would use)
    loss, grads = step(x, target)            # what model.loss_and_grad(x, target) returns

The batch is cut into ``threads`` nearly equal shards: this process computes the first, the helpers of a
``minigpt.fast.shardpool.ShardPool`` the others.  The loss and gradients are the shards' sums, each
weighted by its share of the batch, added in shard order: the one-thread numbers up to float rounding,
and the same numbers every run.  With hooks registered the step runs here alone, so every hook sees the
whole batch.  Where helpers cannot start (e.g. no shared memory) it warns once and computes on one thread.
"""
from __future__ import annotations

import numpy as np

from . import step
from .shardpool import ShardPoolError, drop_pool, get_pool, warn_once
from .threads import limit_blas_threads, resolve_threads, shards


class ShardedStep:
    """``ShardedStep(model, threads)(x, t) -> (loss, grads)`` for a model on the fast ops."""

    def __init__(self, model, threads=1):
        self.model = model
        self.threads = resolve_threads(threads)

    def __call__(self, x, target) -> tuple[float, dict[str, np.ndarray]]:
        model = self.model
        x = model.prepare(x)  # [B, T, d_in]
        B, T = x.shape[:2]
        t = model.prepare_target(target, (B, T) if model.cfg.d_out == 1 else (B, T, model.cfg.d_out))
        parts = shards(x.shape[0], 1 if model.has_hooks else self.threads)
        pool = None
        if len(parts) > 1:
            try:
                pool = get_pool(model.cfg, len(parts) - 1)
            except ShardPoolError as e:  # e.g. no shared memory here: compute on one thread
                warn_once(f"minigpt: {e}; computing on one thread")
        if pool is None:
            return step.loss_and_grad(model, x, t)
        try:
            with pool.lock:
                return self._with_helpers(pool, x, t, parts)
        except (ShardPoolError, OSError):  # a helper died or its pipe broke: start afresh next time
            drop_pool(pool)
            raise

    def _with_helpers(self, pool, x, t, parts):
        """Shard 0 here, shards 1, 2, ... in the pool's helpers; the sum of their scaled losses and grads."""
        model, B = self.model, x.shape[0]
        pool.submit(model.params, x, t, parts[1:])  # the helpers start on shards 1, 2, ...
        first = parts[0]
        try:
            with limit_blas_threads(1):  # the helpers have the other cores
                loss, grads = step.loss_and_grad(model, x[first], t[first], (first.stop - first.start) / B)
        except BaseException:
            pool.collect(len(parts) - 1, raise_errors=False)  # wait for the helpers, then raise our error
            raise
        for shard_loss, g in pool.collect(len(parts) - 1):  # in shard order: the same numbers every run
            loss += shard_loss
            for k, v in g.items():  # v is a view of the helper's shared block, valid until the next submit
                grads[k] += v
        return loss, grads
