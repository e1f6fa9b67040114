"""Training loop: fresh sequences every step, AdamW with warmup + cosine, held-out evaluation,
JSON-lines metrics, atomic checkpoints carrying optimizer, step and RNG state, and exact resume.

A run folder holds ``config.json``, ``metrics.jsonl`` and ``checkpoint.npz`` (the latest state; it is
also a model file that ``Transformer.load`` reads).

Reliability contract:

* **Exact resume.**  Everything a step depends on is either in the checkpoint (parameters, AdamW
  moments and step count, the data RNG's state, the evaluation history) or a pure function of the
  configs (the held-out set, the learning-rate schedule).  A run stopped after any step and resumed
  ends bitwise identical to an uninterrupted one, and its ``metrics.jsonl`` is rewritten from the
  checkpoint's history so it holds the same lines too.
* **Ctrl-C / SIGTERM.**  In the main thread a signal handler only raises a flag; the loop finishes the
  step it is in (so no half-applied update is ever saved), writes a checkpoint and raises
  ``TrainingInterrupted`` (the CLI exits 130, or 143 for SIGTERM).  A second Ctrl-C stops at once,
  keeping the last checkpoint.
* **Numerical faults.**  A non-finite batch, loss, gradient (or gradient norm), parameter or optimizer
  moment stops training with ``NonFiniteError`` naming the step and the first non-finite tensor, with
  a hint; nothing non-finite is ever saved, so the last good checkpoint stays.
* **Run folders** are never overwritten without ``resume=True`` or ``force=True``.
* **One writer per run folder.**  ``train`` holds the folder's lock (``checkpoint.FolderLock`` on
  ``RUN/.lock``) from before it writes anything until it returns; a second writer (train, resume,
  --force, a sweep) is refused at once with "RUN is in use by process PID".  Holding the lock, it removes
  the ``.tmp-*`` files of writers that died, and tries the longest file name it will write, so a path
  that is too long fails before training, not at the first checkpoint.
* **Shards.**  The record holds the shard count of every step (``shards``); a resume uses it, so the
  run stays bitwise exact on any machine.  Another count must be asked for explicitly (a warning says
  exactness is lost).
"""
from __future__ import annotations

