"""minigpt reproduce: --quick on a shipped-style checkpoint, and a full run of the tiny preset in spawn workers."""
import json
import os
import shutil

import numpy as np
import pytest

from minigpt import presets
from minigpt.cli import main as cli_main
from minigpt.training import train


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    spec = presets.apply_overrides(presets.get_preset("tiny"), ["train.steps=30", "data.length=6", "model.n_ctx=6"])
    mcfg, tcfg, task = presets.build(spec)
    train(mcfg, tcfg, task, out_dir=str(d / "run"), progress=False)
    return str(d / "run" / "checkpoint.npz")


def test_quick_writes_report_and_figures(tmp_path, tiny_ckpt):
    out = tmp_path / "report"
    os.makedirs(out / "checkpoints")
    shutil.copy(tiny_ckpt, out / "checkpoints" / "tiny_s0.npz")
    assert cli_main(["reproduce", "--quick", "--out", str(out), "--workers", "1", "--quiet"]) == 0
    text = (out / "REPORT.md").read_text()
    assert "| claim | operational test | result per seed | verdict |" in text
    assert "Layer 0 forms an initial estimate by copying" in text and "negative similarity" in text.lower()
    figs = os.listdir(out / "figures")
    assert "tiny_s0_attention.png" in figs and "tiny_s0_mse.png" in figs and "training_curves.png" in figs
    for line in text.splitlines():  # every figure the report links exists
        if line.startswith("!["):
            assert (out / line.rsplit("(", 1)[1].rstrip(")")).exists(), line


def test_quick_without_checkpoints_is_a_clean_error(tmp_path, capsys):
    assert cli_main(["reproduce", "--quick", "--out", str(tmp_path)]) == 1
    assert "no checkpoints" in capsys.readouterr().err


def test_full_run_in_spawn_workers(tmp_path):
    out, runs = tmp_path / "report", tmp_path / "runs"
    args = ["reproduce", "--preset", "tiny", "--seeds", "2", "--steps", "15", "--alternatives", "never", "--workers", "2",
            "--out", str(out), "--runs", str(runs), "--quiet"]
    assert cli_main(args) == 0
    res = json.load(open(runs / "tiny" / "seed1" / "analysis.json"))
    assert res["seed"] == 1 and res["step"] == 15 and res["trained_now"]
    assert np.array(res["ablation"]["zero"]["table"]).shape == (3, 2)
    assert "## Setting `tiny`" in (out / "REPORT.md").read_text()
    # a second run reuses the checkpoints
    from minigpt.reproduce import _jobs, run_job

    job = _jobs("tiny", [], 2, 15, str(runs), str(tmp_path / "figs"), figures_for=0, preset="tiny")[1]
    assert not run_job(job)["trained_now"]
