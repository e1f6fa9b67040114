"""``minigpt sweep``: a grid of presets x override sets x seeds.  Every run trains (with an emergence probe
every K steps, ``minigpt.experiments.emergence``), saves its checkpoint, runs the full per-model analysis
(``minigpt.experiments.analysis.analyse``: head scores, ablations, lens, patching, claim tests) and yields one
row of a table written as ``sweep.csv`` and ``sweep.json`` in the sweep folder.

Layout of ``--out`` (default ``runs/sweep``)::

    sweep.csv, sweep.json            one row per run (config, final MSE, mechanism flags, claim tests, onsets)
    <preset>-<hash>/setting.json     the setting (preset, overrides) the hash stands for
    <preset>-<hash>/seed<s>/         checkpoint.npz, metrics.jsonl, config.json (the training run),
                                     emergence.json + emergence.png, analysis.json, result.json

Execution: a local ``spawn`` process pool with one BLAS thread per worker (``minigpt.experiments.pool``, default: all
cores), or ``--dask ADDRESS`` to send the same runs to a Dask distributed scheduler (``pip install
"minigpt[dask]"``; workers must see the ``--out`` folder, i.e. a shared file system, and should be started
with ``OPENBLAS_NUM_THREADS=1`` and one thread each).  ``--dask local`` starts a ``LocalCluster``.

Resuming: a run whose ``result.json`` matches its spec is never redone (its row is read back); a run with
a partial checkpoint resumes training from it (exactly, see ``minigpt.training``), keeping the emergence
records measured so far; a finished checkpoint without a result is only re-analysed.  So rerunning the
same command after an interruption finishes the sweep.

``write_report(table, out_dir)`` writes ``out_dir/sweep.md``: per setting, the share of seeds showing each
mechanism with a 95% Wilson interval, onset steps, and the emergence plots.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import shlex
import sys
import time

from ..fast.model import Transformer
from ..io.checkpoint import (
    FolderInUseError,
    FolderLock,
    load_checkpoint,
    remove_stale_temps,
    write_text_atomic,
)
from ..tasks import presets
from ..training.loop import TrainingInterrupted, write_json
from ..training.run import load_run
from . import emergence
from .analysis import analyse
from .pool import checkpoint_state, pool_map, single_thread_env, train_or_reuse

SWEEP_DIR = "runs/sweep"
DEFAULT_PROBES = 20  # emergence probes per run when --every is not given: every = steps // 20
PROBE_N = 256  # sequences in the emergence probe batch
SMALL_ANALYSIS = dict(n_eval=512, n_scores=256, n_abl=256, n_patch=64, n_claims=256)  # --small-analysis
RESULT, ANALYSIS, EMERGENCE = "result.json", "analysis.json", "emergence.json"
# (column, description) of every mechanism in the table and the report; "last" = layer n_layers - 1 (layer 2 of the paper's model)
MECHANISM_COLUMNS = (
    ("v2_copy", "**verdict, claim 1** (docs/interp.md, definitions v2): a layer-0 head attends >= 0.5 to one term, its output carries "
                "that term beyond the other terms (partial R^2 >= 0.5) and resample-ablating it at least doubles the MSE at t >= 2"),
    ("v2_ns_similar", "**verdict, claim 2, similar row**: a last-layer head attends to keys similar to x_t (r_sim >= 0.3), writes against "
                      "what it reads (OV gain <= -0.2), matters (resample x2) and its selectivity matters (position-average pattern x1.5)"),
    ("v2_ns_dissimilar", "**verdict, claim 2, dissimilar row**: the same with r_sim <= -0.3"),
    ("v2_both", "**both claims**: `v2_copy` and (`v2_ns_similar` or `v2_ns_dissimilar`) in the same run"),
    ("v2_refines", "reported: a last-layer head's output correlates >= 0.3 with the error of the estimate entering the layer, given it"),
    ("copy_l0", "old reading (not counted): a layer-0 head is a copying head (copy score >= 0.5)"),
    ("claim_copy", "claim test: the best layer-0 copy head has copy >= 0.5 and resample-ablating it at least doubles the MSE over t >= 2"),
    ("claim_copy_resid", "residual reading: the linear probe after block 0 is closer to x_t than to x_{t+1}"),
    ("ns_logit_last", "a last-layer head is a negative similarity head, logit reading"),
    ("ns_ov_last", "... OV reading"),
    ("ns_anti_last", "... anti-copy reading"),
    ("ns_any_last", "... by any of the three readings"),
    ("claim_ns_logit", "claim test, logit reading: such a head exists and ablating it at least doubles the MSE over t >= 2"),
    ("claim_ns_ov", "claim test, OV reading"),
    ("claim_ns_anti", "claim test, anti-copy reading"),
    ("claim_ns_any", "claim test, any reading"),
)


# ----------------------------------------------------------------------------- the grid
def parse_grid(items):
    """``["model.attn_only=false|true", "data.length=10|20"]`` -> the list of override lists of their
    cartesian product (``[[]]`` for no items).  Values are separated by ``|``."""
    axes = []
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--grid {item!r} must look like section.field=V1|V2, e.g. model.attn_only=false|true")
        key, values = item.split("=", 1)
        vals = values.split("|")
        if not key or any(v == "" for v in vals):
            raise ValueError(f"--grid {item!r}: empty key or value")
        axes.append([f"{key}={v}" for v in vals])
    return [list(c) for c in itertools.product(*axes)]


def _canon(obj):
    return json.loads(json.dumps(obj, sort_keys=True))


def setting_dir(preset, spec_wo_seed):
    """Folder name of a setting: the preset and a hash of its full spec (without the seed)."""
    h = hashlib.sha1(json.dumps(_canon(spec_wo_seed), sort_keys=True).encode()).hexdigest()[:10]
    return f"{preset}-{h}"


def make_jobs(presets_=("paper",), override_sets=([],), seeds=1, out=SWEEP_DIR, first_seed=0, common=(), steps=None,
              every=None, probe_n=PROBE_N, analysis_kw=None, run_plots=True):
    """The jobs of a sweep: every preset x override set x seed.  ``common`` overrides apply to every run;
    ``steps`` is ``train.steps``; ``every`` is the emergence interval K (sets ``train.eval_every``; default
    ``steps // 20``).  Every field is validated here (ValueError) before anything runs."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    if first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {first_seed}")
    jobs, out = [], os.path.abspath(out)
    for preset in presets_:
        for ov in override_sets:
            ov = list(ov)
            base = list(common) + ov + ([f"train.steps={steps}"] if steps is not None else [])
            spec = presets.apply_overrides(presets.get_preset(preset), base)
            n_steps = int(spec["train"].get("steps", 3000))
            k = int(every) if every is not None else max(1, n_steps // DEFAULT_PROBES)
            if not 1 <= k <= n_steps:
                raise ValueError(f"--every must be between 1 and train.steps = {n_steps}, got {k}")
            spec["train"]["eval_every"] = k
            presets.build(spec)  # validate before any run starts
            sdir = setting_dir(preset, spec)
            label = " ".join([preset] + ov)
            for s in range(first_seed, first_seed + seeds):
                if any(j["run"] == f"{sdir}/seed{s}" for j in jobs):
                    continue  # the same setting twice (repeated --preset or --variant): one run folder, one run
                sp = presets.apply_overrides(spec, [f"train.seed={s}"])
                jobs.append(dict(run=f"{sdir}/seed{s}", run_dir=os.path.join(out, sdir, f"seed{s}"), setting=label, setting_dir=sdir,
                                 preset=preset, overrides=list(common) + ov, seed=s, spec=sp, every=k, probe_n=probe_n,
                                 analysis_kw=dict(analysis_kw or {}), run_plots=run_plots))
    return jobs


# ----------------------------------------------------------------------------- one run
def _flat_config(spec):
    out = {}
    for section in ("model", "train", "data"):
        for k, v in sorted(spec.get(section, {}).items()):
            out[f"{section}.{k}"] = json.dumps(list(v)) if isinstance(v, (list, tuple)) else v
    return out


def _full_spec(spec):
    mcfg, tcfg, task = presets.build(spec)
    return _canon({"model": mcfg.to_dict(), "train": tcfg.to_dict(), "data": task.spec()})


def finished_row(job):
    """The row of a finished run (its ``result.json`` matches the job's spec), else None."""
    path = os.path.join(job["run_dir"], RESULT)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            res = json.load(f)
        if res.get("spec") == _canon(job["spec"]) and res.get("every") == job["every"] and res.get("analysis_kw") == job["analysis_kw"]:
            return res["row"]
    except (OSError, ValueError, KeyError):
        pass
    return None


def run_job(job):
    """Train (or resume, or reuse) one run with the emergence probe, analyse it, write its files and return
    ``{"row": row, "state": "trained"|"resumed"|"reused"|"finished", "seconds": ...}``.  Runs in a worker."""
    single_thread_env()

    row = finished_row(job)
    if row is not None:
        return {"row": row, "state": "finished", "seconds": 0.0}
    t0 = time.time()
    run_dir, spec, seed = job["run_dir"], job["spec"], job["seed"]
    os.makedirs(run_dir, exist_ok=True)
    mcfg, tcfg, task = presets.build(spec)
    ckpt = os.path.join(run_dir, "checkpoint.npz")
    epath = os.path.join(run_dir, EMERGENCE)
    before = checkpoint_state(ckpt, mcfg, tcfg, task)
    if before is None:
        keep = None
    else:
        keep = int(load_checkpoint(ckpt)[1]["step"])
    probe = emergence.EmergenceProbe(task, seed, job["every"], final_step=tcfg.steps, n=job["probe_n"], path=epath, keep_until=keep)
    if before is None:
        probe.measure(0, Transformer(mcfg, seed=tcfg.seed))  # the initialisation train() starts from
    state, _ = train_or_reuse(spec, run_dir, callbacks=[probe])
    model = load_run(ckpt).model
    if not probe.has(tcfg.steps):
        probe.measure(tcfg.steps, model)
    t1 = time.time()
    res = analyse(model, task, seed=seed, figures=False, **job["analysis_kw"])
    res.update(run=job["run"], setting=job["setting"], seed=seed, config=_full_spec(spec))
    write_json(os.path.join(run_dir, ANALYSIS), res)
    emerg = emergence.summary(probe.records)
    if job.get("run_plots", True):
        emergence.plot_run(probe.records, os.path.join(run_dir, "emergence.png"), title=f"{job['setting']}, seed {seed}")
    row = make_row(job, res, emerg)
    write_json(os.path.join(run_dir, RESULT), {"row": row, "spec": _canon(spec), "every": job["every"], "analysis_kw": job["analysis_kw"],
                                                "state": state, "train_seconds": t1 - t0, "analysis_seconds": time.time() - t1})
    return {"row": row, "state": state, "seconds": time.time() - t0}


def run_job_safe(job):
    """``run_job`` that reports an exception as ``{"error": ...}`` instead of raising (one bad run does not
    stop the sweep; it is retried the next time the sweep runs).  Ctrl-C / SIGTERM still stop the sweep:
    ``TrainingInterrupted`` (the checkpoint is saved, so the rerun resumes) is raised, not reported."""
    try:
        return run_job(job)
    except TrainingInterrupted:
        raise
    except Exception as e:  # noqa: BLE001 - reported per run
        return {"error": f"{type(e).__name__}: {e}", "row": None, "state": "failed", "seconds": 0.0}


def make_row(job, res, emerg):
    """One table row from the analysis of a run and the summary of its emergence records."""
    mse = res["mse_by_pos"]["model"]
    L = res["n_layers"]
    cls, claims = res["classes"], res["claims"]
    row = {"run": job["run"], "setting": job["setting"], "preset": job["preset"], "overrides": " ".join(job["overrides"]), "seed": job["seed"]}
    row.update(_flat_config(res["config"]))
    row["mse"] = float(sum(mse) / len(mse))
    row["mse_t2"] = res["mse_t2"]["model"]
    row["copy_mse_t2"] = res["mse_t2"].get("copy")
    bayes = res.get("bayes_by_pos")
    row["bayes_mse_t2"] = float(sum(bayes[2:]) / len(bayes[2:])) if bayes and len(bayes) > 2 else None
    for t, v in enumerate(mse):
        row[f"mse_pos{t}"] = v
    heads = lambda key, l: " ".join(f"L{l}H{h}" for h, on in enumerate(cls[key][l]) if on)  # noqa: E731
    v2 = res.get("claims_v2")
    for key in ("copy", "ns_similar", "ns_dissimilar", "refines"):
        row[f"v2_{key}"] = None if v2 is None else v2[key]["holds"]
        row[f"v2_{key}_heads"] = "" if v2 is None else " ".join(h.replace(" ", "") for h in v2[key]["heads"])
    row["copy_l0"] = any(cls["copy"][0])
    row["copy_l0_heads"] = heads("copy", 0)
    for r in ("logit", "ov", "anti", "any"):
        row[f"ns_{r}_last"] = any(cls["ns_" + r][L - 1])
        row[f"ns_{r}_last_heads"] = heads("ns_" + r, L - 1)
    row["claim_copy"] = claims["copy"]["holds"]
    row["claim_copy_resid"] = claims["copy_resid"]["holds"]
    for r in ("logit", "ov", "anti"):
        row[f"claim_ns_{r}"] = claims["negsim"][r]["holds"]
    row["claim_ns_any"] = claims["negsim_any_holds"]
    row["copy_l0_score"] = claims["copy"]["copy_score"]
    row["copy_l0_ablation_ratio"] = claims["copy"]["ablation_ratio"]
    for m, s in emerg.items():
        row[f"onset_{m}"] = s["onset"]
        if s["jump"] is not None or m != "ns_any_last":
            row[f"jump_{m}"] = s["jump"]
    return row


# ----------------------------------------------------------------------------- the sweep
def _dask_map(fn, jobs, address, workers, on_result):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ValueError('--dask needs dask.distributed: pip install "minigpt[dask]"') from None
    cluster = None
    if isinstance(address, Client):
        client, own = address, False
    else:
        if address == "local":
            single_thread_env()
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
            address = cluster.scheduler_address
        client, own = Client(address), True
    try:
        futs = client.map(fn, jobs, pure=False)
        index = {f.key: i for i, f in enumerate(futs)}
        out = [None] * len(jobs)
        for f in as_completed(futs):
            i = index[f.key]
            out[i] = f.result()
            on_result(jobs[i], out[i])
        return out
    finally:
        if own:
            client.close()
        if cluster is not None:
            cluster.close()


def run_sweep(jobs, out=SWEEP_DIR, workers=None, dask=None, log=print):
    """Run the jobs not finished yet (local pool, or the Dask scheduler at ``dask``: an address, a
    ``Client``, or ``"local"``), write ``sweep.csv`` / ``sweep.json`` with the rows of every finished run in
    job order, and return ``(rows, stats)``; stats counts ``finished`` (before), ``trained``, ``resumed``,
    ``reused``, ``failed`` and lists the ``errors``.

    One sweep per folder: the sweep holds ``out``'s lock (``checkpoint.FolderLock``) while it runs; a second
    sweep into the same folder is refused at once (ValueError naming the holder's process id)."""
    os.makedirs(out, exist_ok=True)
    try:
        lock = FolderLock(out)
    except FolderInUseError as e:
        raise ValueError(f"sweep folder {e}") from None
    with lock:
        return _run_sweep_locked(jobs, out, workers, dask, log)


def _run_sweep_locked(jobs, out, workers, dask, log):
    remove_stale_temps(out)
    workers = workers or os.cpu_count() or 1
    rows = [finished_row(j) for j in jobs]
    pending = [j for j, r in zip(jobs, rows) if r is None]
    stats = {"finished": len(jobs) - len(pending), "trained": 0, "resumed": 0, "reused": 0, "failed": 0, "errors": []}
    for j in {j["setting_dir"]: j for j in jobs}.values():
        path = os.path.join(out, j["setting_dir"], "setting.json")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_json(path, {"setting": j["setting"], "preset": j["preset"], "overrides": j["overrides"], "every": j["every"],
                              "spec_seed0": {k: v for k, v in j["spec"].items()}})
    where = f"Dask scheduler {dask}" if dask is not None else f"{min(workers, max(1, len(pending)))} local worker(s)"
    log(f"sweep: {len(jobs)} run(s), {stats['finished']} finished already, {len(pending)} to run on {where} -> {out}")

    def done(job, r):
        if r.get("error"):
            stats["failed"] += 1
            stats["errors"].append(f"{job['run']}: {r['error']}")
            log(f"  FAILED {job['run']}: {r['error']}")
        else:
            stats[r["state"]] = stats.get(r["state"], 0) + 1
            log(f"  {r['state']} {job['run']} ({r['seconds']:.0f}s): MSE t>=2 {r['row']['mse_t2']:.3e}")

    if pending:
        results = _dask_map(run_job_safe, pending, dask, workers, done) if dask is not None else pool_map(run_job_safe, pending, workers, done)
        it = iter(results)
        rows = [r if r is not None else next(it)["row"] for r in rows]
    rows = [r for r in rows if r is not None]
    write_table(rows, out)
    return rows, stats


def write_table(rows, out):
    """``sweep.json`` (a list of rows) and ``sweep.csv`` (columns: the union, in first-seen order) in ``out``."""
    write_json(os.path.join(out, "sweep.json"), rows)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    write_text_atomic(os.path.join(out, "sweep.csv"), buf.getvalue())
    return os.path.join(out, "sweep.csv"), os.path.join(out, "sweep.json")


def run_folders(folder, name):
    """``[(setting folder, seed, run folder)]`` of every ``folder/<setting>/seed<s>/`` that holds the file ``name``, by
    setting folder then seed (numeric); ``[]`` when there are none."""
    out = []
    for sdir in sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))) if os.path.isdir(folder) else []:
        seeds = [d for d in os.listdir(os.path.join(folder, sdir)) if d.startswith("seed") and d[4:].isdigit()]
        for d in sorted(seeds, key=lambda d: int(d[4:])):
            run = os.path.join(folder, sdir, d)
            if os.path.exists(os.path.join(run, name)):
                out.append((os.path.join(folder, sdir), int(d[4:]), run))
    return out


