"""minigpt.refinement on a planted circuit: the measured side must read back the planted last-layer heads."""
import json

import numpy as np
import pytest

from minigpt.tasks.data import AffineRecurrence
from minigpt.experiments.refinement import render, render_sweep, seed_ranges, substitution_reading, sweep_substitution, trained_side
from minigpt.experiments.sweep import wilson
from minigpt.io.checkpoint import save_checkpoint
from theory import planted as PL


def test_trained_side_reads_the_planted_last_layer():
    T = 9
    circ = PL.Circuit([PL.previous_token(0, 0), PL.similarity(2, 1, beta=1.5, gamma=-0.4)], n_layers=3, n_heads=2, n_ctx=T,
                      readout={"x": 1.0, "L0H0": 0.5, "L2H1": 1.0})
    model = circ.model()
    task = AffineRecurrence(length=T + 1)
    res = trained_side(model, task, n=512)
    h1 = next(h for h in res["heads"] if h["head"] == "L2H1")
    assert h1["beta"] == pytest.approx(1.5, abs=1e-6)  # the pattern is exactly a product-similarity head
    assert h1["ov_gain"] == pytest.approx(-0.4, abs=1e-9) and h1["null_counts"] and h1["null_gain"] > 0.5
    sub = h1["substitution"]["product"]  # the fitted pattern is the planted one: substituting it loses nothing
    assert sub["beta"] == pytest.approx(1.5, abs=1e-6) and sub["avg_ratio"] > 1.1 and sub["recovered"] == pytest.approx(1.0, abs=1e-6)
    h0 = next(h for h in res["heads"] if h["head"] == "L2H0")  # empty head: uniform pattern, no output
    assert h0["null_gain"] <= 0.0 + 1e-9 and not h0["null_counts"] and h0["resample_ratio"] == pytest.approx(1.0, abs=1e-12)
    # the estimate entering layer 2 is a linear read-out of resid_pre 2 = (x_t, 1, t, onehot(t), x_{t-1} from L0H0, 0...):
    # recomputed with plain least squares on the same held-out split
    b = task.sample(512, np.random.default_rng([12345, 0, 11]))
    x, y = b.inputs[:, 2:], b.targets[:, 2:]
    xp = b.inputs[:, 1:-1]
    F = np.concatenate([x.reshape(-1, 1), xp.reshape(-1, 1), np.tile(np.eye(T - 2), (512, 1))], 1)
    cut = 256 * (T - 2)
    est = F @ np.linalg.lstsq(F[:cut], y.ravel()[:cut], rcond=None)[0]
    e = res["entering"]
    assert e["mse"] == pytest.approx(((y.ravel() - est)[cut:] ** 2).mean(), rel=1e-6)
    assert e["slope_on_xt"] == pytest.approx(np.polyfit(x.ravel()[cut:], est[cut:], 1)[0], rel=1e-6)
    text = render("planted", res, [dict(estimate="linear", kind="product", beta=0.0, lam=0.0, gamma=0.0, mse_estimate=0.02, mse_refined=0.01,
                                        gain=0.5, mse_positional=0.015)], "cmd")
    assert "| L2H1 | 1.5 |" in text and "L2H1" in text.split("## Reading")[1]
    assert text.rstrip().endswith(substitution_reading(res["heads"]))
    # hand-built vs trained: the theory head's own ablation ratio (0.02 / 0.01) beside the range of the measured ratios
    lo, hi = min(h["resample_ratio"] for h in res["heads"]), max(h["resample_ratio"] for h in res["heads"])
    assert f"multiplies the MSE by 2; resample-ablating the trained last-layer heads multiplies the model's MSE by {lo:.3g} to {hi:.3g}" in text


def test_substitution_reading_names_the_reproduced_heads_among_those_whose_selectivity_matters():
    def head(name, selective, product, distance):
        return dict(head=name, selective_ratio=selective, substitution={"product": dict(recovered=product), "distance": dict(recovered=distance)})

    text = substitution_reading([head("L2H0", 3.0, 0.1, 0.7), head("L2H1", 2.0, 0.2, -0.1), head("L2H2", 1.2, 0.9, 0.9)])
    assert "L2H0 0.7 (distance), L2H1 0.2 (product) of" in text and "It reproduces the selectivity of L2H0." in text
    assert "L2H2" not in text  # its selectivity does not matter (x1.2 < x1.5): not read
    text = substitution_reading([head("L2H0", 3.0, 0.1, 0.49), head("L2H1", 2.0, None, None)])
    assert "L2H1 n/a" in text and "It reproduces none of them" in text
    assert "tests nothing" in substitution_reading([head("L2H0", 1.4, 1.0, 1.0)])


