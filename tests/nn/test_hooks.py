"""Hooks and the activation cache: names, order, shorthand, run_with_hooks, the hooks() context,
and incl_bwd gradients against central differences."""
import numpy as np
import pytest

from tests.nn.helpers import inputs, make_model


def test_cache_names_order_and_shorthand():
    m = make_model()
    x, _ = inputs()
    out, cache = m.run_with_cache(x)
    keys = list(cache.keys())
    assert keys[:3] == ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre"]
    assert keys[-2:] == ["ln_final.hook_scale", "ln_final.hook_normalized"]
    order = ["hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_attn_scores",
             "attn.hook_pattern", "attn.hook_z", "attn.hook_result", "hook_attn_out", "hook_resid_mid", "ln2.hook_scale", "ln2.hook_normalized",
             "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post"]
    assert [k for k in keys if k.startswith("blocks.1.")] == ["blocks.1." + o for o in order]
    assert cache["pattern", 0] is cache["blocks.0.attn.hook_pattern"]
    assert cache["resid_pre", -1] is cache["blocks.1.hook_resid_pre"]
    assert cache["pattern", 1].shape == (3, 2, 5, 5)
    assert cache["result", 0].shape == (3, 5, 2, 8)
    assert cache["q", 0].shape == (3, 5, 2, 4)
    assert ("pattern", 0) in cache and "nope" not in cache
    with pytest.raises(KeyError):
        cache["nope"]
    assert m.hook_names() == keys


def test_names_filter_and_hooks_replace():
    m = make_model()
    x, _ = inputs()
    _, cache = m.run_with_cache(x, names_filter=lambda n: n.endswith("hook_pattern"))
    assert list(cache.keys()) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    seen = []

    def double(act, hook):
        seen.append(hook.name)
        return act * 2

    base = m(x)
    out = m.run_with_hooks(x, fwd_hooks=[("blocks.1.hook_resid_post", double)])
    assert seen == ["blocks.1.hook_resid_post"]
    assert not np.allclose(out, base)
    assert np.allclose(m(x), base)  # hooks do not persist


def test_hooks_context_removes_hooks_even_on_error():
    m = make_model()
    x, _ = inputs()
    base = m(x)
    zero = lambda act, hook: np.zeros_like(act)  # noqa: E731
    with m.hooks(fwd_hooks=[(lambda n: n.endswith("hook_attn_out"), zero)]):
        inside = m(x)
    assert not np.allclose(inside, base)
    with pytest.raises(RuntimeError):
        with m.hooks(fwd_hooks=[("hook_embed", zero)]):
            raise RuntimeError("boom")
    assert m._fwd_hooks == []
    assert np.allclose(m(x), base)


def test_hook_shape_change_is_rejected():
    m = make_model()
    x, _ = inputs()
    with pytest.raises(ValueError):
        m.run_with_hooks(x, [("blocks.0.hook_resid_pre", lambda a, h: a[:, :1])])


@pytest.mark.parametrize("attn_only,norm", [(False, "LN"), (True, None)])
def test_incl_bwd_matches_finite_differences(attn_only, norm):
    m = make_model(attn_only=attn_only, norm=norm)
    x, y = inputs(B=2, T=4)
    _, cache = m.run_with_cache(x, incl_bwd=True, target=y)
    names = [k for k in cache.keys() if not k.endswith("_grad")]
    assert all(k + "_grad" in cache for k in names if k != "ln_final.hook_normalized" or norm)
    rng = np.random.default_rng(0)
    eps = 1e-6
    worst = 0.0
    for name in names:
        if name + "_grad" not in cache:
            continue
        act, grad = cache[name], cache[name + "_grad"]
        for _ in range(3):
            idx = tuple(rng.integers(0, s) for s in act.shape)
            if not np.isfinite(act[idx]):
                continue  # masked attention scores
            if "pattern" in name or "attn_scores" in name:
                if idx[-1] > idx[-2]:
                    continue

            def loss(delta):
                def fn(a, hook):
                    a = np.array(a, copy=True)
                    a[idx] += delta
                    return a

                p = m.run_with_hooks(x, [(name, fn)])
                return np.mean((p - y) ** 2)

            fd = (loss(eps) - loss(-eps)) / (2 * eps)
            err = abs(fd - grad[idx]) / max(1e-6, abs(fd) + abs(grad[idx]))
            worst = max(worst, err)
            assert err < 1e-5, (name, idx, fd, grad[idx])
    assert worst < 1e-5


def test_incl_bwd_needs_target():
    m = make_model()
    x, _ = inputs()
    with pytest.raises(ValueError):
        m.run_with_cache(x, incl_bwd=True)
