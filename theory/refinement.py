"""What one softmax-similarity head can add to a first estimate of the next term, under a prior.

Setting: the affine task with uniform priors on a, b, x0 (``minigpt.tasks.data.AffineRecurrence``, no noise). At query t
the model holds a first estimate e_t of x_{t+1} and one head adds

    gamma * m_t,   m_t = sum_{j<=t} softmax_j(beta s(x_t, x_j) + lam (j - t)) x_j,

with a similarity s of one of two kinds, ``product`` s = x_t x_j or ``distance`` s = -|x_t - x_j|, and a recency
bias lam (one positional parameter: lam > 0 favours recent keys). For given (beta, lam) the best gain and offset
are a least-squares fit of the estimate's error x_{t+1} - e_t on m_t; (beta, lam) are then optimised.

Expectations over the prior are exact product Gauss-Legendre quadrature in (a, b, x0): every sequence is a
deterministic function of its three parameters, so the prior average of any function of the sequence is a
3-D integral over a box (smooth except where |x_t - x_j| has a kink; ``nodes`` per axis sets the accuracy, and
``refinement_fit`` reports the change from halving them).

First estimates (``estimate``): ``"copy"`` e_t = x_t; ``"linear"``: the best estimate c0_t + c1_t x_t + c2_t x_{t-1}
with coefficients per position (fitted by the same quadrature), the best a linear read-out of (x_t, x_{t-1}) can do.
"""
from __future__ import annotations

import numpy as np
from scipy import optimize

from minigpt.tasks.data import AffineRecurrence
from theory.heads import SIMILARITIES, similarity_features

KINDS = SIMILARITIES
ESTIMATES = ("copy", "linear")
BOUND = 20.0  # |beta|, |lam| <= 20 nats per unit: beyond that the softmax is one-hot and the optimum runs off to infinity


def prior_nodes(task: AffineRecurrence, nodes: int = 16):
    """``(a, b, x0, w)`` each ``[nodes^3]``: Gauss-Legendre nodes of the uniform priors and weights summing to 1."""
    pts = []
    for p in (task.a, task.b, task.x0):
        if p[0] != "uniform":
            raise ValueError(f"refinement quadrature needs uniform priors, got {p}")
        g, w = np.polynomial.legendre.leggauss(nodes)  # on [-1, 1]
        lo, hi = p[1], p[2]
        pts.append(((lo + hi) / 2 + (hi - lo) / 2 * g, w / 2))
    (a, wa), (b, wb), (x0, wx) = pts
    A, Bv, X0 = np.meshgrid(a, b, x0, indexing="ij")
    W = wa[:, None, None] * wb[None, :, None] * wx[None, None, :]
    return A.ravel(), Bv.ravel(), X0.ravel(), W.ravel()


def sequences(a, b, x0, length: int) -> np.ndarray:
    """``[N, length]``: x_0 = x0, x_{n+1} = a x_n + b."""
    x = np.empty((len(a), length))
    x[:, 0] = x0
    for n in range(1, length):
        x[:, n] = a * x[:, n - 1] + b
    return x


def head_mix(x, beta: float, lam: float, kind: str = "product") -> np.ndarray:
    """``[N, T]``: m_t = sum_{j<=t} softmax_j(beta s(x_t, x_j) + lam (j - t)) x_j on sequences ``x [N, T]``."""
    T = x.shape[1]
    s = similarity_features(x, kind)  # [N, T(t), T(j)]
    j = np.arange(T)
    logits = beta * s + lam * (j[None, :] - j[:, None])  # [N, T, T]
    logits = np.where(j[None, :] <= j[:, None], logits, -np.inf)  # causal: keys j <= t
    logits -= logits.max(-1, keepdims=True)
    e = np.exp(logits)
    return np.einsum("ntj,nj->nt", e / e.sum(-1, keepdims=True), x)


