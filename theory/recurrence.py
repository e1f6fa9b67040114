"""The affine recurrence x_{n+1} = a x_n + b, derived with sympy and lambdified to numpy.

Symbols: ``a, b, x0`` (real) and ``n`` (integer >= 0). Every numeric function here is produced from a
sympy expression derived (and checked) below, so tests can compare it with plain iteration.

Facts derived:
- closed form  x_n = a^n x0 + b (a^n - 1)/(a - 1)   (a != 1),   x_n = x0 + n b   (a = 1);
- fixed point  x* = b / (1 - a), so x_n = x* + a^n (x0 - x*) for a != 1;
- differences  d_n = x_{n+1} - x_n = a^n ((a - 1) x0 + b), hence d_{n+1} = a d_n;
- from three consecutive terms (p2, p1, p0) = (x_{t-2}, x_{t-1}, x_t):
  a = (p0 - p1)/(p1 - p2),  b = (p1^2 - p0 p2)/(p1 - p2),  identifiable iff p1 != p2;
  next term  x_{t+1} = p0 + (p0 - p1)^2 / (p1 - p2)   ("copy, then correct");
- error of copying x_t:                x_{t+1} - x_t = d_t = (a - 1) x_t + b;
- error of linear extrapolation 2x_t - x_{t-1}:  x_{t+1} - 2x_t + x_{t-1} = (a - 1) d_{t-1}.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from theory.steps import Step

a, b, x0 = sp.symbols("a b x0", real=True)
n = sp.symbols("n", integer=True, nonnegative=True)
# three consecutive observed terms x_{t-2}, x_{t-1}, x_t
p2, p1, p0 = sp.symbols("x_{t-2} x_{t-1} x_t", real=True)


# ----------------------------------------------------------------------------- closed form
def geometric_sum(k=n):
    """S_k = 1 + a + ... + a^{k-1} = (a^k - 1)/(a - 1), or k when a = 1."""
    return sp.Piecewise((k, sp.Eq(a, 1)), ((a**k - 1) / (a - 1), True))


def closed_form(k=n):
    """x_k = a^k x0 + b S_k (a Piecewise in a = 1)."""
    return sp.Piecewise((x0 + k * b, sp.Eq(a, 1)), (a**k * x0 + b * (a**k - 1) / (a - 1), True))


def iterate(k: int, a_=a, b_=b, x0_=x0):
    """x_k by applying the recurrence k times (a polynomial in a, b, x0; exact for Rationals)."""
    x = x0_
    for _ in range(k):
        x = sp.expand(a_ * x + b_)
    return x


def term_poly(k: int):
    """x_k as an expanded polynomial: a^k x0 + b (1 + a + ... + a^{k-1})."""
    return sp.expand(a**k * x0 + b * sum(a**i for i in range(k)))


@lru_cache(maxsize=None)
def fixed_point():
    """x* solving x = a x + b (a != 1): b / (1 - a)."""
    x = sp.Symbol("x")
    (sol,) = sp.solve(sp.Eq(x, a * x + b), x)
    return sp.simplify(sol)


def difference(k=n):
    """d_k = x_{k+1} - x_k = a^k ((a - 1) x0 + b), valid for every a (including a = 1)."""
    return a**k * ((a - 1) * x0 + b)


def check_closed_form() -> bool:
    """Symbolic proof: closed_form(0) = x0 and closed_form(n+1) = a closed_form(n) + b on both branches."""
    generic = a**n * x0 + b * (a**n - 1) / (a - 1)
    ok_generic = sp.simplify(generic.subs(n, n + 1) - (a * generic + b)) == 0
    ok_one = sp.simplify((x0 + (n + 1) * b) - (x0 + n * b + b)) == 0
    ok_start = sp.simplify(generic.subs(n, 0) - x0) == 0
    ok_fixed = sp.simplify(generic - (fixed_point() + a**n * (x0 - fixed_point()))) == 0
    ok_diff = sp.simplify(generic.subs(n, n + 1) - generic - difference()) == 0
    return bool(ok_generic and ok_one and ok_start and ok_fixed and ok_diff)


# ----------------------------------------------------------------------------- identification
@lru_cache(maxsize=None)
def solve_three():
    """Solve {x_{t-1} = a x_{t-2} + b, x_t = a x_{t-1} + b} for (a, b). Returns (a_hat, b_hat, det)."""
    sol = sp.solve([sp.Eq(p1, a * p2 + b), sp.Eq(p0, a * p1 + b)], [a, b], dict=True)[0]
    det = sp.Matrix([[p2, 1], [p1, 1]]).det()  # = p2 - p1: identifiable iff p1 != p2
    return sp.simplify(sol[a]), sp.factor(sol[b]), det


@lru_cache(maxsize=None)
def next_from_three_expr():
    """x_{t+1} = a_hat x_t + b_hat, rewritten as copy + correction: x_t + (x_t - x_{t-1})^2/(x_{t-1} - x_{t-2})."""
    a_hat, b_hat, _ = solve_three()
    derived = sp.together(a_hat * p0 + b_hat)
    copy_plus = p0 + (p0 - p1) ** 2 / (p1 - p2)
    assert sp.simplify(derived - copy_plus) == 0, "derivation and copy+correction form disagree"
    return copy_plus


@lru_cache(maxsize=None)
def _next_from_three_numpy():
    return sp.lambdify((p2, p1, p0), next_from_three_expr(), modules="numpy")


def identifiable(x_prev2, x_prev1) -> np.ndarray:
    """True where three terms determine (a, b): x_{t-1} != x_{t-2} (the 2x2 determinant is nonzero).

    On a noise-free sequence x_{t-1} - x_{t-2} = d_{t-2} = a^{t-2}(x_1 - x_0): identifiable iff
    x_1 != x_0 and (t = 2 or a != 0). Where it fails the sequence is constant from x_{t-2} on, so the
    next term is still x_t: ``next_from_three`` falls back to copying there and stays exact.
    """
    return np.asarray(x_prev1) != np.asarray(x_prev2)


def next_from_three(x_prev2, x_prev1, x_t):
    """Exact next term from three consecutive terms, vectorised: x_t + (x_t - x_{t-1})^2 / (x_{t-1} - x_{t-2}).

    Inputs broadcast (any shape). Where x_{t-1} == x_{t-2} returns x_t (copy; exact on noise-free data).
    """
    x_prev2, x_prev1, x_t = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x_prev2, x_prev1, x_t)))
    ok = identifiable(x_prev2, x_prev1)
    safe_prev2 = np.where(ok, x_prev2, x_prev1 - 1.0)  # any nonzero denominator; masked below
    out = _next_from_three_numpy()(safe_prev2, x_prev1, x_t)
    return np.where(ok, out, x_t)


# ----------------------------------------------------------------------------- errors of simple rules
def copy_error(k=n):
    """x_{k+1} - x_k in terms of x_k: (a - 1) x_k + b; equals difference(k)."""
    xk = sp.Symbol("x_k")
    return (a - 1) * xk + b, difference(k)


def linear_error(k=n):
    """x_{k+1} - (2 x_k - x_{k-1}) = d_k - d_{k-1} = (a - 1) d_{k-1} = (a-1) a^{k-1} ((a-1) x0 + b), k >= 1."""
    expr = (a - 1) * a ** (k - 1) * ((a - 1) * x0 + b)
    assert sp.expand(sp.powsimp(sp.expand(difference(k) - difference(k - 1) - expr))) == 0
    return expr


# ----------------------------------------------------------------------------- numeric helpers
def geometric_sum_numeric(a_, k):
    """S_k(a) = (a^k - 1)/(a - 1), stable near a = 1 (expm1/log1p for a > 1/2); broadcasts."""
    a_ = np.asarray(a_, dtype=float)
    k = np.asarray(k, dtype=float)
    near = a_ > 0.5  # there a - 1 is exact (Sterbenz) and log1p(a - 1) is accurate
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        pos = np.expm1(k * np.log1p(np.where(near, a_ - 1.0, 0.0))) / (a_ - 1.0)
        gen = (a_**k - 1.0) / (a_ - 1.0)  # a <= 1/2: |a - 1| >= 1/2, well conditioned
    return np.where(a_ == 1.0, k, np.where(near, pos, gen))


def term_numeric(a_, b_, x0_, k):
    """x_k = a^k x0 + b S_k(a), vectorised over broadcastable a, b, x0, k."""
    a_, b_, x0_ = (np.asarray(v, dtype=float) for v in (a_, b_, x0_))
    return np.asarray(a_, dtype=float) ** np.asarray(k, dtype=float) * x0_ + b_ * geometric_sum_numeric(a_, k)


def sequence_numeric(a_, b_, x0_, length: int) -> np.ndarray:
    """[..., length] closed-form terms x_0 .. x_{length-1} for broadcastable a, b, x0."""
    k = np.arange(length)
    return term_numeric(np.asarray(a_)[..., None], np.asarray(b_)[..., None], np.asarray(x0_)[..., None], k)


# ----------------------------------------------------------------------------- teaching
# Each topic: a list of ``theory.steps.Step`` (equation, one-line reason, meaning of its symbols).
_x = sp.Function("x")  # x(n): the n-th term
_t = sp.Symbol("t", integer=True, nonnegative=True)  # a position
_i = sp.Symbol("i", integer=True, nonnegative=True)  # a summation index
_xs = sp.Symbol("x^*", real=True)  # the fixed point
_X = {_x: sp.Lambda(n, closed_form())}  # what x(n) means: the closed form (checked against iteration)


def derivation_steps(topic: str = "recurrence") -> list[Step]:
    """Steps of one of this module's ``TOPICS``, for ``minigpt derive``."""
    return TOPICS[topic]()


