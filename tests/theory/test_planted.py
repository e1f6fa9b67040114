"""theory.planted, the ground truth of the interpretability tests: each head builder computes its formula, a circuit
refuses bad wiring, ``closed_form`` composes layers and applies interventions, ``readout`` stops before a layer, and
the LayerNorm and recurrence helpers are what they say (every tool on the reference circuit:
tests/interp/test_planted_circuits.py)."""
import numpy as np
import pytest

from theory import planted as PL
from theory.heads import similarity_head

T = 6
X = np.random.default_rng(0).uniform(-1, 1, (4, T))
ONES = np.ones_like(X)
POS = np.broadcast_to(np.arange(T, dtype=float), X.shape)
PREV = X[:, [0, 0, 1, 2, 3, 4]]  # x_{t-1}, x_0 at t = 0


def test_each_builder_computes_its_formula():
    np.testing.assert_allclose(PL.head_output(PL.copying(0, 0, gamma=2.0), X, X, X), 2 * X, atol=1e-12)
    np.testing.assert_allclose(PL.head_output(PL.previous_token(0, 0), X, X, X), PREV, atol=1e-12)
    np.testing.assert_array_equal(PL.head_output(PL.inert(0, 0), X, X, X), 0)
    np.testing.assert_allclose(PL.head_output(PL.positional(0, 0, gamma=0.3), ONES, ONES, POS), 0.3 * POS / 2, atol=1e-12)
    np.testing.assert_allclose(PL.head_output(PL.similarity(0, 0, beta=-2.0, gamma=0.5), X, X, X), 0.5 * similarity_head(X, -2.0),
                               atol=1e-12)
    A = np.tril(np.broadcast_to(np.exp(3.0 * X)[:, None, :], (4, T, T)))  # [batch, t, j]: exp(3 x_j) for j <= t
    A = A / A.sum(-1, keepdims=True)
    np.testing.assert_allclose(PL.head_output(PL.pattern_only(0, 0, beta=3.0), ONES, X, POS), A @ np.arange(T), atol=1e-12)


@pytest.mark.parametrize("heads, readout, msg", [
    ([PL.copying(2, 0)], {}, "outside a 2-layer"),
    ([PL.copying(0, 0), PL.inert(0, 0)], {}, "given twice"),
    ([PL.previous_token(0, 0, source="L0H1")], {}, "reads channel 'L0H1'"),  # a head of its own layer: not yet written
    ([PL.copying(0, 0)], {"L2H0": 1.0}, "read-out channel 'L2H0'"),
])
def test_a_circuit_refuses_bad_wiring(heads, readout, msg):
    with pytest.raises(ValueError, match=msg):
        PL.Circuit(heads, n_layers=2, n_heads=2, n_ctx=T, readout=readout)


def test_closed_form_composes_layers_and_applies_interventions():
    c = PL.Circuit([PL.previous_token(0, 0), PL.previous_token(1, 1, source="L0H0")], n_layers=2, n_heads=2, n_ctx=T,
                   readout={"x": 1.0, "L1H1": 2.0}, bias=0.5)
    ch = PL.closed_form(c, X)
    two_back = X[:, [0, 0, 0, 1, 2, 3]]
    np.testing.assert_allclose(ch["L1H1"], two_back, atol=1e-12)  # a previous-token head on a previous-token head
    np.testing.assert_array_equal(ch["L0H1"], 0)  # a head without a spec writes 0
    np.testing.assert_allclose(PL.readout(c, ch), X + 2 * two_back + 0.5, atol=1e-12)
    np.testing.assert_allclose(PL.readout(c, ch, upto_layer=1), X + 0.5, atol=1e-12)  # before block 1: L1H1 not written yet
    ablated = PL.closed_form(c, X, head_out=lambda name, out: 0 * out if name == "L0H0" else out)
    np.testing.assert_array_equal(ablated["L1H1"], 0)  # nothing left to relay
    patched = PL.closed_form(c, X, before_layer=lambda l, ch: {**ch, "L0H0": ch["x"]} if l == 1 else ch)
    np.testing.assert_allclose(patched["L1H1"], PREV, atol=1e-12)  # layer 1 reads the patched channel


@pytest.mark.parametrize("copy_at", [(0, 1), (1, 0)])
def test_the_model_of_a_claim_circuit_computes_its_closed_form(copy_at):
    c = PL.claim_circuit(copy_at, n_ctx=T)
    np.testing.assert_allclose(c.model()(X), PL.readout(c, PL.closed_form(c, X)), atol=1e-9)


def test_layer_bias_resid_is_the_models_residual():
    m = PL.layer_bias_model(n_ctx=T, n_layers=3, d_model=8, seed=1)
    _, cache = m.run_with_cache(X)
    for l in range(3):
        np.testing.assert_allclose(PL.layer_bias_resid(m, X, l), cache["resid_pre", l], rtol=1e-10, atol=1e-10)
    assert np.abs(cache["resid_pre", 2] - cache["resid_pre", 0]).max() > 0.1  # the layers do add something


def test_head_recurrence_is_a_copy_plus_a_similarity_head():
    x = PL.head_recurrence(np.array([0.3, -0.7, 0.9]), 7, beta=-2.0, gamma=0.4)
    for t in range(6):
        np.testing.assert_allclose(x[:, t + 1], x[:, t] + 0.4 * similarity_head(x[:, : t + 1], -2.0)[:, t], atol=1e-12)
