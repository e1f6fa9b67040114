"""Baselines for the tasks beyond the paper: ``LinearRecurrence`` (vectors) and ``PolynomialSequence``.

Same contract as ``minigpt.tasks.baselines``: a predictor takes the terms the model reads, ``x [batch, pos]``
(polynomial) or ``x [batch, pos, dim]`` (linear), and returns predictions of the same shape whose entry
t uses only x_0 .. x_t.

LinearRecurrence, x_{n+1} = A x_n + b:
    copy           x_t
    exact          x_t + D_1 D_0^+ d_{t-1}, with d_i = x_{i+1} - x_i, D_0 = [d_{t-k-1} .. d_{t-2}],
                   D_1 = [d_{t-k} .. d_{t-1}] (columns): A from the k + 2 terms x_{t-k-1} .. x_t, as
                   D_1 = A D_0 (``theory.vector``). Exact for t >= k + 1 on noise-free data, also when D_0
                   is singular (then d_{t-1} lies in the range of D_0, where every solution agrees with A).
                   Copy for t < k + 1.
    least_squares  regress x_{i+1} on (x_i, 1) over every pair in the prefix (minimum-norm solution);
                   copy while there are fewer than k + 1 pairs
    oracle         A x_t + b with the sequence's true A and b

PolynomialSequence, x_n = p(n / scale), degree m:
    copy           x_t
    exact          the order-(m+1) finite-difference predictor x_{t+1} = sum_{i=1}^{m+1} (-1)^{i+1}
                   C(m+1, i) x_{t+1-i} (Delta^{m+1} x = 0, ``theory.polynomial``); exact for t >= m,
                   copy before
    linear         2 x_t - x_{t-1} (the order-2 finite difference; exact only for m <= 1)
    least_squares  fit a degree-m polynomial in n to the whole prefix and extrapolate to n = t + 1
                   (equals ``exact`` on noise-free data; averages noise otherwise); copy for t < m
    oracle         p((t + 1) / scale) from the true coefficients
"""
from __future__ import annotations

from functools import lru_cache
from math import comb

import numpy as np

LINEAR_NAMES = ("copy", "exact", "least_squares", "oracle")
POLY_NAMES = ("copy", "exact", "linear", "least_squares", "oracle")
_RCOND = 1e-10


def names_for(task) -> tuple:
    return {"linear": LINEAR_NAMES, "polynomial": POLY_NAMES}[task.name]


