"""minigpt.training.loop: training on every task, ..."""
from minigpt.tasks import baselines_ext, presets


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