import errno
import json
import math
import os
import signal
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from ..fast.model import Transformer
from ..fast.sharded import ShardedStep
from ..fast.threads import resolve_threads, usable_cores
from ..io.checkpoint import (
    CheckpointError,
    FolderInUseError,
    FolderLock,
    load_checkpoint,
    longest_temp_name,
    remove_stale_temps,
    save_checkpoint,
    with_filename,
    write_text_atomic,
)
from ..nn.config import ModelConfig, TrainConfig
from ..nn.config import cut as _cut
from ..nn.optim import AdamW, clip_grad_norm, lr_at
from ..tasks import baselines
from ..tasks.data import AffineRecurrence
from ..tasks.presets import check_compatible
from .run import load_run

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
RUN_FILES = (CHECKPOINT, METRICS, CONFIG)
HINT = "Hint: lower train.lr, keep train.grad_clip > 0, use model.normalization_type=LN, or narrow the data priors"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite values, a run folder in the way, a resume that does not fit, ...)."""


class NonFiniteError(TrainingError):
    """A NaN or infinity appeared at ``step`` (1-based: the step being computed) in ``tensor``."""

    def __init__(self, message, step, tensor, checkpoint_step=None):
        super().__init__(message)
        self.step, self.tensor, self.checkpoint_step = step, tensor, checkpoint_step


class TrainingInterrupted(RuntimeError):
    """Ctrl-C (or SIGTERM) during training; ``step`` steps are saved in the checkpoint at ``path``."""

    def __init__(self, step, path, signum=signal.SIGINT, saved=True):
        if path is None:
            msg = f"interrupted after step {step} (no run folder, nothing saved)"
        elif saved:
            msg = f"interrupted: checkpoint at step {step} saved to {path} (continue with --resume)"
        else:
            msg = f"interrupted; the last checkpoint (step {step}) in {path} is kept (continue with --resume)"
        super().__init__(msg)
        self.step, self.path, self.signum, self.saved = step, path, signum, saved

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum)


@dataclass
class TrainResult:
    model: Transformer
    history: list = field(default_factory=list)  # one dict per evaluation
    out_dir: str | None = None


def data_rngs(seed: int):
    """Separate, seeded streams: (training data, held-out set)."""
    return np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])


def mse_by_position(pred, target) -> np.ndarray:
    """[pos] mean over the batch of (pred - target)^2 (float64)."""
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return (d * d).reshape(d.shape[0], d.shape[1], -1).mean(axis=(0, 2))


def evaluate(model: Transformer, batch, task=None, with_baselines=False) -> dict:
    """MSE by position of the model (and optionally of every baseline) on a held-out batch."""
    out = {"model": mse_by_position(predict(model, batch.inputs), batch.targets).tolist()}
    if with_baselines:
        for name, pred in baselines.all_predictions(batch, task).items():
            out[name] = mse_by_position(pred, batch.targets).tolist()
    return out


def predict(model, x, chunk=1024):
    """model(x) for a large held-out set x [n, pos(, d_in)], ``chunk`` sequences at a time (bounded memory)."""
    return np.concatenate([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def first_nonfinite(tensors: dict, prefix: str = ""):
    """Name of the first tensor (in dict order) holding a NaN or infinity, or None."""
    for k, g in tensors.items():
        if not np.isfinite(g).all():
            return prefix + k
    return None


_first_nonfinite = first_nonfinite  # old private name


class _SignalFlag:
    """While active (main thread only), SIGINT/SIGTERM set ``self.signum`` instead of interrupting; a
    second SIGINT restores the default behaviour (``KeyboardInterrupt`` at once)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                try:
                    self._old[s] = signal.signal(s, self._handler)
                except (ValueError, OSError):  # pragma: no cover - exotic embedding
                    pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._old.clear()
        return False


def _check_args(model_cfg, train_cfg, task, resume, force, callbacks):
    if not isinstance(model_cfg, ModelConfig):
        raise TypeError(f"model_cfg must be a minigpt.ModelConfig, got {type(model_cfg).__name__}")
    if not isinstance(train_cfg, TrainConfig):
        raise TypeError(f"train_cfg must be a minigpt.TrainConfig, got {type(train_cfg).__name__}")
    if not all(hasattr(task, a) for a in ("sample", "spec", "length")):  # AffineRecurrence or another task
        raise TypeError(f"task must be a minigpt.tasks.data task such as AffineRecurrence, got {type(task).__name__}")
    if resume and force:
        raise ValueError("resume and force contradict each other: pick one")
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables fn(step, model, record), got {cb!r}")

    check_compatible(model_cfg, task)


