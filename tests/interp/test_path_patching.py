"""Path patching on planted circuits whose answer is known by construction."""
import numpy as np
import pytest

from minigpt.nn.config import ModelConfig
from minigpt.interp.path_patching import path_patch, path_patch_grid
from minigpt.fast.model import Transformer

T = 6
BIG = 200.0  # makes a positional attention one-hot (exp(-BIG) ~ 0 in float64)


def _softmax_causal(scores):  # [B, T, T] -> rows t over keys j <= t
    s = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def planted(relay=False):
    """Attention-only, no LayerNorm, float64.  Residual dims: 0 = x_t, 1 = x_(t-1) (written by L0H0), 2 = output of the
    last layer, 3 = L0H1's distractor output, 4 = the relay's output, 5.. = one-hot position.

    L0H0: previous-token head (position 0 attends to itself), copies x into dim 1.   L0H1: uniform attention, writes
    mean(x) into dim 3 (nothing reads it).   Last layer (L1, or L2 with ``relay``):
      H0: attention from positions only (keys s_j = 0.4 j), values read dim 1 -> writes dim 2;
      H1: attention from content (keys 2 * dim 1, constant query), values read dim 0 -> writes dim 2.
    With ``relay`` a middle layer L1H0 copies dim 1 into dim 4 (own position), so the sender also reaches the
    read-out through a path that path patching must freeze.   Read-out: dim 2 + 0.5 dim 1 + dim 4."""
    L = 3 if relay else 2
    D = 5 + T
    cfg = ModelConfig(n_layers=L, d_model=D, n_heads=2, d_head=T, n_ctx=T, attn_only=True, normalization_type=None, dtype="float64")
    m = Transformer(cfg)
    P = m.params
    for k in P:
        P[k][...] = 0.0
    E = T
    P["embed.W_E"][0, 0] = 1.0
    for t in range(T):
        P["pos_embed.W_pos"][t, 5 + t] = 1.0
    a = "blocks.0.attn."
    for t in range(T):  # L0H0: query e_t, key at j = e_(j+1): score BIG where j = t - 1
        P[a + "W_Q"][0, 5 + t, t] = BIG * np.sqrt(E)
        if t + 1 < T:
            P[a + "W_K"][0, 5 + t, t + 1] = 1.0
    P[a + "W_V"][0, 0, 0] = 1.0
    P[a + "W_O"][0, 0, 1] = 1.0
    P[a + "W_V"][1, 0, 0] = 1.0  # L0H1 (Q = K = 0: uniform)
    P[a + "W_O"][1, 0, 3] = 1.0
    if relay:
        r = "blocks.1.attn."
        for t in range(T):  # L1H0 attends to its own position
            P[r + "W_Q"][0, 5 + t, t] = BIG * np.sqrt(E)
            P[r + "W_K"][0, 5 + t, t] = 1.0
        P[r + "W_V"][0, 1, 0] = 1.0
        P[r + "W_O"][0, 0, 4] = 1.0
    b = f"blocks.{L - 1}.attn."
    for t in range(T):
        P[b + "W_Q"][0, 5 + t, 0] = 1.0  # H0: constant query, positional keys
        P[b + "W_K"][0, 5 + t, 0] = 0.4 * t
        P[b + "W_Q"][1, 5 + t, 0] = 1.0  # H1: constant query, content keys
    P[b + "W_V"][0, 1, 0] = 1.0
    P[b + "W_O"][0, 0, 2] = 1.0
    P[b + "W_K"][1, 1, 0] = 2.0
    P[b + "W_V"][1, 0, 0] = 1.0
    P[b + "W_O"][1, 0, 2] = 1.0
    P["unembed.W_U"][[2, 1, 4], 0] = [1.0, 0.5, 1.0]
    return m


def expected(x, prev_for_values, prev_for_keys, prev_direct, prev_relay):
    """The planted model's prediction with each reader of dim 1 given its own copy of x_(t-1)."""
    E = T
    A0 = _softmax_causal(np.broadcast_to(0.4 * np.arange(T) / np.sqrt(E), (len(x), T, T)))
    A1 = _softmax_causal(np.broadcast_to((2.0 * prev_for_keys / np.sqrt(E))[:, None, :], (len(x), T, T)))
    return (np.einsum("btj,bj->bt", A0, prev_for_values) + np.einsum("btj,bj->bt", A1, x) + 0.5 * prev_direct + prev_relay)


def prev(x):
    return np.concatenate([x[:, :1], x[:, :-1]], 1)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (16, T)), rng.uniform(-1, 1, (16, T))


def test_planted_model_is_what_it_says(pair):
    for relay in (False, True):
        m = planted(relay)
        for x in pair:
            np.testing.assert_allclose(m(x), expected(x, prev(x), prev(x), prev(x), prev(x) if relay else 0.0), atol=1e-12)