# ----------------------------------------------------------------------------- linear recurrences
def _vec(x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise ValueError(f"x must be [batch, pos, dim], got shape {list(x.shape)}")
    return x


def _pinv(M):
    """Batched pseudo-inverse with a relative cutoff (stacked matrices [..., m, n])."""
    return np.linalg.pinv(M, rcond=_RCOND)


def linear_copy(x):
    return np.array(x, dtype=np.float64)


def linear_exact(x):
    """x_t + D_1 D_0^+ d_{t-1} for t >= dim + 1; copy before.  x [batch, pos, dim] (or [batch, pos] for dim 1)."""
    squeeze = np.asarray(x).ndim == 2
    x = _vec(x)
    B, T, k = x.shape
    out = x.copy()
    if T >= k + 2:
        d = np.diff(x, axis=1)  # [B, T-1, k]  d_i = x_{i+1} - x_i
        ts = np.arange(k + 1, T)  # positions with an exact prediction
        # window of k + 1 differences d_{t-k-1} .. d_{t-1} for each t: [B, len(ts), k+1, k]
        idx = ts[:, None] - k - 1 + np.arange(k + 1)[None, :]
        W = d[:, idx]  # [B, nt, k+1, k]
        D0 = np.swapaxes(W[:, :, :-1], -1, -2)  # [B, nt, k, k] columns d_{t-k-1} .. d_{t-2}
        D1 = np.swapaxes(W[:, :, 1:], -1, -2)  # [B, nt, k, k] columns d_{t-k} .. d_{t-1}
        A_hat = D1 @ _pinv(D0)  # [B, nt, k, k]
        out[:, ts] = x[:, ts] + np.einsum("btij,btj->bti", A_hat, W[:, :, -1])
    return out[:, :, 0] if squeeze else out


def linear_least_squares(x):
    """Regress x_{i+1} on (x_i, 1) over the pairs i < t; needs >= k + 1 pairs (t >= k + 1); copy before."""
    squeeze = np.asarray(x).ndim == 2
    x = _vec(x)
    B, T, k = x.shape
    out = x.copy()
    for t in range(k + 1, T):
        Z = np.concatenate([x[:, :t], np.ones((B, t, 1))], axis=2)  # [B, t, k+1] regressors (x_i, 1)
        Y = x[:, 1 : t + 1]  # [B, t, k] responses x_{i+1}
        W = _pinv(Z) @ Y  # [B, k+1, k]  least-squares [A^T; b^T]
        zt = np.concatenate([x[:, t], np.ones((B, 1))], axis=1)  # [B, k+1]
        out[:, t] = np.einsum("bj,bji->bi", zt, W)
    return out[:, :, 0] if squeeze else out


def linear_oracle(x, A, b):
    squeeze = np.asarray(x).ndim == 2
    x = _vec(x)
    out = np.einsum("bij,btj->bti", np.asarray(A, np.float64), x) + np.asarray(b, np.float64)[:, None, :]
    return out[:, :, 0] if squeeze else out


# ----------------------------------------------------------------------------- polynomials
def finite_difference_weights(order: int) -> np.ndarray:
    """w[i - 1] = (-1)^{i+1} C(order, i), i = 1 .. order: x_{t+1} = sum_i w[i-1] x_{t+1-i} kills Delta^order."""
    return np.array([(-1) ** (i + 1) * comb(order, i) for i in range(1, order + 1)], dtype=np.float64)


def finite_difference(x, order: int):
    """Order-``order`` finite-difference extrapolation (exact for polynomials of degree < order) at t >= order - 1; copy before."""
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    T = x.shape[1]
    w = finite_difference_weights(order)
    for t in range(order - 1, T):
        out[:, t] = x[:, t - np.arange(order)] @ w  # x_t, x_{t-1}, .. x_{t-order+1}
    return out


def poly_exact(x, degree: int):
    return finite_difference(x, degree + 1)


def poly_linear(x):
    return finite_difference(x, 2)


@lru_cache(maxsize=None)
def _extrapolation_weights(t: int, degree: int) -> np.ndarray:
    """Row w [t+1] with p(t + 1) = w . (x_0 .. x_t) for the least-squares degree-m fit to x_0 .. x_t."""
    n = np.arange(t + 1, dtype=np.float64)
    c = t / 2.0 if t > 0 else 0.0  # centre and scale n for conditioning (the fit is invariant to it)
    s = max(t / 2.0, 1.0)
    V = ((n - c) / s)[:, None] ** np.arange(degree + 1)  # [t+1, m+1]
    v_next = ((t + 1 - c) / s) ** np.arange(degree + 1)  # [m+1]
    return v_next @ np.linalg.pinv(V, rcond=_RCOND)


def poly_least_squares(x, degree: int):
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    for t in range(degree, x.shape[1]):
        out[:, t] = x[:, : t + 1] @ _extrapolation_weights(t, degree)
    return out


def poly_oracle(x, coeffs, n_scale: float):
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(coeffs, dtype=np.float64)  # [B, m+1]
    u = np.arange(1, x.shape[1] + 1) / n_scale  # the predicted terms' indices t + 1
    return c @ (u[:, None] ** np.arange(c.shape[1])).T  # [B, T]


# ----------------------------------------------------------------------------- dispatch
def predict(name: str, batch, task, x=None) -> np.ndarray:
    """Baseline ``name`` on ``x`` (default ``batch.inputs``) of a ``LinearRecurrence`` or ``PolynomialSequence``."""
    x = batch.inputs if x is None else x
    if task.name == "linear":
        fns = {"copy": linear_copy, "exact": linear_exact, "least_squares": linear_least_squares,
               "oracle": lambda x: linear_oracle(x, batch.A, batch.b)}
    elif task.name == "polynomial":
        m = task.degree
        fns = {"copy": linear_copy, "exact": lambda x: poly_exact(x, m), "linear": poly_linear,
               "least_squares": lambda x: poly_least_squares(x, m),
               "oracle": lambda x: poly_oracle(x, batch.coeffs, task.n_scale)}
    else:
        raise ValueError(f"baselines_ext handles the linear and polynomial tasks, not {task.name!r}")
    if name not in fns:
        raise ValueError(f"unknown baseline {name!r} for the {task.name} task; known: {', '.join(fns)}")
    return fns[name](x)


def all_predictions(batch, task) -> dict[str, np.ndarray]:
    """Every baseline's predictions on ``batch.inputs`` (same shape)."""
    return {n: predict(n, batch, task) for n in names_for(task)}
