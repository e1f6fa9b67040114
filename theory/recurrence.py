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
def derivation_steps(topic: str = "recurrence") -> list[tuple[str, sp.Expr]]:
    """Steps (caption, sympy expression) for ``minigpt derive``; topics in ``TOPICS``."""
    return TOPICS[topic]()


def _steps_recurrence():
    x_n = sp.Function("x")
    generic = a**n * x0 + b * (a**n - 1) / (a - 1)
    return [
        ("the recurrence", sp.Eq(x_n(n + 1), a * x_n(n) + b)),
        ("unrolled: x_n = a^n x0 + b (1 + a + ... + a^{n-1})", sp.Eq(x_n(n), a**n * x0 + b * sp.Sum(a**sp.Symbol("i"), (sp.Symbol("i"), 0, n - 1)))),
        ("geometric sum", sp.Eq(sp.Symbol("S_n"), geometric_sum())),
        ("closed form", sp.Eq(x_n(n), closed_form())),
        ("check: x_{n+1} - (a x_n + b) for a != 1", sp.simplify(generic.subs(n, n + 1) - (a * generic + b))),
        ("check: x_4 by iteration", sp.Eq(x_n(4), iterate(4))),
    ]


def _steps_fixed_point():
    xs = sp.Symbol("x^*")
    return [
        ("a fixed point satisfies x = a x + b", sp.Eq(xs, a * xs + b)),
        ("solution (a != 1)", sp.Eq(xs, fixed_point())),
        ("closed form around the fixed point", sp.Eq(sp.Function("x")(n), xs + a**n * (x0 - xs))),
        ("|a| < 1 converges to x*, a < 0 oscillates around it, a = 1 has no fixed point (b != 0)", sp.Limit(a**n, n, sp.oo)),
    ]


def _steps_differences():
    d = sp.Function("d")
    return [
        ("difference of consecutive terms", sp.Eq(d(n), sp.Function("x")(n + 1) - sp.Function("x")(n))),
        ("in closed form", sp.Eq(d(n), difference())),
        ("ratio of consecutive differences", sp.Eq(d(n + 1) / d(n), sp.simplify(difference(n + 1) / difference()))),
    ]


def _steps_next_from_three():
    a_hat, b_hat, det = solve_three()
    return [
        ("two linear equations in (a, b)", sp.Eq(sp.Matrix([[p2, 1], [p1, 1]]) * sp.Matrix([a, b]), sp.Matrix([p1, p0]), evaluate=False)),
        ("determinant (identifiable iff nonzero)", det),
        ("solution for a", sp.Eq(a, a_hat)),
        ("solution for b", sp.Eq(b, b_hat)),
        ("next term a x_t + b, as copy + correction", sp.Eq(sp.Symbol("x_{t+1}"), next_from_three_expr())),
    ]


def _steps_errors():
    xk = sp.Symbol("x_k")
    expr, in_n = copy_error()
    return [
        ("error of copying x_k", sp.Eq(sp.Symbol("e_copy"), expr)),
        ("... in closed form (= d_k)", sp.Eq(sp.Symbol("e_copy"), in_n)),
        ("error of linear extrapolation 2 x_k - x_{k-1} (= (a-1) d_{k-1})", sp.Eq(sp.Symbol("e_lin"), linear_error())),
        ("fixed point form of the copy error", sp.Eq(sp.Symbol("e_copy"), sp.factor(expr.subs(b, (1 - a) * sp.Symbol("x^*"))))),
    ]


TOPICS = {
    "recurrence": _steps_recurrence,
    "fixed_point": _steps_fixed_point,
    "differences": _steps_differences,
    "next_from_three": _steps_next_from_three,
    "errors": _steps_errors,
}
