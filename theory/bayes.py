"""Bayes-optimal prediction of the next term and the expected MSE of every baseline.

Setting (``minigpt.tasks.data.AffineRecurrence``): a, b, x0 independent, each ``("uniform", lo, hi)`` or
``("normal", mean, std)``; observed y_n = x_n + noise * e_n with e_n ~ N(0, 1) i.i.d.
Position t predicts y_{t+1} from y_0 .. y_t.

Bayes (noise = 0), with x_{t+1} = a x_t + b:
- t = 0 (x0 seen):      E[x1 | x0] = E[a] x0 + E[b];            MSE = Var(a) E[x0^2] + Var(b).
- t = 1 (x0, x1 seen):  b = x1 - a x0 is fixed by a, so x2 = x1 + a (x1 - x0) and
                        E[x2 | x0, x1] = x1 + E[a | x0, x1] (x1 - x0);
                        MSE = E[ Var(a | x0, x1) (x1 - x0)^2 ].
  The posterior of a is p(a) p_b(x1 - a x0) / p(x1 | x0), in closed form for every prior pair:
  normal/normal: Gaussian conditioning; uniform/uniform: uniform on an interval; mixed: a truncated
  normal. The MSE is then a 1-D (normal/normal) or 2-D (otherwise) integral over (x0, x1):
  normal/normal with uniform x0 in closed form (log + arctan, integrated by sympy); normal x0 by
  adaptive quadrature; uniform/uniform by exact Gauss-Legendre in x1 (piecewise polynomial) inside
  adaptive quadrature in x0; mixed pairs by composite Gauss-Legendre refined at the box edges.
- t >= 2: three terms identify the next one (``theory.recurrence.next_from_three``): MSE 0.

Baselines (closed forms are expectations of polynomials in a, b, x0 and the noises, expanded by
sympy and averaged with the priors' exact moments in 60-digit arithmetic):
  copy y_t;  linear 2 y_t - y_{t-1} (copy at t = 0);  oracle a y_t + b;  prior_mean E[a] y_t + E[b];
  three_term: next_from_three at t >= 2;  least_squares: fit y_{i+1} ~ a y_i + b over the prefix
  at t >= 2; both copy at t < 2 (as ``minigpt.tasks.baselines``).
  three_term and least_squares are exact (MSE 0) at t >= 2 without noise; with noise they are
  ratios of random variables with no closed form (NotImplementedError).
"""
from __future__ import annotations

import math
from functools import lru_cache

import mpmath
import numpy as np
import sympy as sp
from scipy import integrate, special

from minigpt.tasks.data import AffineRecurrence
from theory.recurrence import a, b, next_from_three, term_poly, x0
from theory.steps import Step

BASELINES = ("copy", "linear", "three_term", "least_squares", "oracle", "prior_mean")
_TAIL = 12.0  # normal priors are integrated over mean +- 12 std (mass outside < 1e-32)


# ----------------------------------------------------------------------------- priors
def as_task(prior) -> AffineRecurrence:
    """An ``AffineRecurrence`` from itself or from its spec dict."""
    if isinstance(prior, AffineRecurrence):
        return prior
    if isinstance(prior, dict):
        keys = ("a", "b", "x0", "length", "noise")
        return AffineRecurrence(**{k: v for k, v in prior.items() if k in keys})
    raise TypeError(f"prior must be an AffineRecurrence or its spec dict, got {type(prior).__name__}")


def _is_point(p) -> bool:
    return p[1] == p[2] if p[0] == "uniform" else p[2] == 0.0


def _point(p) -> float:
    return p[1]


def _mean_var(p) -> tuple[float, float]:
    kind, p1, p2 = p
    return (0.5 * (p1 + p2), (p2 - p1) ** 2 / 12.0) if kind == "uniform" else (p1, p2**2)


_DPS = 60  # decimal digits for moment sums: no cancellation worries when (a - 1)^2 is tiny


def moment(p, k: int):
    """E[v^k] for v ~ p as an mpmath float with 60 digits (float parameters are exact binary values)."""
    kind, p1, p2 = p
    with mpmath.workdps(_DPS):
        lo, hi = mpmath.mpf(p1), mpmath.mpf(p2)
        if kind == "uniform":
            if lo == hi:
                return lo**k
            return (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo))
        return mpmath.fsum(math.comb(k, j) * lo ** (k - j) * hi**j * _std_normal_moment(j) for j in range(0, k + 1, 2))


def _std_normal_moment(k: int) -> int:
    """E[Z^k], Z ~ N(0, 1): (k-1)!! for even k, 0 for odd k."""
    return 0 if k % 2 else math.prod(range(k - 1, 0, -2))


# ----------------------------------------------------------------------------- baselines, closed form
_s = sp.Symbol("sigma", nonnegative=True)  # noise std
_ma, _mb = sp.symbols("m_a m_b", real=True)  # prior means of a and b


def _observed(k: int):
    """y_k = x_k + sigma e_k as a polynomial."""
    return term_poly(k) + _s * sp.Symbol(f"e_{k}")


