"""minigpt.experiments.report: the verdict wording counts the seeds where each claim holds, and the sweep section
reads the same table from the sweep's JSON or from its markdown, or says why it has none (whole reports:
tests/experiments/test_reproduce.py)."""
import os

from minigpt.experiments import report, sweep


def analysis(copy, copy_resid, negsim):
    """The part of an ``analysis.analyse`` result the verdicts read."""
    return {"claims": {"copy": {"holds": copy}, "copy_resid": {"holds": copy_resid}, "negsim_any_holds": any(negsim.values()),
                       "negsim": {reading: {"holds": negsim[reading]} for reading in report.READINGS}}}


def test_verdicts_count_the_seeds_where_each_claim_holds():
    results = [analysis(True, True, {"logit": True, "ov": False, "anti": False}),
               analysis(True, False, {"logit": True, "ov": False, "anti": True}),
               analysis(True, False, {"logit": False, "ov": False, "anti": False})]
    v = report.verdicts(results)
    assert v["copy"]["text"] == "**holds** (3/3 seeds)" and v["copy"]["all"]
    assert v["copy_resid"]["text"] == "**rarely holds** (1/3 seeds)"
    assert v["negsim_logit"]["text"] == "**mostly holds** (2/3 seeds)"
    assert v["negsim_ov"]["text"] == "**does not hold** (0/3 seeds)" and not v["negsim_ov"]["all"]
    assert (v["negsim"]["k"], v["negsim_anti"]["k"]) == (2, 1)


def sweep_rows():
    """Four finished seeds of one setting; copying in layer 0 in three of them."""
    rows = []
    for seed in range(4):
        r = {"run": f"a/seed{seed}", "setting": "a", "seed": seed, "train.steps": 10, "train.eval_every": 5, "mse_t2": 0.1,
             "copy_mse_t2": 1.0, "bayes_mse_t2": None}
        r.update({c: False for c, _ in sweep.MECHANISM_COLUMNS}, copy_l0=seed < 3)
        rows.append(r)
    return rows


def test_the_sweep_section_reads_the_same_table_from_json_or_markdown(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "report"
    os.makedirs(runs / "sweep")
    rows = sweep_rows()
    sweep.write_table(rows, str(runs / "sweep"))
    sweep.write_report(rows, str(out))
    from_json = report.sweep_section(str(out), str(out), str(runs))
    lo, hi = sweep.wilson(3, 4)
    assert f"| `a` | 4 | 3/4 [{lo:.2f}, {hi:.2f}] | 0/4 [" in "\n".join(from_json)
    os.remove(runs / "sweep" / "sweep.json")
    assert report.sweep_section(str(out), str(out), str(runs)) == from_json  # the markdown gives the same text


def test_the_sweep_section_without_a_readable_table(tmp_path):
    lines = report.sweep_section(str(tmp_path), str(tmp_path), str(tmp_path / "runs"))
    assert any(line.startswith("No sweep results yet") for line in lines)
    os.makedirs(tmp_path / "runs" / "sweep")
    (tmp_path / "runs" / "sweep" / "sweep.json").write_text("[{")  # half written
    lines = report.sweep_section(str(tmp_path), str(tmp_path), str(tmp_path / "runs"))
    assert any(line.startswith("(could not read the sweep's table: JSONDecodeError") for line in lines)
