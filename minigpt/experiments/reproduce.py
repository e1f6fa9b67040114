"""``minigpt reproduce``: the copy-then-refine story of the ``paper`` preset, fast, then the full multi-seed report.

Default (the README's main command): train one ``paper`` seed (``--threads auto``; or ``--from-checkpoint``, the
shipped ``report/checkpoints/paper_s0.npz``), measure the story on it (``minigpt.experiments.story``), print it and
write ``STORY.md`` with its figures to ``--out`` (default ``runs/reproduce``, ignored by git).  Every long phase
shows a progress bar with the time left.

``--full``: train the ``paper`` preset for several seeds in parallel worker processes, run every analysis
(``minigpt.experiments.analysis``) and write ``<out>/REPORT.md`` with its PNG figures.  If a claim of the paper does
not hold under the ``paper`` preset, alternative settings (``ALTERNATIVES``) are trained and analysed the same way,
so the report can say under which settings the mechanisms show (``--alternatives auto``, the default; ``always`` /
``never`` to force).  ``--full --out report`` regenerates the tracked ``report/REPORT.md``: the file holds no run
time, so the same numbers give the same bytes (the run time goes to ``<runs>/reproduce_timing.json``).

``--quick`` skips training and re-analyses the checkpoints shipped in ``report/checkpoints`` (``--checkpoints``);
it writes ``<out>/quick/REPORT.md`` (figures in ``<out>/quick/figures``).

``rerender(runs, out)`` (``python -m minigpt.experiments.reproduce --from-analyses``) rewrites ``REPORT.md`` from the saved
``runs/<setting>/seed<s>/analysis.json`` files without training or analysing again.

Workers are started with the ``spawn`` method after ``OPENBLAS_NUM_THREADS=1`` (and friends) are set, so
each worker uses one BLAS thread: OpenBLAS thrashes when several processes each start one thread per core.
"""
from __future__ import annotations

import glob
import json
import multiprocessing as mp
import os
import shutil
import sys
import textwrap
import threading
import time

from tqdm.auto import tqdm

from ..tasks import presets
from ..training.loop import train
from ..training.run import load_run
from . import story
from .analysis import analyse
from .pool import BLAS_ENV, checkpoint_state, pool_map, train_or_reuse  # noqa: F401  (shared with minigpt sweep)
from .pool import single_thread_env as _single_thread_env
from .report import verdicts, write_report

# name -> (description, overrides on top of the paper preset)
ALTERNATIVES = {
    "attn_only": ("attention-only blocks (no MLPs)", ["model.attn_only=true"]),
    "a_negative": ("oscillating sequences only: a ~ U(-1, 0)", ['data.a=["uniform", -1.0, 0.0]']),
    "short": ("shorter sequences: 10 terms", ["data.length=10"]),
}
# Budget: 5 paper seeds + 3 alternatives x 2 seeds = 11 runs on 2 cores at ~0.13 s per paper step (one BLAS thread)
# is ~14 minutes of training at 1200 steps, plus ~2 minutes of analysis: under the 20-minute budget. The
# paper preset itself trains 2000 steps; pass --steps 2000 for that (about 25 minutes).
DEFAULT_STEPS = 1200
REPORT_DIR = "report"  # the tracked report: sweep.md, extensions.md and the shipped checkpoints live here
OUT_DIR = os.path.join("runs", "reproduce")  # default output of every mode: never a tracked file unless --out says so
STORY_CHECKPOINT = os.path.join(REPORT_DIR, "checkpoints", "paper_s0.npz")  # --from-checkpoint without a path
QUICK_DIR = os.path.join(REPORT_DIR, "checkpoints")  # --quick reads these *.npz ...
QUICK_OUT = "quick"  # ... and writes <out>/quick/REPORT.md and <out>/quick/figures, leaving <out>/REPORT.md alone
QUICK_SIZES = dict(n_eval=512, n_scores=256, n_abl=256, n_patch=64)  # --quick: smaller held-out sets, to stay under a minute


