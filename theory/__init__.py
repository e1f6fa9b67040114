"""theory: sympy derivations of what the affine recurrence, the optimal predictors and idealised
attention heads compute, lambdified to numpy and checked against minigpt by property-based tests.

    recurrence  closed form, fixed point, differences, identifiability, next_from_three, rule errors
    bayes       posterior_mean_next, bayes_mse (the floor at positions 0 and 1), baseline_mse
    heads       copying / previous-token / similarity heads, expansions, minigpt weights for them
    backprop    sympy Jacobians of LayerNorm, softmax, GELUs, attention: an oracle for minigpt.fast.ops
    vector      vector recurrences x_{n+1} = A x_n + b: closed form, identifiability, next term
    polynomial  polynomial sequences: finite differences and the finite-difference predictor
    steps       Step (equation, reason, meaning of its symbols) and check(): a derivation step verified
    derive      TOPICS and render() for ``minigpt derive`` (text or a LaTeX document)
"""
from theory.recurrence import next_from_three  # noqa: F401

__all__ = ["next_from_three", "recurrence", "bayes", "heads", "backprop", "vector", "polynomial", "steps", "derive"]