def load_results(folder):
    """The rows of the finished runs kept as ``folder/<setting>/seed<s>/result.json`` (how a sweep's results are
    committed: ``report/sweep_v2/results``), by setting folder then seed; ``[]`` when there are none."""
    rows = []
    for _, _, run in run_folders(folder, RESULT):
        with open(os.path.join(run, RESULT)) as f:
            rows.append(json.load(f)["row"])
    return rows


def load_table(path):
    """Rows from ``sweep.json`` (or from the ``sweep.json`` next to a ``sweep.csv``, or in a sweep folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, "sweep.json")
    if path.endswith(".csv"):
        path = path[: -len(".csv")] + ".json"
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- the report
# columns the report derives from a row's own columns (a run's result.json keeps only what it measured)
DERIVED = {"v2_both": lambda r: None if None in (r.get("v2_copy"), r.get("v2_ns_similar"), r.get("v2_ns_dissimilar"))
           else bool(r["v2_copy"] and (r["v2_ns_similar"] or r["v2_ns_dissimilar"]))}
OVERVIEW = ("v2_copy", "v2_ns_similar", "v2_ns_dissimilar", "v2_both", "copy_l0", "ns_anti_last")  # one line per setting


def column(row, col):
    """A mechanism column of a row: stored, or derived (``DERIVED``) from the stored ones; None when not measured."""
    return DERIVED[col](row) if col in DERIVED else row.get(col)


def copied_terms(rows):
    """``{term: runs}``: which term the layer-0 heads that satisfy claim 1 copy (from ``v2_copy_heads``, e.g.
    ``L0H0(x_t-1)``); a run with two such heads copying different terms counts once for each term."""
    out = {}
    for r in rows:
        if column(r, "v2_copy"):
            for term in sorted(set(re.findall(r"\((x_[^)]*)\)", r.get("v2_copy_heads") or ""))):
                out[term] = out.get(term, 0) + 1
    return out


def copied_terms_text(rows):
    """``copied_terms`` as one line, most frequent first: ``"x_t-1 87, x_t-2 1"`` (``""`` when none)."""
    return ", ".join(f"{t} {n}" for t, n in sorted(copied_terms(rows).items(), key=lambda kv: -kv[1]))


def wilson(k, n, z=1.959963984540054):
    """95% Wilson score interval ``(low, high)`` for k successes in n trials."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def mechanism_shares(rows):
    """``{setting: {column: {"k", "n", "share", "low", "high"}}}`` for every mechanism column."""
    out = {}
    for setting, rs in _by_setting(rows).items():
        out[setting] = {}
        for col, _ in MECHANISM_COLUMNS:
            values = [column(r, col) for r in rs]
            flags = [bool(v) for v in values if v not in (None, "")]  # runs analysed before a column existed do not count
            k, n = sum(flags), len(flags)
            lo, hi = wilson(k, n)
            out[setting][col] = dict(k=k, n=n, share=k / n if n else 0.0, low=lo, high=hi)
    return out