@pytest.mark.parametrize("relay", [False, True])
def test_path_into_values_keys_queries_and_readout(pair, relay):
    clean, corrupt = pair
    m = planted(relay)
    L = m.cfg.n_layers
    pc, pk = prev(clean), prev(corrupt)
    rel = pk if relay else 0.0  # the relay path is frozen at its corrupted value
    corrupt_pred = m(corrupt)
    # L0H0 -> H0's values: the values see the clean previous term, nothing else changes
    _, pred = path_patch(m, clean, corrupt, (0, 0), (L - 1, 0), "v")
    np.testing.assert_allclose(pred, expected(corrupt, pc, pk, pk, rel), atol=1e-12)
    assert np.abs(pred - corrupt_pred).max() > 0.05
    # L0H0 -> H0's queries/keys: they read positions only, so zero effect although the weights are not zero
    for into in ("q", "k", "qk"):
        _, pred = path_patch(m, clean, corrupt, (0, 0), (L - 1, 0), into)
        np.testing.assert_allclose(pred, corrupt_pred, atol=1e-12)
    # L0H0 -> H1's keys: the attention pattern changes (content keys), values stay corrupted
    _, pred = path_patch(m, clean, corrupt, (0, 0), (L - 1, 1), "k")
    np.testing.assert_allclose(pred, expected(corrupt, pk, pc, pk, rel), atol=1e-12)
    assert np.abs(pred - corrupt_pred).max() > 0.01
    for into in ("q", "v"):  # H1's query is constant and its values read x_t, not dim 1
        _, pred = path_patch(m, clean, corrupt, (0, 0), (L - 1, 1), into)
        np.testing.assert_allclose(pred, corrupt_pred, atol=1e-12)
    # direct path to the read-out: only 0.5 * dim 1 changes
    _, pred = path_patch(m, clean, corrupt, (0, 0), None)
    np.testing.assert_allclose(pred, expected(corrupt, pk, pk, pc, rel), atol=1e-12)
    # the distractor L0H1 writes where nobody reads: no path from it moves anything
    grid = path_patch_grid(m, clean, corrupt, [(0, 1)], [(L - 1, 0), (L - 1, 1), None], intos=("q", "k", "v"), metric_pos=slice(None))
    assert all(abs(v) < 1e-12 for v in grid.values()), grid


def test_noising_direction(pair):
    """direction="noise": the clean run with the corrupted sender routed into the values; the damage is the share of the
    whole corruption's squared displacement, computed here from the planted model's closed form."""
    clean, corrupt = pair
    m = planted()
    pc, pk = prev(clean), prev(corrupt)
    sl = slice(2, None)
    got = path_patch_grid(m, clean, corrupt, [(0, 0)], [(1, 0)], intos=("v", "qk"), metric_pos=sl, direction="noise")
    pred = expected(clean, pk, pc, pc, 0.0)
    want = ((pred - m(clean))[:, sl] ** 2).mean() / ((m(corrupt) - m(clean))[:, sl] ** 2).mean()
    assert got[((0, 0), (1, 0), "v")] == pytest.approx(want, abs=1e-10) and want > 0.01
    assert abs(got[((0, 0), (1, 0), "qk")]) < 1e-12
    with pytest.raises(ValueError, match="direction"):
        path_patch_grid(m, clean, corrupt, [(0, 0)], [(1, 0)], direction="sideways")


def test_relay_path_is_frozen(pair):
    """Patching the whole sender (its z) moves the prediction through every path; the path into the last layer's values
    moves it only through that path: the difference is exactly the relay's and the direct path's share."""
    clean, corrupt = pair
    m = planted(relay=True)
    _, c = m.run_with_cache(clean)
    z = c["z", 0]

    def fn(act, hook):
        act = act.copy()
        act[:, :, 0] = z[:, :, 0]
        return act

    whole = m.run_with_hooks(corrupt, [("blocks.0.attn.hook_z", fn)])
    pc, pk = prev(clean), prev(corrupt)
    np.testing.assert_allclose(whole, expected(corrupt, pc, pc, pc, pc), atol=1e-12)
    _, pred = path_patch(m, clean, corrupt, (0, 0), (2, 0), "v")
    np.testing.assert_allclose(whole - pred, expected(corrupt, pc, pc, pc, pc) - expected(corrupt, pc, pk, pk, pk), atol=1e-12)


def test_layernorm_is_recomputed():
    """One head per layer, attention-only, with LayerNorm and random non-trivial parameters: routing the only layer-0
    head into all of the layer-1 head's inputs equals patching layer 0's whole attention output and taking its change
    back out of the final residual (so only layer 1 sees it), LN statistics included."""
    cfg = ModelConfig(n_layers=2, d_model=8, n_heads=1, n_ctx=T, attn_only=True, dtype="float64", init_range=0.5)
    m = Transformer(cfg, seed=3)
    rng = np.random.default_rng(1)
    for k, v in m.params.items():
        if not k.endswith(("W_Q", "W_K", "W_V", "W_O", "W_E", "W_pos", "W_U")):
            v[...] = rng.normal(1.0 if k.endswith(".w") else 0.0, 0.3, v.shape)
    clean, corrupt = rng.uniform(-1, 1, (8, T)), rng.uniform(-1, 1, (8, T))
    _, c = m.run_with_cache(clean)
    _, k = m.run_with_cache(corrupt)
    delta = c["attn_out", 0] - k["attn_out", 0]
    ref = m.run_with_hooks(corrupt, [("blocks.0.hook_attn_out", lambda a, hook: c["attn_out", 0]),
                                     ("blocks.1.hook_resid_post", lambda a, hook: a - delta)])
    frac, pred = path_patch(m, clean, corrupt, (0, 0), (1, 0), "qkv", metric_pos=slice(None))
    np.testing.assert_allclose(pred, ref, atol=1e-10)
    assert np.abs(pred - m(corrupt)).max() > 1e-3 and 0 < frac <= 1.0 + 1e-9
    frac_same, _ = path_patch(m, clean, clean, (0, 0), (1, 0), "qkv")  # nothing to restore: undefined
    assert np.isnan(frac_same)


def test_bad_arguments(pair):
    m = planted()
    clean, corrupt = pair
    for s, r, into, msg in [((1, 0), (1, 1), "v", "later layer"), ((0, 0), (0, 1), "v", "later layer"), ((0, 5), (1, 0), "v", "not in a model"),
                            ((0, 0), (1, 0), "z", "into must be")]:
        with pytest.raises(ValueError, match=msg):
            path_patch(m, clean, corrupt, s, r, into)
