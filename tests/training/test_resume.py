"""Exact resume: a run stopped after any step (Ctrl-C, a crash, SIGKILL of the process) and resumed
with ``--resume`` ends bitwise identical to the uninterrupted run: parameters, AdamW moments and step
count, data RNG state, evaluation history and the metrics file."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigpt.io.checkpoint import load_checkpoint
from minigpt.cli import main
from minigpt.nn.config import ModelConfig, TrainConfig
from minigpt.tasks.data import AffineRecurrence
from minigpt.training.loop import TrainingError, TrainingInterrupted, train

MCFG = ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=6)
TCFG = TrainConfig(steps=12, batch_size=8, eval_every=1, eval_size=16, checkpoint_every=5, warmup_steps=3)
TASK = AffineRecurrence(length=6)
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run_state(run):
    """Everything a run leaves behind, for bitwise comparison."""
    arrays, meta = load_checkpoint(os.path.join(run, "checkpoint.npz"))
    meta = {k: v for k, v in meta.items() if k != "sha256"}
    with open(os.path.join(run, "metrics.jsonl")) as f:
        metrics = f.read()
    with open(os.path.join(run, "config.json")) as f:
        config = f.read()
    return {k: v.tobytes() for k, v in arrays.items()}, meta, metrics, config


def assert_same_run(a, b):
    arrays_a, meta_a, metrics_a, config_a = run_state(a)
    arrays_b, meta_b, metrics_b, config_b = run_state(b)
    assert arrays_a.keys() == arrays_b.keys()
    diff = [k for k in arrays_a if arrays_a[k] != arrays_b[k]]
    assert not diff, f"arrays differ: {diff[:5]}"
    assert meta_a == meta_b  # step, optimizer step count, RNG state, configs, history
    assert metrics_a == metrics_b
    assert config_a == config_b


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "run"
    train(MCFG, TCFG, TASK, out_dir=d, progress=False)
    return d


@pytest.mark.parametrize("stop_at", range(1, TCFG.steps))
def test_ctrl_c_at_any_step_then_resume_is_bitwise(reference, tmp_path, stop_at):
    """SIGINT delivered in the middle of step ``stop_at``'s bookkeeping: the step completes, a
    checkpoint is written, TrainingInterrupted is raised; resuming ends identical."""
    run = tmp_path / "run"

    def ctrl_c(step, model, rec):
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as e:
        train(MCFG, TCFG, TASK, out_dir=run, progress=False, callbacks=[ctrl_c])
    assert e.value.step == stop_at and e.value.saved and e.value.exit_status == 130
    assert load_checkpoint(run / "checkpoint.npz")[1]["step"] == stop_at
    train(MCFG, TCFG, TASK, out_dir=run, resume=True, progress=False)
    assert_same_run(reference, run)


@pytest.mark.parametrize("crash_at", [1, 5, 6, 9, 11, 12])
def test_crash_then_resume_from_last_periodic_checkpoint_is_bitwise(reference, tmp_path, crash_at):
    """A crash (any exception; stands for a kill) loses the steps after the last checkpoint; the
    metrics lines written after it are dropped on resume."""
    run = tmp_path / "run"

    def crash(step, model, rec):
        if step == crash_at:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        train(MCFG, TCFG, TASK, out_dir=run, progress=False, callbacks=[crash])
    last = (crash_at - 1) // TCFG.checkpoint_every * TCFG.checkpoint_every  # callbacks run before the save
    if last == 0:
        assert not (run / "checkpoint.npz").exists()
        with pytest.raises(TrainingError, match="no checkpoint"):
            train(MCFG, TCFG, TASK, out_dir=run, resume=True, progress=False)
        train(MCFG, TCFG, TASK, out_dir=run, force=True, progress=False)
    else:
        assert load_checkpoint(run / "checkpoint.npz")[1]["step"] == last
        assert len((run / "metrics.jsonl").read_text().splitlines()) == crash_at  # lines past the checkpoint
        train(MCFG, TCFG, TASK, out_dir=run, resume=True, progress=False)
    assert_same_run(reference, run)


def test_second_ctrl_c_stops_at_once_and_keeps_last_checkpoint(reference, tmp_path):
    run = tmp_path / "run"

    def hard_stop(step, model, rec):
        if step == 7:
            raise KeyboardInterrupt  # as a second Ctrl-C would, mid-step

    with pytest.raises(TrainingInterrupted) as e:
        train(MCFG, TCFG, TASK, out_dir=run, progress=False, callbacks=[hard_stop])
    assert not e.value.saved and e.value.step == 5
    train(MCFG, TCFG, TASK, out_dir=run, resume=True, progress=False)
    assert_same_run(reference, run)


def test_resume_of_a_finished_run_changes_nothing(reference, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    train(MCFG, TCFG, TASK, out_dir=run, resume=True, progress=False)
    assert_same_run(reference, run)


def test_resume_with_other_settings_is_refused(reference, tmp_path):
    import dataclasses
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    with pytest.raises(TrainingError, match=r"train config differs .*train\.lr"):
        train(MCFG, dataclasses.replace(TCFG, lr=0.5), TASK, out_dir=run, resume=True, progress=False)
    with pytest.raises(TrainingError, match=r"model config differs .*model\.d_mlp"):
        train(dataclasses.replace(MCFG, d_mlp=4), TCFG, TASK, out_dir=run, resume=True, progress=False)
    with pytest.raises(TrainingError, match=r"data config differs .*data\.noise"):
        train(MCFG, TCFG, AffineRecurrence(length=6, noise=0.1), out_dir=run, resume=True, progress=False)


# ---------------------------------------------------------------- real processes
def _cli(*args):
    return [sys.executable, "-m", "minigpt.cli", *args]


TINY = ["--preset", "tiny", "--quiet", "--set", "train.steps=150", "--set", "train.checkpoint_every=7",
        "--set", "train.eval_every=10", "--set", "train.eval_size=64"]


def _wait_for(path, proc, timeout=60):
    t0 = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None or time.time() - t0 > timeout:
            return False
        time.sleep(0.005)
    return True


def test_sigkill_mid_run_then_resume_is_bitwise(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    uninterrupted = subprocess.Popen(_cli("train", "--out", str(ref), *TINY), env=ENV, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(_cli("train", "--out", str(run), *TINY), env=ENV, stderr=subprocess.PIPE, text=True)
    assert _wait_for(run / "checkpoint.npz", victim), victim.communicate()[1]
    time.sleep(0.05)  # let it run on: the kill lands between checkpoints, or while one is written
    victim.send_signal(signal.SIGKILL)
    victim.wait(60)
    assert victim.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    step = load_checkpoint(run / "checkpoint.npz")[1]["step"]
    assert 0 < step < 150
    print(f"killed with a checkpoint at step {step} of 150")
    r = subprocess.run(_cli("train", "--out", str(run), "--resume", "--quiet"), env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert uninterrupted.wait(120) == 0, uninterrupted.communicate()[1]
    assert_same_run(ref, run)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_or_sigterm_saves_checkpoint_and_exits_128_plus_signal(tmp_path, sig, status):
    run = tmp_path / "run"
    args = ["--preset", "tiny", "--quiet", "--set", "train.steps=100000", "--set", "train.checkpoint_every=5", "--set", "train.eval_size=64"]
    proc = subprocess.Popen(_cli("train", "--out", str(run), *args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(run / "checkpoint.npz", proc), proc.communicate()[1]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert len(err.splitlines()) == 1 and "interrupted" in err and "--resume" in err, err
    step = load_checkpoint(run / "checkpoint.npz")[1]["step"]
    assert f"step {step}" in err and 5 <= step < 100000
    with open(run / "metrics.jsonl") as f:
        assert all(json.loads(ln)["step"] <= step for ln in f)


def test_cli_resume_and_run_folder_rules(tmp_path, capsys):
    run = str(tmp_path / "run")
    small = ["--preset", "tiny", "--quiet", "--set", "train.steps=4", "--set", "train.eval_size=16"]

    def status(*argv):
        capsys.readouterr()
        s = main(list(argv))
        err = capsys.readouterr().err
        if s != 0:
            assert len(err.splitlines()) == 1, err
        return s, err

    assert status("train", "--out", run, "--resume", "--quiet")[0] == 1  # nothing to resume
    assert status("train", "--out", run, *small)[0] == 0
    before = open(os.path.join(run, "checkpoint.npz"), "rb").read()
    s, err = status("train", "--out", run, *small)
    assert s == 1 and "already holds a run" in err
    assert open(os.path.join(run, "checkpoint.npz"), "rb").read() == before  # untouched
    s, err = status("train", "--out", run, "--resume", "--force", "--quiet")
    assert s == 2 and "contradict" in err
    s, err = status("train", "--out", run, "--resume", "--set", "train.steps=8")
    assert s == 2 and "drop --preset and --set" in err
    assert status("train", "--out", run, "--resume", "--quiet")[0] == 0
    assert status("train", "--out", run, "--force", *small, "--set", "train.seed=3")[0] == 0
    assert load_checkpoint(os.path.join(run, "checkpoint.npz"))[1]["train"]["seed"] == 3
    np.testing.assert_equal(json.load(open(os.path.join(run, "config.json")))["train"]["seed"], 3)
