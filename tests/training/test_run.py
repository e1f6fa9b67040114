"""minigpt.training.run: ``load_run`` gives the same run from a run folder and from its checkpoint file (the trained
model's predictions, the task, the configs, the step), the reference ops with ``fast=False``, no task for a bare model
file, and a clear error for a file that is no minigpt checkpoint."""
import numpy as np
import pytest

from minigpt.io.checkpoint import CheckpointError, save_checkpoint
from minigpt.tasks import presets
from minigpt.training import load_run, train

SPEC = presets.apply_overrides(presets.get_preset("tiny"), [  # a prior other than the default: the task must be read back
    "train.steps=3", "train.eval_every=3", "train.eval_size=16", 'data.a=["uniform", 0.2, 0.9]', "data.length=8"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, train(*presets.build(SPEC), out_dir=out, progress=False, threads=1).model


def test_a_run_folder_and_its_checkpoint_file_give_the_same_run(trained):
    out, model = trained
    mcfg, tcfg, task = presets.build(SPEC)
    x = task.sample(5, np.random.default_rng(0)).inputs
    for run in (load_run(out), load_run(out / "checkpoint.npz"), load_run(str(out))):
        assert run.path == str(out / "checkpoint.npz")
        assert run.model_cfg == mcfg and run.train_cfg == tcfg and run.task == task and run.step == 3
        assert run.data["a"] == ("uniform", 0.2, 0.9)  # tuples again, as in the spec
        assert run.spec() == {"model": mcfg.to_dict(), "train": tcfg.to_dict(), "data": run.data}
        assert run.model.fast
        np.testing.assert_array_equal(run.model(x), model(x))


def test_fast_false_loads_the_model_on_the_reference_ops(trained):
    out, model = trained
    run = load_run(out, fast=False)
    assert not run.model.fast
    x = run.task.sample(5, np.random.default_rng(1)).inputs
    np.testing.assert_allclose(run.model(x), model(x), rtol=1e-5, atol=1e-6)  # float32: the same up to rounding


def test_a_bare_model_file_has_no_task(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "model.npz")
    run = load_run(tmp_path / "model.npz")
    assert run.task is None and run.data is None and run.train_cfg is None and run.step is None
    assert run.model_cfg == model.cfg
    x = np.random.default_rng(2).uniform(-1, 1, (3, 7))
    np.testing.assert_array_equal(run.model(x), model(x))


def test_files_that_are_no_minigpt_checkpoint_are_refused(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError):
        load_run(tmp_path / "junk.npz")
    save_checkpoint(tmp_path / "other.npz", {"w": np.zeros(3)}, {"note": "no model config"})
    with pytest.raises(ValueError, match="not a minigpt checkpoint"):
        load_run(tmp_path / "other.npz")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_run(tmp_path / "missing")
