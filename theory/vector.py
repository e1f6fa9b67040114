"""Vector recurrences x_{n+1} = A x_n + b in R^k, derived with sympy and lambdified to numpy.

The scalar facts of ``theory.recurrence`` carry over with matrices (k = 1 gives them back):

- closed form   x_n = A^n x0 + (I + A + ... + A^{n-1}) b;  with I - A invertible the fixed point is
                x* = (I - A)^{-1} b and x_n = x* + A^n (x0 - x*);
- differences   d_n = x_{n+1} - x_n = A^n d_0, so d_{n+1} = A d_n (b drops out);
- identification from the k + 2 terms x_{t-k-1} .. x_t: the k + 1 equations x_{i+1} = A x_i + b fix
  (A, b) iff the (k+1) x (k+1) design matrix Z with rows (x_i^T, 1) is invertible, and
                det Z = (-1)^k det K,   K = [d_{t-k-1}, A d_{t-k-1}, .., A^{k-1} d_{t-k-1}]
  (subtract consecutive rows, expand along the column of ones): the *vector identifiability
  condition* is that the difference d_{t-k-1} is a cyclic vector of A (its Krylov matrix has rank k).
  It fails for every d when A has an eigenvalue of geometric multiplicity > 1 (e.g. A = c I, k >= 2).
- next term in difference form: with D_0 = [d_{t-k-1} .. d_{t-2}] and D_1 = [d_{t-k} .. d_{t-1}]
  (columns), D_1 = A D_0, so where det D_0 != 0
                x_{t+1} = x_t + D_1 D_0^{-1} d_{t-1} = x_t + D_1 adj(D_0) d_{t-1} / det D_0
  ("copy the current term, then add a correction"; k = 1 is x_t + d_{t-1}^2 / d_{t-2}).  When D_0 is
  singular the prediction x_t + D_1 D_0^+ d_{t-1} is still exact on noise-free data: the d's span an
  A-invariant (Krylov) subspace that D_0 already spans, d_{t-1} lies in it, and every solution of
  Â D_0 = D_1 agrees with A there.
- errors of the simple rules: copying errs by d_t = (A - I) x_t + b; linear extrapolation
  2 x_t - x_{t-1} errs by (A - I) d_{t-1}.

Idealised heads on vectors (k = 1: ``theory.heads``): a copying head out_t = G x_t, a previous-token
head out_t = G x_{t-1}, and a similarity head out_t = G sum_{j<=t} softmax_j(beta x_t^T W x_j) x_j, whose
output is G grad K(lambda) at lambda = beta W^T x_t, K the context's cumulant generating function:
small beta gives G (mu_t + beta Sigma_t W^T x_t + ..), large |beta| the mean of the context terms
maximising sign(beta) x_t^T W x_j (beta < 0: the term *least similar* to x_t).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from theory.steps import Step


# ----------------------------------------------------------------------------- symbols
def symbols(k: int):
    """(A [k, k], b [k, 1], x0 [k, 1]) as sympy matrices of real symbols."""
    A = sp.Matrix(k, k, lambda i, j: sp.Symbol(f"a_{i}{j}", real=True))
    b = sp.Matrix(k, 1, lambda i, _: sp.Symbol(f"b_{i}", real=True))
    x0 = sp.Matrix(k, 1, lambda i, _: sp.Symbol(f"x0_{i}", real=True))
    return A, b, x0


def iterate(k: int, n: int, A=None, b=None, x0=None):
    """x_n by applying the recurrence n times (sympy Matrix [k, 1])."""
    if A is None:
        A, b, x0 = symbols(k)
    x = x0
    for _ in range(n):
        x = (A * x + b).expand()
    return x


def closed_form(k: int, n: int, A=None, b=None, x0=None):
    """x_n = A^n x0 + (sum_{i<n} A^i) b."""
    if A is None:
        A, b, x0 = symbols(k)
    S = sp.zeros(k, k)
    P = sp.eye(k)
    for _ in range(n):
        S += P
        P = P * A
    return (P * x0 + S * b).expand()


def check_closed_form(k: int, n_max: int = 3) -> bool:
    """Symbolic proof for this k and n <= n_max: closed form = iteration; fixed-point form; d_{n+1} = A d_n."""
    A, b, x0 = symbols(k)
    xs = (sp.eye(k) - A).inv() * b  # fixed point (generic A)
    ok = True
    for n in range(n_max + 1):
        ok &= (closed_form(k, n) - iterate(k, n)).expand() == sp.zeros(k, 1)
        ok &= sp.simplify(closed_form(k, n) - (xs + A**n * (x0 - xs))) == sp.zeros(k, 1)
        if n >= 1:
            d_prev = iterate(k, n) - iterate(k, n - 1)
            d_next = iterate(k, n + 1) - iterate(k, n)
            ok &= (d_next - A * d_prev).expand() == sp.zeros(k, 1)
    return bool(ok)


# ----------------------------------------------------------------------------- identifiability
def design_matrix(terms) -> sp.Matrix:
    """Z with rows (x_i^T, 1) for the k + 1 terms x_0 .. x_k (each a [k, 1] Matrix)."""
    return sp.Matrix([list(x.T) + [1] for x in terms])


def krylov(A, d) -> sp.Matrix:
    """K = [d, A d, .., A^{k-1} d] (columns)."""
    k = A.shape[0]
    cols, v = [], d
    for _ in range(k):
        cols.append(v)
        v = A * v
    return sp.Matrix.hstack(*cols)


def check_identifiability(k: int) -> bool:
    """Symbolic proof for this k: det Z(x_0 .. x_k) = (-1)^k det K(A, d_0) for generic A, b, x0."""
    A, b, x0 = symbols(k)
    terms = [iterate(k, i, A, b, x0) for i in range(k + 1)]
    d0 = terms[1] - terms[0]
    lhs = design_matrix(terms).det(method="berkowitz")
    rhs = (-1) ** k * krylov(A, d0).det(method="berkowitz")
    return sp.expand(lhs - rhs) == 0


def identifiable(A, d0, tol: float = 1e-9) -> np.ndarray:
    """Numeric condition, vectorised over leading axes: rank [d0, A d0, .., A^{k-1} d0] = k.

    A [..., k, k], d0 [..., k] -> bool [...] (relative singular-value cutoff ``tol``)."""
    A, d0 = np.asarray(A, float), np.asarray(d0, float)
    k = A.shape[-1]
    cols, v = [], d0
    for _ in range(k):
        cols.append(v)
        v = np.einsum("...ij,...j->...i", A, v)
    K = np.stack(cols, axis=-1)  # [..., k, k]
    s = np.linalg.svd(K, compute_uv=False)
    return s[..., -1] > tol * np.maximum(s[..., 0], 1e-300)


# ----------------------------------------------------------------------------- next term
def _difference_symbols(k: int):
    """D0 [k, k] (columns d_{t-k-1} .. d_{t-2}) and d_last [k, 1] = d_{t-1}, as symbols."""
    D0 = sp.Matrix(k, k, lambda i, j: sp.Symbol(f"d_{j}_{i}", real=True))  # entry i of difference j
    d_last = sp.Matrix(k, 1, lambda i, _: sp.Symbol(f"d_{k}_{i}", real=True))
    return D0, d_last


@lru_cache(maxsize=None)
def next_term_correction(k: int):
    """(numerator [k, 1], det D0): x_{t+1} - x_t = D_1 adj(D_0) d_{t-1} / det D_0, D_1 = [D_0[:, 1:], d_{t-1}]."""
    D0, d_last = _difference_symbols(k)
    D1 = sp.Matrix.hstack(D0[:, 1:], d_last)
    return (D1 * D0.adjugate(method="berkowitz") * d_last).expand(), D0.det(method="berkowitz").expand()


@lru_cache(maxsize=None)
def solve_next_term(k: int):
    """Derivation for small k: solve the k + 1 equations x_{i+1} = Â x_i + b̂ (i = 0 .. k) for (Â, b̂) by
    sympy and return Â x_{k+1} + b̂ - x_{k+1} (the correction, a [k, 1] rational function of the terms)."""
    xs = [sp.Matrix(k, 1, lambda r, _, i=i: sp.Symbol(f"x{i}_{r}", real=True)) for i in range(k + 2)]
    Ah = sp.Matrix(k, k, lambda i, j: sp.Symbol(f"ah_{i}{j}"))
    bh = sp.Matrix(k, 1, lambda i, _: sp.Symbol(f"bh_{i}"))
    eqs = [e for i in range(k + 1) for e in (xs[i + 1] - Ah * xs[i] - bh)]
    sol = sp.solve(eqs, list(Ah) + list(bh), dict=True)[0]
    corr = (Ah.subs(sol) * xs[k + 1] + bh.subs(sol) - xs[k + 1]).applyfunc(sp.cancel)
    return xs, corr


def check_next_term(k: int) -> bool:
    """Symbolic proof for small k: the solved system equals the difference-form formula."""
    xs, corr = solve_next_term(k)
    num, det = next_term_correction(k)
    D0, d_last = _difference_symbols(k)
    sub = {D0[i, j]: xs[j + 1][i] - xs[j][i] for i in range(k) for j in range(k)}
    sub.update({d_last[i]: xs[k + 1][i] - xs[k][i] for i in range(k)})
    diff = (corr - num.subs(sub) / det.subs(sub)).applyfunc(sp.cancel)
    return diff == sp.zeros(k, 1)


@lru_cache(maxsize=None)
def _lambdified(k: int):
    D0, d_last = _difference_symbols(k)
    num, det = next_term_correction(k)
    args = list(D0.T) + list(d_last)  # d_0 entries, d_1 entries, .., d_k entries
    return sp.lambdify(args, [list(num), det], modules="numpy")


def next_from_terms(window) -> np.ndarray:
    """Exact next term from the k + 2 terms ``window [..., k+2, k]`` (x_{t-k-1} .. x_t), lambdified.

    Uses the adjugate formula where det D_0 is not (relatively) tiny and the minimum-norm solution
    D_1 D_0^+ d_{t-1} elsewhere (exact on noise-free data, see the module docstring)."""
    w = np.asarray(window, dtype=float)
    k = w.shape[-1]
    if w.shape[-2] != k + 2:
        raise ValueError(f"window must be [..., k+2, k] = [..., {k + 2}, {k}], got {list(w.shape)}")
    d = np.diff(w, axis=-2)  # [..., k+1, k]
    num, det = _lambdified(k)(*[d[..., j, i] for j in range(k + 1) for i in range(k)])
    num = np.stack(np.broadcast_arrays(*num), axis=-1)  # [..., k]
    det = np.asarray(det, dtype=float)
    D0 = np.swapaxes(d[..., :k, :], -1, -2)  # [..., k, k]
    D1 = np.swapaxes(d[..., 1:, :], -1, -2)
    scale = np.maximum(np.abs(D0).max(axis=(-1, -2)), 1e-300) ** k
    ok = np.abs(det) > 1e-8 * scale
    safe = np.where(ok, det, 1.0)
    corr = num / safe[..., None]
    fallback = np.einsum("...ij,...j->...i", D1 @ np.linalg.pinv(D0, rcond=1e-10), d[..., k, :])
    return w[..., -1, :] + np.where(ok[..., None], corr, fallback)


def copy_error(A, b, x):
    """x_{t+1} - x_t = (A - I) x_t + b  (vectorised: A [..., k, k], b, x [..., k])."""
    A, b, x = (np.asarray(v, float) for v in (A, b, x))
    return np.einsum("...ij,...j->...i", A, x) - x + b


def linear_error(A, d_prev):
    """x_{t+1} - (2 x_t - x_{t-1}) = (A - I) d_{t-1}."""
    A, d_prev = np.asarray(A, float), np.asarray(d_prev, float)
    return np.einsum("...ij,...j->...i", A, d_prev) - d_prev


# ----------------------------------------------------------------------------- idealised heads on vectors
def _causal_softmax(logits):
    T = logits.shape[-1]
    z = np.where(np.tril(np.ones((T, T), bool)), logits, -np.inf)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def copy_head(x, G=None) -> np.ndarray:
    """out_t = G x_t;  x [..., T, k], G [k, k] (identity by default)."""
    x = np.asarray(x, float)
    return x if G is None else x @ np.asarray(G, float).T


def previous_token_head(x, G=None) -> np.ndarray:
    """out_t = G x_{t-1} (out_0 = G x_0)."""
    x = np.asarray(x, float)
    prev = np.concatenate([x[..., :1, :], x[..., :-1, :]], axis=-2)
    return copy_head(prev, G)


def similarity_pattern(x, beta: float, W=None) -> np.ndarray:
    """[..., T, T] causal softmax of beta x_t^T W x_j (W = I by default)."""
    x = np.asarray(x, float)
    Wx = x if W is None else x @ np.asarray(W, float).T  # rows (W x_j)^T
    return _causal_softmax(beta * np.einsum("...tk,...jk->...tj", x, Wx))


def similarity_head(x, beta: float, G=None, W=None) -> np.ndarray:
    """out_t = G sum_{j<=t} softmax_j(beta x_t^T W x_j) x_j;  x [..., T, k] -> [..., T, k]."""
    x = np.asarray(x, float)
    return copy_head(np.einsum("...tj,...jk->...tk", similarity_pattern(x, beta, W), x), G)


def small_beta_expansion(x, beta: float, W=None) -> np.ndarray:
    """First order in beta (G = I): mu_t + beta Sigma_t W^T x_t, with the context's running mean mu_t and
    (biased) covariance Sigma_t over j <= t."""
    x = np.asarray(x, float)
    T = x.shape[-2]
    cnt = np.arange(1, T + 1)[:, None]
    mu = np.cumsum(x, axis=-2) / cnt  # [..., T, k]
    second = np.cumsum(np.einsum("...ti,...tj->...tij", x, x), axis=-3) / cnt[..., None]
    Sigma = second - np.einsum("...ti,...tj->...tij", mu, mu)  # [..., T, k, k]
    lam = x if W is None else x @ np.asarray(W, float)  # rows (W^T x_t)^T
    return mu + beta * np.einsum("...tij,...tj->...ti", Sigma, lam)


def large_beta_limit(x, beta: float, W=None) -> np.ndarray:
    """Mean of the context terms j <= t maximising sign(beta) x_t^T W x_j (ties averaged)."""
    x = np.asarray(x, float)
    Wx = x if W is None else x @ np.asarray(W, float).T
    s = np.sign(beta) * np.einsum("...tk,...jk->...tj", x, Wx)
    T = x.shape[-2]
    causal = np.tril(np.ones((T, T), bool))
    tol = 1e-12 * np.maximum(np.abs(np.where(causal, s, 0.0)).max(-1, keepdims=True), 1.0)
    s = np.where(causal, s, -np.inf)
    best = s >= s.max(-1, keepdims=True) - tol
    w = best / best.sum(-1, keepdims=True)
    return np.einsum("...tj,...jk->...tk", w, x)


# ----------------------------------------------------------------------------- teaching
# Each topic: a list of ``theory.steps.Step`` (equation, one-line reason, meaning of its symbols).
def derivation_steps(topic: str) -> list:
    """Steps of one of this module's ``TOPICS``, for ``minigpt derive``."""
    return TOPICS[topic]()


