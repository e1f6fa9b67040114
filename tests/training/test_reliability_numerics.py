"""Numerical faults: a non-finite loss, gradient, parameter or optimizer moment stops training with
the step, the first non-finite tensor and a hint, keeps the last good checkpoint and exits non-zero;
priors that overflow the model's dtype are refused when the configuration is built."""
import dataclasses

import numpy as np
import pytest

from minigpt.tasks import presets
from minigpt.io.checkpoint import load_checkpoint
from minigpt.cli import main
from minigpt.nn.config import ModelConfig, TrainConfig
from minigpt.tasks.data import AffineRecurrence
from minigpt.training.loop import NonFiniteError, TrainingError, train

MCFG = ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=6)
TCFG = TrainConfig(steps=12, batch_size=8, eval_every=3, eval_size=16, checkpoint_every=2, warmup_steps=1)
TASK = AffineRecurrence(length=6)


def test_huge_lr_without_layernorm_stops_with_step_tensor_hint_and_keeps_checkpoint(tmp_path):
    spec = presets.apply_overrides(presets.get_preset("tiny"), [
        "model.normalization_type=null", "train.lr=10", "train.grad_clip=0", "train.checkpoint_every=1", "train.eval_size=16"])
    mcfg, tcfg, task = presets.build(spec)
    with pytest.raises(NonFiniteError) as e:
        train(mcfg, tcfg, task, out_dir=tmp_path / "run", progress=False)
    err = e.value
    msg = str(err)
    assert f"at step {err.step}" in msg and err.tensor in msg and "Hint:" in msg and "is kept" in msg
    assert err.step > 1 and err.checkpoint_step == err.step - 1
    arrays, meta = load_checkpoint(tmp_path / "run" / "checkpoint.npz")  # the last good one: loads and is finite
    assert meta["step"] == err.checkpoint_step
    assert all(np.isfinite(a).all() for a in arrays.values())


def test_cli_nonfinite_exits_1_with_one_line(tmp_path, capsys):
    argv = ["train", "--preset", "tiny", "--quiet", "--out", str(tmp_path / "run"), "--set", "model.normalization_type=null",
            "--set", "train.lr=10", "--set", "train.grad_clip=0", "--set", "train.checkpoint_every=1", "--set", "train.eval_size=16"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err  # no numpy RuntimeWarnings either
    assert "non-finite" in err and "at step" in err and "Hint:" in err and "last good checkpoint" in err


@pytest.mark.parametrize(
    "value, step, saved, what",
    [(np.inf, 6, 4, "before saving: blocks.0.mlp.W_in"), (np.nan, 6, 4, "blocks.0.mlp.W_in"), (3e38, 7, 6, "")],
)
def test_injected_fault_in_a_parameter(tmp_path, value, step, saved, what):
    """A parameter corrupted mid-run (by a callback, as a bad update would): NaN/inf is caught before it
    is saved; a finite but huge value makes the next step overflow."""

    def corrupt(step, model, rec):
        if step == 6:
            model.params["blocks.0.mlp.W_in"][0, 0] = value

    tcfg = dataclasses.replace(TCFG, eval_every=1)
    with pytest.raises(NonFiniteError) as e:
        train(MCFG, tcfg, TASK, out_dir=tmp_path / "run", progress=False, callbacks=[corrupt])
    assert (e.value.step, e.value.checkpoint_step) == (step, saved) and what in str(e.value)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")[1]["step"] == saved


def test_nonfinite_optimizer_moment_is_caught_before_it_is_saved(tmp_path, monkeypatch):
    """g*g overflowing float32 in AdamW's second moment (params stay finite!) must not be saved."""
    from minigpt.nn import optim

    real_step = optim.AdamW.step

    def step(self, grads, lr=None):
        real_step(self, grads, lr)
        if self.t == 3:
            self.v["unembed.b_U"][...] = np.inf

    monkeypatch.setattr(optim.AdamW, "step", step)
    with pytest.raises(NonFiniteError, match=r"opt\.v/unembed\.b_U at step 3") as e:
        train(MCFG, TCFG, TASK, out_dir=tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.npz")[1]["step"] == 2 == e.value.checkpoint_step


def test_nonfinite_training_data_is_caught(tmp_path, monkeypatch):
    """If the overflow check is bypassed, float32 data that overflows is caught at the first step."""
    monkeypatch.setattr(presets, "check_overflow", lambda task, cfg: None)
    task = AffineRecurrence(x0=("uniform", 1e39, 1e39), length=6)
    with pytest.raises(NonFiniteError, match="held-out data"):
        train(MCFG, TCFG, task, progress=False)

    class Flaky(AffineRecurrence):  # fine for the held-out set and 3 steps, then a sequence overflows
        calls = 0

        def sample(self, batch, rng, dtype=np.float64):
            Flaky.calls += 1
            out = super().sample(batch, rng, dtype)
            if Flaky.calls == 5:
                out.x[0, 3] = 1e39
            return out

    with pytest.raises(NonFiniteError, match="training data .* at step 4"):
        train(MCFG, TCFG, Flaky(length=6), out_dir=tmp_path / "run", progress=False)


# ---------------------------------------------------------------- overflow refused at config time
OVERFLOWING = [
    dict(a=("uniform", -3, 3), length=40),  # 3^39 ~ 4e18
    dict(a=("normal", 0, 1), length=30),  # 8 sigma: 8^29
    dict(x0=("uniform", 1e16, 1e16), length=4),
    dict(b=("normal", 0, 1e15), length=4),
]


@pytest.mark.parametrize("data", OVERFLOWING)
def test_overflowing_priors_are_refused_by_build_train_and_cli(tmp_path, capsys, data):
    spec = presets.get_preset("tiny")
    spec["data"].update(data)
    spec["model"]["n_ctx"] = max(spec["model"]["n_ctx"], data["length"])
    with pytest.raises(ValueError, match="overflow"):
        presets.build(spec)
    mcfg = ModelConfig(**spec["model"])
    with pytest.raises(ValueError, match="overflow"):
        train(mcfg, TCFG, AffineRecurrence(**spec["data"]), progress=False)
    argv = ["train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--set", f"model.n_ctx={spec['model']['n_ctx']}"]
    argv += [x for k, v in data.items() for x in ("--set", f"data.{k}={list(v) if isinstance(v, tuple) else v}".replace("'", '"'))]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "overflow" in err and "data.length" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_same_priors_fit_in_float64_and_bounded_priors_are_accepted():
    spec = presets.get_preset("tiny")
    spec["data"].update(a=("uniform", -3, 3), length=40)
    spec["model"].update(n_ctx=40, dtype="float64")
    presets.build(spec)
    ok = presets.get_preset("tiny")
    ok["data"].update(x0=("normal", 0, 1), a=("normal", 0, 0.5), b=("normal", 0, 1))  # |a| <= 4 at 8 sigma: 4^9
    presets.build(ok)


def test_overflow_bound_covers_samples():
    task = AffineRecurrence(a=("uniform", -1.5, 1.5), b=("normal", 0, 2), x0=("normal", 1, 1), length=12, noise=0.1)
    x = task.sample(20000, np.random.default_rng(0)).x
    assert np.abs(x).max() <= presets.term_bound(task)


def test_training_error_is_a_training_error():
    assert issubclass(NonFiniteError, TrainingError)