def baseline_expr(name: str, t: int):
    """Symbolic prediction of y_{t+1} by a polynomial baseline at position t (None if not polynomial)."""
    y = [_observed(k) for k in range(t + 1)]
    if name == "copy" or (name == "linear" and t == 0) or (name in ("three_term", "least_squares") and t < 2):
        return y[t]
    if name == "linear":
        return 2 * y[t] - y[t - 1]
    if name == "oracle":
        return a * y[t] + b
    if name == "prior_mean":
        return _ma * y[t] + _mb
    return None


@lru_cache(maxsize=None)
def _error_power_poly(name: str, t: int, power: int = 2):
    """Expanded (y_{t+1} - prediction)^power as (monomial, coeff) terms in (a, b, x0, sigma, m_a, m_b, e_0 .. e_{t+1})."""
    err = _observed(t + 1) - baseline_expr(name, t)
    gens = [a, b, x0, _s, _ma, _mb] + [sp.Symbol(f"e_{k}") for k in range(t + 2)]
    poly = sp.Poly(err, *gens) ** power  # sparse polynomial arithmetic: much faster than expand()
    return [(monom, int(coeff)) for monom, coeff in poly.terms()]


def _expect_poly(terms, task: AffineRecurrence) -> float:
    """E[sum coeff * a^i b^j x0^k sigma^l m_a^p m_b^q prod e^r] with independent a, b, x0, e."""
    ma, _ = _mean_var(task.a)
    mb, _ = _mean_var(task.b)
    cache: dict = {}

    def mom(which, p, k):
        key = (which, k)
        if key not in cache:
            cache[key] = moment(p, k)
        return cache[key]

    with mpmath.workdps(_DPS):
        fixed = [mpmath.mpf(task.noise), mpmath.mpf(ma), mpmath.mpf(mb)]
        vals = []
        for monom, coeff in terms:
            ia, ib, ix, *rest = monom
            val = coeff * mom("a", task.a, ia) * mom("b", task.b, ib) * mom("x0", task.x0, ix)
            for base, k in zip(fixed, rest[:3]):
                val *= base**k
            for k in rest[3:]:
                val *= _std_normal_moment(k)
            vals.append(val)
        return float(mpmath.fsum(vals))


def baseline_mse(name: str, position: int, prior) -> float:
    """Expected squared error of baseline ``name`` predicting y_{t+1} at position t = ``position``.

    Closed form (exact moments) for copy, linear, oracle, prior_mean at every position, and for the
    fallbacks of three_term (t < 2) and least_squares (t < 2). Noise-free three_term and
    least_squares are exact at t >= 2 (0.0). With noise > 0 they raise NotImplementedError.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    task = as_task(prior)
    t = _check_position(position, task)
    if baseline_expr(name, t) is None:  # three_term / least_squares at t >= 2
        if task.noise == 0:
            return 0.0
        raise NotImplementedError(f"{name} with noise > 0 at position {t} is a ratio of random variables: no closed form")
    return _expect_poly(_error_power_poly(name, t, 2), task)


def baseline_error_moment(name: str, position: int, prior, power: int = 4) -> float:
    """E[(y_{t+1} - prediction)^power] in closed form for the polynomial baselines (copy, linear,
    oracle, prior_mean, and three_term / least_squares at t < 2). With power = 4 this gives the exact
    standard error of a Monte Carlo MSE: sqrt((E[e^4] - E[e^2]^2) / N)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    task = as_task(prior)
    t = _check_position(position, task)
    if baseline_expr(name, t) is None:
        raise NotImplementedError(f"{name} at position {t} is not a polynomial predictor")
    return _expect_poly(_error_power_poly(name, t, int(power)), task)


def _check_position(position, task) -> int:
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or position < 0:
        raise ValueError(f"position must be an integer >= 0, got {position!r}")
    if position > task.length - 2:
        raise ValueError(f"position {position} has no target: the task has {task.length} terms (positions 0..{task.length - 2})")
    return int(position)


# ----------------------------------------------------------------------------- posterior of a given x0, x1
def _b_interval_for_a(x0v, x1v, lo, hi):
    """{a : lo <= x1 - a x0 <= hi} as (L, U), arrays; x0 = 0 gives (-inf, inf) or an empty interval."""
    with np.errstate(divide="ignore", invalid="ignore"):
        e1, e2 = (x1v - hi) / x0v, (x1v - lo) / x0v
    L = np.where(x0v > 0, e1, e2)
    U = np.where(x0v > 0, e2, e1)
    inside = (x1v >= lo) & (x1v <= hi)
    L = np.where(x0v == 0, np.where(inside, -np.inf, np.inf), L)
    U = np.where(x0v == 0, np.where(inside, np.inf, -np.inf), U)
    return L, U


_GL48_X, _GL48_W = np.polynomial.legendre.leggauss(48)