def _steps_recurrence():
    """Closed form of x_{n+1} = a x_n + b by unrolling and a geometric sum."""
    S = sp.Function("S")
    defs = {**_X, S: sp.Lambda(n, sp.Sum(a**_i, (_i, 0, n - 1)))}
    return [
        Step(sp.Eq(_x(n + 1), a * _x(n) + b), "the rule: each term is a times the previous one plus b", defs),
        Step(sp.Eq(_x(1), a * x0 + b), "one step from x_0", defs),
        Step(sp.Eq(_x(2), a**2 * x0 + a * b + b), "two steps: the first b has been multiplied by a once", defs),
        Step(sp.Eq(_x(n), a**n * x0 + b * S(n)), "n steps: x_0 picks up a^n, and the b added k steps ago picks up a^k", defs),
        Step(sp.Eq(S(n), sp.Sum(a**_i, (_i, 0, n - 1))), "S_n names the geometric sum 1 + a + ... + a^(n-1)", defs),
        Step(sp.Eq(S(n) - a * S(n), 1 - a**n), "S_n - a S_n telescopes: every power but 1 and a^n cancels", defs),
        Step(sp.Eq(S(n), (a**n - 1) / (a - 1)), "divide by 1 - a (a != 1; for a = 1 every term is 1 and S_n = n)", defs),
        Step(sp.Eq(_x(n), closed_form()), "closed form, with the a = 1 case (x_n = x_0 + n b) separate", defs),
        Step(sp.Eq(_x(4), iterate(4)), "check: applying the rule four times gives the same polynomial", defs),
    ]


