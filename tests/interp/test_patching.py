"""minigpt.interp.patching: patching a run with its own cache changes nothing; each restored fraction equals
the same intervention made another way."""
import numpy as np
import pytest

from minigpt.interp import make_pairs, patch_heads, patch_resid
from minigpt.interp.patching import patch_grid
from minigpt.tasks.data import AffineRecurrence
from tests.nn.helpers import inputs, make_model


def test_patching_with_own_cache_changes_nothing(model):
    x, _ = inputs()
    base = model(x)
    _, cache = model.run_with_cache(x)
    names = [k for k in cache.keys()]
    _, preds = patch_grid(model, x, x, lambda n: n, lambda n: (slice(None),), names, clean_cache=cache)
    for p in preds:  # equal up to summation order (a hooked attention sums per-head results, an unhooked one fuses them)
        np.testing.assert_allclose(p, base, rtol=0, atol=1e-13)


def test_patching_grids_shapes_and_full_restore():
    m = make_model()
    task = AffineRecurrence(length=6)
    cl, co = make_pairs(task, 16, "a", np.random.default_rng(0))
    np.testing.assert_array_equal(cl[:, 0], co[:, 0])  # x0 shared
    clean, corrupt = cl[:, :-1], co[:, :-1]
    g = patch_resid(m, clean, corrupt)
    assert g.shape == (2, 5)
    p_cl, p_co = m(clean), m(corrupt)

    def frac(pred):  # docs/interp.md: restored fraction at the last position
        return 1 - ((pred - p_cl)[:, -1] ** 2).mean() / ((p_co - p_cl)[:, -1] ** 2).mean()

    for t in range(5):  # resid_pre 0 at position t is the embedding of x_t: the same as feeding the corrupt input with clean x_t
        mixed = corrupt.copy()
        mixed[:, t] = clean[:, t]
        assert g[0, t] == pytest.approx(frac(m(mixed)), abs=1e-10), t
    np.testing.assert_allclose(patch_resid(m, clean, corrupt, site="resid_post")[-1], [0, 0, 0, 0, 1], atol=1e-10)  # read-out is per position
    # patching every position of resid_pre 0 restores fully:
    _, cache = m.run_with_cache(clean)
    r, _ = patch_grid(m, clean, corrupt, lambda i: "blocks.0.hook_resid_pre", lambda i: (slice(None),), [0], clean_cache=cache)
    assert r[0] == pytest.approx(1.0)
    # a head's z patched from the clean run = its output z_h W_O[h] swapped in attn_out (another hook point, same effect)
    ph, ph_pos = patch_heads(m, clean, corrupt), patch_heads(m, clean, corrupt, by_pos=True)
    assert ph.shape == (2, 2) and ph_pos.shape == (2, 2, 5)
    _, cc = m.run_with_cache(clean)
    _, cr = m.run_with_cache(corrupt)  # nothing upstream of a head changes when its z is patched
    for l in range(2):
        for h in range(2):
            for t in [slice(None)] + list(range(5)):
                def swap(a, hook, l=l, h=h, t=t):
                    a = a.copy()
                    a[:, t] += cc["result", l][:, t, h] - cr["result", l][:, t, h]
                    return a
                got = ph[l, h] if isinstance(t, slice) else ph_pos[l, h, t]
                assert got == pytest.approx(frac(m.run_with_hooks(corrupt, [(f"blocks.{l}.hook_attn_out", swap)])), abs=1e-10), (l, h, t)
    assert np.abs(ph).max() > 1e-3
    with pytest.raises(ValueError):
        make_pairs(task, 4, "c", np.random.default_rng(0))
