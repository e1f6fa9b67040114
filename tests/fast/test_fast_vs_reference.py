"""Every fast op against its reference op (minigpt/nn/ops.py), forward and backward, in float64.

Same inputs, same ``dout``: the outputs, every returned gradient, every activation a hook saw and every
gradient ``record`` got must agree to a relative 1e-10.  Why 1e-10: both sides compute the same formulas
in another order and form (fused or per-head matmuls, gemv or pairwise row sums, the LayerNorm and GELU
derivatives factored differently), so they differ by float64 round-off only: ~1e-16 per operation, grown
by sums of a few hundred terms to ~1e-14 at most here.  A wrong term, factor or index changes a result by
far more than 1e-10.

Relative to what: an activation against its own largest entry; a gradient against its own largest entry
but at least 1e-3 of the largest gradient of the same backward (as ``minigpt.nn.gradcheck``).  The floor is
for gradients that are small by cancellation, where round-off is that of the cancelling terms: b_K's is
exactly 0 (softmax ignores a shift shared by a row), a LayerNorm over D = 2 barely depends on its input
(xhat = +-1), and gelu_new' has a zero near x = -0.75 (all seen in hypothesis draws, up to 2e-9 of the
gradient's own size).

Hook variants: none; a recording hook (``wants("hook_result")`` true or false: the fast attention then
skips the per-head result); a hook that replaces one activation by an affine map of it.  The hook is
an object with the ``HookContext`` interface (``__call__(name, value)``, ``wants(name)``); one test uses
real ``minigpt.hooks`` objects.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.fast import ops as fast_ops
from minigpt.hooks import HookState
from minigpt.nn import ops as ref_ops

REL = 1e-10
LN_HOOKS = ("hook_scale", "hook_normalized")
MLP_HOOKS = ("hook_pre", "hook_post")
ATTN_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result")

dims = st.fixed_dictionaries({"B": st.integers(1, 3), "T": st.integers(1, 6), "D": st.integers(1, 6), "H": st.integers(1, 3),
                              "E": st.integers(1, 4), "M": st.integers(1, 6), "n_in": st.integers(1, 3), "seed": st.integers(0, 2**16)})


def assert_same(fast, ref, name, floor=0.0):
    """max |fast - ref| <= REL * max(|ref|, |fast|, floor); -inf entries (masked scores) must match exactly."""
    fast, ref = np.asarray(fast), np.asarray(ref)
    assert fast.shape == ref.shape, f"{name}: shape {fast.shape} != {ref.shape}"
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(fast)) and np.array_equal(fast[~finite], ref[~finite]), f"{name}: non-finite entries differ"
    if not finite.any():
        return
    f, r = fast[finite], ref[finite]
    scale = max(np.abs(r).max(), np.abs(f).max(), floor)
    err = np.abs(f - r).max()
    assert err <= REL * scale, f"{name}: max |fast - ref| = {err:.3e}, relative {err / scale:.3e}"


def grad_floor(*arrays):
    """1e-3 of the largest entry of the gradients ``arrays`` (dicts of them count by their values)."""
    flat = [a for x in arrays for a in (x.values() if isinstance(x, dict) else [x]) if a is not None]
    return 1e-3 * max(float(np.abs(a).max(initial=0.0)) for a in flat)


def assert_same_grads(fast, ref, what, floor):
    """Two grads dicts, the same keys in the same order, each entry as ``assert_same`` with ``floor``."""
    assert list(fast) == list(ref), f"{what}: keys {list(fast)} != {list(ref)}"
    for k in ref:
        assert_same(fast[k], ref[k], f"{what} {k}", floor)


class Hook:
    """A HookContext stand-in: keeps a copy of each activation, replaces the one named in ``replace``."""

    def __init__(self, replace=None, wants_result=True, how=lambda v: 1.1 * v + 0.05):  # -inf scores stay -inf
        self.replace, self.wants_result, self.how, self.seen = replace, wants_result, how, {}

    def __call__(self, name, value):
        assert name not in self.seen, f"{name} hooked twice"
        self.seen[name] = np.array(value)
        return self.how(value) if name == self.replace else value

    def wants(self, name):
        return name != "hook_result" or self.wants_result


class Recorder:
    def __init__(self):
        self.grads = {}

    def __call__(self, name, grad):
        assert name not in self.grads, f"{name} recorded twice"
        self.grads[name] = np.array(grad)


VARIANTS = ["none", "record", "record, no hook_result"] + [f"replace {n}" for n in LN_HOOKS + MLP_HOOKS + ATTN_HOOKS]


def hooks_for(variant, names):
    """(hook, record) pairs for the fast and the reference op, or None when the variant does not apply."""
    if variant == "none":
        return (None, None), (None, None)
    replace = variant[len("replace "):] if variant.startswith("replace") else None
    if replace is not None and replace not in names:
        return None
    wants = variant != "record, no hook_result"
    return (Hook(replace, wants), Recorder()), (Hook(replace, wants), Recorder())


def compare_hooked(op, variant, names, forward, rng):
    """forward(ops, hook) -> (out, cache) of ``op`` on fixed inputs; runs it and ``op``_backward on both op sets
    with the variant's hooks and compares the outputs, gradients and everything the hooks and records saw."""
    pair = hooks_for(variant, names)
    if pair is None:
        return
    (fh, fr), (rh, rr) = pair
    (f_out, f_cache), (r_out, r_cache) = forward(fast_ops, fh), forward(ref_ops, rh)
    assert_same(f_out, r_out, f"{op} out")
    if fh is not None:
        wanted = [n for n in rh.seen if fh.wants(n)]  # the fast attention skips an unwanted hook_result
        assert list(fh.seen) == wanted, f"{op}: hooked {list(fh.seen)} != {wanted}"
        for n in wanted:
            assert_same(fh.seen[n], rh.seen[n], f"{op} hook {n}")
    dout = rng.normal(size=r_out.shape)
    f_d = getattr(fast_ops, op + "_backward")(dout.copy(), f_cache, fr)
    r_d = getattr(ref_ops, op + "_backward")(dout.copy(), r_cache, rr)
    floor = grad_floor(*r_d, *([] if rr is None else [rr.grads]))
    if isinstance(r_d[1], dict):  # (dx, grads)
        assert_same(f_d[0], r_d[0], f"{op} dx", floor)
        assert_same_grads(f_d[1], r_d[1], op, floor)
    else:  # (dx, dw, db)
        assert_same_grads(dict(zip(("dx", "dw", "db"), f_d)), dict(zip(("dx", "dw", "db"), r_d)), op, floor)
    if fr is not None:
        assert list(fr.grads) == list(rr.grads), f"{op}: recorded {list(fr.grads)} != {list(rr.grads)}"
        assert_same_grads(fr.grads, rr.grads, f"{op} record", floor)


