"""theory.steps: a derivation step's defined pieces are substituted (repeatedly, Functions and Symbols), a true step
passes numerically and, when sympy can show it, exactly; a false one fails naming its reason, even when it is off by
one part in a million; ``domain`` limits where a step is sampled (the steps of every topic: tests/theory/test_derive.py)."""
import pytest
import sympy as sp

from theory.steps import Step, check, expand_defs

a, b, x0 = sp.symbols("a b x0", real=True)
n = sp.Symbol("n", integer=True, nonnegative=True)
x = sp.Function("x")
CLOSED = sp.Lambda(n, a**n * x0 + b * (1 - a**n) / (1 - a))  # x_n of x_{n+1} = a x_n + b
RULE = Step(sp.Eq(x(n + 1), a * x(n) + b), "the closed form obeys the rule", {x: CLOSED})


def test_expand_defs_substitutes_meanings_until_none_is_left():
    m, d = sp.Symbol("m"), sp.Symbol("d")
    defs = {m: d + 1, d: a * b, x: sp.Lambda(n, a**n * x0)}  # m's meaning uses d, itself defined
    assert sp.simplify(expand_defs(m * x(n + 1), defs) - (a * b + 1) * a ** (n + 1) * x0) == 0
    assert expand_defs(m, None) == m and expand_defs(m, {}) == m


def test_a_true_step_passes_numerically_and_exactly():
    assert check(RULE) == "numeric"
    assert check(RULE, exact=True) == "exact"


@pytest.mark.parametrize("wrong", [
    a ** (n + 1) * x0 + b * (1 - a ** (n + 1)) / (1 - a) - b,  # a wrong closed form
    (a**n * x0 + b * (1 - a**n) / (1 - a)) * (1 + sp.Rational(1, 10**6)),  # off by one part in a million
])
def test_a_false_step_fails_naming_its_reason(wrong):
    step = RULE._replace(defs={x: sp.Lambda(n, wrong)}, why="a wrong closed form")
    with pytest.raises(AssertionError, match="'a wrong closed form' is false at"):
        check(step)


def test_domain_limits_where_a_step_is_sampled():
    t, u = sp.symbols("t u", real=True)
    step = Step(sp.Eq(sp.Abs(t) + sp.Max(t, u), t + u), "|t| = t and max(t, u) = u when 0 < t <= u",
                domain={t: (0.1, 1), u: (t, 2)})  # u's lower bound uses t, drawn first
    assert check(step, points=20) == "numeric"
    with pytest.raises(AssertionError, match="is false"):
        check(step._replace(domain=None), points=20)  # t and u drawn from (-0.9, 0.9)


def test_matrix_steps_and_non_equations():
    M = sp.Matrix([[1, 1], [1, -1]])
    v = sp.Matrix([a, b])
    step = Step(sp.Eq(M * v, sp.Matrix([a + b, a - b]), evaluate=False), "a matrix times a vector")
    assert check(step) == "numeric"
    with pytest.raises(AssertionError, match="is false"):
        check(step._replace(eq=sp.Eq(M * v, sp.Matrix([a + b, b - a]), evaluate=False)))
    with pytest.raises(AssertionError, match="not an equation"):
        check(Step(a + b, "an expression, not an equation"))