def first_estimate(x, w, estimate: str = "copy") -> np.ndarray:
    """``[N, T-1]``: e_t for t = 0 .. T-2 (predicting x_{t+1}); ``linear`` fits (1, x_t, x_{t-1}) per position
    by weighted least squares (x_{-1} := x_0)."""
    if estimate == "copy":
        return x[:, :-1].copy()
    if estimate != "linear":
        raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
    out = np.empty_like(x[:, :-1])
    sw = np.sqrt(w)
    for t in range(x.shape[1] - 1):
        F = np.stack([np.ones(len(x)), x[:, t], x[:, max(t - 1, 0)]], 1)  # [N, 3]
        coef, *_ = np.linalg.lstsq(F * sw[:, None], x[:, t + 1] * sw, rcond=None)
        out[:, t] = F @ coef
    return out


def _gain_fit(err, m, w):
    """Weighted least squares err ~ c + gamma m; returns (gamma, c, weighted MSE after)."""
    mw, ew = (w * m).sum() / w.sum(), (w * err).sum() / w.sum()
    mc, ec = m - mw, err - ew
    v = (w * mc * mc).sum()
    gamma = float((w * mc * ec).sum() / v) if v > 0 else 0.0
    r = ec - gamma * mc
    return gamma, float(ew - gamma * mw), float((w * r * r).sum() / w.sum())


def refined_mse(x, w, err, beta, lam, kind, t_min=2):
    """Weighted MSE over t >= t_min of the estimate plus the best-gain head, and that gain and offset."""
    m = head_mix(x[:, :-1], beta, lam, kind)[:, t_min:]  # the head reads x_0..x_t, t <= T-2
    W = np.broadcast_to(w[:, None], m.shape)
    return _gain_fit(err[:, t_min:].ravel(), m.ravel(), W.ravel())


def refinement_fit(task: AffineRecurrence | None = None, estimate: str = "copy", kind: str = "product", t_min: int = 2,
                   nodes: int = 16, betas=(-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0), lams=(-2.0, 0.0, 2.0, 6.0)) -> dict:
    """The best head (beta, lam, gamma, offset) on top of ``estimate``, over positions t >= t_min.

    A grid over (beta, lam) starts a Nelder-Mead search. Returns the parameters, ``mse_estimate`` (the first
    estimate alone), ``mse_refined``, ``gain`` = 1 - refined / estimate, the best head with beta fixed at 0
    (``mse_positional``: what a positional head alone buys, the null a similarity head must beat) and
    ``quadrature_change``: the relative change of ``mse_refined`` at the optimum with half the nodes."""
    task = task or AffineRecurrence()
    a, b, x0, w = prior_nodes(task, nodes)
    x = sequences(a, b, x0, task.length)
    err = x[:, 1:] - first_estimate(x, w, estimate)  # [N, T-1]
    mse_est = float((w[:, None] * err[:, t_min:] ** 2).sum() / (w.sum() * (err.shape[1] - t_min)))

    def f(p):
        return refined_mse(x, w, err, p[0], p[1], kind, t_min)[2]

    start = min(((bt, lm) for bt in betas for lm in lams), key=f)
    best = optimize.minimize(f, np.array(start, float), method="Nelder-Mead", bounds=[(-BOUND, BOUND)] * 2,
                             options=dict(xatol=1e-4, fatol=1e-12, maxiter=400))
    beta, lam = (float(v) for v in best.x)
    gamma, offset, mse = refined_mse(x, w, err, beta, lam, kind, t_min)
    pos = optimize.minimize_scalar(lambda lm: refined_mse(x, w, err, 0.0, lm, kind, t_min)[2], bounds=(-BOUND, BOUND), method="bounded")
    a2, b2, x02, w2 = prior_nodes(task, max(nodes // 2, 2))
    x2 = sequences(a2, b2, x02, task.length)
    err2 = x2[:, 1:] - first_estimate(x2, w2, estimate)
    mse_half = refined_mse(x2, w2, err2, beta, lam, kind, t_min)[2]
    return dict(kind=kind, estimate=estimate, t_min=t_min, nodes=nodes, beta=beta, lam=lam, gamma=gamma, offset=offset,
                mse_estimate=mse_est, mse_refined=mse, gain=1.0 - mse / mse_est if mse_est > 0 else 0.0,
                mse_positional=float(pos.fun), lam_positional=float(pos.x),
                quadrature_change=abs(mse_half - mse) / mse if mse > 0 else 0.0)