def _truncnorm(mu, sd, L, U):
    """(mass, mean, var) of N(mu, sd^2) restricted to [L, U]; mass = P(L <= v <= U). Arrays broadcast.

    Standardised window [al, be], flipped so that al + be <= 0 (be is the edge nearer the mode).
    Wide windows reaching the bulk use the textbook formulas (log-space masses); narrow or deep-tail
    windows, where those formulas cancel catastrophically, use 48-point Gauss-Legendre in u = be - z
    over [0, min(width, u45)], u45 being where the density has fallen by e^-45 from the edge.
    """
    mu, sd, L, U = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mu, sd, L, U)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        al, be = (L - mu) / sd, (U - mu) / sd
        flip = (al + be) > 0
        al, be = np.where(flip, -be, al), np.where(flip, -al, be)
        # textbook formulas
        log_lo, log_hi = special.log_ndtr(al), special.log_ndtr(be)
        log_mass = log_hi + np.log1p(-np.exp(log_lo - log_hi))
        pa = np.exp(-0.5 * al**2 - 0.5 * np.log(2 * np.pi) - log_mass)  # phi(al) / mass
        pb = np.exp(-0.5 * be**2 - 0.5 * np.log(2 * np.pi) - log_mass)
        apa = np.where(np.isfinite(al), al * pa, 0.0)
        bpb = np.where(np.isfinite(be), be * pb, 0.0)
        m1 = pa - pb
        mass = np.exp(log_mass)
        var = np.maximum(1.0 + apa - bpb - m1**2, 0.0)
        # quadrature near the edge be
        width = be - al
        nb = np.maximum(-be, 0.0)
        u45 = 90.0 / (nb + np.sqrt(nb**2 + 90.0))  # root of nb u + u^2 / 2 = 45, without cancellation
        top = np.where(np.isfinite(width), np.minimum(width, u45), u45)[..., None]
        u = 0.5 * top * (_GL48_X + 1.0)  # [..., 48]
        logd = -0.5 * (be[..., None] - u) ** 2  # log phi(be - u) + const
        wts = 0.5 * top * _GL48_W * np.exp(logd - logd.max(-1, keepdims=True))
        q_mass = np.exp(logd.max(-1)) / np.sqrt(2 * np.pi) * wts.sum(-1)
        q_mean_u = (wts * u).sum(-1) / wts.sum(-1)
        q_var = (wts * (u - q_mean_u[..., None]) ** 2).sum(-1) / wts.sum(-1)
        use_q = np.isfinite(be) & ((width < 1.0) | (be < -1.0))
        mass = np.where(use_q, q_mass, mass)
        m1 = np.where(use_q, be - q_mean_u, m1)
        var = np.where(use_q, q_var, var)
    mean = mu + sd * np.where(flip, -m1, m1)
    return mass, mean, var * sd**2


def posterior_a(x0v, x1v, task: AffineRecurrence):
    """Posterior of a given (x0, x1), noise-free: returns (density p(x1 | x0), E[a | .], Var(a | .)).

    Arrays broadcast. Points outside the support give density 0 and NaN moments.
    """
    x0v, x1v = np.broadcast_arrays(np.asarray(x0v, dtype=float), np.asarray(x1v, dtype=float))
    A, B = task.a, task.b
    if _is_point(A):
        av = _point(A)
        dens = _density(B, x1v - av * x0v)
        return dens, np.full(x0v.shape, av), np.zeros(x0v.shape)
    if _is_point(B):
        bv = _point(B)
        with np.errstate(divide="ignore", invalid="ignore"):
            ahat = (x1v - bv) / x0v
            dens = _density(A, ahat) / np.abs(x0v)
        ma, va = _mean_var(A)
        zero = x0v == 0  # x1 = b carries no information on a
        return (np.where(zero, np.where(x1v == bv, np.inf, 0.0), dens), np.where(zero, ma, ahat), np.where(zero, va, 0.0))
    if A[0] == "normal" and B[0] == "normal":
        (ma, sa), (mb, sb) = A[1:], B[1:]
        V = sa**2 * x0v**2 + sb**2  # Var(x1 | x0)
        r = x1v - ma * x0v - mb
        dens = np.exp(-0.5 * r**2 / V) / np.sqrt(2 * np.pi * V)
        return dens, ma + sa**2 * x0v * r / V, sa**2 * sb**2 / V
    if B[0] == "uniform":  # a ~ p_a restricted to {a : x1 - a x0 in [bl, bh]}
        bl, bh = B[1:]
        L, U = _b_interval_for_a(x0v, x1v, bl, bh)
        if A[0] == "uniform":
            al, ah = A[1:]
            L, U = np.maximum(L, al), np.minimum(U, ah)
            w = U - L
            ok = w > 0
            dens = np.where(ok, w, 0.0) / ((ah - al) * (bh - bl))
            return dens, np.where(ok, 0.5 * (L + U), np.nan), np.where(ok, w**2 / 12.0, np.nan)
        mass, mean, var = _truncnorm(A[1], A[2], L, U)
        ok = mass > 0
        return mass / (bh - bl), np.where(ok, mean, np.nan), np.where(ok, var, np.nan)
    # a uniform, b normal: p_b(x1 - a x0) is N(a; (x1 - mb)/x0, (sb/|x0|)^2) / |x0|
    (al, ah), (mb, sb) = A[1:], B[1:]
    zero = x0v == 0
    x0s = np.where(zero, 1.0, x0v)
    mass, mean, var = _truncnorm((x1v - mb) / x0s, sb / np.abs(x0s), al, ah)
    dens_b = np.exp(-0.5 * ((x1v - mb) / sb) ** 2) / (sb * np.sqrt(2 * np.pi))
    ma, va = _mean_var(A)
    return (np.where(zero, dens_b, mass / ((ah - al) * np.abs(x0s))), np.where(zero, ma, mean), np.where(zero, va, var))


