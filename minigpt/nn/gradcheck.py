"""Gradient checks: hand-written gradients against float64 central finite differences.

``check_model`` perturbs every parameter of a float64 model (non-zero biases, LayerNorm gains != 1,
so zero initialisation cannot hide a wrong backward), then compares ``loss_and_grad`` with

    (L(p + h e_i) - L(p - h e_i)) / (2 h)     for every entry i of every tensor,

and reports per tensor (llm.c's ``check_tensor``): max abs diff and max relative diff, where

    rel = max_i |analytic_i - numeric_i| / max(max_i |numeric_i|, max_i |analytic_i|, floor)

and ``floor = 1e-3 * (largest gradient entry of the model)``, so that a tensor whose exact gradient is
zero (``b_K``: softmax ignores a shift shared by every key) is measured on the model's own gradient scale.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from .config import ModelConfig
from .model import Transformer

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike


@dataclass
class TensorCheck:
    name: str
    max_abs_diff: float
    max_rel_diff: float
    ok: bool


def nontrivial_model(cfg: ModelConfig, seed: int = 0, scale: float = 0.3, ops: ModuleType | None = None) -> Transformer:
    """A float64 model on ``ops`` (default: the reference ops) whose every parameter is perturbed: biases != 0,
    LayerNorm gains != 1."""
    cfg = dataclasses.replace(cfg, dtype="float64")
    model = Transformer(cfg, seed=seed, ops=ops)
    rng = np.random.default_rng(seed + 1)
    for name, p in model.params.items():
        p += scale * rng.standard_normal(p.shape)
    return model


def central_differences(f: Callable[[], float], v: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f() / d v entry by entry: (f(v + h e_i) - f(v - h e_i)) / 2h (``v`` is changed in place and restored)."""
    g = np.zeros(v.shape)
    for i in np.ndindex(v.shape):
        old = v[i]
        v[i] = old + h
        up = f()
        v[i] = old - h
        down = f()
        v[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def numeric_grads(model: Transformer, x: ArrayLike, target: ArrayLike, h: float = 1e-5) -> dict[str, np.ndarray]:
    """Central differences of ``model.loss`` with respect to every parameter entry (float64).
    x [batch, pos(, d_in)], target [batch, pos(, d_out)] -> {name: [the parameter's shape]}."""
    return {name: central_differences(lambda: model.loss(x, target), p, h) for name, p in model.params.items()}


def check_model(model: Transformer, x: ArrayLike, target: ArrayLike, tol: float = 1e-6, h: float = 1e-5) -> list[TensorCheck]:
    """Per-tensor report of hand-written against numeric gradients (model must be float64).
    x [batch, pos(, d_in)], target [batch, pos(, d_out)]."""
    if model.cfg.dtype != "float64":
        raise ValueError("gradient checks need a float64 model (model.dtype=float64)")
    _, analytic = model.loss_and_grad(x, target)
    numeric = numeric_grads(model, x, target, h)
    floor = 1e-3 * max(float(np.abs(g).max()) for g in numeric.values())
    report = []
    for name in model.params:
        a, n = analytic[name], numeric[name]
        diff = float(np.abs(a - n).max())
        rel = diff / max(float(np.abs(n).max()), float(np.abs(a).max()), floor)
        report.append(TensorCheck(name, diff, rel, rel <= tol))
    return report


def format_report(report: list[TensorCheck]) -> str:
    w = max(len(r.name) for r in report)
    lines = [f"{'tensor':<{w}}  {'max abs diff':>12}  {'max rel diff':>12}  ok"]
    for r in report:
        lines.append(f"{r.name:<{w}}  {r.max_abs_diff:12.3e}  {r.max_rel_diff:12.3e}  {'OK' if r.ok else 'FAIL'}")
    return "\n".join(lines)


def gradcheck_config(cfg: ModelConfig, batch: int = 2, seed: int = 0, tol: float = 1e-6,
                     ops: ModuleType | None = None) -> list[TensorCheck]:
    """Build a non-trivial float64 model of ``cfg`` on ``ops`` (default: the reference ops, ``minigpt.nn.ops``)
    and check it on random inputs of length ``n_ctx``."""
    model = nontrivial_model(cfg, seed, ops=ops)
    rng = np.random.default_rng(seed + 2)
    T = cfg.n_ctx
    shape = (batch, T) if cfg.d_in == 1 else (batch, T, cfg.d_in)
    x = rng.uniform(-1, 1, shape)
    tshape = (batch, T) if cfg.d_out == 1 else (batch, T, cfg.d_out)
    target = rng.uniform(-1, 1, tshape)
    return check_model(model, x, target, tol)
