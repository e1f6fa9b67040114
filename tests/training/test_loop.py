"""minigpt.training.loop: the evaluation helpers by hand, and training on every task (resume, interruption and
faults: tests/training/test_resume.py, test_reliability_*.py; pinned numbers: tests/training/test_golden.py)."""
import numpy as np
import pytest

from minigpt.tasks import baselines_ext, presets
from minigpt.tasks.data import AffineRecurrence
from minigpt.training.loop import data_rngs, evaluate, first_nonfinite, mse_by_position, predict
from tests.nn.helpers import make_model


def test_mse_by_position_by_hand():
    pred = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    target = np.array([[0.0, 2.0, 1.0], [2.0, 0.0, 1.0]])
    np.testing.assert_array_equal(mse_by_position(pred, target), [2.5, 0.0, 2.5])  # (1 + 4) / 2, 0, (4 + 1) / 2
    vec = np.zeros((2, 3, 2))
    vec[0, 1] = [1.0, 3.0]  # a vector term: its mean square, then the batch mean
    np.testing.assert_array_equal(mse_by_position(vec, np.zeros_like(vec)), [0.0, 2.5, 0.0])


def test_predict_in_chunks_and_evaluate():
    model = make_model()
    task = AffineRecurrence(length=6)
    batch = task.sample(7, np.random.default_rng(0))
    np.testing.assert_allclose(predict(model, batch.inputs, chunk=3), model(batch.inputs), rtol=1e-13, atol=1e-14)  # chunks 3 + 3 + 1
    out = evaluate(model, batch, task, with_baselines=True)
    assert set(out) == {"model", "copy", "linear", "three_term", "least_squares", "oracle", "prior_mean"}
    np.testing.assert_allclose(out["copy"], ((batch.inputs - batch.targets) ** 2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(out["model"], ((model(batch.inputs) - batch.targets) ** 2).mean(0), rtol=1e-10)
    assert out["oracle"] == pytest.approx([0.0] * 5, abs=1e-24) and list(evaluate(model, batch)) == ["model"]


def test_first_nonfinite_and_data_rngs():
    tensors = {"a": np.ones(3), "b": np.array([1.0, np.inf]), "c": np.array([np.nan])}
    assert first_nonfinite(tensors, "grad ") == "grad b" and first_nonfinite({"a": np.ones(2)}) is None
    train_rng, eval_rng = data_rngs(3)
    again = data_rngs(3)
    assert train_rng.random() == again[0].random() and eval_rng.random() == again[1].random()  # seeded
    assert data_rngs(3)[0].random() != data_rngs(3)[1].random() != data_rngs(4)[1].random()  # separate streams


def test_training_accepts_the_new_tasks(tmp_path):
    from minigpt.training.loop import train

    for name in ("linear2", "poly2"):
        spec = presets.apply_overrides(presets.get_preset(name), [
            "model.d_model=16", "model.d_mlp=16", "model.n_layers=1", "train.steps=3", "train.eval_every=3",
            "train.eval_size=64", "train.batch_size=8"])
        mcfg, tcfg, task = presets.build(spec)
        res = train(mcfg, tcfg, task, out_dir=tmp_path / name, progress=False)
        rec = res.history[-1]
        assert set(rec["baselines_by_pos"]) == set(baselines_ext.names_for(task))
        assert len(rec["eval_mse_by_pos"]) == task.length - 1
        res2 = train(mcfg, tcfg, task, out_dir=tmp_path / name, resume=True, progress=False)  # checkpoint's data config validates
        assert res2.history == res.history
