"""minigpt.extensions: the report section runs end to end on tiny models of both new tasks."""
import numpy as np
import pytest

from minigpt.experiments import extensions
from minigpt.tasks import presets
from minigpt.training import load_run, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for name in ("linear2", "poly2"):
        spec = presets.apply_overrides(presets.get_preset(name), [
            "model.d_model=16", "model.d_mlp=16", "model.n_layers=2", "model.n_heads=2", "train.steps=2",
            "train.eval_every=2", "train.eval_size=32", "train.batch_size=8"])
        d = tmp_path_factory.mktemp(name)
        train(*presets.build(spec), out_dir=d, progress=False)
        out[name] = str(d)
    return out


def test_report_has_a_section_per_task(runs, tmp_path):
    md = extensions.extensions_report(runs, out=str(tmp_path / "ext.md"), n_eval=64, n_mech=32)
    assert (tmp_path / "ext.md").read_text() == md
    for name in runs:
        assert f"### {name}" in md
    assert "Copy-then-refine" in md and "classify_heads" in md  # the scalar toolkit ran on the polynomial model
    assert (tmp_path / "figures" / "extensions" / "linear2_attention.png").exists()


def test_analysis_numbers_are_consistent(runs):
    run = load_run(runs["linear2"])
    model, task = run.model, run.task
    res = extensions.analyse(model, task, n_eval=64, n_mech=32)
    t0 = res["exact_from"]
    assert t0 == 3 and res["mean_from_t0"]["exact"] < 1e-12 and res["mean_from_t0"]["oracle"] == 0
    assert np.isclose(res["copy_over_model"], res["mean_from_t0"]["copy"] / res["mean_from_t0"]["model"])
    pat = res["heads"]["pattern"]
    assert pat.shape == (4, 11, 11) and np.allclose(pat.sum(-1), 1)
    assert res["resid"][0]["probe_x_t"] > 0.99  # the embedding carries x_t linearly


def test_probe_r2_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 5))
    assert extensions.probe_r2(f, f @ rng.normal(size=(5, 2)) + 1.0) > 0.999
    assert extensions.probe_r2(f, rng.normal(size=(400, 2))) < 0.1