def _density(p, v):
    kind, p1, p2 = p
    v = np.asarray(v, dtype=float)
    if kind == "uniform":
        return np.where((v >= p1) & (v <= p2), 1.0 / (p2 - p1), 0.0) if p2 > p1 else np.where(v == p1, np.inf, 0.0)
    if p2 == 0:
        return np.where(v == p1, np.inf, 0.0)
    return np.exp(-0.5 * ((v - p1) / p2) ** 2) / (p2 * np.sqrt(2 * np.pi))


# ----------------------------------------------------------------------------- public API
def posterior_mean_next(prefix, prior) -> np.ndarray:
    """Bayes prediction E[x_k | x_0 .. x_{k-1}] of the next term; prefix [..., k] -> [...].

    k = 1: E[a] x0 + E[b].  k = 2: x1 + E[a | x0, x1] (x1 - x0).  k >= 3: exact (next_from_three).
    Noise-free tasks only (noise > 0 raises NotImplementedError). A prefix the priors cannot produce
    (zero likelihood, possible with uniform priors) gives NaN.
    """
    task = as_task(prior)
    if task.noise > 0:
        raise NotImplementedError("the Bayes predictor is derived for noise = 0 only")
    prefix = np.asarray(prefix, dtype=float)
    if prefix.ndim == 0 or prefix.shape[-1] < 1:
        raise ValueError(f"prefix must have shape [..., k] with k >= 1, got {prefix.shape}")
    k = prefix.shape[-1]
    if k >= 3:
        return next_from_three(prefix[..., -3], prefix[..., -2], prefix[..., -1])
    ma, _ = _mean_var(task.a)
    mb, _ = _mean_var(task.b)
    if k == 1:
        return ma * prefix[..., 0] + mb
    x0v, x1v = prefix[..., 0], prefix[..., 1]
    _, mean_a, _ = posterior_a(x0v, x1v, task)
    return x1v + mean_a * (x1v - x0v)


def bayes_mse(position: int, prior) -> float:
    """Bayes floor: E[(x_{t+1} - E[x_{t+1} | x_0..x_t])^2] at position t (noise-free tasks).

    t = 0: Var(a) E[x0^2] + Var(b) (exact).  t = 1: E[Var(a | x0, x1) (x1 - x0)^2] by quadrature
    (normal/normal: 1-D, sa^2 sb^2 (1 + E[((ma-1) x0 + mb)^2 / (sa^2 x0^2 + sb^2)])).  t >= 2: 0.
    """
    task = as_task(prior)
    t = _check_position(position, task)
    if task.noise > 0:
        raise NotImplementedError("the Bayes floor is derived for noise = 0 only")
    if t >= 2:
        return 0.0
    _, va = _mean_var(task.a)
    _, vb = _mean_var(task.b)
    if t == 0:
        return va * float(moment(task.x0, 2)) + vb
    return _bayes_mse_1(task)


def _x0_expectation(task, f, points=()):
    """E[f(x0)] over the x0 prior by adaptive quadrature (f scalar -> float)."""
    kind, p1, p2 = task.x0
    if _is_point(task.x0):
        return f(p1)
    if kind == "uniform":
        lo, hi, dens = p1, p2, 1.0 / (p2 - p1)
        w = lambda v: dens  # noqa: E731
    else:
        lo, hi = p1 - _TAIL * p2, p1 + _TAIL * p2
        w = lambda v: math.exp(-0.5 * ((v - p1) / p2) ** 2) / (p2 * math.sqrt(2 * math.pi))  # noqa: E731
    pts = sorted({p for p in (0.0, *points) if lo < p < hi})
    val, _ = integrate.quad(lambda v: w(v) * f(v), lo, hi, points=pts or None, epsabs=1e-13, epsrel=1e-11, limit=500)
    return val


def _bayes_mse_1(task) -> float:
    A, B = task.a, task.b
    if _is_point(A):
        return 0.0  # a known: x2 = x1 + a (x1 - x0)
    if _is_point(B):  # a = (x1 - b)/x0 unless x0 = 0, where x1 = b says nothing about a
        x0_is_zero = _is_point(task.x0) and _point(task.x0) == 0.0
        return _mean_var(A)[1] * _point(B) ** 2 if x0_is_zero else 0.0
    if A[0] == "normal" and B[0] == "normal":
        (ma, sa), (mb, sb) = A[1:], B[1:]
        if task.x0[0] == "uniform" and not _is_point(task.x0):  # closed form (log + arctan)
            lo, hi = task.x0[1:]
            F = _normal_normal_antiderivative()
            mean_f = (F(hi, ma - 1, mb, sa, sb) - F(lo, ma - 1, mb, sa, sb)) / (hi - lo)
        else:  # normal x0: a Gaussian average of a rational function (Faddeeva-type), by quadrature
            mean_f = _x0_expectation(task, lambda v: ((ma - 1) * v + mb) ** 2 / (sa**2 * v**2 + sb**2))
        return sa**2 * sb**2 * (1.0 + mean_f)
    if A[0] == "uniform" and B[0] == "uniform":
        (al, ah), (bl, bh) = A[1:], B[1:]
        kink = (bh - bl) / (ah - al)  # where corner orderings of a x0 + b swap
        return _x0_expectation(task, lambda v: _inner_uniform(v, task), points=(kink, -kink))
    return _x0_expectation(task, lambda v: _inner_mixed(v, task))


