"""minigpt.experiments.pool: the worker pool's map, the checkpoint state a run is reused by, and runs computing one shard per step."""


def test_reproduce_and_sweep_runs_use_one_shard(tmp_path, monkeypatch):
    """Runs started by the runner (``minigpt reproduce``/``sweep``) compute one shard per step, so their
    numbers do not depend on the worker count or the machine's cores."""
    from minigpt.experiments import pool as runner
    from minigpt.tasks import presets

    seen = []
    real = runner.train

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train", spy)
    spec = presets.apply_overrides(presets.get_preset("tiny"), ["train.steps=3", "train.eval_every=3"])
    assert runner.train_or_reuse(spec, str(tmp_path / "run"))[0] == "trained"
    assert seen == [1]