def _steps_fixed_point():
    """The fixed point x* = b / (1 - a) and how the terms approach it (|a| < 1) or leave it."""
    defs = {**_X, _xs: fixed_point()}
    return [
        Step(sp.Eq(_xs, a * _xs + b), "a fixed point is a value the rule leaves unchanged", defs),
        Step(sp.Eq(_xs, fixed_point()), "solve the linear equation (a != 1; for a = 1, b != 0 there is none)", defs),
        Step(sp.Eq(_x(n + 1) - _xs, a * (_x(n) - _xs)), "subtract x* = a x* + b from the rule: the distance to x* is multiplied by a", defs),
        Step(sp.Eq(_x(n), _xs + a**n * (x0 - _xs)), "apply that n times from x_0", defs),
        Step(sp.Eq(sp.Abs(_x(n) - _xs), sp.Abs(a) ** n * sp.Abs(x0 - _xs)),
             "so |a| < 1 shrinks the distance geometrically (convergence), |a| > 1 grows it; a < 0 flips the side each step", defs),
    ]


def _steps_differences():
    """Differences d_n = x_{n+1} - x_n: d_n = a^n d_0, so d_{n+1} = a d_n (b drops out)."""
    d = sp.Function("d")
    defs = {**_X, d: sp.Lambda(n, _x(n + 1) - _x(n))}
    return [
        Step(sp.Eq(d(n), _x(n + 1) - _x(n)), "d_n names the difference of consecutive terms", defs),
        Step(sp.Eq(d(n), a * _x(n) + b - _x(n)), "substitute the rule for x_(n+1)", defs),
        Step(sp.Eq(d(n + 1), a * d(n)), "d_(n+1) = (a x_(n+1) + b) - (a x_n + b) = a d_n: b drops out", defs),
        Step(sp.Eq(d(0), (a - 1) * x0 + b), "the first difference", defs),
        Step(sp.Eq(d(n), difference()), "so every difference is a^n times the first", defs),
    ]