@lru_cache(maxsize=None)
def _normal_normal_antiderivative():
    """F(v; c, m, s, r) with dF/dv = (c v + m)^2 / (s^2 v^2 + r^2), from sympy (checked), lambdified.

    Normal a, b and uniform x0 on [lo, hi]: MSE_1 = sa^2 sb^2 (1 + (F(hi) - F(lo)) / (hi - lo)), with
    c = m_a - 1, m = m_b, s = s_a, r = s_b.
    """
    v = sp.Symbol("v", real=True)
    c, m = sp.symbols("c m", real=True)
    s_, r = sp.symbols("s r", positive=True)
    integrand = (c * v + m) ** 2 / (s_**2 * v**2 + r**2)
    F = sp.integrate(integrand, v)
    assert sp.simplify(sp.diff(F, v) - integrand) == 0
    return sp.lambdify((v, c, m, s_, r), F, modules="numpy")


_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)  # exact for degree <= 15


def _inner_uniform(v, task) -> float:
    """int p(x1 | x0) Var(a | x0, x1) (x1 - x0)^2 dx1: piecewise polynomial (degree 5) in x1."""
    (al, ah), (bl, bh) = task.a[1:], task.b[1:]
    knots = np.unique([al * v + bl, al * v + bh, ah * v + bl, ah * v + bh])  # [<=4]
    lo, hi = knots[:-1, None], knots[1:, None]
    xs = 0.5 * (hi - lo) * _GL_X + 0.5 * (hi + lo)  # [pieces, 8]
    dens, _, var = posterior_a(v, xs, task)
    g = np.where(dens > 0, dens * var * (xs - v) ** 2, 0.0)
    return float(np.sum(0.5 * (hi - lo) * _GL_W * g))


_GL20_X, _GL20_W = np.polynomial.legendre.leggauss(20)
_STEPS = np.array([-12.0, -8.0, -5.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0])


def _inner_mixed(v, task) -> float:
    """Same integral when one of a, b is normal: composite 20-point Gauss-Legendre in x1 on pieces
    refined around the two edges of the box at the Gaussian's scale (the integrand is smooth between)."""
    A, B = task.a, task.b
    if A[0] == "normal":  # x1 = a v + b, a normal, b uniform: edges at ma v + {bl, bh}, scale sa |v|
        (ma, sa), (bl, bh) = A[1:], B[1:]
        if v == 0:  # x1 = b says nothing about a: Var(a | x0, x1) = sa^2 and (x1 - x0)^2 = b^2
            return sa**2 * float(moment(B, 2))
        edges, scale = (ma * v + bl, ma * v + bh), sa * abs(v)
    else:  # a uniform, b normal: edges at {al, ah} v + mb, scale sb > 0 (a point b is handled by the caller)
        (al, ah), (mb, sb) = A[1:], B[1:]
        edges, scale = (al * v + mb, ah * v + mb), sb
    lo, hi = min(edges) - _TAIL * scale, max(edges) + _TAIL * scale
    knots = np.unique(np.clip(np.concatenate([e + _STEPS * scale for e in edges]), lo, hi))
    p_lo, p_hi = knots[:-1, None], knots[1:, None]
    xs = 0.5 * (p_hi - p_lo) * _GL20_X + 0.5 * (p_hi + p_lo)  # [pieces, 20]
    dens, _, var = posterior_a(v, xs, task)
    g = np.where(dens > 0, dens * var * (xs - v) ** 2, 0.0)
    return float(np.sum(0.5 * (p_hi - p_lo) * _GL20_W * g))


# ----------------------------------------------------------------------------- teaching
# Each topic: a list of ``theory.steps.Step`` (equation, one-line reason, meaning of its symbols).
def copy_coefficient(position: int, prior) -> float:
    """Best multiple of x_t alone for predicting x_{t+1}: c_t = E[x_{t+1} x_t] / E[x_t^2] (noise-free),
    from the priors' exact moments (``_expect_poly``)."""
    task = as_task(prior)
    t = _check_position(position, task)
    num = _expect_poly(sp.Poly(term_poly(t + 1) * term_poly(t), a, b, x0).terms(), task)
    den = _expect_poly(sp.Poly(term_poly(t) ** 2, a, b, x0).terms(), task)
    return num / den


