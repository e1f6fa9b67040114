"""minigpt.experiments.report: the verdict wording counts the seeds where each claim holds, and the sweep section
reads the same table from the sweep's JSON or from its markdown, or says why it has none (whole reports:
tests/experiments/test_reproduce.py)."""
import json
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


def _result(folder, setting, seed, copy, similar, dissimilar, term="x_t-1"):
    row = {"run": f"{setting}/seed{seed}", "setting": setting.split("-")[0], "seed": seed, "v2_copy": copy,
           "v2_copy_heads": f"L0H0({term})" if copy else "", "v2_ns_similar": similar, "v2_ns_dissimilar": dissimilar,
           "v2_refines": False, "copy_l0": copy, "ns_anti_last": True}
    path = os.path.join(folder, setting, f"seed{seed}")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "result.json"), "w") as f:
        json.dump({"row": row}, f)


def test_load_results_orders_seeds_numerically_and_skips_unfinished(tmp_path):
    for s in (10, 2, 0):
        _result(str(tmp_path), "paper-abc", s, True, False, False)
    os.makedirs(tmp_path / "paper-abc" / "seed11")  # a run without its result.json: not finished, not a row
    assert [r["seed"] for r in sweep.load_results(str(tmp_path))] == [0, 2, 10]
    assert sweep.load_results(str(tmp_path / "nothing")) == []


def test_verdict_words_name_the_wilson_interval():
    assert report.verdict_word(50, 62) == "holds in most seeds"  # [0.69, 0.89] lies above 1/2
    assert report.verdict_word(27, 62) == "holds in about half of the seeds"  # [0.32, 0.56] straddles 1/2
    assert report.verdict_word(12, 62) == "holds in a minority of seeds"  # [0.11, 0.31]
    assert report.verdict_word(2, 62) == "rarely holds"  # [0.01, 0.11]
    assert report.verdict_word(5, 5) == "holds in most seeds" and report.verdict_word(4, 5) == "holds in about half of the seeds"
    assert report.verdict_word(0, 0) == "not measured"


def test_the_verdict_section_counts_the_committed_results(tmp_path):
    root, out = tmp_path / "report", tmp_path / "report"
    assert "No definitions-v2 sweep results yet" in "\n".join(report.verdict_section(str(out), str(root)))
    paper, alt = str(root / "sweep_v2" / "results"), str(root / "sweep_v2_alt" / "results")
    # paper: 8 seeds; copy in 0-6 (seed 6 copies x_t-2), similar in 0-2, dissimilar in 3 and 7 -> both in 0-3
    for s in range(8):
        _result(paper, "paper-abc", s, s < 7, s < 3, s in (3, 7), term="x_t-2" if s == 6 else "x_t-1")
    _result(alt, "paper-def", 0, True, True, False, term="x_t")  # copies x_t: not counted among paper's terms
    alt_row = json.load(open(os.path.join(alt, "paper-def", "seed0", "result.json")))
    alt_row["row"]["setting"] = "paper model.attn_only=true"
    json.dump(alt_row, open(os.path.join(alt, "paper-def", "seed0", "result.json"), "w"))
    text = "\n".join(report.verdict_section(str(out), str(root)))
    lo, hi = sweep.wilson(7, 8)
    assert f"| `paper` | 8 | **{report.verdict_word(7, 8)}**: 7/8 [{lo:.2f}, {hi:.2f}] |" in text
    lo, hi = sweep.wilson(4, 8)
    assert f"**{report.verdict_word(4, 8)}**: 4/8 [{lo:.2f}, {hi:.2f}] | x_t-1 6, x_t-2 1 |" in text  # both claims; terms
    assert "| `paper model.attn_only=true` | 1 |" in text


def test_the_verdict_section_carries_the_refinement_tables(tmp_path):
    root = tmp_path / "report"
    _result(str(root / "sweep_v2" / "results"), "paper-abc", 0, True, True, False)
    (root / "refinement.md").write_text("\n".join([
        "# What the refinement computes", "", "## The trained last-layer heads", "", "| head | beta |", "|---|---|", "| L2H0 | 0.1 |", "",
        "## The theory's pattern substituted into the trained heads", "", "| head | recovered |", "|---|---|", "| L2H0 | 0.3 |", "",
        "## The best single head in theory (same prior, exact quadrature)", "", "| estimate | MSE |", "|---|---|", "| copy | 0.06 |", "",
        "## Reading", "", "It reproduces none of them.", ""]))
    (root / "substitution.md").write_text("# Over seeds\n\n## Summary\n\n| heads | reproduced |\n|---|---|\n| all | 3/9 |\n\n## Per head\n\n| seed |\n")
    text = "\n".join(report.verdict_section(str(root), str(root)))
    order = [text.index(s) for s in ("| L2H0 | 0.1 |", "| L2H0 | 0.3 |", "| copy | 0.06 |", "It reproduces none of them.", "| all | 3/9 |")]
    assert "| seed |" not in text  # the per-head table stays in substitution.md
    assert order == sorted(order)
