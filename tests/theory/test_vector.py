"""theory.vector: symbolic proofs (small sizes) and lambdified formulas against iteration, minigpt.tasks.baselines_ext
and theory.heads, for random dimensions 1-4."""
import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minigpt.tasks import baselines_ext
from minigpt.tasks.data import LinearRecurrence
from theory import heads
from theory import vector as V

dims = st.integers(1, 4)
seeds = st.integers(0, 2**31)


# ----------------------------------------------------------------------------- vector: symbolic
@pytest.mark.parametrize("k", [1, 2])
def test_vector_facts_are_proved_symbolically(k):
    assert V.check_closed_form(k, n_max=3 if k == 1 else 2)
    assert V.check_identifiability(k)  # det Z = (-1)^k det Krylov
    assert V.check_next_term(k)  # solving for (A, b) = difference form


def test_dim1_formula_is_the_scalar_one():
    num, det = V.next_term_correction(1)
    d0, d1 = sp.Symbol("d_0_0", real=True), sp.Symbol("d_1_0", real=True)
    assert sp.simplify(num[0] / det - d1**2 / d0) == 0  # x_t + d_{t-1}^2 / d_{t-2}


# ----------------------------------------------------------------------------- vector: numeric
def _sequence(A, b, x0, length):
    x = [x0]
    for _ in range(length - 1):
        x.append(A @ x[-1] + b)
    return np.array(x)  # [length, k]


@settings(max_examples=40, deadline=None)
@given(dims, seeds)
def test_next_from_terms_is_exact_on_random_recurrences(k, seed):
    rng = np.random.default_rng(seed)
    A = LinearRecurrence(dim=k).sample_matrices(1, rng)[0]
    b, x0 = rng.uniform(-1, 1, k), rng.uniform(-1, 1, k)
    x = _sequence(A, b, x0, k + 6)
    d0 = x[1] - x[0]
    assume(V.identifiable(A, d0))
    for t in range(k + 1, k + 5):
        pred = V.next_from_terms(x[t - k - 1 : t + 1])
        np.testing.assert_allclose(pred, x[t + 1], atol=1e-7 * (1 + np.abs(x).max()))
    # the same numbers as the baseline, and identifiability = full-rank design matrix
    base = baselines_ext.linear_exact(x[None, :-1])[0]
    np.testing.assert_allclose(base[k + 1 :], x[k + 2 :], atol=1e-7 * (1 + np.abs(x).max()))
    Z = np.concatenate([x[: k + 1], np.ones((k + 1, 1))], axis=1)
    K = np.stack([np.linalg.matrix_power(A, i) @ d0 for i in range(k)], axis=1)
    np.testing.assert_allclose(np.linalg.det(Z), (-1) ** k * np.linalg.det(K), atol=1e-9)


def test_identifiability_of_a_jordan_block_depends_on_the_direction():
    """A non-normal A: the Krylov matrix of A and of A^T differ. With one eigenvector e1, d0 = e2 is
    cyclic ([e2, A e2] has rank 2) and d0 = e1 is not; the design matrix of the terms agrees."""
    A = np.array([[0.5, 1.0], [0.0, 0.5]])
    for d0, want in (([0.0, 1.0], True), ([1.0, 0.0], False)):
        assert V.identifiable(A, d0) == want
        x = _sequence(A, np.array(d0), np.zeros(2), 3)  # x0 = 0, b = d0, so x1 - x0 = d0
        Z = np.concatenate([x, np.ones((3, 1))], axis=1)  # rows (x_i, 1), i = 0 .. 2
        assert (abs(np.linalg.det(Z)) > 1e-9) == want


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 4), seeds, st.floats(-0.9, 0.9))
def test_scalar_matrix_is_never_identifiable_yet_prediction_stays_exact(k, seed, c):
    rng = np.random.default_rng(seed)
    A = c * np.eye(k)
    b, x0 = rng.uniform(-1, 1, k), rng.uniform(-1, 1, k)
    x = _sequence(A, b, x0, k + 4)
    assert not V.identifiable(A, x[1] - x[0])
    np.testing.assert_allclose(V.next_from_terms(x[1 : k + 3]), x[k + 3], atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(dims, seeds)
def test_copy_and_linear_errors(k, seed):
    rng = np.random.default_rng(seed)
    A, b, x0 = rng.normal(size=(k, k)) / (2 * k), rng.normal(size=k), rng.normal(size=k)
    x = _sequence(A, b, x0, 5)
    np.testing.assert_allclose(V.copy_error(A, b, x[2]), x[3] - x[2], atol=1e-12)
    np.testing.assert_allclose(V.linear_error(A, x[2] - x[1]), x[3] - (2 * x[2] - x[1]), atol=1e-12)


# ----------------------------------------------------------------------------- vector heads
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), seeds, st.floats(-3, 3))
def test_vector_heads_reduce_to_the_scalar_heads(T, seed, beta):
    x = np.random.default_rng(seed).uniform(-1, 1, (3, T))
    np.testing.assert_allclose(V.similarity_head(x[..., None], beta)[..., 0], heads.similarity_head(x, beta), atol=1e-12)
    np.testing.assert_allclose(V.previous_token_head(x[..., None])[..., 0], heads.previous_token_head(x), atol=0)
    np.testing.assert_allclose(V.copy_head(x[..., None], [[2.0]])[..., 0], heads.copy_head(x, 2.0), atol=0)


@settings(max_examples=30, deadline=None)
@given(dims, st.integers(1, 8), seeds)
def test_vector_similarity_head_expansions(k, T, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, T, k))
    W = np.eye(k) + 0.3 * rng.normal(size=(k, k))
    beta = 1e-4
    exact = V.similarity_head(x, beta, W=W)
    np.testing.assert_allclose(exact, V.small_beta_expansion(x, beta, W=W), atol=50 * beta**2)
    # a negative similarity head at large |beta| picks the context term least similar to x_t
    big = V.similarity_head(x, -2000.0, W=W)
    lim = V.large_beta_limit(x, -2000.0, W=W)
    s = np.einsum("btk,bjk->btj", x, x @ W.T)
    gap = np.sort(np.where(np.tril(np.ones((T, T), bool)), s, np.inf), axis=-1)
    assume(T == 1 or np.all((gap[..., 1] - gap[..., 0])[:, 1:] > 0.01))  # a unique minimiser
    np.testing.assert_allclose(big, lim, atol=1e-6)