def expect_uniform(expr, lo=-1, hi=1):
    """Exact E[expr] for a polynomial in a, b, x0, each independent U(lo, hi) (sympy Rationals)."""
    v = sp.Symbol("v", real=True)
    moments: dict = {}
    total = sp.Integer(0)
    for (i, j, k), coeff in sp.Poly(sp.expand(expr), a, b, x0).terms():
        for p in (i, j, k):
            if p not in moments:
                moments[p] = sp.integrate(v**p, (v, lo, hi)) / (hi - lo)
        total += coeff * moments[i] * moments[j] * moments[k]
    return total


def derivation_steps(topic: str) -> list:
    """Steps of one of this module's ``TOPICS``, for ``minigpt derive``."""
    return TOPICS[topic]()


_lo_a, _hi_a, _lo_b, _hi_b, _lo_x, _hi_x = sp.symbols("l_a h_a l_b h_b l_x h_x", real=True)
_x1, _x2 = sp.symbols("x_1 x_2", real=True)


def _uniform_mean(v, lo, hi, body):
    """E[body] over v ~ U(lo, hi), as an unevaluated integral (the meaning of a symbol, for checks)."""
    return sp.Integral(body / (hi - lo), (v, lo, hi))


def _steps_bayes0():
    """Position 0: the Bayes prediction E[a] x_0 + E[b] and its floor Var(a) E[x_0^2] + Var(b)."""
    ma, mb, va, vb, q = sp.symbols("m_a m_b v_a v_b q")
    xhat, mse_x, mse = sp.Symbol("xhat_1"), sp.Function("MSE_0")(x0), sp.Symbol("MSE_0")
    prior = lambda body: _uniform_mean(a, _lo_a, _hi_a, _uniform_mean(b, _lo_b, _hi_b, body))  # noqa: E731
    defs = {
        _x1: a * x0 + b, ma: (_lo_a + _hi_a) / 2, mb: (_lo_b + _hi_b) / 2,
        va: (_hi_a - _lo_a) ** 2 / 12, vb: (_hi_b - _lo_b) ** 2 / 12, q: _uniform_mean(x0, _lo_x, _hi_x, x0**2),
        xhat: prior(a * x0 + b), mse_x: prior((a * x0 + b - xhat) ** 2), mse: _uniform_mean(x0, _lo_x, _hi_x, mse_x),
    }
    paper = {**defs, _lo_a: -1, _hi_a: 1, _lo_b: -1, _hi_b: 1, _lo_x: -1, _hi_x: 1}
    return [
        Step(sp.Eq(_x1, a * x0 + b), "the target at position 0, where only x_0 is seen (a ~ U(l_a, h_a), b ~ U(l_b, h_b))", defs),
        Step(sp.Eq(xhat, ma * x0 + mb), "Bayes prediction: a and b are independent of x_0, so average them out (m = prior mean)", defs),
        Step(sp.Eq(mse_x, va * x0**2 + vb), "its squared error given x_0 is the variance of a x_0 + b (v = prior variance)", defs),
        Step(sp.Eq(mse, va * q + vb), "average over x_0 (q = E[x_0^2])", defs),
        Step(sp.Eq(mse, sp.Rational(4, 9)), "paper prior, a, b, x_0 ~ U(-1, 1): v = q = 1/3, so 1/9 + 1/3 = 4/9", paper),
    ]


def _steps_bayes1():
    """Position 1: only a is unknown; the floor is E[Var(a | x_0, x_1) (x_1 - x_0)^2]."""
    abar, L, U, var = sp.Symbol("abar"), sp.Symbol("L"), sp.Symbol("U"), sp.Function("Var")(a)
    err, mse_x = sp.Symbol("e_1"), sp.Function("MSE_1")(x0, _x1)
    ma, mb = sp.symbols("m_a m_b", real=True)
    sa, sb = sp.symbols("s_a s_b", positive=True)
    xhat = _x1 + abar * (_x1 - x0)
    defs = {_x1: a * x0 + b, _x2: a * (a * x0 + b) + b, err: (_x2 - xhat) ** 2}
    post = {abar: _uniform_mean(a, L, U, a), var: _uniform_mean(a, L, U, (a - abar) ** 2),
            mse_x: _uniform_mean(a, L, U, ((a - abar) * (_x1 - x0)) ** 2)}
    normal = {var: sa**2 - (sa**2 * x0) ** 2 / (sa**2 * x0**2 + sb**2)}
    return [
        Step(sp.Eq(b, _x1 - a * x0), "once x_0 and x_1 are seen, b is fixed by a", defs),
        Step(sp.Eq(_x2, _x1 + a * (_x1 - x0)), "so the target is linear in the one unknown a", defs),
        Step(sp.Eq(err, (a - abar) ** 2 * (_x1 - x0) ** 2),
             "predicting x_1 + abar (x_1 - x_0) errs by (a - abar)(x_1 - x_0): the best abar is the posterior mean of a", defs),
        Step(sp.Eq(abar, (L + U) / 2),
             "uniform priors: a | x_0, x_1 is uniform on [L, U] = [l_a, h_a] cut to {l_b <= x_1 - a x_0 <= h_b}", post),
        Step(sp.Eq(var, (U - L) ** 2 / 12), "its posterior variance", post),
        Step(sp.Eq(mse_x, (U - L) ** 2 / 12 * (_x1 - x0) ** 2), "squared error given (x_0, x_1); average it over (x_0, x_1) for the floor", post),
        Step(sp.Eq(var, sa**2 * sb**2 / (sa**2 * x0**2 + sb**2)),
             "normal priors N(m_a, s_a^2), N(m_b, s_b^2) instead: Gaussian conditioning of a on x_1 = a x_0 + b", normal),
    ]


