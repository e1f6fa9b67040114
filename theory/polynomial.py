"""Polynomial sequences x_n = p(n / s) = sum_{j<=m} c_j (n / s)^j, derived with sympy and lambdified.

Facts derived (and checked symbolically for each degree m):

- the forward difference Delta f(n) = f(n + 1) - f(n) lowers the degree of a polynomial in n by one
  (the n^j terms of (n + 1)^j - n^j cancel), so Delta^m x_n = m! c_m / s^m is constant and
  Delta^{m+1} x_n = 0 for every n, every coefficient and every scale s > 0;
- writing Delta^{m+1} x_{t-m} = sum_{i=0}^{m+1} (-1)^{m+1-i} C(m+1, i) x_{t-m+i} = 0 and solving for
  x_{t+1} gives the *finite-difference predictor*
        x_{t+1} = sum_{i=1}^{m+1} (-1)^{i+1} C(m+1, i) x_{t+1-i}            (m = 2: 3 x_t - 3 x_{t-1} + x_{t-2}),
  exact from t = m on, whatever s: it is the value at t + 1 of the unique degree-m polynomial
  through the last m + 1 terms (Lagrange extrapolation), and it never needs the coefficients;
- in copy-then-refine form it is x_t + Delta x_{t-1} + Delta^2 x_{t-2} + .. + Delta^m x_{t-m}
  (the Newton backward-difference series), and the order-r predictor (r <= m) errs by
  Delta^r x_{t+1-r}: copying (r = 1) by Delta x_t = O(1 / s), linear extrapolation (r = 2) by
  Delta^2 x_{t-1} = O(1 / s^2) (for m = 2 exactly 2 c_2 / s^2).
"""
from __future__ import annotations

from functools import lru_cache
from math import comb

import numpy as np
import sympy as sp

from theory.steps import Step

n, s = sp.symbols("n s", positive=True)


def coeff_symbols(m: int):
    return sp.symbols(f"c0:{m + 1}", real=True)


def term(m: int, k=n):
    """x_k = sum_j c_j (k / s)^j."""
    c = coeff_symbols(m)
    return sum(c[j] * (k / s) ** j for j in range(m + 1))


def forward_difference(expr, order: int, var=n):
    """Delta^order f(var) = sum_{i=0}^{order} (-1)^{order-i} C(order, i) f(var + i)."""
    return sum((-1) ** (order - i) * comb(order, i) * expr.subs(var, var + i) for i in range(order + 1))


def check_annihilation(m: int) -> bool:
    """Symbolic proof for degree m: Delta^m x_n = m! c_m / s^m and Delta^{m+1} x_n = 0."""
    x = term(m)
    c = coeff_symbols(m)
    top = sp.simplify(sp.expand(forward_difference(x, m)) - sp.factorial(m) * c[m] / s**m) == 0
    zero = sp.expand(forward_difference(x, m + 1)) == 0
    return bool(top and zero)


def check_degree_lowering(j_max: int = 6) -> bool:
    """Delta n^j = (n+1)^j - n^j has degree j - 1 (j >= 1), and Delta 1 = 0: why Delta^{m+1} kills degree m."""
    ok = sp.expand(forward_difference(sp.Integer(1), 1)) == 0
    for j in range(1, j_max + 1):
        ok &= sp.degree(sp.expand(forward_difference(n**j, 1)), n) == j - 1
    return bool(ok)


@lru_cache(maxsize=None)
def predictor_expr(m: int):
    """(window symbols x_{t-m} .. x_t, x_{t+1} solved from Delta^{m+1} x_{t-m} = 0)."""
    w = sp.symbols(f"w0:{m + 2}", real=True)  # w[i] = x_{t-m+i}, w[m+1] = x_{t+1}
    eq = sum((-1) ** (m + 1 - i) * comb(m + 1, i) * w[i] for i in range(m + 2))
    (sol,) = sp.solve(sp.Eq(eq, 0), w[m + 1])
    return w[: m + 1], sp.expand(sol)


def predictor_weights(m: int) -> list[int]:
    """Weights of x_t, x_{t-1}, .., x_{t-m} in the predictor: (-1)^{i+1} C(m+1, i), i = 1 .. m+1."""
    window, expr = predictor_expr(m)
    return [int(expr.coeff(window[m - i])) for i in range(m + 1)]


def check_predictor(m: int) -> bool:
    """Symbolic proof: the predictor equals the closed-form weights, equals Lagrange extrapolation of the
    last m + 1 points, equals the Newton backward-difference series, and is exact on x_n = p(n / s)."""
    window, expr = predictor_expr(m)
    ok = predictor_weights(m) == [(-1) ** (i + 1) * comb(m + 1, i) for i in range(1, m + 2)]
    t = sp.Symbol("t")
    lagrange = sp.interpolate(list(zip(range(m + 1), window)), t).subs(t, m + 1)  # points at 0 .. m
    ok &= sp.expand(lagrange - expr) == 0
    newton = window[m] + sum(sp.expand(_backward_difference(window, r)) for r in range(1, m + 1))
    ok &= sp.expand(newton - expr) == 0
    tt = sp.Symbol("tt")
    exact = expr.subs({window[i]: term(m, tt - m + i) for i in range(m + 1)})
    ok &= sp.simplify(sp.expand(exact - term(m, tt + 1))) == 0
    return bool(ok)