def prepare_run_dir(out_dir, resume: bool, force: bool):
    """Check that ``out_dir`` can hold a run (a folder, writable, its longest future path not too long,
    not holding another run unless resuming or forcing, not in use by another writer), create it and
    lock it.  Returns ``(out_dir as a string, the held FolderLock)``; the caller releases the lock.
    Raises TrainingError."""
    try:
        out_dir = os.fspath(out_dir)
    except TypeError:
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__}") from None
    if isinstance(out_dir, bytes):
        out_dir = os.fsdecode(out_dir)
    if not out_dir.strip():
        raise TrainingError("the run folder name is empty")
    if "\0" in out_dir:
        raise TrainingError(f"the run folder name {_cut(repr(out_dir))} contains a NUL character")
    name = _cut(out_dir)
    try:
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise TrainingError(f"{name} exists and is not a folder; choose another --out")
        if resume and not os.path.isdir(out_dir):
            raise TrainingError(f"--resume: {name} does not exist")
        os.makedirs(out_dir, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise TrainingError(f"cannot create the run folder {name}: a part of the path is a file") from None
    except OSError as e:
        raise TrainingError(f"cannot create the run folder {name}: {e.strerror or e}") from None
    try:
        lock = FolderLock(out_dir)  # before anything is written into the folder
    except FolderInUseError as e:
        raise TrainingError(str(e)) from None
    except OSError as e:
        raise TrainingError(f"the run folder {name} is not writable: {e.strerror or e}") from None
    try:
        if resume:
            if not os.path.exists(os.path.join(out_dir, CHECKPOINT)):
                raise TrainingError(f"--resume: no checkpoint in {name} (the run stopped before its first checkpoint); start it again with --force")
        elif not force:
            present = [f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))]
            if present:
                raise TrainingError(f"{name} already holds a run ({present[0]}); use --resume to continue it or --force to overwrite it")
        remove_stale_temps(out_dir)  # left by a writer killed mid-write (we hold the lock: it is gone)
        probe = os.path.join(out_dir, longest_temp_name(max(RUN_FILES, key=len)))  # the longest path we will write
        try:
            with open(probe, "w") as f:
                f.write("ok")
            os.unlink(probe)
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                raise TrainingError(f"the run folder path {name} ({len(os.path.abspath(out_dir))} characters) is too long for "
                                    "the files a run writes; choose a shorter --out") from None
            raise TrainingError(f"the run folder {name} is not writable: {e.strerror or e}") from None
    except BaseException:
        lock.release()
        raise
    return out_dir, lock


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    task: AffineRecurrence,
    out_dir=None,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    callbacks: list[Callable] = (),
    spec: dict | None = None,
    threads=None,
) -> TrainResult:
    """Train a fresh model (or resume the one in ``out_dir``).  ``callbacks``: ``fn(step, model, record)``
    called after every evaluation.  ``threads``: each step's batch runs as that many shards side by side
    (``"auto"``: as many as BLAS uses, at most the usable cores; see ``minigpt.fast.threads``).  None: "auto" for a
    new run, the checkpoint's own count on resume (so the resumed run is bitwise exact); an explicit other
    count on resume works with a ``UserWarning`` that exactness is lost.  Returns the model and the
    evaluation history.

    Raises ``ValueError``/``TypeError`` for bad arguments (including priors that overflow the model's
    dtype within the sequence length), ``TrainingError`` (``NonFiniteError`` for NaN/inf) when training
    cannot go on, ``CheckpointError`` for a corrupt checkpoint on resume, and ``TrainingInterrupted``
    after Ctrl-C/SIGTERM (with a checkpoint saved)."""
    callbacks = list(callbacks or ())
    _check_args(model_cfg, train_cfg, task, resume, force, callbacks)
    n_threads = None if threads is None else resolve_threads(threads)  # None: decided below (resume: the record's)
    tc = train_cfg
    model = Transformer(model_cfg, seed=tc.seed)
    opt = AdamW(model.params, lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)
    rng, eval_rng = data_rngs(tc.seed)
    held_out = task.sample(tc.eval_size, eval_rng)
    with np.errstate(all="ignore"):
        held_out_ok = np.isfinite(held_out.x.astype(model_cfg.dtype)).all()
    if not held_out_ok:
        raise NonFiniteError(f"non-finite held-out data (a sequence overflows {model_cfg.dtype}); narrow the data priors or shorten data.length", 0, "held-out data")
    start, history = 0, []
    spec = {"model": model_cfg.to_dict(), "train": tc.to_dict(), "data": task.spec()}  # what the run is

    lock = None
    if out_dir is not None:
        out_dir, lock = prepare_run_dir(out_dir, resume, force)  # locked until this function returns
    try:
        ckpt_path = metrics_path = None
        if out_dir is not None:
            ckpt_path = os.path.join(out_dir, CHECKPOINT)
            metrics_path = os.path.join(out_dir, METRICS)
            if resume:
                start, history, stored = _restore(ckpt_path, model, opt, rng, spec)
                n_threads = _resume_threads(n_threads, stored)
                write_json(os.path.join(out_dir, CONFIG), spec)  # the checkpoint's own spec (verified equal)
                _write_lines(metrics_path, history)  # exactly the records up to the checkpoint
            else:
                for f in RUN_FILES:  # --force: no stale checkpoint may survive the new config
                    p = os.path.join(out_dir, f)
                    if os.path.exists(p):
                        os.unlink(p)
                write_json(os.path.join(out_dir, CONFIG), spec)
                _write_lines(metrics_path, [])
        if n_threads is None:
            n_threads = resolve_threads("auto")
        saved_step = start if (resume and ckpt_path) else None

        with np.errstate(all="ignore"):
            baseline_mse = evaluate(model, held_out, task, with_baselines=True)
        baseline_mse.pop("model")

        def save(step):
            nonlocal saved_step
            if ckpt_path is None:
                return
            bad = first_nonfinite(model.params) or first_nonfinite(opt.m, "opt.m/") or first_nonfinite(opt.v, "opt.v/")
            if bad:  # e.g. a callback wrote into the parameters; never replace a good checkpoint with this
                raise fault(step, "parameter or optimizer state before saving:", bad)
            meta = {**spec, "step": step, "opt_t": opt.t, "rng": rng.bit_generator.state, "history": history, "shards": n_threads}
            save_checkpoint(ckpt_path, model.params, meta, opt.state_arrays())
            saved_step = step

        def log(record):
            history.append(record)
            if metrics_path is not None:
                try:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                except OSError as e:  # e.g. a full disk: name the file (the checkpoint stays; resume rebuilds the log)
                    raise with_filename(e, metrics_path) from None

        def fault(step, what, tensor):
            kept = (
                f"the last good checkpoint (step {saved_step}) in {ckpt_path} is kept"
                if saved_step is not None
                else "no checkpoint was written" if ckpt_path is not None else "nothing was saved"
            )
            return NonFiniteError(f"non-finite {what} {tensor} at step {step}; training stopped and {kept}. {HINT}", step, tensor, saved_step)

        bar = None
        if progress:
            # disable=None: no bar when stderr is not a terminal (logs, pipes, tests)
            bar = tqdm(total=tc.steps, initial=start, desc="train", dynamic_ncols=True, leave=False, disable=None)
        flag = _SignalFlag()
        sharded = ShardedStep(model, n_threads)  # each step's batch cut into n_threads shards computed side by side
        try:
            with flag, np.errstate(all="ignore"):  # non-finite values are detected below, not warned about
                for step in range(start, tc.steps):
                    n = step + 1  # the step being computed (1-based)
                    batch = task.sample(tc.batch_size, rng)
                    x = batch.inputs.astype(model_cfg.dtype)
                    y = batch.targets.astype(model_cfg.dtype)
                    if not (np.isfinite(x).all() and np.isfinite(y).all()):
                        raise fault(n, "training data", f"(a sequence overflows {model_cfg.dtype})")
                    loss, grads = sharded(x, y)
                    if not math.isfinite(loss):
                        raise fault(n, "value of", "the loss")
                    bad = first_nonfinite(grads)
                    if bad:
                        raise fault(n, "gradient of", bad)
                    gnorm = clip_grad_norm(grads, tc.grad_clip)
                    if not math.isfinite(gnorm):
                        raise fault(n, "value of", "the global gradient norm")
                    lr = lr_at(step, tc.lr, tc.warmup_steps, tc.steps, tc.min_lr_ratio)
                    opt.step(grads, lr=lr)
                    bad = first_nonfinite(model.params) or first_nonfinite(opt.m, "opt.m/") or first_nonfinite(opt.v, "opt.v/")
                    if bad:
                        raise fault(n, "parameter or optimizer state after the update:", bad)
                    done = n
                    if bar is not None:
                        bar.update(1)
                        if done % 10 == 0:
                            bar.set_postfix(loss=f"{loss:.3e}")
                    if done % tc.eval_every == 0 or done == tc.steps:
                        mse = evaluate(model, held_out)["model"]
                        rec = {"step": done, "lr": lr, "train_loss": loss, "grad_norm": gnorm, "eval_mse": float(np.mean(mse)), "eval_mse_by_pos": mse}
                        if done == tc.steps:
                            rec["baselines_by_pos"] = baseline_mse
                        log(rec)
                        for cb in callbacks:
                            cb(done, model, rec)
                    if done % tc.checkpoint_every == 0 or done == tc.steps:
                        save(done)
                    if flag.signum is not None:
                        if saved_step != done:
                            save(done)
                        raise TrainingInterrupted(done, ckpt_path, flag.signum)
        except KeyboardInterrupt:
            # A second Ctrl-C (or one outside the main thread's handler): the state may be mid-step, so it
            # is not saved; the last checkpoint stays and resuming from it is exact.
            raise TrainingInterrupted(saved_step or 0, ckpt_path, signal.SIGINT, saved=False) from None
        finally:
            if bar is not None:
                bar.close()
        return TrainResult(model, history, out_dir)
    finally:
        if lock is not None:
            lock.release()


