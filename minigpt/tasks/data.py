"""Affine-recurrence tasks: x_{n+1} = a * x_n + b, with a fresh (a, b, x0) for every sequence.

A prior is a tuple ``("uniform", lo, hi)`` or ``("normal", mean, std)``. The model reads
``x[:, :-1]`` and is trained to predict ``x[:, 1:]``: position t predicts term t + 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PRIOR_KINDS = ("uniform", "normal")


def check_prior(name: str, prior) -> tuple:
    """Validate a prior spec and return it as a normalised ``(kind, p1, p2)`` tuple of floats."""
    if isinstance(prior, (int, float)) and not isinstance(prior, bool):
        prior = ("uniform", float(prior), float(prior))  # a constant is a degenerate uniform
    if not isinstance(prior, (tuple, list)) or len(prior) != 3:
        raise ValueError(f"{name}: a prior is ('uniform', lo, hi) or ('normal', mean, std), got {prior!r}")
    kind, p1, p2 = prior
    if kind not in PRIOR_KINDS:
        raise ValueError(f"{name}: prior kind must be one of {PRIOR_KINDS}, got {kind!r}")
    try:
        p1, p2 = float(p1), float(p2)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: prior parameters must be numbers, got {prior!r}") from None
    if not (math.isfinite(p1) and math.isfinite(p2)):
        raise ValueError(f"{name}: prior parameters must be finite, got {prior!r}")
    if kind == "uniform" and p2 < p1:
        raise ValueError(f"{name}: uniform prior needs lo <= hi, got lo={p1}, hi={p2}")
    if kind == "normal" and p2 < 0:
        raise ValueError(f"{name}: normal prior needs std >= 0, got std={p2}")
    return (kind, p1, p2)


def sample_prior(prior: tuple, size, rng: np.random.Generator) -> np.ndarray:
    """Draw ``size`` float64 values from a checked prior."""
    kind, p1, p2 = prior
    if kind == "uniform":
        return rng.uniform(p1, p2, size)
    return rng.normal(p1, p2, size)


def prior_moments(prior: tuple) -> tuple[float, float]:
    """Mean and variance of a checked prior."""
    kind, p1, p2 = prior
    if kind == "uniform":
        return 0.5 * (p1 + p2), (p2 - p1) ** 2 / 12.0
    return p1, p2**2


def prior_abs_max(prior: tuple) -> float:
    """Largest |value| the prior can give (inf for a normal prior with std > 0)."""
    kind, p1, p2 = prior
    if kind == "uniform":
        return max(abs(p1), abs(p2))
    return abs(p1) if p2 == 0 else math.inf


@dataclass
class Batch:
    """A batch of sequences and the parameters that generated them."""

    x: np.ndarray  # [batch, length] the terms x_0 .. x_{length-1}
    a: np.ndarray  # [batch] slope of each sequence
    b: np.ndarray  # [batch] offset of each sequence
    x0: np.ndarray  # [batch] first term (before noise)
    # Optional, filled by the tasks beyond the scalar one (LinearRecurrence, PolynomialSequence):
    A: np.ndarray | None = None  # [batch, dim, dim] LinearRecurrence: the matrix of each sequence
    coeffs: np.ndarray | None = None  # [batch, degree+1] PolynomialSequence: c_0 .. c_m of each p

    @property
    def inputs(self) -> np.ndarray:
        return self.x[:, :-1]  # [batch, length-1] what the model reads

    @property
    def targets(self) -> np.ndarray:
        return self.x[:, 1:]  # [batch, length-1] what it must predict


@dataclass
class AffineRecurrence:
    """The task: sequences x_{n+1} = a x_n + b (+ optional Gaussian observation noise).

    a, b, x0: priors, ``("uniform", lo, hi)`` or ``("normal", mean, std)``.
    length:   number of terms per sequence (the model sees ``length - 1`` of them).
    noise:    std of i.i.d. Gaussian noise added to every observed term (0 = exact recurrence).
    """

    a: tuple = ("uniform", -1.0, 1.0)
    b: tuple = ("uniform", -1.0, 1.0)
    x0: tuple = ("uniform", -1.0, 1.0)
    length: int = 20
    noise: float = 0.0
    name: str = field(default="affine", init=False)

    def __post_init__(self):
        self.a = check_prior("data.a", self.a)
        self.b = check_prior("data.b", self.b)
        self.x0 = check_prior("data.x0", self.x0)
        if isinstance(self.length, bool) or not isinstance(self.length, (int, np.integer)) or self.length < 2:
            raise ValueError(f"data.length must be an integer >= 2, got {self.length!r}")
        self.length = int(self.length)
        try:
            self.noise = float(self.noise)
        except (TypeError, ValueError):
            raise ValueError(f"data.noise must be a number >= 0, got {self.noise!r}") from None
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ValueError(f"data.noise must be a finite number >= 0, got {self.noise!r}")

    def spec(self) -> dict:
        """JSON-able description (round-trips through ``AffineRecurrence(**spec)``)."""
        return {"a": list(self.a), "b": list(self.b), "x0": list(self.x0), "length": self.length, "noise": self.noise}

    def max_abs_term(self, normal_sigmas=None) -> float:
        """Upper bound on |x_n| for n < length, for overflow checks: |x_{n+1}| <= |a| |x_n| + |b| with every
        prior at its largest magnitude (normal priors at mean + ``normal_sigmas`` std; inf if None)."""
        A, B = prior_bound(self.a, normal_sigmas), prior_bound(self.b, normal_sigmas)
        bound = worst = prior_bound(self.x0, normal_sigmas)
        for _ in range(self.length - 1):
            bound = A * bound + B
            worst = max(worst, bound)
            if worst == float("inf"):
                break
        return worst

    def sample(self, batch: int, rng: np.random.Generator, dtype=np.float64) -> Batch:
        """Draw ``batch`` sequences ``[batch, length]`` with their a, b, x0 (all float64 unless dtype)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy Generator, e.g. np.random.default_rng(0)")
        a = sample_prior(self.a, batch, rng)  # [batch]
        b = sample_prior(self.b, batch, rng)  # [batch]
        x0 = sample_prior(self.x0, batch, rng)  # [batch]
        x = np.empty((batch, self.length))  # [batch, length]
        x[:, 0] = x0
        for n in range(1, self.length):
            x[:, n] = a * x[:, n - 1] + b  # the recurrence
        if self.noise > 0:
            x += self.noise * rng.standard_normal(x.shape)
        return Batch(x=x.astype(dtype, copy=False), a=a, b=b, x0=x0)


