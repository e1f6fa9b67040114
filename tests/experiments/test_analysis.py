"""minigpt.experiments.analysis: closed forms against measurements, the null model of the similarity fit, and the
theory numbers it reports (``analyse``, the claim tests and the idealised fits on planted circuits:
tests/interp/test_planted_circuits.py)."""
import numpy as np
import pytest

from minigpt.experiments.analysis import baseline_closed_forms, bayes_floor, closed_vs_measured, null_gain
from minigpt.tasks.data import AffineRecurrence
from theory.heads import causal_softmax, positional_bias, similarity_pattern


def test_closed_vs_measured_finds_the_largest_gaps():
    sq = {"copy": np.array([[2.0, 1.0, 0.0], [2.0, 3.0, 0.002]]),  # [batch, pos] squared errors: means 2, 2, 0.001
          "linear": np.array([[4.0, 4.0, 5.0], [4.0, 4.0, 5.0]]),  # means 4, 4, 5
          "model": np.ones((2, 3))}
    closed = {"copy": [2.0, 1.0, 0.0], "linear": [4.0, None, 3.0], "no_measurement": [1.0, 1.0, 1.0]}
    best = closed_vs_measured(sq, closed)
    assert best["n_compared"] == 5  # no closed form (None) and no measurement: not compared
    assert best["max_rel_gap"] == pytest.approx(1.0) and best["where"] == ["copy", 1]  # |2 - 1| / 1 beats linear's |5 - 3| / 3
    assert best["max_z"] == pytest.approx(1.0) and best["z_where"] == ["copy", 1]  # gap 1, standard error sd([1, 3]) / sqrt(2) = 1
    assert best["max_mc_where_zero"] == pytest.approx(0.001)


def test_null_gain_tells_a_similarity_pattern_from_a_positional_one():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 8))
    sim = similarity_pattern(x, -3.0)  # [batch, T, T]: logits -3 x_t x_j
    g = null_gain(sim, x)
    assert g["null_counts"] and g["null_gain"] > 0.99 and g["beta_train"] == pytest.approx(-3.0, rel=1e-6)
    noisy = causal_softmax(positional_bias("previous", 8, strength=2.0) + rng.normal(0, 0.5, sim.shape))  # jittered independently of x
    g = null_gain(noisy, x)
    assert not g["null_counts"] and g["null_gain"] < 0.05
    fixed = np.broadcast_to(similarity_pattern(np.zeros(8), 0.0, positional_bias("previous", 8)), sim.shape)
    assert null_gain(fixed, x) == {"null_gain": 0.0, "null_counts": False, "beta_train": 0.0}  # nothing left for beta to explain


def test_theory_numbers_of_the_paper_prior():
    task = AffineRecurrence()  # a, b, x0 ~ U(-1, 1)
    np.testing.assert_allclose(bayes_floor(task, 2), [4 / 9, 2 / 15], rtol=1e-12)  # as derived in theory/derive.py
    closed = baseline_closed_forms(task, 3)
    assert closed["copy"][0] == pytest.approx(7 / 9)  # E[((a - 1) x0 + b)^2] = 4/3 * 1/3 + 1/3
    assert closed["prior_mean"][0] == pytest.approx(4 / 9) and closed["oracle"] == [0.0, 0.0, 0.0]
    noisy = baseline_closed_forms(AffineRecurrence(noise=0.1), 3)
    assert noisy["three_term"][2] is None and noisy["three_term"][1] is not None  # no closed form with noise at t >= 2