def _backward_difference(window, r):
    """Delta^r x_{t-r} from the window x_{t-m} .. x_t (the last r + 1 entries)."""
    last = window[len(window) - r - 1 :]
    return sum((-1) ** (r - i) * comb(r, i) * last[i] for i in range(r + 1))


def error_of_order(m: int, r: int):
    """x_{t+1} - (order-r predictor) at symbolic t, in closed form (r <= m + 1; 0 when r = m + 1)."""
    t = sp.Symbol("t")
    pred = sum((-1) ** (i + 1) * comb(r, i) * term(m, t + 1 - i) for i in range(1, r + 1))
    return sp.simplify(sp.expand(term(m, t + 1) - pred))


@lru_cache(maxsize=None)
def _lambdified(m: int):
    window, expr = predictor_expr(m)
    return sp.lambdify(window, expr, modules="numpy")


def next_from_terms(window) -> np.ndarray:
    """Exact next term from ``window [..., m+1]`` = x_{t-m} .. x_t (lambdified finite-difference predictor)."""
    w = np.asarray(window, dtype=float)
    m = w.shape[-1] - 1
    return np.asarray(_lambdified(m)(*[w[..., i] for i in range(m + 1)]), dtype=float) * np.ones(w.shape[:-1])


def sequence(coeffs, length: int, scale: float) -> np.ndarray:
    """[..., length] terms of x_n = sum_j c_j (n / scale)^j for coeffs [..., m+1] (Horner)."""
    c = np.asarray(coeffs, dtype=float)
    u = np.arange(length) / scale
    out = np.zeros(c.shape[:-1] + (length,))
    for j in range(c.shape[-1] - 1, -1, -1):
        out = out * u + c[..., j : j + 1]
    return out


# ----------------------------------------------------------------------------- teaching
# Each topic: a list of ``theory.steps.Step`` (equation, one-line reason, meaning of its symbols).
def derivation_steps(topic: str) -> list:
    """Steps of one of this module's ``TOPICS``, for ``minigpt derive``."""
    return TOPICS[topic]()


def _steps_polynomial():
    """Polynomial sequences: finite differences, the predictor 3 x_t - 3 x_{t-1} + x_{t-2} (degree 2)."""
    m = 2
    c = coeff_symbols(m)
    t = sp.Symbol("t", integer=True, positive=True)
    x, D1, D2, D3 = sp.Function("x"), sp.Function("Delta_x"), sp.Function("Delta^2_x"), sp.Function("Delta^3_x")
    defs = {x: sp.Lambda(n, term(m)), D1: sp.Lambda(n, x(n + 1) - x(n)), D2: sp.Lambda(n, D1(n + 1) - D1(n)),
            D3: sp.Lambda(n, D2(n + 1) - D2(n))}
    from_two = {t: (2, 8)}  # the predictor reads x_(t-2)
    return [
        Step(sp.Eq(x(n), c[0] + c[1] * n / s + c[2] * (n / s) ** 2), "a degree-2 sequence: x_n = p(n / s) with coefficients c_j and scale s", defs),
        Step(sp.Eq(D1(n), c[1] / s + c[2] * (2 * n + 1) / s**2), "first difference Delta_x(n) = x(n + 1) - x(n): the n^2 terms cancel, the degree drops to 1", defs),
        Step(sp.Eq(D2(n), 2 * c[2] / s**2), "second difference: constant, m! c_m / s^m with m = 2", defs),
        Step(sp.Eq(D3(n), 0), "third difference: zero for every n, c and s (the (m+1)-th difference kills degree m)", defs),
        Step(sp.Eq(D3(t - 2), x(t + 1) - 3 * x(t) + 3 * x(t - 1) - x(t - 2)), "the third difference at t - 2 written out with binomial signs", defs, from_two),
        Step(sp.Eq(x(t + 1), 3 * x(t) - 3 * x(t - 1) + x(t - 2)), "set it to 0 and solve: exact from t = 2, without knowing c or s", defs, from_two),
        Step(sp.Eq(x(t + 1), x(t) + D1(t - 1) + D2(t - 2)), "the same predictor as copy + last difference + last second difference", defs, from_two),
        Step(sp.Eq(x(t + 1) - x(t), D1(t)), "so copying errs by the first difference at t, O(1/s)", defs),
        Step(sp.Eq(x(t + 1) - (2 * x(t) - x(t - 1)), 2 * c[2] / s**2), "and linear extrapolation by the second difference 2 c_2 / s^2 = O(1/s^2)", defs),
    ]


TOPICS = {"polynomial_sequence": _steps_polynomial}
