"""Helper processes that compute the loss and gradients of batch shards, for ``minigpt.fast.sharded.ShardedStep``.

Why processes and not threads: a step is hundreds of numpy calls, and each takes Python's GIL for a few
microseconds.  Two threads stepping side by side hand the GIL back and forth hundreds of times per step,
and each hand-over wakes a sleeping thread; on the ``paper`` preset that costs a quarter of the step.
Processes share no GIL.  They share memory instead:

    params   one flat block, written by the caller before each step, read by every helper
    inputs   the batch (x and targets), written by the caller
    grads    one flat block per helper, written by that helper, summed by the caller

Blocks that cannot leak: each block is anonymous (``os.memfd_create`` on Linux, an unlinked temporary
file elsewhere), mapped by the caller and handed to the helpers as a file descriptor over their socket.
It has no name in ``/dev/shm`` or anywhere else, so nothing is left behind when the processes end, even
when the whole process group is killed with SIGKILL; and no resource tracker is involved.

A pool belongs to one model shape (``ModelConfig``), size and process; ``get_pool`` keeps the most recent
ones so consecutive runs (tests, sweeps in one process) reuse their helpers.  A forked child never uses
its parent's pools (``os.register_at_fork`` forgets them in the child, and every pool checks its owner's
pid): it starts its own.  Helpers ignore Ctrl-C/SIGTERM (the caller handles them and stops between steps),
exit when the caller goes away (their socket closes), and never print a traceback: an error is sent to
the caller, or, when the caller is gone, the helper exits quietly.  Each helper runs BLAS on one thread
(``OPENBLAS_NUM_THREADS=1`` in its environment).  POSIX only (file descriptors passed over sockets).
"""
from __future__ import annotations

import atexit
import json
import mmap
import os
import socket
import subprocess
import sys
import tempfile
import threading
import warnings
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle

import numpy as np

from ..nn.config import ModelConfig, param_shapes
from ..nn.model import Transformer
from . import ops, step
from .threads import BLAS_ENV

STARTUP_TIMEOUT = 120  # seconds a helper may take to start (import numpy, scipy, minigpt)
# a helper's first lines: ignore Ctrl-C/SIGTERM before importing anything, exit quietly if interrupted or
# killed while importing (see minigpt.fast.shard_helper)
HELPER_CODE = (
    "import os, signal\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "try:\n"
    "    from minigpt.fast import shard_helper\n"
    "except BaseException:\n"
    "    os._exit(1)\n"
    "shard_helper.main()\n"
)


class ShardPoolError(RuntimeError):
    """A helper process could not start or died."""


_warned: set = set()


def warn_once(message: str):
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _layout(cfg: ModelConfig):
    """[(name, shape, offset, size)] of every parameter in one flat block, and the block's length."""
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


class Block:
    """An anonymous shared block of ``size`` bytes, mapped here (``buf``).  ``fd`` is its descriptor, to
    pass to another process (``send_handle``), which maps it with ``Block.from_fd``."""

    def __init__(self, size: int, fd: int | None = None):
        self.size = max(int(size), 1)
        if fd is None:
            fd = _anonymous_fd(self.size)
        self.fd = fd
        self.buf = mmap.mmap(fd, self.size)

    @classmethod
    def from_fd(cls, fd: int, size: int) -> "Block":
        return cls(size, fd)

    def close(self):
        try:
            self.buf.close()
        except BufferError:  # a numpy view still points into it: the mapping goes with the last view
            pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _anonymous_fd(size: int) -> int:
    """A descriptor of ``size`` zeroed bytes of memory with no name in any file system."""
    if hasattr(os, "memfd_create"):  # Linux
        fd = os.memfd_create("minigpt-shard", os.MFD_CLOEXEC)
    else:  # other POSIX systems: a temporary file, unlinked at once
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, size)
    return fd


def helper_main(fd: int):  # pragma: no cover - runs in the helper process (python -m minigpt.fast.shard_helper FD)
    """A helper's loop: wait for a shard, compute it, write its gradients, answer with its loss.  Never
    prints a traceback: when the caller is gone (its socket closed, at any point, start-up included) the
    helper exits quietly."""
    conn = None
    try:
        conn = Connection(fd)
        _serve(conn)
    except (EOFError, OSError, KeyboardInterrupt):  # the caller is gone, or the helper is being torn down
        pass
    except BaseException as e:  # a bug: tell the caller if it still listens, never the terminal
        try:
            conn.send(("error", RuntimeError(f"shard helper failed: {type(e).__name__}: {e}")))
        except Exception:
            pass
        os._exit(1)
    os._exit(0)  # the blocks are unmapped when this process exits


def _serve(conn):  # pragma: no cover - runs in the helper process
    warnings.simplefilter("ignore")  # the caller computes shard 0 under the same errstate and warns for it
    cfg_dict, nbytes = conn.recv()
    params_blk = Block.from_fd(recv_handle(conn), nbytes)
    grads_blk = Block.from_fd(recv_handle(conn), nbytes)
    cfg = ModelConfig(**cfg_dict)
    layout, _ = _layout(cfg)
    model = Transformer(cfg, seed=0, ops=ops)
    model.params = _views(params_blk.buf, layout, cfg.dtype)
    grads_out = _views(grads_blk.buf, layout, cfg.dtype)
    conn.send(("ready", None))
    inputs = None  # the caller's current input block
    while True:
        msg = conn.recv()
        if msg is None:
            break
        new_size, x_shape, t_shape, rows, batch, errstate = msg
        if new_size is not None:  # the caller made a larger input block: its descriptor follows
            inputs = Block.from_fd(recv_handle(conn), new_size)
        try:
            loss = _helper_step(model, inputs.buf, x_shape, t_shape, rows, batch, errstate, grads_out)
            conn.send(("ok", loss))
        except Exception as e:  # report, keep serving
            try:
                conn.send(("error", e))
            except Exception:
                conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))


