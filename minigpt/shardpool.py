"""Helper processes that compute the loss and gradients of batch shards, for ``loss_and_grad(threads=n)``.

Why processes and not threads: a step is hundreds of numpy calls, and each takes Python's GIL for a few
microseconds.  Two threads stepping side by side hand the GIL back and forth hundreds of times per step,
and each hand-over wakes a sleeping thread; on the ``paper`` preset that costs a quarter of the step.
Processes share no GIL.  They share memory instead:

    params   one flat block, written by the caller before each step, read by every helper
    inputs   the batch (x and targets), written by the caller
    grads    one flat block per helper, written by that helper, summed by the caller

A pool belongs to one model shape (``ModelConfig``) and size; ``get_pool`` keeps the most recent ones so
consecutive runs (tests, sweeps in one process) reuse their helpers.  Helpers ignore Ctrl-C/SIGTERM (the
caller handles them and stops between steps) and exit when the caller goes away (their pipe closes).
Each helper runs BLAS on one thread (``OPENBLAS_NUM_THREADS=1`` in its environment).
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import warnings
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.connection import Connection

import numpy as np

from .config import ModelConfig
from .threads import BLAS_ENV

STARTUP_TIMEOUT = 120  # seconds a helper may take to start (import numpy, scipy, minigpt)


class ShardPoolError(RuntimeError):
    """A helper process could not start or died."""


_warned: set = set()


def warn_once(message: str):
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _layout(cfg: ModelConfig):
    """[(name, shape, offset, size)] of every parameter in one flat block, and the block's length."""
    from .model import param_shapes

    out, off = [], 0
    for name, shape in param_shapes(cfg).items():
        size = int(np.prod(shape))
        out.append((name, shape, off, size))
        off += size
    return out, off


def _views(buf, layout, dtype):
    """{name: array view} of a flat block."""
    flat = np.ndarray((sum(s for *_, s in layout),), dtype=dtype, buffer=buf)
    return {name: flat[off : off + size].reshape(shape) for name, shape, off, size in layout}


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open a block the caller made, without a resource tracker in this helper (the caller's tracker owns
    the block and removes it if the caller dies)."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # Python >= 3.13
    except TypeError:
        register = resource_tracker.register
        resource_tracker.register = lambda *args, **kwargs: None  # this process only ever attaches
        try:
            return shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register


def helper_main(fd: int):  # pragma: no cover - runs in the helper process (python -m minigpt._shard_helper FD)
    """A helper's loop: wait for a shard, compute it, write its gradients, answer with its loss."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    cfg_dict, params_name, grads_name = conn.recv()
    from .model import Transformer

    cfg = ModelConfig(**cfg_dict)
    layout, _ = _layout(cfg)
    blocks = {n: _attach(n) for n in (params_name, grads_name)}
    model = Transformer(cfg, seed=0)
    model.params = _views(blocks[params_name].buf, layout, cfg.dtype)
    grads_out = _views(blocks[grads_name].buf, layout, cfg.dtype)
    conn.send(("ready", None))
    inputs = {}  # name -> SharedMemory of the caller's current input block
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the caller is gone
            break
        if msg is None:
            break
        name, x_shape, t_shape, rows, batch, errstate = msg
        try:
            if name not in inputs:  # the caller made a larger input block: map it instead of the old one
                for old in inputs.values():
                    old.close()
                inputs = {name: _attach(name)}
            loss = _helper_step(model, inputs[name].buf, x_shape, t_shape, rows, batch, errstate, grads_out)
            conn.send(("ok", loss))
        except BaseException as e:  # report, keep serving
            try:
                conn.send(("error", e))
            except Exception:
                conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    # the blocks are unmapped when this process exits


def _helper_step(model, buf, x_shape, t_shape, rows, batch, errstate, grads_out):  # pragma: no cover
    """One shard in a helper: x and t are views of the input block (dropped on return, so the block can be
    closed), the gradients are copied into this helper's gradient block."""
    dtype = model.cfg.dtype
    x = np.ndarray(x_shape, dtype=dtype, buffer=buf)
    t = np.ndarray(t_shape, dtype=dtype, buffer=buf, offset=x.nbytes)
    with np.errstate(**errstate):
        loss, grads = model._shard_loss_and_grad(x[rows], t[rows], (rows.stop - rows.start) / batch)
    for k, v in grads.items():
        np.copyto(grads_out[k], v)
    return loss