# ============================================================================= beyond the paper
# Two tasks the paper names as future work, with the same interface as AffineRecurrence
# (sample / spec / max_abs_term / length / name / noise; a Batch with inputs and targets).

SCALINGS = ("norm", "radius")


def _check_length(length):
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"data.length must be an integer >= 2, got {length!r}")
    return int(length)


def _check_noise(noise):
    try:
        noise = float(noise)
    except (TypeError, ValueError):
        raise ValueError(f"data.noise must be a number >= 0, got {noise!r}") from None
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"data.noise must be a finite number >= 0, got {noise!r}")
    return noise


def prior_bound(prior, normal_sigmas=None):
    """|value| bound of a prior; a normal prior counts as mean +- normal_sigmas std (inf if None)."""
    kind, p1, p2 = prior
    if kind == "normal" and normal_sigmas is not None:
        return abs(p1) + normal_sigmas * p2
    return prior_abs_max(prior)


def _check_int(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


@dataclass
class LinearRecurrence:
    """Vector recurrences x_{n+1} = A x_n + b in R^dim, with a fresh (A, b, x0) for every sequence.

    A = rho * M / s(M), M with i.i.d. N(0, 1) entries and rho drawn from the ``rho`` prior (|rho| is
    used). ``scale`` chooses s:
      "radius"  (default) s = the spectral radius of M, so max |lambda(A)| = rho exactly; non-normal A
                can still grow transiently, so draws with max_{1 <= n < length} ||A^n||_2 > ``max_gain``
                are redrawn (terms then obey ||x_n|| <= max_gain ||x0|| + (1 + (n-1) max_gain) ||b||);
      "norm"    s = the operator 2-norm ||M||_2, so ||A||_2 = rho and every eigenvalue has |lambda| <= rho
                (terms provably bounded by rho^n ||x0|| + ||b|| sum rho^i without redrawing).  But the
                eigenvalues of a random matrix sit well inside its norm: in 2-D with rho ~ U(0, 1) about
                70% of the sequences have spectral radius < 0.5 and reach their fixed point within a few
                terms, where copying is already nearly exact; hence "radius" is the default.
    b and x0 have i.i.d. coordinates from their priors. dim = 1 with scale "norm" gives a = +-rho:
    with rho ~ U(0, 1) that is exactly the scalar task's a ~ U(-1, 1).

    The model reads ``x[:, :-1]`` ``[batch, length-1, dim]`` (``d_in = d_out = dim``).
    """

    dim: int = 2
    rho: tuple = ("uniform", 0.0, 1.0)
    b: tuple = ("uniform", -1.0, 1.0)
    x0: tuple = ("uniform", -1.0, 1.0)
    length: int = 12
    scale: str = "radius"
    max_gain: float = 4.0
    noise: float = 0.0
    name: str = field(default="linear", init=False)

    def __post_init__(self):
        self.dim = _check_int("data.dim", self.dim, 1, 64)
        self.rho = check_prior("data.rho", self.rho)
        self.b = check_prior("data.b", self.b)
        self.x0 = check_prior("data.x0", self.x0)
        self.length = _check_length(self.length)
        self.noise = _check_noise(self.noise)
        if self.scale not in SCALINGS:
            raise ValueError(f"data.scale must be one of {SCALINGS}, got {self.scale!r}")
        try:
            self.max_gain = float(self.max_gain)
        except (TypeError, ValueError):
            raise ValueError(f"data.max_gain must be a number >= 1, got {self.max_gain!r}") from None
        if not (1.0 <= self.max_gain < math.inf):
            raise ValueError(f"data.max_gain must be a finite number >= 1, got {self.max_gain!r}")

    @property
    def d_in(self) -> int:
        return self.dim

    @property
    def exact_from(self) -> int:
        """First model position t at which the exact solver is defined: it needs the dim + 2 terms x_{t-dim-1} .. x_t."""
        return self.dim + 1

    def spec(self) -> dict:
        """JSON-able description (round-trips through ``make_task(spec)``)."""
        return {"task": "linear", "dim": self.dim, "rho": list(self.rho), "b": list(self.b), "x0": list(self.x0),
                "length": self.length, "scale": self.scale, "max_gain": self.max_gain, "noise": self.noise}

    def max_abs_term(self, normal_sigmas=None) -> float:
        """Bound on |x_n[i]| over the prior's support (inf if unbounded), noise excluded. Normal priors
        count as mean +- ``normal_sigmas`` std when given (else inf)."""
        R = prior_bound(self.rho, normal_sigmas)
        Bn = math.sqrt(self.dim) * prior_bound(self.b, normal_sigmas)  # ||b||_2 bound
        Xn = math.sqrt(self.dim) * prior_bound(self.x0, normal_sigmas)
        if self.scale == "radius":  # ||A^n|| <= max_gain for 1 <= n < length (enforced by redrawing)
            G = self.max_gain
            return Xn * G + Bn * (1 + G * (self.length - 2)) if self.length > 1 else Xn
        worst, power, geo = Xn, 1.0, 0.0
        for _ in range(self.length - 1):
            geo += power  # sum_{i<n} R^i
            power *= R
            worst = max(worst, power * Xn + geo * Bn)
        return worst

    def sample_matrices(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """[batch, dim, dim] matrices A drawn as described in the class docstring."""
        k = self.dim
        rho = np.abs(sample_prior(self.rho, batch, rng))  # [batch]
        M = rng.standard_normal((batch, k, k))  # [batch, k, k]
        if self.scale == "norm":
            s = np.linalg.norm(M, ord=2, axis=(1, 2))  # largest singular value
            return rho[:, None, None] * M / s[:, None, None]
        A = np.empty_like(M)
        todo = np.arange(batch)
        for _ in range(1000):
            Mi = M[todo]
            s = np.abs(np.linalg.eigvals(Mi)).max(-1)  # spectral radius
            Ai = rho[todo, None, None] * Mi / np.maximum(s, 1e-300)[:, None, None]
            gain, P = np.zeros(len(todo)), np.broadcast_to(np.eye(k), Ai.shape).copy()
            for _ in range(self.length - 1):  # A^1 .. A^{length-1}: every power the terms use
                P = P @ Ai
                gain = np.maximum(gain, np.linalg.norm(P, ord=2, axis=(1, 2)))
            ok = gain <= self.max_gain
            A[todo[ok]] = Ai[ok]
            todo = todo[~ok]
            if len(todo) == 0:
                return A
            M[todo] = rng.standard_normal((len(todo), k, k))
        raise RuntimeError(f"data.max_gain = {self.max_gain} rejects nearly every matrix; raise it")

    def sample(self, batch: int, rng: np.random.Generator, dtype=np.float64) -> Batch:
        """Draw ``batch`` sequences ``x [batch, length, dim]`` with A ``[batch, dim, dim]``, b, x0 ``[batch, dim]``.

        ``Batch.a`` and ``Batch.A`` both hold A."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy Generator, e.g. np.random.default_rng(0)")
        k = self.dim
        A = self.sample_matrices(batch, rng)  # [batch, k, k]
        b = sample_prior(self.b, (batch, k), rng)  # [batch, k]
        x0 = sample_prior(self.x0, (batch, k), rng)  # [batch, k]
        x = np.empty((batch, self.length, k))  # [batch, length, k]
        x[:, 0] = x0
        for n in range(1, self.length):
            x[:, n] = np.einsum("bij,bj->bi", A, x[:, n - 1]) + b  # the recurrence
        if self.noise > 0:
            x += self.noise * rng.standard_normal(x.shape)
        return Batch(x=x.astype(dtype, copy=False), a=A, b=b, x0=x0, A=A)


@dataclass
class PolynomialSequence:
    """Polynomial sequences x_n = p(n / scale) = sum_j c_j (n / scale)^j, degree ``degree``, with
    i.i.d. coefficients c_0 .. c_m from the ``coeffs`` prior, fresh for every sequence.

    Scaling of n: ``scale`` (default ``length - 1``) maps the indices 0 .. length-1 into u = n/scale in
    [0, 1], so |x_n| <= sum_j |c_j| <= (m + 1) max|c| whatever the length: the terms stay in the
    range of the scalar task instead of growing like n^m. The price is that consecutive terms are
    close (x_{n+1} - x_n = O(1/scale)), which is what makes copying a meaningful baseline. The
    order-(m+1) finite difference of the sequence is zero for any scale, so the exact predictor
    does not depend on it.
    """

    degree: int = 2
    coeffs: tuple = ("uniform", -1.0, 1.0)
    length: int = 12
    scale: float | None = None
    noise: float = 0.0
    name: str = field(default="polynomial", init=False)

    def __post_init__(self):
        self.degree = _check_int("data.degree", self.degree, 0, 16)
        self.coeffs = check_prior("data.coeffs", self.coeffs)
        self.length = _check_length(self.length)
        self.noise = _check_noise(self.noise)
        if self.scale is not None:
            try:
                self.scale = float(self.scale)
            except (TypeError, ValueError):
                raise ValueError(f"data.scale must be a number > 0 or null, got {self.scale!r}") from None
            if not (self.scale > 0 and math.isfinite(self.scale)):
                raise ValueError(f"data.scale must be a finite number > 0 or null, got {self.scale!r}")

    @property
    def d_in(self) -> int:
        return 1

    @property
    def exact_from(self) -> int:
        """First model position t at which the finite-difference predictor is defined (t >= degree)."""
        return self.degree

    @property
    def n_scale(self) -> float:
        """The divisor of n: ``scale``, or ``length - 1`` (1 for length 1) when unset."""
        return self.scale if self.scale is not None else float(max(self.length - 1, 1))

    def spec(self) -> dict:
        return {"task": "polynomial", "degree": self.degree, "coeffs": list(self.coeffs), "length": self.length,
                "scale": self.scale, "noise": self.noise}

    def max_abs_term(self, normal_sigmas=None) -> float:
        """Bound on |x_n| over the prior's support (inf if unbounded), noise excluded."""
        C = prior_bound(self.coeffs, normal_sigmas)
        u = (self.length - 1) / self.n_scale
        return C * sum(max(u, 1.0 if j == 0 else u) ** j for j in range(self.degree + 1))

    def sample(self, batch: int, rng: np.random.Generator, dtype=np.float64) -> Batch:
        """Draw ``batch`` sequences ``x [batch, length]`` with coefficients ``[batch, degree+1]``.

        ``Batch.coeffs`` holds c_0 .. c_m; ``Batch.a`` and ``Batch.b`` are None; ``Batch.x0`` = c_0."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy Generator, e.g. np.random.default_rng(0)")
        c = sample_prior(self.coeffs, (batch, self.degree + 1), rng)  # [batch, m+1]
        u = np.arange(self.length) / self.n_scale  # [length]
        V = u[:, None] ** np.arange(self.degree + 1)  # [length, m+1] Vandermonde
        x = c @ V.T  # [batch, length]
        if self.noise > 0:
            x = x + self.noise * rng.standard_normal(x.shape)
        return Batch(x=x.astype(dtype, copy=False), a=None, b=None, x0=c[:, 0].copy(), coeffs=c)


TASKS = {"affine": AffineRecurrence, "linear": LinearRecurrence, "polynomial": PolynomialSequence}


def task_fields(name: str) -> list[str]:
    """The data-section fields of task ``name`` (besides ``task``)."""
    return [f for f, v in TASKS[name].__dataclass_fields__.items() if v.init]


def make_task(spec: dict):
    """A task from a data section: key ``task`` ("affine" by default, "linear", "polynomial") picks
    the class, the other keys are its fields (ValueError for unknown tasks or fields)."""
    if not isinstance(spec, dict):
        raise ValueError(f"the data section must be a mapping of field -> value, got {type(spec).__name__}")
    spec = dict(spec)
    name = spec.pop("task", "affine")
    if name not in TASKS:
        raise ValueError(f"unknown data.task {name!r}; known tasks: {', '.join(TASKS)}")
    known = task_fields(name)
    for k in spec:
        if k not in known:
            raise ValueError(f"unknown field data.{k!s} for data.task = {name!r}; its fields: {', '.join(known)}")
    try:
        return TASKS[name](**spec)
    except TypeError as e:
        raise ValueError(f"bad data section: {e}") from None


def task_name(task) -> str:
    return getattr(task, "name", "affine")


def task_d_in(task) -> int:
    """Size of each term (the model's d_in = d_out): 1 for the scalar tasks, dim for LinearRecurrence."""
    return getattr(task, "d_in", 1)


def exact_from(task) -> int:
    """First model position at which the task's exact solver is defined (2 for the affine task)."""
    return getattr(task, "exact_from", 2)