def planted_sweep(tmp_path, T=9):
    """A sweep folder with one run: the planted circuit above, its last-layer similarity head L2H1 marked selective in
    its analysis.json (as the sweep's definitions-v2 analysis would), the empty head L2H0 not."""
    circ = PL.Circuit([PL.previous_token(0, 0), PL.similarity(2, 1, beta=1.5, gamma=-0.4)], n_layers=3, n_heads=2, n_ctx=T,
                      readout={"x": 1.0, "L0H0": 0.5, "L2H1": 1.0})
    model = circ.model()
    run = tmp_path / "planted-abc" / "seed3"
    run.mkdir(parents=True)
    save_checkpoint(run / "checkpoint.npz", model.params, {"model": model.cfg.to_dict(), "data": AffineRecurrence(length=T + 1).spec()})
    row = dict(r_sim=0.9, ov_gain=-0.4, selective_ratio=1.6, ns_similar=True, ns_dissimilar=False)
    rows = [dict(head="L2H0", h=0, is_selective=False, **row), dict(head="L2H1", h=1, is_selective=True, **row)]
    (run / "analysis.json").write_text(json.dumps(dict(seed=3, setting="planted", claims_v2=dict(negsim_rows=rows))))
    return run


def test_sweep_substitution_reads_the_selective_heads_of_each_run_and_resumes(tmp_path):
    run = planted_sweep(tmp_path)
    rows, runs = sweep_substitution(str(tmp_path), log=lambda *_: None)
    assert runs == [("planted-abc", 3)] and [r["head"] for r in rows] == ["L2H1"] and rows[0]["seed"] == 3
    assert rows[0]["product_beta"] == pytest.approx(1.5, abs=1e-6) and rows[0]["product_recovered"] == pytest.approx(1.0, abs=1e-6)
    cached = json.loads((run / "substitution.json").read_text())
    cached[0]["product_recovered"] = 0.25  # a second pass reads the cache instead of recomputing
    (run / "substitution.json").write_text(json.dumps(cached))
    rows2, _ = sweep_substitution(str(tmp_path), log=lambda *_: None)
    assert rows2[0]["product_recovered"] == 0.25
    text = render_sweep(rows, runs, "cmd")
    assert "| every selective last-layer head | 1 | 1/1 [0.21, 1.00] |" in text
    assert "| negative similarity heads, dissimilar row | 0 | 0/0 [0.00, 1.00] |" in text


def test_render_sweep_counts_heads_the_theory_reproduces():
    def row(best, similar, dissimilar=False):
        return dict(setting="paper", seed=0, head="L2H0", r_sim=0.5, ov_gain=-0.3, selective_ratio=2.0, ns_similar=similar,
                    ns_dissimilar=dissimilar, product_beta=0.1, product_recovered=best - 0.2, distance_beta=1.0, distance_recovered=best)
    rows = [row(0.9, True), row(0.5, True), row(0.3, True), row(0.49, False), row(0.1, False, True)]
    rows.append(dict(row(0.0, False), product_recovered=None, distance_recovered=None))  # nothing to recover: not reproduced
    text = render_sweep(rows, [("paper", 0), ("paper", 1), ("paper", 2), ("paper", 4), ("a<0", 7)], "cmd")
    lo, hi = wilson(2, 6)
    assert f"| every selective last-layer head | 6 | 2/6 [{lo:.2f}, {hi:.2f}] | 0.49 |" in text
    lo, hi = wilson(2, 3)
    assert f"| negative similarity heads, similar row | 3 | 2/3 [{lo:.2f}, {hi:.2f}] | 0.5 |" in text
    assert "| negative similarity heads, dissimilar row | 1 | 0/1" in text and "6 selective heads in 5 runs (`a<0` seeds 7; `paper` seeds 0-2, 4)." in text


def test_seed_ranges_compacts_runs_of_seeds():
    assert seed_ranges([7, 0, 1, 2, 5, 8, 2]) == "0-2, 5, 7-8" and seed_ranges([]) == "" and seed_ranges([3]) == "3"
