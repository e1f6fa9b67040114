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

    def max_abs_term(self) -> float:
        """Upper bound on |x_n| over the prior's support (inf if unbounded), for overflow checks."""
        A, B, X = prior_abs_max(self.a), prior_abs_max(self.b), prior_abs_max(self.x0)
        bound, worst = X, X
        for _ in range(self.length - 1):
            bound = A * bound + B  # |x_{n+1}| <= |a| |x_n| + |b|
            worst = max(worst, bound)
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