def params(rng, s):
    """Non-trivial parameters (biases != 0, LayerNorm gains != 1) and an input, all float64."""
    B, T, D, H, E, M = s["B"], s["T"], s["D"], s["H"], s["E"], s["M"]
    attn = [rng.normal(0, 0.7, (H, D, E)), rng.normal(0, 1, (H, E)), rng.normal(0, 0.7, (H, D, E)), rng.normal(0, 1, (H, E)),
            rng.normal(0, 0.7, (H, D, E)), rng.normal(0, 1, (H, E)), rng.normal(0, 0.7, (H, E, D)), rng.normal(0, 1, D)]
    mlp = [rng.normal(0, 0.8, (D, M)), rng.normal(0, 1, M), rng.normal(0, 0.8, (M, D)), rng.normal(0, 1, D)]
    ln = [1 + rng.normal(0, 0.5, D), rng.normal(0, 1, D)]
    return rng.normal(0.5, 2, (B, T, D)), attn, mlp, ln


# ---------------------------------------------------------------------------------------------
# ops without hooks
# ---------------------------------------------------------------------------------------------
@settings(max_examples=15)
@given(dims, st.booleans())
def test_linear(s, bias):
    rng = np.random.default_rng(s["seed"])
    for n_in in (1, s["n_in"]):  # n_in = 1: the fast read-in is a broadcast multiply, not a matmul
        x, W, b = rng.normal(size=(s["B"], s["T"], n_in)), rng.normal(size=(n_in, s["M"])), rng.normal(size=s["M"])
        (f_out, f_c), (r_out, r_c) = (o.linear_forward(x, W, b if bias else None) for o in (fast_ops, ref_ops))
        assert_same(f_out, r_out, "linear out")
        dout = rng.normal(size=r_out.shape)
        f_d, r_d = fast_ops.linear_backward(dout, f_c), ref_ops.linear_backward(dout, r_c)
        assert (f_d[2] is None) == (r_d[2] is None) == (not bias)
        f_g, r_g = ({k: v for k, v in zip(("dx", "dW", "db"), d) if v is not None} for d in (f_d, r_d))
        assert_same_grads(f_g, r_g, "linear", grad_floor(r_g))


@settings(max_examples=15)
@given(dims)
def test_softmax_with_the_causal_mask(s):
    rng = np.random.default_rng(s["seed"])
    T = s["T"]
    x = np.where(ref_ops.causal_mask(T), -np.inf, rng.normal(0, 3, (s["B"], s["H"], T, T)))  # [B, H, T, T]
    np.testing.assert_array_equal(fast_ops.causal_mask(T), ref_ops.causal_mask(T))
    (f_p, f_c), (r_p, r_c) = fast_ops.softmax_forward(x.copy()), ref_ops.softmax_forward(x.copy())
    assert_same(f_p, r_p, "softmax p")
    dp = rng.normal(size=x.shape)
    assert_same(fast_ops.softmax_backward(dp.copy(), f_c), ref_ops.softmax_backward(dp.copy(), r_c), "softmax dx", grad_floor(dp))


