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
    (out / "REPORT.md").write_text("full report\n")
    assert cli_main(["reproduce", "--quick", "--out", str(out), "--workers", "1", "--quiet"]) == 0
    assert (out / "REPORT.md").read_text() == "full report\n"  # --quick never overwrites the full report
    qdir = out / "quick"
    text = (qdir / "REPORT.md").read_text()
    assert "| claim | operational test | result per seed | verdict |" in text
    assert "Layer 0 forms an initial estimate by copying" in text and "negative similarity" in text.lower()
    assert not (out / "figures").exists()
    figs = os.listdir(qdir / "figures")
    assert "tiny_s0_attention.png" in figs and "tiny_s0_mse.png" in figs and "training_curves.png" in figs
    assert "tiny_mse_theory_summary.png" in figs and "tiny_s0_mse_theory.png" in figs
    assert "### Idealised-head fits" in text and "| seed | head | role | beta |" in text
    assert "Closed forms against measurements" in text and "Bayes floor" in text
    for line in text.splitlines():  # every figure the report links exists
        if line.startswith("!["):
            assert (qdir / line.rsplit("(", 1)[1].rstrip(")")).exists(), line


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


def test_rerender_from_analyses_handles_missing_fields_and_links_sweep(tmp_path):
    """rerender() rewrites REPORT.md from saved analysis.json files; fields added later (fits, closed forms,
    bands) may be absent; the sweep table and extensions.md are linked when present."""
    out, runs = tmp_path / "report", tmp_path / "runs"
    args = ["reproduce", "--preset", "tiny", "--seeds", "1", "--steps", "10", "--alternatives", "never", "--workers", "1",
            "--out", str(out), "--runs", str(runs), "--quiet"]
    assert cli_main(args) == 0
    p = runs / "tiny" / "seed0" / "analysis.json"
    res = json.load(open(p))
    assert res["idealised_fits"] and res["closed_vs_mc"]["n_compared"] > 0 and "model" in res["mse_band"]
    roles = [r for f in res["idealised_fits"] for r in f["roles"]]
    assert "L0 best copy score" in roles and any(r.endswith("most important") for r in roles)
    for k in ("idealised_fits", "baseline_closed", "closed_vs_mc", "mse_band"):
        res.pop(k)
    json.dump(res, open(p, "w"))
    (out / "extensions.md").write_text("## Beyond the paper\n")
    os.makedirs(runs / "sweep")
    json.dump([{"setting": "paper", "seed": s, "copy_l0": s < 3, "claim_copy": False, "claim_copy_resid": True, "ns_any_last": True,
                "claim_ns_any": s == 0} for s in range(4)], open(runs / "sweep" / "sweep.json", "w"))
    (out / "sweep.md").write_text("# Sweep\n")
    from minigpt.reproduce import rerender

    text = open(rerender(str(runs), str(out), settings=["tiny"])).read()
    assert "## Setting `tiny`" in text and "no idealised-head fits" in text
    assert "[`sweep.md`](sweep.md)" in text and "3/4 [" in text and "(extensions.md)" in text