def _spec(overrides, steps, seed, preset="paper"):
    spec = presets.apply_overrides(presets.get_preset(preset), list(overrides) + [f"train.steps={steps}", f"train.seed={seed}"])
    spec["train"]["checkpoint_every"] = steps  # one checkpoint at the end
    spec["train"]["eval_every"] = max(1, min(spec["train"]["eval_every"], steps // 6 or 1))
    return spec


def run_job(job):
    """Train (or reuse) one run and analyse it.  Runs in a worker process; returns the analysis dict.
    ``job["progress"]`` (optional, a queue): receives ``(run_dir, steps done)`` after every evaluation and at the end."""
    _single_thread_env()

    t0 = time.time()
    run_dir, spec = job["run_dir"], job.get("spec")
    ckpt = os.path.join(run_dir, "checkpoint.npz") if run_dir else job["checkpoint"]
    q = job.get("progress")
    history, trained = [], False
    if spec is not None:
        cbs = [] if q is None else [lambda step, model, rec: q.put((run_dir, step))]
        trained = train_or_reuse(spec, run_dir, callbacks=cbs, resume_partial=False)[0] != "reused"
        if q is not None:
            q.put((run_dir, spec["train"]["steps"]))
    run = load_run(ckpt)
    model, task, meta = run.model, run.task, run.meta
    history = meta.get("history", [])
    t1 = time.time()
    res = analyse(model, task, fig_dir=job["fig_dir"], label=job["label"], seed=job["seed"], figures=job["figures"], **job.get("analysis_kw", {}))
    res.update(setting=job["setting"], seed=job["seed"], checkpoint=ckpt, history=history, trained_now=trained,
               train_seconds=t1 - t0, analysis_seconds=time.time() - t1, step=meta.get("step"),
               config={k: meta.get(k) for k in ("model", "train", "data")})
    if run_dir:
        with open(os.path.join(run_dir, "analysis.json"), "w") as f:
            json.dump(res, f)
    return res


def _bar(total, desc, unit, quiet, initial=0):
    """A tqdm bar on stderr with the time left (none with ``quiet``)."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=True if quiet else None,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")


def _run_pool(jobs, workers, log, quiet=False):
    """Run the jobs with two progress bars: training steps over all runs (from the workers' evaluations) and runs
    finished (trained and analysed)."""
    train_jobs = [j for j in jobs if j.get("spec") is not None]
    total_steps = sum(j["spec"]["train"]["steps"] for j in train_jobs)
    steps_bar = _bar(total_steps, "train (all runs)", "step", quiet or not total_steps)
    runs_bar = _bar(len(jobs), "runs trained+analysed", "run", quiet)
    manager = stop = None
    if train_jobs and not quiet:
        manager = mp.get_context("spawn").Manager()
        q = manager.Queue()
        done = {}
        stop = threading.Event()

        def drain():
            while not stop.is_set():
                try:
                    key, step = q.get(timeout=0.2)
                except Exception:
                    continue
                steps_bar.update(max(0, step - done.get(key, 0)))
                done[key] = max(step, done.get(key, 0))

        th = threading.Thread(target=drain, daemon=True)
        th.start()
        jobs = [dict(j, progress=q) if j.get("spec") is not None else j for j in jobs]

    def on_result(j, r):
        runs_bar.update(1)
        runs_bar.set_postfix_str(f"{r['setting']} s{r['seed']}")
        log(f"  done {r['setting']} seed {r['seed']} ({r['train_seconds']:.0f}s train, {r['analysis_seconds']:.0f}s analysis)")

    try:
        return pool_map(run_job, jobs, workers, on_result)
    finally:
        if stop is not None:
            stop.set()
            th.join()
            manager.shutdown()
        steps_bar.close()
        runs_bar.close()


def _jobs(setting, overrides, seeds, steps, runs, fig_dir, figures_for=1, preset="paper"):
    jobs = []
    for s in range(seeds):
        jobs.append(dict(setting=setting, seed=s, spec=_spec(overrides, steps, s, preset), run_dir=os.path.join(runs, setting, f"seed{s}"),
                         fig_dir=fig_dir, label=f"{setting}_s{s}", figures=s < figures_for))
    return jobs


def _report_root(out):
    """Where sweep.md / extensions.md / docs are linked from: the tracked report folder if there is one."""
    return REPORT_DIR if os.path.isdir(REPORT_DIR) else out


def main(args) -> int:
    if getattr(args, "quick", False):
        return run_quick(args)
    if getattr(args, "full", False):
        return run_full(args)
    return run_story(args)


def _logger(args):
    """Print a progress line (through tqdm, so open bars are redrawn below it), unless ``--quiet``."""
    return (lambda m: None) if getattr(args, "quiet", False) else (lambda m: tqdm.write(m))


def run_quick(args) -> int:
    root = args.out
    out = os.path.join(root, QUICK_OUT)
    fig_dir = os.path.join(out, "figures")
    workers = args.workers or os.cpu_count() or 1
    log = _logger(args)
    t0 = time.time()
    src = getattr(args, "checkpoints", None) or QUICK_DIR
    ckpts = sorted(glob.glob(os.path.join(src, "*.npz")))
    if not ckpts:
        raise ValueError(f"--quick: no checkpoints in {src} (see {os.path.join(QUICK_DIR, 'README.md')} for the commands that make them)")
    jobs = []
    for c in ckpts:
        label = os.path.splitext(os.path.basename(c))[0]
        setting, _, seed = label.rpartition("_s")
        jobs.append(dict(setting=setting or label, seed=int(seed) if seed.isdigit() else 0, run_dir=None, checkpoint=c,
                         fig_dir=fig_dir, label=label, figures=True, analysis_kw=QUICK_SIZES))
    log(f"reproduce --quick: analysing {len(jobs)} checkpoint(s) from {src} with {min(workers, len(jobs))} worker(s)")
    groups = {}
    for r in _run_pool(jobs, workers, log, getattr(args, "quiet", False)):
        groups.setdefault(r["setting"], []).append(r)
    meta = dict(mode="quick", command="minigpt reproduce --quick", checkpoints=ckpts, alternatives={k: v[0] for k, v in ALTERNATIVES.items()},
                report_root=_report_root(root), runs=args.runs)
    path = write_report(out, groups, meta)
    log(f"wrote {path} ({time.time() - t0:.0f} s)")
    return 0


def run_full(args) -> int:
    out = args.out
    fig_dir = os.path.join(out, "figures")
    workers = args.workers or os.cpu_count() or 1
    log = _logger(args)
    quiet = getattr(args, "quiet", False)
    t0 = time.time()
    groups = {}
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    steps = args.steps or DEFAULT_STEPS
    preset = getattr(args, "preset", None) or "paper"
    log(f"reproduce --full: {preset} preset, {args.seeds} seeds x {steps} steps, {workers} worker(s) -> {args.runs}")
    mode = getattr(args, "alternatives", "auto")
    alt_seeds, alt_steps = args.alt_seeds, args.alt_steps or steps

    def alt_jobs():
        jobs = []
        for name, (_, ov) in ALTERNATIVES.items():
            jobs += _jobs(name if preset == "paper" else f"{preset}-{name}", ov, alt_seeds, alt_steps, args.runs, fig_dir, preset=preset)
        return jobs

    main_jobs = _jobs(preset, [], args.seeds, steps, args.runs, fig_dir, preset=preset)
    if mode == "always":  # one pool: no core idles between the main runs and the alternatives
        log(f"reproduce: alternatives {', '.join(ALTERNATIVES)}: {alt_seeds} seeds x {alt_steps} steps")
        for r in _run_pool(main_jobs + alt_jobs(), workers, log, quiet):
            groups.setdefault(r["setting"], []).append(r)
    else:
        groups[preset] = _run_pool(main_jobs, workers, log, quiet)
        v = verdicts(groups[preset])
        if mode == "auto" and not (v["copy"]["all"] and v["negsim"]["all"]):
            log(f"reproduce: the claims do not all hold under the {preset} preset; alternatives {', '.join(ALTERNATIVES)}: "
                f"{alt_seeds} seeds x {alt_steps} steps")
            for r in _run_pool(alt_jobs(), workers, log, quiet):
                groups.setdefault(r["setting"], []).append(r)
    cmd = f"minigpt reproduce --full --seeds {args.seeds} --steps {steps} --alternatives {mode} --alt-seeds {args.alt_seeds}"
    if preset != "paper":
        cmd += f" --preset {preset}"
    meta = dict(mode="full", command=cmd, steps=steps, workers=workers, alternatives={k: v[0] for k, v in ALTERNATIVES.items()},
                report_root=_report_root(out), runs=args.runs)
    path = write_report(out, groups, meta)
    seconds = time.time() - t0
    os.makedirs(args.runs, exist_ok=True)
    with open(os.path.join(args.runs, "reproduce_timing.json"), "w") as f:  # the run time lives here, not in REPORT.md
        json.dump(dict(command=cmd, seconds=seconds, workers=workers, report=path), f, indent=1)
    log(f"wrote {path} ({seconds:.0f} s)")
    return 0


def _story_model(args, out, log):
    """The model of the story: the checkpoint given (``--from-checkpoint``), or one ``paper`` seed trained here with a
    progress bar (reused if ``<out>/train`` already holds that finished run).  Returns (model, task, meta, source)."""
    if args.from_checkpoint:
        path = args.from_checkpoint
        shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), STORY_CHECKPOINT)
        if path == STORY_CHECKPOINT and not os.path.exists(path) and os.path.exists(shipped):
            path = shipped  # run from outside the repository: the checkpoint shipped beside the package
        if not os.path.exists(path):
            raise ValueError(f"--from-checkpoint: {path} does not exist (train one with: minigpt train --preset paper --out runs/paper)")
        log(f"reproduce: story of {path}")
        run = load_run(path)
        if run.task is None:
            raise ValueError(f"--from-checkpoint: {path} has no data settings (a bare model file, not a training checkpoint)")
        return run.model, run.task, run.meta, path
    preset = getattr(args, "preset", None) or "paper"
    spec = presets.apply_overrides(presets.get_preset(preset), [f"train.seed={args.seed}"] + ([f"train.steps={args.steps}"] if args.steps else []))
    mcfg, tcfg, task = presets.build(spec)
    run_dir = os.path.join(out, "train")
    ckpt = os.path.join(run_dir, "checkpoint.npz")
    if checkpoint_state(ckpt, mcfg, tcfg, task) == "done":
        log(f"reproduce: reusing the finished run in {run_dir}")
    else:
        log(f"reproduce: training {preset} seed {args.seed}, {tcfg.steps} steps (threads {args.threads}) -> {run_dir}")
        t0 = time.time()
        res = train(mcfg, tcfg, task, out_dir=run_dir, force=True, progress=not getattr(args, "quiet", False), threads=args.threads)
        last = res.history[-1] if res.history else {}
        by_pos = last.get("eval_mse_by_pos") or []
        t2 = f", {sum(by_pos[2:]) / len(by_pos[2:]):.2e} over t >= 2" if len(by_pos) > 2 else ""
        log(f"reproduce: trained in {time.time() - t0:.0f} s; held-out MSE {last.get('eval_mse', float('nan')):.2e} over all positions{t2}")
    run = load_run(ckpt)
    return run.model, task, run.meta, ckpt


def run_story(args) -> int:
    """Train (or load) one model, measure the story, print it, write STORY.md and its figures."""
    out = args.out
    log = _logger(args)
    quiet = getattr(args, "quiet", False)
    t0 = time.time()
    model, task, meta, source = _story_model(args, out, log)
    t1 = time.time()
    bar = _bar(len(story.PHASES) + story.N_FIGURES, "analyse", "phase", quiet)

    def tick(phase):
        bar.set_postfix_str(phase)
        bar.update(1)

    s = story.measure(model, task, seed=int(meta.get("train", {}).get("seed", 0) or 0), progress=tick)
    rel = os.path.relpath(source)
    s.update(source=rel if not rel.startswith("..") else source, step=meta.get("step"), config={k: meta.get(k) for k in ("model", "train", "data")})
    figs = story.render(s, out, progress=tick)
    bar.close()
    with open(os.path.join(out, "story.json"), "w") as f:
        json.dump(s, f)
    t2 = time.time()
    with open(os.path.join(out, "timing.json"), "w") as f:
        json.dump(dict(source=source, model_seconds=t1 - t0, analysis_seconds=t2 - t1, total_seconds=t2 - t0), f, indent=1)
    if not quiet:
        print()
        for line in story.story_lines(s):
            print(textwrap.fill(line, 110, subsequent_indent="  "))
        print()
    log(f"figures: {os.path.join(out, 'figures')}/ ({', '.join(os.path.basename(p) for k, p in figs.items() if k != 'markdown')})")
    log(f"what each figure shows, with the measurements behind it: {figs['markdown']}")
    log(f"reproduce: {t2 - t0:.0f} s (model {t1 - t0:.0f} s, analysis and figures {t2 - t1:.0f} s). The full multi-seed report: "
        "minigpt reproduce --full (about 11 runs; --out report rewrites report/REPORT.md)")
    return 0


def load_analyses(runs="runs", settings=None):
    """``{setting: [analysis dicts by seed]}`` from ``runs/<setting>/seed<s>/analysis.json`` (main preset first).
    ``settings``: names to load (default: ``paper`` and the ``ALTERNATIVES`` that have analyses)."""
    names = settings or (["paper"] + list(ALTERNATIVES))
    groups = {}
    for name in names:
        files = sorted(glob.glob(os.path.join(runs, name, "seed*", "analysis.json")), key=lambda p: int(os.path.basename(os.path.dirname(p))[4:] or 0))
        for p in files:
            with open(p) as f:
                groups.setdefault(name, []).append(json.load(f))
    return groups


def adopt_figures(groups, fig_dir):
    """Point every analysis's per-seed figures into ``fig_dir``: a figure written elsewhere (the analyses were made
    with another ``--out``) is copied there under its own name, so the re-rendered report never links outside its
    folder.  A figure that no longer exists is dropped from the analysis (the report lists only what it can show)."""
    os.makedirs(fig_dir, exist_ok=True)
    for results in groups.values():
        for r in results:
            figs = {}
            for key, path in (r.get("figures") or {}).items():
                dest = os.path.join(fig_dir, os.path.basename(path))
                if os.path.exists(path) and os.path.abspath(path) != os.path.abspath(dest):
                    shutil.copyfile(path, dest)
                if os.path.exists(dest):
                    figs[key] = dest
            if "figures" in r:
                r["figures"] = figs


def rerender(runs="runs", out="report", settings=None, command=None):
    """Rewrite ``out/REPORT.md`` from saved analyses (no training, no analysis).  Fields added to the analysis after
    the runs were made (idealised-head fits, closed-form baselines, bootstrap bands) are left out of the report with
    a note when absent.  Returns the report's path."""
    groups = load_analyses(runs, settings)
    if not groups:
        raise ValueError(f"no analysis.json under {runs}/<setting>/seed*/")
    adopt_figures(groups, os.path.join(out, "figures"))
    steps = next(iter(groups.values()))[0].get("step")
    meta = dict(mode="full", command=command or f"minigpt reproduce --full (re-rendered from {runs}/*/seed*/analysis.json)", steps=steps,
                alternatives={k: v[0] for k, v in ALTERNATIVES.items()}, report_root=out, runs=runs)
    return write_report(out, groups, meta)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default=REPORT_DIR)
    p.add_argument("--from-analyses", action="store_true", help="only rewrite REPORT.md from runs/<setting>/seed*/analysis.json")
    a = p.parse_args()
    if a.from_analyses:
        print(rerender(a.runs, a.out))
        sys.exit(0)
    p.error("use minigpt reproduce (see minigpt reproduce --help); this entry point only has --from-analyses")