def _steps_bayes_floor_paper():
    """Position 1 under the paper prior (a, b, x_0 ~ U(-1, 1)): the floor is exactly 2/15."""
    L, U, W, m = sp.Symbol("L"), sp.Symbol("U"), sp.Symbol("W"), sp.Function("m")(x0, _x1)
    I0, mse = sp.Function("I")(x0), sp.Symbol("MSE_1")
    lo, mid, hi = (-1 - x0, x0 - 1), (x0 - 1, 1 - x0), (1 - x0, 1 + x0)
    w_lo, w_hi = (_x1 + 1 + x0) / x0, (1 + x0 - _x1) / x0
    width = sp.Min(1, (_x1 + 1) / x0) - sp.Max(-1, (_x1 - 1) / x0)
    integrand = lambda w: w**3 * (_x1 - x0) ** 2 / 96  # noqa: E731
    inner = sum(sp.Integral(integrand(w), (_x1, *r)) for w, r in ((w_lo, lo), (2, mid), (w_hi, hi)))
    poly = -x0**3 / 10 + sp.Rational(7, 30) * x0**2 - x0 / 12 + sp.Rational(1, 18)
    pos = {x0: (0.02, 1)}  # 0 < x_0 <= 1; x_0 < 0 is its mirror image
    return [
        Step(sp.Eq(W, width), "for 0 < x_0 <= 1, a lies in [-1, 1] and keeps b = x_1 - a x_0 in [-1, 1]: an interval of length W",
             {W: width}, {**pos, _x1: (-1 - x0, 1 + x0)}),
        Step(sp.Eq(W, w_lo), "for x_1 in [-1 - x_0, x_0 - 1] the b-constraint cuts the top of the interval", {W: width}, {**pos, _x1: lo}),
        Step(sp.Eq(W, 2), "for x_1 in [x_0 - 1, 1 - x_0] nothing is cut: a is uniform on [-1, 1]", {W: width}, {**pos, _x1: mid}),
        Step(sp.Eq(W, w_hi), "for x_1 in [1 - x_0, 1 + x_0] the b-constraint cuts the bottom", {W: width}, {**pos, _x1: hi}),
        Step(sp.Eq(m, W**3 * (_x1 - x0) ** 2 / 96),
             "density of (x_0, x_1) is (1/2)(W/4); times Var(a | x_0, x_1) = W^2/12; times (x_1 - x_0)^2",
             {m: sp.Rational(1, 2) * W / 4 * W**2 / 12 * (_x1 - x0) ** 2}),
        Step(sp.Eq(I0, poly), "integrate over x_1, one piece of W at a time", {I0: inner}, pos),
        Step(sp.Eq(mse, 2 * sp.Integral(I0, (x0, 0, 1))),
             "x_0 < 0 mirrors x_0 > 0 under (x_0, x_1, b) -> (-x_0, -x_1, -b): twice the x_0 > 0 half", {mse: 2 * sp.Integral(inner, (x0, 0, 1)), I0: poly}),
        Step(sp.Eq(mse, sp.Rational(2, 15)), "integrate the cubic: 2 (-1/40 + 7/90 - 1/24 + 1/18) = 2/15 (0.1333)", {mse: 2 * sp.Integral(inner, (x0, 0, 1))}),
        Step(sp.Eq(mse / sp.Symbol("MSE_0"), sp.Rational(3, 10)), "seeing x_1 removes 70% of the position-0 floor 4/9",
             {mse: sp.Rational(2, 15), sp.Symbol("MSE_0"): sp.Rational(4, 9)}),
    ]