def _by_setting(rows):
    g = {}
    for r in rows:
        g.setdefault(r["setting"], []).append(r)
    return g


def _median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else 0.5 * (v[m - 1] + v[m])


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if 1e-2 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"
    return str(v)


def write_report(table, out_dir, runs_dir=None, command=None):
    """Write ``out_dir/sweep.md`` (and its figures in ``out_dir/figures``) from a sweep table: a list of rows,
    or the path of ``sweep.json`` / ``sweep.csv`` / the sweep folder.  ``runs_dir`` (default: the folder of
    that path) holds the run folders with their ``emergence.json``.  Returns the path of ``sweep.md``."""
    if isinstance(table, (str, os.PathLike)):
        path = os.fspath(table)
        runs_dir = runs_dir or (path if os.path.isdir(path) else os.path.dirname(path))
        table = load_table(path)
    rows = list(table)
    if not rows:
        raise ValueError("the sweep table is empty: no finished runs to report")
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    shares = mechanism_shares(rows)
    lines = ["# Sweep: how often each mechanism forms, and when", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        "Each run trains from its own seed (initialisation, data stream, held-out set) and is analysed with the",
        "operational definitions of `docs/interp.md`: the verdict columns (`v2_*`, **bold**) by definitions v2",
        "(`minigpt.experiments.claims`), the earlier readings (`minigpt.interp.head_scores.classify_heads`, `analysis.claim_tests`)",
        "after them, kept for comparison and not counted (docs/interp.md says why).",
        "\"Last layer\" is layer n_layers - 1, i.e. layer 2 of the paper's three-layer model. Shares are over seeds,",
        "with 95% Wilson score intervals. Onset: the first emergence probe from which the flag stays on to the end.",
        "Largest jump: the largest change of the mechanism's strength between two consecutive probes as a share of",
        "its whole range over training (near 1: a phase change at this resolution; near 1/number of probes: gradual).",
        "Onsets and jumps are measured on the fixed emergence probe batch, the final flags on the larger analysis batch,",
        "so a flag near its threshold can differ between the two.",
        "",
    ]
    groups = _by_setting(rows)
    if len(groups) > 1:  # one overview line per setting
        lines += ["## Overview: share of seeds [95% interval]", "",
                  "Verdicts (definitions v2) first, then two earlier readings for comparison (not counted).", "",
                  "| setting | seeds | median MSE t>=2 | " + " | ".join(f"`{c}`" for c in OVERVIEW) + " |", "|---|---|---|" + "---|" * len(OVERVIEW)]
        for setting, rs in groups.items():
            cells = [f"{shares[setting][c]['k']}/{shares[setting][c]['n']} [{shares[setting][c]['low']:.2f}, {shares[setting][c]['high']:.2f}]" for c in OVERVIEW]
            lines.append(f"| `{setting}` | {len(rs)} | {_fmt(_median([r['mse_t2'] for r in rs]))} | " + " | ".join(cells) + " |")
        lines.append("")
    for setting, rs in groups.items():
        r0 = rs[0]
        steps = r0.get("train.steps")
        lines += [f"## Setting `{setting}`", "",
                  f"{len(rs)} seed(s) ({', '.join(str(r['seed']) for r in rs)}), {steps} steps, emergence probe every {r0.get('train.eval_every')} steps.", ""]
        m = [r["mse_t2"] for r in rs]
        ratios = [r["copy_mse_t2"] / r["mse_t2"] for r in rs if r.get("copy_mse_t2") and r["mse_t2"]]
        lines += [f"Held-out MSE over positions t >= 2: median {_fmt(_median(m))} (range {_fmt(min(m))} to {_fmt(max(m))}); "
                  f"copying baseline / model: median {_fmt(_median(ratios))}x"
                  + (f"; Bayes floor {_fmt(r0['bayes_mse_t2'])}" if r0.get("bayes_mse_t2") is not None else "") + ".", ""]
        lines += ["| mechanism | seeds | share | 95% interval | median onset step | median largest jump |", "|---|---|---|---|---|---|"]
        for col, desc in MECHANISM_COLUMNS:
            s = shares[setting][col]
            onset = _median([r.get(f"onset_{col}") for r in rs]) if f"onset_{col}" in r0 else None
            jump = _median([r.get(f"jump_{col}") for r in rs]) if f"jump_{col}" in r0 else None
            lines.append(f"| `{col}`: {desc} | {s['k']}/{s['n']} | {s['share']:.2f} | [{s['low']:.2f}, {s['high']:.2f}] | {_fmt(onset)} | {_fmt(jump)} |")
        lines.append("")
        terms = copied_terms_text(rs)
        if terms:
            lines += [f"Term copied by the heads that satisfy claim 1 (runs): {terms}.", ""]
        recs = []
        for r in rs:
            p = os.path.join(runs_dir, r["run"], EMERGENCE) if runs_dir else None
            if p and os.path.exists(p):
                recs.append((r, emergence.load(p)))
        if recs:
            sdir = r0["run"].split("/")[0]
            name = f"sweep_{sdir}_emergence.png"
            emergence.plot_setting([x for _, x in recs], os.path.join(fig_dir, name), title=f"{setting}: {len(recs)} seed(s)")
            one = f"sweep_{sdir}_seed{recs[0][0]['seed']}_emergence.png"
            emergence.plot_run(recs[0][1], os.path.join(fig_dir, one), title=f"{setting}, seed {recs[0][0]['seed']}")
            lines += [f"![emergence over seeds](figures/{name})", "",
                      f"Every head of seed {recs[0][0]['seed']} (thresholds dashed):", "", f"![emergence, one seed](figures/{one})", ""]
        else:
            lines += ["(no emergence records found for this setting)", ""]
    path = os.path.join(out_dir, "sweep.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


# ----------------------------------------------------------------------------- command line
def _command_line():
    argv = sys.argv[1:]
    return "minigpt " + " ".join(shlex.quote(a) for a in argv) if argv[:1] == ["sweep"] else None


def main(args) -> int:
    """``minigpt sweep`` (see ``minigpt.cli``)."""
    log = (lambda m: None) if getattr(args, "quiet", False) else (lambda m: print(m, flush=True))
    variants = [[o for o in v.split(";") if o.strip()] for v in (args.variant or [])] or [[]]
    grid = parse_grid(args.grid)
    override_sets = [v + g for v in variants for g in grid]
    jobs = make_jobs(args.preset or ["paper"], override_sets, args.seeds, args.out, first_seed=args.first_seed, common=args.set,
                     steps=args.steps, every=args.every, probe_n=args.probe_n,
                     analysis_kw=SMALL_ANALYSIS if args.small_analysis else None)
    t0 = time.time()
    rows, stats = run_sweep(jobs, args.out, workers=args.workers, dask=args.dask, log=log)
    log(f"sweep: {len(rows)}/{len(jobs)} run(s) in the table ({stats['trained']} trained, {stats['resumed']} resumed, "
        f"{stats['reused']} re-analysed, {stats['finished']} finished before, {stats['failed']} failed; {time.time() - t0:.0f}s) "
        f"-> {os.path.join(args.out, 'sweep.csv')}")
    if rows and args.report:
        path = write_report(rows, args.report, runs_dir=args.out, command=_command_line())
        log(f"wrote {path}")
    if stats["failed"]:
        raise ValueError(f"{stats['failed']} run(s) failed (rerun the same command to retry them): {stats['errors'][0]}")
    return 0
