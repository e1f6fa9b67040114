"""Baselines: predictors of the next term at every position, on the same prefixes as the model.

Each takes ``x [batch, pos]`` (terms x_0 .. x_{T-1}, what the model reads) and returns predictions
``[batch, pos]`` of x_1 .. x_T: entry t uses only x_0 .. x_t.

    copy           x_t
    linear         2 x_t - x_{t-1}                         (copy at t = 0)
    three_term     x_t + (x_t - x_{t-1})^2 / (x_{t-1} - x_{t-2})   exact once three terms identify a, b;
                   copy where t < 2 or the denominator vanishes (then x_{t-1} = x_{t-2} and, for an exact
                   affine sequence, the sequence has reached its fixed point, so copying is exact)
    least_squares  regress x_{i+1} on (x_i, 1) over the pairs in the prefix; copy while < 2 pairs or
                   the x_i are (numerically) all equal
    oracle         a x_t + b, knowing the sequence's true a and b
    prior_mean     E[a] x_t + E[b], the prior means of a and b (the Bayes prediction at t = 0 when a, b
                   and x_0 are independent)
"""
from __future__ import annotations

import numpy as np

from . import baselines_ext
from .data import prior_moments

NAMES = ("copy", "linear", "three_term", "least_squares", "oracle", "prior_mean")
_TINY = 1e-12


def copy(x):
    return np.array(x, dtype=np.float64)


def linear(x):
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    out[:, 1:] = 2 * x[:, 1:] - x[:, :-1]  # x_t + (x_t - x_{t-1})
    return out


def three_term(x):
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    if x.shape[1] < 3:
        return out
    d1 = x[:, 2:] - x[:, 1:-1]  # x_t - x_{t-1}       [batch, pos-2]
    d0 = x[:, 1:-1] - x[:, :-2]  # x_{t-1} - x_{t-2}  [batch, pos-2]
    scale = np.maximum(np.abs(x[:, 2:]), 1.0)
    ok = np.abs(d0) > _TINY * scale
    corr = np.divide(d1 * d1, d0, out=np.zeros_like(d1), where=ok)  # a (x_t - x_{t-1}) with a = d1 / d0
    out[:, 2:] = x[:, 2:] + corr
    return out


def least_squares(x):
    x = np.asarray(x, dtype=np.float64)
    B, T = x.shape
    out = x.copy()
    if T < 3:
        return out
    u, y = x[:, :-1], x[:, 1:]  # pairs (x_i, x_{i+1})    [batch, T-1]
    n = np.arange(1, T, dtype=np.float64)  # pairs available at t = 1 .. T-1
    Su, Sy = np.cumsum(u, 1), np.cumsum(y, 1)
    Suu, Suy = np.cumsum(u * u, 1), np.cumsum(u * y, 1)
    mu, my = Su / n, Sy / n
    var = Suu / n - mu * mu  # spread of the regressors
    cov = Suy / n - mu * my
    ok = (n >= 2) & (var > _TINY * np.maximum(Suu / n, 1.0))
    a_hat = np.divide(cov, var, out=np.zeros_like(cov), where=ok)
    b_hat = my - a_hat * mu
    pred = a_hat * x[:, 1:] + b_hat  # prediction at t = 1 .. T-1
    out[:, 1:] = np.where(ok, pred, x[:, 1:])
    return out


def oracle(x, a, b):
    x = np.asarray(x, dtype=np.float64)
    return np.asarray(a, dtype=np.float64)[:, None] * x + np.asarray(b, dtype=np.float64)[:, None]


def prior_mean(x, task):
    ma, _ = prior_moments(task.a)
    mb, _ = prior_moments(task.b)
    return ma * np.asarray(x, dtype=np.float64) + mb


def predict(name: str, x, a=None, b=None, task=None) -> np.ndarray:
    """Run baseline ``name`` on ``x [batch, pos]``; ``oracle`` needs ``a, b``, ``prior_mean`` the ``task``."""
    if name == "oracle":
        if a is None or b is None:
            raise ValueError("the oracle baseline needs the sequences' a and b")
        return oracle(x, a, b)
    if name == "prior_mean":
        if task is None:
            raise ValueError("the prior_mean baseline needs the task (for its priors)")
        return prior_mean(x, task)
    fns = {"copy": copy, "linear": linear, "three_term": three_term, "least_squares": least_squares}
    if name not in fns:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(NAMES)}")
    return fns[name](x)


def all_predictions(batch, task) -> dict[str, np.ndarray]:
    """Every baseline's predictions ``[batch, pos]`` on a ``data.Batch``'s inputs.

    For the tasks beyond the paper (``LinearRecurrence``, ``PolynomialSequence``) this returns
    ``minigpt.tasks.baselines_ext.all_predictions`` (their own baseline set, same shapes as the inputs)."""
    if getattr(task, "name", "affine") != "affine":

        return baselines_ext.all_predictions(batch, task)
    return {n: predict(n, batch.inputs, batch.a, batch.b, task) for n in NAMES}
