"""theory.recurrence: closed form = iteration (exact rationals and floats); next_from_three exact."""

import numpy as np
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from theory import recurrence as R

rationals = st.fractions(min_value=-3, max_value=3, max_denominator=12)


def _iterate_floats(a, b, x0, length):
    x = [x0]
    for _ in range(length - 1):
        x.append(a * x[-1] + b)
    return np.array(x)


def test_closed_form_is_proved_symbolically():
    assert R.check_closed_form()
    assert sp.simplify(R.fixed_point() - R.b / (1 - R.a)) == 0


@settings(max_examples=30)
@given(rationals, rationals, rationals, st.integers(0, 12))
def test_closed_form_equals_iteration_exactly(a, b, x0, k):
    a, b, x0 = sp.Rational(a.numerator, a.denominator), sp.Rational(b.numerator, b.denominator), sp.Rational(x0.numerator, x0.denominator)
    sub = {R.a: a, R.b: b, R.x0: x0, R.n: k}
    want = R.iterate(k, a, b, x0)
    assert R.closed_form().subs(sub) == want  # Piecewise picks the a = 1 branch when needed
    assert R.term_poly(k).subs(sub) == want
    # differences and rule errors, exactly
    nxt = R.iterate(k + 1, a, b, x0)
    assert R.difference().subs(sub) == nxt - want
    assert R.copy_error()[0].subs({sp.Symbol("x_k"): want, R.a: a, R.b: b}) == nxt - want
    if k >= 1:
        prev = R.iterate(k - 1, a, b, x0)
        assert R.linear_error().subs(sub) == nxt - (2 * want - prev)
    if a != 1:
        xs = R.fixed_point().subs({R.a: a, R.b: b})
        assert want == xs + a**k * (x0 - xs)


@settings(max_examples=30)
@given(st.floats(-1.5, 1.5), st.floats(-2, 2), st.floats(-2, 2), st.integers(2, 16), st.sampled_from([0.0, 1.0, -1.0, 1 - 1e-9, 1 + 1e-12]))
def test_closed_form_equals_iteration_in_floats(a, b, x0, length, special_a):
    for av in (a, special_a):
        it = _iterate_floats(av, b, x0, length)
        cf = R.sequence_numeric(av, b, x0, length)
        scale = 1.0 + np.abs(it).max()
        np.testing.assert_allclose(cf, it, rtol=0, atol=1e-12 * scale * length)


@settings(max_examples=30)
@given(rationals, rationals, rationals, st.integers(2, 8))
def test_next_from_three_is_exact_where_identifiable(a, b, x0, t):
    a, b, x0 = (sp.Rational(v.numerator, v.denominator) for v in (a, b, x0))
    xs = [R.iterate(k, a, b, x0) for k in range(t + 2)]
    p2, p1, p0, target = xs[t - 2], xs[t - 1], xs[t], xs[t + 1]
    if p1 != p2:  # identifiable: the symbolic formula is exact in rational arithmetic
        assert R.next_from_three_expr().subs({R.p2: p2, R.p1: p1, R.p0: p0}) == target
        a_hat, b_hat, det = R.solve_three()
        assert a_hat.subs({R.p2: p2, R.p1: p1, R.p0: p0}) == a
        assert b_hat.subs({R.p2: p2, R.p1: p1, R.p0: p0}) == b
        assert det.subs({R.p2: p2, R.p1: p1}) != 0
    else:  # not identifiable: the sequence is constant from x_{t-2} on, and the fallback (copy) is exact
        assert p0 == p1 == target
    got = R.next_from_three(float(p2), float(p1), float(p0))
    assert abs(got - float(target)) <= 1e-9 * (1 + abs(float(target))) * (1 + abs(float(a))) ** 2 or p1 == p2 or abs(float(p1 - p2)) < 1e-6
    if p1 == p2:
        assert got == float(p0)


@settings(max_examples=30)
@given(st.floats(-1.3, 1.3).filter(lambda v: abs(v) > 0.2), st.floats(-2, 2), st.floats(-2, 2), st.integers(2, 7), st.integers(1, 5))
def test_next_from_three_vectorised_floats(a, b, x0, t, batch):
    x1 = a * x0 + b
    if abs(x1 - x0) < 0.1:
        x0 += 0.5  # keep the problem well conditioned: |d_0| >= 0.1
    seq = np.tile(R.sequence_numeric(a, b, x0, t + 2), (batch, 1))  # [batch, t+2]
    got = R.next_from_three(seq[:, t - 2], seq[:, t - 1], seq[:, t])
    assert got.shape == (batch,)
    np.testing.assert_allclose(got, seq[:, t + 1], rtol=1e-8, atol=1e-8)
    assert R.identifiable(seq[:, t - 2], seq[:, t - 1]).all()


def test_next_from_three_falls_back_to_copy():
    got = R.next_from_three(np.array([1.0, 2.0]), np.array([1.0, 3.0]), np.array([1.0, 5.0]))
    np.testing.assert_array_equal(got, [1.0, 5.0 + 4.0])


def test_identifiability_fails_exactly_when_x1_equals_x0_or_a_is_zero():
    # x1 = x0 (x0 at the fixed point): constant sequence
    x = R.sequence_numeric(0.5, 1.0, 2.0, 5)
    assert not R.identifiable(x[0], x[1])
    # a = 0: x_n = b for n >= 1, so x_2 = x_1 although x_1 != x_0
    x = R.sequence_numeric(0.0, 1.0, 2.0, 5)
    assert R.identifiable(x[0], x[1]) and not R.identifiable(x[1], x[2])
    assert R.next_from_three(x[1], x[2], x[3]) == x[4]
