"""AdamW (decoupled weight decay), global-norm gradient clipping and a warmup + cosine schedule.

One step, for every parameter p with gradient g (Loshchilov & Hutter 2019, as torch.optim.AdamW):

    p <- p - lr * wd * p                      (weight matrices only)
    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
"""
from __future__ import annotations

import math

import numpy as np

from .model import is_weight_matrix


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``; return the norm before."""
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))
    if max_norm > 0 and norm > max_norm:
        s = max_norm / (norm + 1e-6)
        for g in grads.values():
            g *= s
    return norm


def lr_at(step: int, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Linear warmup from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``.

    ``step`` counts from 0; step ``warmup_steps - 1`` reaches the full rate.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class AdamW:
    """``opt = AdamW(model.params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01)``; ``opt.step(grads)``
    updates the arrays of ``params`` in place.  Weight decay applies to weight matrices only."""

    def __init__(self, params: dict, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        if not (lr > 0 and 0 <= betas[0] < 1 and 0 <= betas[1] < 1 and eps > 0 and weight_decay >= 0):
            raise ValueError(f"AdamW: need lr > 0, 0 <= betas < 1, eps > 0, weight_decay >= 0; got {lr}, {betas}, {eps}, {weight_decay}")
        self.params = params
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.t = 0  # steps taken
        self.m = {k: np.zeros_like(v) for k, v in params.items()}  # first moments
        self.v = {k: np.zeros_like(v) for k, v in params.items()}  # second moments
        self.decay = {k: is_weight_matrix(k) for k in params}
        self._tmp: dict = {}  # scratch arrays for ``step``

    def step(self, grads: dict, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.t += 1
        bc1 = 1 - b1**self.t  # bias corrections
        bc2 = 1 - b2**self.t
        step_size = lr / bc1
        for k, p in self.params.items():
            g = grads[k]
            m, v = self.m[k], self.v[k]
            tmp = self._scratch(k, g)  # one scratch array per parameter, reused every step
            if self.weight_decay and self.decay[k]:
                p *= 1 - lr * self.weight_decay  # p <- p - lr wd p (decoupled)
            m *= b1
            m += np.multiply(g, 1 - b1, out=tmp)  # m <- b1 m + (1 - b1) g
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v += tmp  # v <- b2 v + (1 - b2) g^2
            np.divide(v, bc2, out=tmp)
            np.sqrt(tmp, out=tmp)
            tmp += self.eps  # sqrt(v_hat) + eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp  # p <- p - lr m_hat / (sqrt(v_hat) + eps)

    def _scratch(self, k, g):
        buf = self._tmp.get(k)
        if buf is None or buf.shape != g.shape or buf.dtype != g.dtype:
            buf = self._tmp[k] = np.empty_like(g)
        return buf

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Moments as flat arrays for a checkpoint (``opt.m/<name>``, ``opt.v/<name>``)."""
        out = {"opt.m/" + k: v for k, v in self.m.items()}
        out.update({"opt.v/" + k: v for k, v in self.v.items()})
        return out

    def load_state_arrays(self, arrays: dict, t: int) -> None:
        for k in self.params:
            for name, store in (("opt.m/", self.m), ("opt.v/", self.v)):
                a = arrays.get(name + k)
                if a is None or a.shape != store[k].shape:
                    raise ValueError(f"optimizer state for {k!r} is missing or has the wrong shape")
                store[k][...] = a
        self.t = int(t)
