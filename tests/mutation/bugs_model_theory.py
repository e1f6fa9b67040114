"""Planted bugs in the forward pass (minigpt/fast/ops.py, minigpt/nn/model.py) and in the Bayes theory
(theory/bayes.py, theory/recurrence.py), each with the tests that must notice it.  Run with
``python tests/mutation/run.py --only model-`` or ``--only theory-``.

The forward bugs are checked against the independent oracle of tests/nn/test_forward_oracle.py.  Several
are invisible to gradient checks, because the forward and the backward share them (causal mask, attention
scale, GELU constant: tests/nn/test_model.py's gradient check and tests/fast/test_ops.py pass with each planted).  Several live on one forward path only
(no hooks vs a hook watching), which the oracle test runs separately.  The theory bugs are slips in the
Bayes predictor and floor at positions, priors or prefix lengths the older tests did not reach.
Backward-pass bugs are in ``bugs_core.py``.
"""

OPS = "minigpt/fast/ops.py"
MODEL = "minigpt/nn/model.py"
BAYES = "theory/bayes.py"
RECURRENCE = "theory/recurrence.py"

ORACLE = ["tests/nn/test_forward_oracle.py"]
T_BAYES = "tests/theory/test_bayes.py"

BUGS = [
    # ------------------------------------------------------------------ forward pass
    dict(id="model-causal-mask-off-by-one", file=OPS,
         find="np.triu(np.ones((T, T), dtype=bool), k=1)", replace="np.triu(np.ones((T, T), dtype=bool), k=2)",
         tests=ORACLE,
         why="the causal mask lets each query see the next position; forward and backward share the mask, "
             "so gradient checks pass"),
    dict(id="model-attn-scale-d-model", file=OPS,
         find="scale = 1.0 / math.sqrt(E)", replace="scale = 1.0 / math.sqrt(D)",
         tests=ORACLE,
         why="attention scores scaled by 1/sqrt(d_model) instead of 1/sqrt(d_head); the backward reuses the "
             "cached scale, so gradient checks pass"),
    dict(id="model-ln-eps-outside-sqrt", file=OPS,
         find="np.sqrt(var + eps).reshape(", replace="(np.sqrt(var) + eps).reshape(",
         tests=ORACLE,
         why="LayerNorm scale sqrt(var) + eps instead of sqrt(var + eps): a change of ~1e-5 relative, seen "
             "by a float64 oracle (the gradient check notices too: the backward assumes sqrt(var + eps))"),
    dict(id="model-ln-unbiased-variance-forward", file=OPS,
         find='var = np.einsum("nd,nd->n", xc, xc) / D', replace='var = np.einsum("nd,nd->n", xc, xc) / (D - 1)',
         tests=ORACLE,
         why="LayerNorm forward with the unbiased variance (torch.var's default) instead of the biased one"),
    dict(id="model-pos-embed-offset", file=MODEL,
         find='P["pos_embed.W_pos"][:T]', replace='P["pos_embed.W_pos"][1 : T + 1]',
         tests=ORACLE,
         why="positions read W_pos one row late (position t gets row t + 1)"),
    dict(id="model-bO-dropped-no-hook-path", file=OPS,
         find="        out += b_O\n        out = out.reshape(B, T, D)", replace="        out = out.reshape(B, T, D)",
         tests=ORACLE,
         why="attention output bias dropped on the fast path only (no hook wants hook_result): run_with_cache "
             "of every activation still looks right"),
    dict(id="model-bO-dropped-per-head-path", file=OPS,
         find="out = result.sum(2) + b_O", replace="out = result.sum(2)",
         tests=ORACLE,
         why="attention output bias dropped when per-head results are computed (run_with_cache): the "
             "training path still looks right"),
    dict(id="model-attn-skip-from-ln-output", file=MODEL,
         find="resid = ops.add(resid, attn_out)", replace="resid = ops.add(h, attn_out)",
         tests=ORACLE,
         why="the attention skip connection carries LN1's output instead of resid_pre (the same thing "
             "without LayerNorm, so only LN models show it)"),
    dict(id="model-mlp-skip-from-ln-output", file=MODEL,
         find="resid = ops.add(resid, mlp_out)", replace="resid = ops.add(h, mlp_out)",
         tests=ORACLE,
         why="the MLP skip connection carries LN2's output instead of resid_mid"),
    dict(id="model-gelu-new-cubic-constant", file=OPS,
         find="_GELU_CUBIC = 0.044715", replace="_GELU_CUBIC = 0.04715",
         tests=ORACLE,
         why="GELU tanh approximation with a mistyped cubic constant, in forward and backward alike"),
    dict(id="model-gelu-erf-argument", file=OPS,
         find="cdf = erf(x / math.sqrt(2.0))", replace="cdf = erf(x / 2.0)",
         tests=ORACLE,
         why="exact GELU with Phi(x) = (1 + erf(x / 2)) / 2 instead of erf(x / sqrt 2)"),
    dict(id="model-relu-leaky", file=OPS,
         find="return np.maximum(x, 0), x", replace="return np.maximum(x, 0.01 * x), x",
         tests=ORACLE,
         why="ReLU forward leaks 1% of negative inputs"),
    dict(id="model-kv-biases-swapped", file=OPS,
         find="b_qkv = np.stack([b_Q, b_K, b_V])", replace="b_qkv = np.stack([b_Q, b_V, b_K])",
         tests=ORACLE,
         why="the fused q/k/v bias puts b_V on the keys and b_K on the values"),
    dict(id="model-shard-loss-unweighted", file=MODEL,
         find="return loss * share, self.backward_pass(dpred, C)", replace="return loss, self.backward_pass(dpred, C)",
         tests=ORACLE + ["tests/fast/test_sharded.py::test_sharded_step_equals_one_thread"],
         why="with threads > 1 each shard's loss is added unweighted (the gradients stay weighted): the "
             "one-thread path, which every other test uses, is unaffected"),
    # ------------------------------------------------------------------ Bayes predictor and floor
    dict(id="theory-posterior-mean-first-three-terms", file=BAYES,
         find="return next_from_three(prefix[..., -3], prefix[..., -2], prefix[..., -1])",
         replace="return next_from_three(prefix[..., 0], prefix[..., 1], prefix[..., 2])",
         tests=[T_BAYES],
         why="the Bayes prediction from k >= 4 terms extrapolates from the first three terms, not the last "
             "three (right at k = 3, where the older tests stopped)"),
    dict(id="theory-posterior-uniform-variance", file=BAYES,
         find="np.where(ok, w**2 / 12.0, np.nan)", replace="np.where(ok, w**2 / 6.0, np.nan)",
         tests=[T_BAYES],
         why="posterior variance of a uniform on an interval of width w taken as w^2/6"),
    dict(id="theory-floor0-mean-squared", file=BAYES,
         find="return va * float(moment(task.x0, 2)) + vb", replace="return va * float(moment(task.x0, 1)) ** 2 + vb",
         tests=[T_BAYES],
         why="floor at t = 0 with E[x0]^2 instead of E[x0^2]"),
    dict(id="theory-floor-nonzero-at-t2", file=BAYES,
         find="    if t >= 2:\n        return 0.0\n", replace="    if t >= 3:\n        return 0.0\n",
         tests=[T_BAYES],
         why="floor at t = 2 from the two-term formula, though three terms identify the next one"),
    dict(id="theory-prior-mean-swapped", file=BAYES,
         find="return ma * prefix[..., 0] + mb", replace="return mb * prefix[..., 0] + ma",
         tests=[T_BAYES],
         why="prediction from one term with E[a] and E[b] swapped"),
    dict(id="theory-two-term-slope-sign", file=BAYES,
         find="return x1v + mean_a * (x1v - x0v)", replace="return x1v + mean_a * (x0v - x1v)",
         tests=[T_BAYES],
         why="prediction from two terms x1 - E[a | x0, x1] (x1 - x0): the sign of the difference flipped"),
    dict(id="theory-normal-posterior-mean-drops-x0", file=BAYES,
         find="return dens, ma + sa**2 * x0v * r / V, sa**2 * sb**2 / V",
         replace="return dens, ma + sa**2 * r / V, sa**2 * sb**2 / V",
         tests=[T_BAYES],
         why="Gaussian conditioning of a on x1 = a x0 + b forgets the factor x0 of the cross-covariance"),
    dict(id="theory-x0-zero-floor", file=BAYES,
         find="        if v == 0:  # x1 = b says nothing about a: Var(a | x0, x1) = sa^2 and (x1 - x0)^2 = b^2\n"
              "            return sa**2 * float(moment(B, 2))\n",
         replace="        if v == 0:\n            return 0.0\n",
         tests=[T_BAYES],
         why="the bug this suite found: with x0 = 0 (normal a, uniform b) the floor at t = 1 was 0, though "
             "x1 = b says nothing about a (the floor is Var(a) E[b^2])"),
    dict(id="theory-identifiable-threshold", file=RECURRENCE,
         find="return np.asarray(x_prev1) != np.asarray(x_prev2)",
         replace="return np.abs(np.asarray(x_prev1) - np.asarray(x_prev2)) > 1e-9",
         tests=[T_BAYES],
         why="three terms treated as unidentifiable when x_{t-1} and x_{t-2} differ by < 1e-9 (a sequence "
             "starting near its fixed point): copying then misses x_{t+1} by a (x_t - x_{t-1})"),
    dict(id="theory-next-from-three-arguments-reversed", file=RECURRENCE,
         find='sp.lambdify((p2, p1, p0), next_from_three_expr(), modules="numpy")',
         replace='sp.lambdify((p0, p1, p2), next_from_three_expr(), modules="numpy")',
         tests=[T_BAYES],
         why="the lambdified three-term rule takes its terms newest first"),
]
