"""theory.polynomial: symbolic proofs (degrees 0-4) and the lambdified predictor against the definition and
minigpt.tasks.baselines_ext."""
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tasks import baselines_ext
from minigpt.tasks.data import PolynomialSequence
from theory import polynomial as P

degrees = st.integers(0, 4)
seeds = st.integers(0, 2**31)


@pytest.mark.parametrize("m", range(5))
def test_polynomial_facts_are_proved_symbolically(m):
    assert P.check_annihilation(m)
    assert P.check_predictor(m)


def test_degree_lowering_and_rule_errors():
    assert P.check_degree_lowering()
    c = P.coeff_symbols(2)
    assert sp.simplify(P.error_of_order(2, 2) - 2 * c[2] / P.s**2) == 0  # linear extrapolation: 2 c_2 / s^2
    assert all(P.error_of_order(m, m + 1) == 0 for m in range(4))


def test_polynomial_sequence_is_the_definition():
    c = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.25]])  # c_0, c_1, c_2 of two sequences
    u = np.arange(5) / 2.0
    np.testing.assert_allclose(P.sequence(c, 5, 2.0), c[:, :1] + c[:, 1:2] * u + c[:, 2:] * u**2, rtol=1e-15)
    sym = P.term(2).subs(P.s, 2)  # the sympy definition, term by term
    subs = {ci: v for ci, v in zip(P.coeff_symbols(2), c[1])}
    np.testing.assert_allclose(P.sequence(c[1], 5, 2.0), [float(sym.subs(subs).subs(P.n, k)) for k in range(5)], rtol=1e-15)


@settings(max_examples=40, deadline=None)
@given(degrees, seeds, st.floats(0.5, 30.0), st.integers(0, 5))
def test_finite_difference_predictor_is_exact(m, seed, scale, extra):
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1, 1, (4, m + 1))
    length = m + 2 + extra
    x = P.sequence(c, length, scale)
    big = 1 + np.abs(x).max()
    for t in range(m, length - 1):
        np.testing.assert_allclose(P.next_from_terms(x[:, t - m : t + 1]), x[:, t + 1], atol=1e-9 * big)
    task = PolynomialSequence(degree=m, length=length, scale=scale)
    batch = task.sample(4, rng)
    for name in ("exact", "least_squares"):
        pred = baselines_ext.predict(name, batch, task)
        np.testing.assert_allclose(pred[:, m:], batch.targets[:, m:], atol=1e-8 * (1 + np.abs(batch.x).max()))
    np.testing.assert_array_equal(baselines_ext.finite_difference_weights(m + 1), P.predictor_weights(m))