def _steps_next_from_three():
    """The next term from three consecutive terms: x_t + (x_t - x_{t-1})^2 / (x_{t-1} - x_{t-2})."""
    a_hat, b_hat, det = solve_three()
    u = sp.Symbol("u", real=True)  # x_{t-2}: any value
    x_next = sp.Symbol("x_{t+1}", real=True)
    defs = {p2: u, p1: a * u + b, p0: a * (a * u + b) + b, x_next: a * (a * (a * u + b) + b) + b}
    M = sp.Matrix([[p2, 1], [p1, 1]])
    return [
        Step(sp.Eq(p1, a * p2 + b), "the rule once: x_(t-1) from x_(t-2)", defs),
        Step(sp.Eq(p0, a * p1 + b), "the rule again: x_t from x_(t-1) (two linear equations in a, b)", defs),
        Step(sp.Eq(sp.Determinant(M), det), "their 2x2 determinant: (a, b) are identifiable iff x_(t-1) != x_(t-2)", defs),
        Step(sp.Eq(p0 - p1, a * (p1 - p2)), "subtract the two equations: b drops out", defs),
        Step(sp.Eq(a, a_hat), "solve for a (divide by x_(t-1) - x_(t-2))", defs),
        Step(sp.Eq(b, b_hat), "then b = x_(t-1) - a x_(t-2)", defs),
        Step(sp.Eq(x_next, next_from_three_expr()), "substitute into a x_t + b: copy x_t, then add a correction", defs),
    ]


def _steps_errors():
    """How far copying x_t and linear extrapolation 2 x_t - x_{t-1} miss the next term."""
    defs = {**_X, _xs: fixed_point()}
    d_prev = _x(_t) - _x(_t - 1)
    from_one = {_t: (1, 7)}  # linear extrapolation needs t >= 1
    return [
        Step(sp.Eq(_x(_t + 1) - _x(_t), (a - 1) * _x(_t) + b), "copying x_t misses x_(t+1) = a x_t + b by (a - 1) x_t + b", defs),
        Step(sp.Eq(_x(_t + 1) - _x(_t), difference(_t)), "that miss is the difference d_t = a^t ((a - 1) x_0 + b)", defs),
        Step(sp.Eq(_x(_t + 1) - _x(_t), (a - 1) * (_x(_t) - _xs)), "in terms of the fixed point: copying is good near x* or when a is near 1", defs),
        Step(sp.Eq(_x(_t + 1) - (2 * _x(_t) - _x(_t - 1)), (a - 1) * d_prev),
             "linear extrapolation assumes d_t = d_(t-1); it misses by d_t - d_(t-1) = (a - 1) d_(t-1)", defs, from_one),
        Step(sp.Eq(_x(_t + 1) - (2 * _x(_t) - _x(_t - 1)), (a - 1) * difference(_t - 1)),
             "in closed form: (a - 1) a^(t-1) ((a - 1) x_0 + b)", defs, from_one),
    ]


TOPICS = {
    "recurrence": _steps_recurrence,
    "fixed_point": _steps_fixed_point,
    "differences": _steps_differences,
    "next_from_three": _steps_next_from_three,
    "errors": _steps_errors,
}