def _steps_copy_first():
    """Why copying is a good first estimate: the best multiple of x_t alone is 0, 3/4, then close to 1."""
    c, P, Q, R = sp.symbols("c P_t Q_t R_t", real=True)
    ct = [sp.Symbol(f"c_{t}") for t in range(6)]
    Pt = [sp.Symbol(f"P_{t}") for t in range(3)]
    Qt = [sp.Symbol(f"Q_{t}") for t in range(3)]
    x = [term_poly(t) for t in range(7)]
    P_ = [expect_uniform(x[t + 1] * x[t]) for t in range(6)]
    Q_ = [expect_uniform(x[t] ** 2) for t in range(6)]
    copy_mse = [expect_uniform((x[t + 1] - x[t]) ** 2) for t in range(6)]
    best_mse = [expect_uniform((x[t + 1] - (P_[t] / Q_[t]) * x[t]) ** 2) for t in range(6)]
    defs = {**{ct[t]: P_[t] / Q_[t] for t in range(6)}, **{Pt[t]: P_[t] for t in range(3)}, **{Qt[t]: Q_[t] for t in range(3)}}
    ratio = [sp.Symbol(f"rho_{t}") for t in range(2, 6)]  # MSE of copying / MSE of the best multiple
    ratios = sp.Matrix([[copy_mse[t] / best_mse[t] for t in range(2, 6)]])
    # independent check: the float moment machinery (``baseline_mse``, ``copy_coefficient``)
    ratio_defs = {r: sp.Float(baseline_mse("copy", t, _PAPER) / (baseline_mse("copy", t, _PAPER) - (copy_coefficient(t, _PAPER) - 1) ** 2
                                                                   * float(Q_[t])), 30) for r, t in zip(ratio, range(2, 6))}
    c_defs = {ct[t]: sp.Float(copy_coefficient(t, _PAPER), 30) for t in range(2, 6)}
    return [
        Step(sp.Eq(sp.Derivative(R - 2 * c * P + c**2 * Q, c), 2 * (c * Q - P)),
             "E[(x_(t+1) - c x_t)^2] = R_t - 2 c P_t + c^2 Q_t with P_t = E[x_(t+1) x_t], Q_t = E[x_t^2]; differentiate in c"),
        Step(sp.Eq(sp.Symbol("c_t"), P / Q), "the derivative vanishes at c_t = P_t / Q_t, the best multiple of x_t",
             {sp.Symbol("c_t"): sp.solve(sp.diff(R - 2 * c * P + c**2 * Q, c), c)[0]}),
        Step(sp.Eq(Pt[0], 0), "t = 0: P_0 = E[a] E[x_0^2] + E[b] E[x_0] = 0 (paper prior a, b, x_0 ~ U(-1, 1))", defs),
        Step(sp.Eq(ct[0], 0), "so at t = 0 the best multiple is 0: predict the prior mean, never copy", defs),
        Step(sp.Eq(Pt[1], sp.Rational(1, 3)), "t = 1: x_2 x_1 = a x_1^2 + b x_1; odd moments vanish, leaving E[b^2] = 1/3", defs),
        Step(sp.Eq(Qt[1], sp.Rational(4, 9)), "and E[x_1^2] = E[a^2] E[x_0^2] + E[b^2] = 1/9 + 1/3", defs),
        Step(sp.Eq(ct[1], sp.Rational(3, 4)), "so c_1 = (1/3) / (4/9) = 3/4", defs),
        Step(sp.Eq(sp.Matrix([ct[2:6]]), sp.Matrix([[P_[t] / Q_[t] for t in range(2, 6)]]), evaluate=False),
             f"t = 2..5 ({', '.join(f'{float(P_[t] / Q_[t]):.3f}' for t in range(2, 6))}): close to 1, so copying x_t is nearly the best multiple",
             c_defs),
        Step(sp.Eq(sp.Matrix([ratio]), ratios, evaluate=False),
             f"MSE of copying / MSE of the best multiple, t = 2..5 ({', '.join(f'{float(r):.3f}' for r in ratios)}): copying loses little",
             ratio_defs),
    ]


def _steps_baselines():
    """What each baseline misses at position 2, and the copy baseline's MSE under the paper prior."""
    xs = sp.symbols("x_1:4", real=True)
    ma, mb = sp.symbols("m_a m_b", real=True)
    e = {name: sp.Symbol(f"e_{name}") for name in ("copy", "linear", "oracle", "prior_mean")}
    mse = sp.Symbol("MSE_copy(2)")
    defs = {**{xs[k - 1]: term_poly(k) for k in (1, 2, 3)}, e["copy"]: xs[2] - xs[1], e["linear"]: xs[2] - (2 * xs[1] - xs[0]),
            e["oracle"]: xs[2] - (a * xs[1] + b), e["prior_mean"]: xs[2] - (ma * xs[1] + mb),
            mse: sp.Float(baseline_mse("copy", 2, _PAPER), 30)}
    d2 = a**2 * ((a - 1) * x0 + b)
    return [
        Step(sp.Eq(e["copy"], d2), "copying x_2 misses x_3 by the difference d_2 = a^2 ((a - 1) x_0 + b)", defs),
        Step(sp.Eq(e["linear"], (a - 1) * a * ((a - 1) * x0 + b)), "2 x_2 - x_1 misses by (a - 1) d_1: small when a is near 1", defs),
        Step(sp.Eq(e["oracle"], 0), "a x_2 + b with the true a, b is exact", defs),
        Step(sp.Eq(e["prior_mean"], (a - ma) * xs[1] + (b - mb)), "m_a x_2 + m_b misses by the prior's error on a and b", defs),
        Step(sp.Eq(mse, expect_uniform(d2**2)), "paper prior: E[d_2^2] from the exact moments E[v^k] = 1/(k + 1), k even", defs),
    ]


_PAPER = AffineRecurrence()  # a, b, x0 ~ U(-1, 1): the paper prior
TOPICS = {"bayes_position0": _steps_bayes0, "bayes_position1": _steps_bayes1, "bayes_floor_paper": _steps_bayes_floor_paper,
          "copy_first_estimate": _steps_copy_first, "baselines": _steps_baselines}
