"""Training loop: fresh sequences every step, AdamW with warmup + cosine, held-out evaluation,
JSON-lines metrics, atomic checkpoints carrying optimizer, step and RNG state, and exact resume.

A run folder holds ``config.json``, ``metrics.jsonl`` and ``checkpoint.npz`` (the latest state; it is
also a model file that ``Transformer.load`` reads).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import baselines
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import AffineRecurrence
from .model import Transformer
from .optim import AdamW, clip_grad_norm, lr_at

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.jsonl"
CONFIG = "config.json"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or gradient, a run folder in the way, ...)."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training: a checkpoint was saved at ``step``."""

    def __init__(self, step, path):
        super().__init__(f"interrupted at step {step}; checkpoint saved to {path} (continue with --resume)")
        self.step, self.path = step, path


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
    out = {"model": mse_by_position(_predict_in_chunks(model, batch.inputs), batch.targets).tolist()}
    if with_baselines:
        for name, pred in baselines.all_predictions(batch, task).items():
            out[name] = mse_by_position(pred, batch.targets).tolist()
    return out


def _predict_in_chunks(model, x, chunk=1024):
    return np.concatenate([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def _first_nonfinite(grads):
    for k, g in grads.items():
        if not np.isfinite(g).all():
            return k
    return None


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
) -> TrainResult:
    """Train a fresh model (or resume the one in ``out_dir``).  ``callbacks``: ``fn(step, model, record)``
    called after every evaluation.  Returns the model and the evaluation history."""
    if task.length - 1 > model_cfg.n_ctx:
        raise ValueError(f"data.length - 1 = {task.length - 1} positions exceed model.n_ctx = {model_cfg.n_ctx}")
    tc = train_cfg
    model = Transformer(model_cfg, seed=tc.seed)
    opt = AdamW(model.params, lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)
    rng, eval_rng = data_rngs(tc.seed)
    held_out = task.sample(tc.eval_size, eval_rng)
    start, history = 0, []
    spec = spec or {"model": model_cfg.to_dict(), "train": tc.to_dict(), "data": task.spec()}

    ckpt_path = metrics_path = None
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        ckpt_path = os.path.join(out_dir, CHECKPOINT)
        metrics_path = os.path.join(out_dir, METRICS)
        if resume:
            if not os.path.exists(ckpt_path):
                raise TrainingError(f"--resume: no checkpoint in {out_dir}")
            start, history = _restore(ckpt_path, model, opt, rng, spec)
            _truncate_metrics(metrics_path, start)
        else:
            if os.path.exists(ckpt_path) and not force:
                raise TrainingError(f"{out_dir} already holds a run; use --resume to continue it or --force to overwrite it")
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, CONFIG), "w") as f:
                json.dump(spec, f, indent=2)
            open(metrics_path, "w").close()

    baseline_mse = evaluate(model, held_out, task, with_baselines=True)
    baseline_mse.pop("model")

    def save(step):
        if ckpt_path is None:
            return
        meta = {**spec, "step": step, "opt_t": opt.t, "rng": rng.bit_generator.state, "history": history}
        save_checkpoint(ckpt_path, model.params, meta, opt.state_arrays())

    def log(record):
        history.append(record)
        if metrics_path is not None:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=start, desc="train", dynamic_ncols=True, leave=False)
    step = start
    try:
        for step in range(start, tc.steps):
            batch = task.sample(tc.batch_size, rng)
            loss, grads = model.loss_and_grad(batch.inputs, batch.targets)
            bad = None if math.isfinite(loss) else "loss"
            bad = bad or _first_nonfinite(grads)
            if bad:
                raise TrainingError(
                    f"non-finite {'loss' if bad == 'loss' else 'gradient in ' + bad} at step {step}; "
                    f"the last good checkpoint is kept. Hint: lower train.lr, keep train.grad_clip > 0, or narrow the data priors"
                )
            gnorm = clip_grad_norm(grads, tc.grad_clip)
            lr = lr_at(step, tc.lr, tc.warmup_steps, tc.steps, tc.min_lr_ratio)
            opt.step(grads, lr=lr)
            done = step + 1
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
    except KeyboardInterrupt:
        done = opt.t if ckpt_path is None else _interrupted_step(opt, start)
        save(done)
        raise TrainingInterrupted(done, ckpt_path) from None
    finally:
        if bar is not None:
            bar.close()
    return TrainResult(model, history, out_dir)


def _interrupted_step(opt, start):
    """Steps fully applied: the optimizer's count is the truth (a step is applied atomically by opt.step)."""
    return opt.t


def _restore(path, model, opt, rng, spec):
    arrays, meta = load_checkpoint(path)
    for section in ("model", "data"):
        if meta.get(section) != json.loads(json.dumps(spec[section])):
            raise TrainingError(f"--resume: the {section} config differs from the checkpoint's; resume with the same settings")
    for k in model.params:
        a = arrays.get("params/" + k)
        if a is None or a.shape != model.params[k].shape or a.dtype != model.params[k].dtype:
            raise TrainingError(f"--resume: checkpoint parameter {k!r} is missing or has the wrong shape")
        model.params[k][...] = a
    opt.load_state_arrays(arrays, meta["opt_t"])
    rng.bit_generator.state = meta["rng"]
    return int(meta["step"]), list(meta.get("history", []))


def _truncate_metrics(path, step):
    """Drop metric lines written after the checkpoint's step (they will be written again)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln).get("step", 0) <= step:
                keep.append(ln)
        except json.JSONDecodeError:
            pass
    with open(path, "w") as f:
        f.writelines(keep)