def _steps_vector():
    """x_{n+1} = A x_n + b in R^k: closed form, fixed point, identifiability, next term (shown for k = 2)."""
    k = 2
    A_, b_, x0_ = symbols(k)
    terms = [iterate(k, i, A_, b_, x0_) for i in range(5)]
    diffs = [terms[i + 1] - terms[i] for i in range(3)]
    A, b = sp.MatrixSymbol("A", k, k), sp.MatrixSymbol("b", k, 1)
    x = [sp.MatrixSymbol(f"x_{i}", k, 1) for i in range(5)]
    d = [sp.MatrixSymbol(f"d_{i}", k, 1) for i in range(3)]
    xs = sp.MatrixSymbol("x^*", k, 1)
    Z, K = sp.MatrixSymbol("Z", k + 1, k + 1), sp.MatrixSymbol("K", k, k)
    D0, D1 = sp.MatrixSymbol("D_0", k, k), sp.MatrixSymbol("D_1", k, k)
    I = sp.Identity(k)
    im = sp.ImmutableMatrix
    defs = {A: im(A_), b: im(b_), **{xi: im(v) for xi, v in zip(x, terms)}, **{di: im(v) for di, v in zip(d, diffs)},
            xs: im((sp.eye(k) - A_).inv() * b_), Z: im(design_matrix(terms[:k + 1])), K: im(krylov(A_, diffs[0])),
            D0: im(sp.Matrix.hstack(*diffs[:2])), D1: im(sp.Matrix.hstack(*diffs[1:3]))}
    return [
        Step(sp.Eq(x[1], A * x[0] + b), "the rule with a k x k matrix A and a vector b (shown for k = 2; the algebra is the same for any k)", defs),
        Step(sp.Eq(x[3], A**3 * x[0] + (I + A + A**2) * b), "unrolled three steps: the geometric sum now has matrix powers", defs),
        Step(sp.Eq(xs, (I - A).inverse() * b), "fixed point x* = A x* + b, when I - A is invertible", defs),
        Step(sp.Eq(x[3] - xs, A**3 * (x[0] - xs)), "the distance to x* is multiplied by A each step: converges iff every |eigenvalue| < 1", defs),
        Step(sp.Eq(d[1], A * d[0]), "differences d_n = x_(n+1) - x_n: b drops out, d_(n+1) = A d_n", defs),
        Step(sp.Eq(sp.Determinant(Z), (-1) ** k * sp.Determinant(K)),
             "the k + 1 equations x_(i+1) = A x_i + b have design Z, rows (x_i^T, 1): det Z = (-1)^k det K, K = [d_0, A d_0]", defs),
        Step(sp.Eq(D1, A * D0), "difference matrices D_0 = [d_0, d_1], D_1 = [d_1, d_2]: (A, b) identifiable iff d_0 is a cyclic vector of A", defs),
        Step(sp.Eq(x[4], x[3] + D1 * D0.inverse() * d[2]), "so A = D_1 D_0^-1, and from x_0 .. x_3 the next term is x_3 + A d_2: copy, then correct", defs),
        Step(sp.Eq(x[3] - x[2], (A - I) * x[2] + b), "copying x_t errs by (A - I) x_t + b, as in the scalar case", defs),
    ]


TOPICS = {"vector_recurrence": _steps_vector}