def write_json(path, obj):
    """Replace ``path`` with ``obj`` as indented JSON, atomically (a per-process temporary name)."""
    write_text_atomic(path, json.dumps(obj, indent=2))


def _write_lines(path, records):
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def _resume_threads(requested, stored):
    """The shard count a resumed run uses: the record's (``stored``) unless another was asked for."""
    if stored is None:  # a checkpoint from before the count was recorded
        return requested
    if requested is None:
        cap = usable_cores()
        if stored > cap:
            raise TrainingError(f"--resume: the run computed each step as {stored} shards, but this machine has {cap} usable core(s); "
                                f"pass --threads {cap} to resume anyway (the result then differs from an uninterrupted run in the last bits)")
        return stored
    if requested != stored:
        warnings.warn(f"resuming with {requested} shard(s) per step while the run used {stored}: the result is no longer "
                      "bitwise identical to an uninterrupted run", UserWarning, stacklevel=3)
    return requested


def _norm(obj):
    return json.loads(json.dumps(obj))


def _restore(path, model, opt, rng, spec):
    """Load the checkpoint at ``path`` into model, optimizer and RNG; returns (step, history, shard count
    or None)."""
    arrays, meta = load_checkpoint(path)  # verified: checksum, keys, shapes, dtypes, finiteness, configs
    if "step" not in meta:
        raise CheckpointError(f"{path}: a bare model file, not a training checkpoint; it cannot be resumed")
    for section in ("model", "train", "data"):
        mine, theirs = _norm(spec[section]), meta.get(section)
        if mine != theirs:
            diff = sorted(k for k in set(mine) | set(theirs or {}) if mine.get(k) != (theirs or {}).get(k))
            raise TrainingError(
                f"--resume: the {section} config differs from the checkpoint's ({', '.join(f'{section}.{k}' for k in diff)}); "
                "resume with the run's own settings"
            )
    for k in model.params:
        model.params[k][...] = arrays["params/" + k]
    opt.load_state_arrays(arrays, meta["opt_t"])
    rng.bit_generator.state = meta["rng"]
    return int(meta["step"]), list(meta.get("history", [])), meta.get("shards")


def load_run_spec(out_dir) -> dict:
    """The ``{"model", "train", "data"}`` spec of the run in ``out_dir``, read from its (verified)
    checkpoint; for ``--resume``."""
    out_dir = os.fspath(out_dir)
    path = os.path.join(out_dir, CHECKPOINT)
    if not os.path.exists(out_dir):
        raise TrainingError(f"--resume: {out_dir} does not exist")
    if not os.path.isdir(out_dir):
        raise TrainingError(f"--resume: {out_dir} is not a run folder")
    if not os.path.exists(path):
        raise TrainingError(f"--resume: no checkpoint in {out_dir} (the run stopped before its first checkpoint); start it again with --force")
    run = load_run(path)
    if run.step is None:
        raise CheckpointError(f"{path}: a bare model file, not a training checkpoint; it cannot be resumed")

    return run.spec()