def _helper_step(model, buf, x_shape, t_shape, rows, batch, errstate, grads_out):  # pragma: no cover
    """One shard in a helper: x and t are views of the input block (dropped on return, so the block can be
    closed), the gradients are copied into this helper's gradient block."""
    dtype = model.cfg.dtype
    x = np.ndarray(x_shape, dtype=dtype, buffer=buf)
    t = np.ndarray(t_shape, dtype=dtype, buffer=buf, offset=x.nbytes)
    with np.errstate(**errstate):
        loss, grads = step.loss_and_grad(model, x[rows], t[rows], (rows.stop - rows.start) / batch)
    for k, v in grads.items():
        np.copyto(grads_out[k], v)
    return loss


class ShardPool:
    """``n_helpers`` helper processes for models of configuration ``cfg``, owned by this process."""

    def __init__(self, cfg: ModelConfig, n_helpers: int):
        self.cfg = cfg
        self.owner = os.getpid()
        self.lock = threading.Lock()  # one step at a time (hold it from ``submit`` to ``collect``)
        layout, size = _layout(cfg)
        nbytes = size * np.dtype(cfg.dtype).itemsize
        self._blocks = []  # every Block this pool maps (closed on close)
        self.params_blk = self._new_block(nbytes)
        self.params = _views(self.params_blk.buf, layout, cfg.dtype)
        grads_blk = [self._new_block(nbytes) for _ in range(n_helpers)]
        self.grads = [_views(b.buf, layout, cfg.dtype) for b in grads_blk]
        self.inputs_blk = None
        self.conns, self.procs = [], []
        env = dict(os.environ, **{v: "1" for v in BLAS_ENV})  # one BLAS thread per helper
        try:
            for g in grads_blk:
                ours, theirs = socket.socketpair()
                with theirs:
                    # a fresh interpreter running minigpt.fast.shard_helper: unlike multiprocessing's spawn it
                    # does not re-run the caller's __main__ (a script without a main guard would recurse)
                    p = subprocess.Popen([sys.executable, "-c", HELPER_CODE, str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
                self.procs.append(p)
                conn = Connection(ours.detach())
                self.conns.append(conn)
                conn.send((cfg.to_dict(), nbytes))
                send_handle(conn, self.params_blk.fd, p.pid)
                send_handle(conn, g.fd, p.pid)
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
        blk = Block(nbytes)
        self._blocks.append(blk)
        return blk

    def _inputs(self, x, t):
        """Copy x and t into the shared input block (a larger one if needed); returns the new block's size
        when it is new (its descriptor must follow the next message to every helper), else None."""
        need = x.nbytes + t.nbytes
        new = None
        if self.inputs_blk is None or self.inputs_blk.size < need:
            if self.inputs_blk is not None:
                self._free(self.inputs_blk)
            self.inputs_blk = self._new_block(need)
            new = self.inputs_blk.size
        buf = self.inputs_blk.buf
        np.copyto(np.ndarray(x.shape, x.dtype, buffer=buf), x)
        np.copyto(np.ndarray(t.shape, t.dtype, buffer=buf, offset=x.nbytes), t)
        return new

    def _free(self, blk):
        self._blocks.remove(blk)
        blk.close()

    def submit(self, params: dict, x, t, parts: list[slice]):
        """Start helpers on ``parts`` (one each) of the batch ``x``, ``t`` with the current ``params``."""
        if os.getpid() != self.owner:
            raise ShardPoolError("this pool belongs to another process (a forked parent)")
        for k, v in params.items():
            np.copyto(self.params[k], v)
        new = self._inputs(x, t)
        err = np.geterr()
        for conn, p, rows in zip(self.conns, self.procs, parts):
            try:
                conn.send((new, x.shape, t.shape, rows, x.shape[0], err))
                if new is not None:
                    send_handle(conn, self.inputs_blk.fd, p.pid)
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
        if os.getpid() != self.owner:  # a forked child: the helpers and blocks are the parent's
            return
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
        self.params, self.grads = {}, []  # drop the views so the mappings can close
        for blk in list(self._blocks):
            try:
                self._free(blk)
            except Exception:
                pass


_pools: dict = {}  # (config json, n_helpers) -> ShardPool, most recent last
_pools_lock = threading.Lock()
MAX_POOLS = 2


def _forget_pools_in_child():
    """After ``fork``, in the child: the parent's pools are not ours (never send to its helpers, never
    close them); the child starts its own on first use."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def get_pool(cfg: ModelConfig, n_helpers: int) -> ShardPool:
    """A running pool for ``cfg`` with ``n_helpers`` helpers (started on first use, then reused)."""
    key = (json.dumps(cfg.to_dict(), sort_keys=True), n_helpers)
    if any(p.owner != os.getpid() for p in _pools.values()):  # forked without register_at_fork
        _forget_pools_in_child()
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
