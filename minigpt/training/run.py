"""``load_run(path)``: a trained run's model, task and configs, from a run folder or a checkpoint file.

    run = load_run("runs/paper")          # or "runs/paper/checkpoint.npz", or a bare model file
    run.model(run.task.sample(8, rng).inputs)

The one loader every command, study and lesson uses: the checkpoint is read (and verified) once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..fast.model import Transformer
from ..io.checkpoint import load_checkpoint
from ..nn.config import ModelConfig, TrainConfig
from ..tasks.presets import build_task, data_from_record

CHECKPOINT = "checkpoint.npz"  # a run folder's checkpoint


@dataclass
class Run:
    """What ``load_run`` returns."""

    path: str  # the checkpoint file read
    model: Transformer
    model_cfg: ModelConfig
    train_cfg: TrainConfig | None  # None for a bare model file
    data: dict | None  # the data spec (priors as tuples); None when the file has no data settings
    task: object | None  # the task built from ``data`` (e.g. an AffineRecurrence), or None
    step: int | None  # the training step of the checkpoint; None for a bare model file
    meta: dict  # the whole JSON record

    def spec(self) -> dict:
        """``{"model", "train", "data"}`` as dicts: the run's settings (for ``--resume``)."""
        return {"model": dict(self.meta["model"]), "train": dict(self.meta["train"]), "data": self.data}


def checkpoint_file(path) -> str:
    """A run folder's checkpoint, or ``path`` itself when it is a file."""
    path = os.fspath(path)
    return os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path


def load_run(path, fast: bool = True) -> Run:
    """The run at ``path`` (a run folder or a checkpoint / model file); ``fast=False``: the model on the
    reference ops.  Raises ``CheckpointError`` for a file that is not a valid checkpoint."""
    ckpt = checkpoint_file(path)
    arrays, meta = load_checkpoint(ckpt)  # verified: checksum, keys, shapes, dtypes, finiteness, configs
    if "model" not in meta:
        raise ValueError(f"{ckpt}: not a minigpt checkpoint (no model config)")
    cfg = ModelConfig(**meta["model"])
    model = Transformer.from_arrays(cfg, arrays, ckpt, fast=fast)
    data = data_from_record(meta["data"]) if "data" in meta else None
    return Run(
        path=ckpt,
        model=model,
        model_cfg=cfg,
        train_cfg=TrainConfig.from_dict(meta["train"]) if "train" in meta else None,
        data=data,
        task=None if data is None else build_task(data),
        step=meta.get("step"),
        meta=meta,
    )
