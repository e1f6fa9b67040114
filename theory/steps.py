"""One step of a derivation for ``minigpt derive``: an equation, a one-line reason, and what its symbols mean.

A ``Step`` is checkable: ``defs`` maps every named piece of the equation (a Symbol such as ``x^*`` or
``MSE_1``, or an undefined Function such as ``x`` in ``x(n)``) to what it stands for, in terms of the
primitive symbols (a, b, x0, ...). ``check`` substitutes those meanings and verifies ``lhs == rhs``:
numerically at random points (``domain`` restricts where a step holds, e.g. 0 < x0 <= 1), and exactly
when ``sympy.simplify`` of the difference is 0. A wrong step fails the numeric check.

    Step(sp.Eq(x(n + 1), a * x(n) + b), "the rule", {x: sp.Lambda(n, closed_form)})
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import sympy as sp


class Step(NamedTuple):
    eq: sp.Basic  # a sympy Eq (lhs = rhs), possibly between matrices (evaluate=False)
    why: str  # one line: the reason this equation holds, or what it defines
    defs: dict | None = None  # {Symbol or Function: meaning}; Functions map to a Lambda
    domain: dict | None = None  # {Symbol: (lo, hi)} sample range; bounds may use symbols listed before


def expand_defs(expr, defs):
    """``expr`` with every defined piece replaced by its meaning (repeatedly: meanings may use other pieces)."""
    if not defs:
        return expr
    funcs = {k: v for k, v in defs.items() if isinstance(k, sp.core.function.FunctionClass)}
    syms = {k: v for k, v in defs.items() if k not in funcs}
    for _ in range(10):
        new = expr
        for f, lam in funcs.items():
            new = new.replace(f, lam)
        new = new.xreplace(syms)
        if new == expr:
            break
        expr = new
    return expr


def _expanded(step):
    """(lhs, rhs, is_matrix): meanings substituted; scalar sides also evaluated symbolically (integrals, sums).

    Matrix sides stay unevaluated until numbers are in (a symbolic 2x2 inverse of polynomials is slow)."""
    lhs, rhs = (expand_defs(side, step.defs) for side in (step.eq.lhs, step.eq.rhs))
    if hasattr(lhs, "shape") or hasattr(rhs, "shape"):
        return lhs, rhs, True
    return lhs.doit(), rhs.doit(), False


def _at(lhs, rhs, is_matrix, vals):
    """(lhs - rhs, |lhs| + |rhs|) at the values ``vals``, evaluated (matrices entrywise)."""
    if is_matrix:
        lhs, rhs = (sp.Matrix(side.xreplace(vals).doit()).doit() for side in (lhs, rhs))
        return lhs - rhs, sum(sp.Abs(v) for v in lhs) + sum(sp.Abs(v) for v in rhs)
    lhs, rhs = lhs.xreplace(vals).doit(), rhs.xreplace(vals).doit()
    return lhs - rhs, sp.Abs(lhs) + sp.Abs(rhs)


def _sample(free, domain, rng):
    """Random values for the free symbols: integers 1..6, positives in (0.2, 1.5), reals in (-0.9, 0.9),
    except where ``domain`` gives a range [lo, hi] (bounds evaluated with the values drawn so far)."""
    vals = {}
    domain = domain or {}
    for s in domain:
        lo, hi = (float(sp.sympify(v).xreplace(vals)) for v in domain[s])
        vals[s] = sp.Integer(int(rng.integers(lo, hi + 1))) if s.is_integer else sp.Float(rng.uniform(lo, hi), 30)
    for s in sorted(free - set(domain), key=str):
        if s.is_integer:
            vals[s] = sp.Integer(int(rng.integers(1, 7)))
        elif s.is_positive or s.is_nonnegative:
            vals[s] = sp.Float(rng.uniform(0.2, 1.5), 30)
        else:
            vals[s] = sp.Float(rng.uniform(-0.9, 0.9), 30)
    return vals


def check(step: Step, points: int = 3, seed: int = 0, exact: bool = False) -> str:
    """Verify one step; returns "exact" or "numeric", raises AssertionError naming the step if it is false.

    The difference lhs - rhs (meanings substituted) must vanish at ``points`` random points to 1e-9
    (relative to the size of lhs and rhs); with ``exact`` also ``simplify(lhs - rhs) == 0`` is tried."""
    if not isinstance(step.eq, (sp.Equality, sp.Rel)):
        raise AssertionError(f"{step.why!r}: not an equation: {step.eq!r}")
    lhs, rhs, is_matrix = _expanded(step)
    if exact and not is_matrix and sp.simplify(lhs - rhs) == 0:
        return "exact"
    rng = np.random.default_rng(seed)
    free = set(lhs.free_symbols) | set(rhs.free_symbols)
    for _ in range(points):
        vals = _sample(free, step.domain, rng)
        diff, size = _at(lhs, rhs, is_matrix, vals)
        d, s = sp.N(diff, 30), sp.N(size, 30)
        try:
            d = max((abs(complex(v)) for v in d), default=0.0) if isinstance(d, sp.MatrixBase) else abs(complex(d))
            s = abs(complex(s))
        except TypeError:
            raise AssertionError(f"{step.why!r}: cannot be evaluated at {vals}: {d}") from None
        if not d <= 1e-9 * max(1.0, s):
            raise AssertionError(f"{step.why!r} is false at {vals}: |lhs - rhs| = {d:.3g}")
    return "numeric"