@pytest.mark.parametrize("act", sorted(ref_ops.ACTIVATIONS))
@pytest.mark.parametrize("n", [7, 3 * 131072 + 5])  # one block of the fast loops, and several with a short last one
def test_activation(act, n):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 3, (n // 7 + 1, 7))
    (f_out, f_c), (r_out, r_c) = fast_ops.ACTIVATIONS[act][0](x), ref_ops.ACTIVATIONS[act][0](x)
    assert_same(f_out, r_out, act)
    dout = rng.normal(size=x.shape)
    assert_same(fast_ops.ACTIVATIONS[act][1](dout, f_c), ref_ops.ACTIVATIONS[act][1](dout, r_c), act + " backward")


def test_mse_and_add():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 2))
    (f_loss, f_c), (r_loss, r_c) = fast_ops.mse_forward(pred, target), ref_ops.mse_forward(pred, target)
    assert abs(f_loss - r_loss) <= REL * r_loss
    assert_same(fast_ops.mse_backward(f_c), ref_ops.mse_backward(r_c), "mse backward")
    assert_same(fast_ops.add(pred, target), ref_ops.add(pred, target), "add")


# ---------------------------------------------------------------------------------------------
# ops with hooks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=8)
@given(dims)
def test_layernorm(variant, s):
    rng = np.random.default_rng(s["seed"])
    x, _, _, (w, b) = params(rng, s)
    compare_hooked("layernorm", variant, LN_HOOKS, lambda o, hook: o.layernorm_forward(x.copy(), w, b, 1e-5, hook), rng)


@pytest.mark.parametrize("act", sorted(ref_ops.ACTIVATIONS))
@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=5)
@given(dims)
def test_mlp(act, variant, s):
    rng = np.random.default_rng(s["seed"])
    x, _, P, _ = params(rng, s)
    compare_hooked("mlp", variant, MLP_HOOKS, lambda o, hook: o.mlp_forward(x.copy(), *P, act_fn=act, hook=hook), rng)


@pytest.mark.parametrize("variant", VARIANTS)
@settings(max_examples=10)
@given(dims)
def test_attention(variant, s):
    rng = np.random.default_rng(s["seed"])
    x, P, _, _ = params(rng, s)
    compare_hooked("attention", variant, ATTN_HOOKS, lambda o, hook: o.attention_forward(x.copy(), *P, hook=hook), rng)


@pytest.mark.parametrize("wanted", [None, lambda n: not n.endswith("hook_result")])
def test_real_hook_state(wanted):
    """minigpt.hooks objects: a HookState caching under a prefix, one hook replacing hook_z, names_filter
    with or without hook_result; the caches and everything downstream agree."""
    rng = np.random.default_rng(3)
    x, P, _, _ = params(rng, dict(B=2, T=5, D=6, H=3, E=2, M=4))
    halve = lambda z, hook: z * 0.5  # noqa: E731
    caches, outs = [], []
    for o in (fast_ops, ref_ops):
        cache = {}
        hook = HookState([("blocks.0.attn.hook_z", halve)], cache, wanted).context("blocks.0.attn.")
        out, c = o.attention_forward(x.copy(), *P, hook=hook)
        outs.append((out, o.attention_backward(np.ones_like(out), c)))
        caches.append(cache)
    assert list(caches[0]) == list(caches[1])
    assert ("blocks.0.attn.hook_result" in caches[1]) == (wanted is None)
    for n in caches[1]:
        assert_same(caches[0][n], caches[1][n], n)
    (f_out, (f_dx, f_g)), (r_out, (r_dx, r_g)) = outs
    assert_same(f_out, r_out, "out")
    assert_same(f_dx, r_dx, "dx", grad_floor(r_dx, r_g))
    assert_same_grads(f_g, r_g, "attention", grad_floor(r_dx, r_g))


@pytest.mark.parametrize("op,name", [("layernorm", "hook_scale"), ("attention", "hook_pattern")])
def test_replaced_scale_or_pattern_backward(op, name):
    """The reference backward is exact for a hook that shifts the activation by a constant (tests/nn); so is
    the fast one, which keeps the op's own std / softmax output for the backward beside the replaced value
    (before, it differentiated the replaced value as if the op had computed it: dx off by 3.4e-2 and 3.5)."""
    rng = np.random.default_rng(5)
    x, P, _, (w, b) = params(rng, dict(B=2, T=4, D=5, H=2, E=3, M=4))
    args = (w, b, 1e-5) if op == "layernorm" else P
    dout = rng.normal(size=x.shape)
    (f_out, f_c), (r_out, r_c) = (getattr(o, op + "_forward")(x.copy(), *args, hook=Hook(name, how=lambda v: v + 0.1))
                                   for o in (fast_ops, ref_ops))
    assert_same(f_out, r_out, "out")
    assert_same(getattr(fast_ops, op + "_backward")(dout, f_c)[0], getattr(ref_ops, op + "_backward")(dout, r_c)[0], "dx")