class ShardPool:
    """``n_helpers`` helper processes for models of configuration ``cfg``."""

    def __init__(self, cfg: ModelConfig, n_helpers: int):
        self.cfg = cfg
        self.lock = threading.Lock()  # one step at a time (hold it from ``submit`` to ``collect``)
        layout, size = _layout(cfg)
        nbytes = size * np.dtype(cfg.dtype).itemsize
        self._blocks = []  # every SharedMemory this pool made (unlinked on close)
        self.params_shm = self._new_block(nbytes)
        self.params = _views(self.params_shm.buf, layout, cfg.dtype)
        grads_shm = [self._new_block(nbytes) for _ in range(n_helpers)]
        self.grads = [_views(s.buf, layout, cfg.dtype) for s in grads_shm]
        self.inputs_shm = None
        self.conns, self.procs = [], []
        env = dict(os.environ, **{v: "1" for v in BLAS_ENV})  # one BLAS thread per helper
        try:
            for g in grads_shm:
                ours, theirs = socket.socketpair()
                with theirs:
                    # a fresh interpreter running minigpt._shard_helper: unlike multiprocessing's spawn it
                    # does not re-run the caller's __main__ (a script without a main guard would recurse)
                    p = subprocess.Popen([sys.executable, "-m", "minigpt._shard_helper", str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
                self.procs.append(p)
                conn = Connection(ours.detach())
                self.conns.append(conn)
                conn.send((cfg.to_dict(), self.params_shm.name, g.name))
            for conn in self.conns:  # wait until every helper has imported minigpt and mapped the blocks
                if not conn.poll(STARTUP_TIMEOUT):
                    raise ShardPoolError(f"no answer within {STARTUP_TIMEOUT} s")
                status, value = conn.recv()
                if status != "ready":
                    raise value
        except Exception as e:
            self.close()
            raise ShardPoolError(f"could not start shard helper processes: {e}") from e

    def _new_block(self, nbytes):
        shm = shared_memory.SharedMemory(create=True, size=max(int(nbytes), 1))
        self._blocks.append(shm)
        return shm

    def _inputs(self, x, t):
        """Copy x and t into the shared input block (a larger one if needed); return its name."""
        need = x.nbytes + t.nbytes
        if self.inputs_shm is None or self.inputs_shm.size < need:
            if self.inputs_shm is not None:
                self._free(self.inputs_shm)
            self.inputs_shm = self._new_block(need)
        buf = self.inputs_shm.buf
        np.copyto(np.ndarray(x.shape, x.dtype, buffer=buf), x)
        np.copyto(np.ndarray(t.shape, t.dtype, buffer=buf, offset=x.nbytes), t)
        return self.inputs_shm.name

    def _free(self, shm):
        self._blocks.remove(shm)
        shm.close()
        shm.unlink()

    def submit(self, params: dict, x, t, parts: list[slice]):
        """Start helpers on ``parts`` (one each) of the batch ``x``, ``t`` with the current ``params``."""
        for k, v in params.items():
            np.copyto(self.params[k], v)
        name = self._inputs(x, t)
        err = np.geterr()
        for conn, rows in zip(self.conns, parts):
            try:
                conn.send((name, x.shape, t.shape, rows, x.shape[0], err))
            except OSError as e:  # BrokenPipeError, ConnectionResetError
                raise ShardPoolError(f"a shard helper process died ({e})") from e

    def collect(self, n: int, raise_errors: bool = True):
        """[(loss, grads)] of the first ``n`` helpers, in order (grads are views of shared blocks: read them
        before the next ``submit``).  Raises the first helper's error after all have answered."""
        results, error = [], None
        for conn, grads in zip(self.conns[:n], self.grads[:n]):
            try:
                status, value = conn.recv()
            except (EOFError, OSError):
                status, value = "error", ShardPoolError("a shard helper process died")
            if status == "ok":
                results.append((value, grads))
            elif error is None:
                error = value
        if error is not None and raise_errors:
            raise error
        return results

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def close(self):
        for conn in self.conns:
            try:
                conn.send(None)
                conn.close()
            except Exception:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.conns, self.procs = [], []
        for shm in list(self._blocks):
            try:
                self._free(shm)
            except Exception:
                pass


_pools: dict = {}  # (config json, n_helpers) -> ShardPool, most recent last
_pools_lock = threading.Lock()
MAX_POOLS = 2


def get_pool(cfg: ModelConfig, n_helpers: int) -> ShardPool:
    """A running pool for ``cfg`` with ``n_helpers`` helpers (started on first use, then reused)."""
    import json

    key = (json.dumps(cfg.to_dict(), sort_keys=True), n_helpers)
    with _pools_lock:
        pool = _pools.pop(key, None)
        if pool is not None and not pool.alive():
            pool.close()
            pool = None
        if pool is None:
            while len(_pools) >= MAX_POOLS:
                _pools.pop(next(iter(_pools))).close()
            pool = ShardPool(cfg, n_helpers)
        _pools[key] = pool  # most recent last
        return pool


def drop_pool(pool: ShardPool):
    """Close ``pool`` and forget it (after a helper failed)."""
    with _pools_lock:
        for k, v in list(_pools.items()):
            if v is pool:
                del _pools[k]
    pool.close()


def helper_pids() -> list[int]:
    """Process ids of every running helper (e.g. to add their CPU time and memory to this process's)."""
    with _pools_lock:
        return [p.pid for pool in _pools.values() for p in pool.procs if p.poll() is None]


@atexit.register
def close_all():
    with _pools_lock:
        while _pools:
            _pools.popitem()[1].close()
