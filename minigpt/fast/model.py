"""``minigpt.Transformer``: the textbook model of ``minigpt.nn.model`` on the fast kernels, with saving and loading.

    model = Transformer(cfg, seed=0)              # the fast ops (minigpt.fast.ops): what training uses
    model = Transformer(cfg, seed=0, fast=False)  # the plain reference ops (minigpt.nn.ops): same numbers up to rounding
    loss, grads = model.loss_and_grad(x, target, threads=1)
    model.save("model.npz"); Transformer.load("model.npz")

Everything else (forward, backward, hooks, ``run_with_cache``) is ``minigpt.nn.model.Transformer``'s.
``loss_and_grad`` reuses the previous step's arrays (``minigpt.fast.step``) and, with ``threads`` > 1,
cuts the batch into shards computed by helper processes (``minigpt.fast.sharded.ShardedStep``).
"""
from __future__ import annotations

import numpy as np

from ..io.checkpoint import load_checkpoint, save_checkpoint
from ..nn import model as nn_model
from ..nn import ops as reference_ops
from ..nn.config import ModelConfig, param_shapes
from ..nn.model import init_params, is_weight_matrix  # noqa: F401  (the old minigpt.model's names)
from . import ops as fast_ops
from .sharded import ShardedStep
from .threads import resolve_threads


class Transformer(nn_model.Transformer):
    """The model of ``minigpt.nn.model`` on ``minigpt.fast.ops`` (``fast=False``: on ``minigpt.nn.ops``)."""

    def __init__(self, cfg: ModelConfig, seed: int = 0, fast: bool = True):
        super().__init__(cfg, seed, ops=fast_ops if fast else reference_ops)
        self._step: ShardedStep | None = None

    @property
    def fast(self) -> bool:
        return self.ops is fast_ops

    def loss_and_grad(self, x, target, threads=1):
        """(loss, grads): the MSE and its gradient for every parameter (same keys and shapes).

        ``threads``: cut the batch into that many shards computed side by side, here and in ``threads - 1``
        helper processes ("auto": as many as BLAS would use; see ``minigpt.fast.sharded``).  With hooks
        registered (``model.hooks``) the step runs here alone, so every hook sees the whole batch."""
        if not self.fast:
            return super().loss_and_grad(x, target)
        n = resolve_threads(threads)
        if self._step is None or self._step.threads != n:
            self._step = ShardedStep(self, n)
        return self._step(x, target)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """One ``.npz``: parameters under their names, the config as JSON (written atomically)."""
        save_checkpoint(path, self.params, {"model": self.cfg.to_dict()})

    @classmethod
    def load(cls, path, fast: bool = True):
        """Load a model saved by ``save`` (or a training checkpoint); never unpickles."""
        arrays, meta = load_checkpoint(path)
        if "model" not in meta:
            raise ValueError(f"{path}: not a minigpt checkpoint (no model config)")
        return cls.from_arrays(ModelConfig(**meta["model"]), arrays, path, fast)

    @classmethod
    def from_arrays(cls, cfg: ModelConfig, arrays: dict, path="checkpoint", fast: bool = True):
        """A model of ``cfg`` holding the checkpoint arrays ``params/<name>`` (shapes and dtype checked)."""
        model = cls(cfg, seed=0, fast=fast)
        expected = param_shapes(cfg)
        missing = [k for k in expected if "params/" + k not in arrays]
        if missing:
            raise ValueError(f"{path}: checkpoint lacks parameter {missing[0]!r}")
        for k, shape in expected.items():
            a = arrays["params/" + k]
            if a.shape != shape or a.dtype != np.dtype(cfg.dtype):
                raise ValueError(f"{path}: parameter {k!r} has shape {a.shape} {a.dtype}, expected {shape} {cfg.dtype}")
            model.params[k] = a
        return model
