"""``minigpt reproduce``: train the ``paper`` preset for several seeds in parallel worker processes, run
every analysis (``minigpt.interp.analysis``) and write ``report/REPORT.md`` with its PNG figures.

If a claim of the paper does not hold under the ``paper`` preset, alternative settings
(``ALTERNATIVES``) are trained and analysed the same way, so the report can say under which settings
the mechanisms show (``--alternatives auto``, the default; ``always`` / ``never`` to force).

``--quick`` skips training and re-analyses the small checkpoints shipped in ``report/checkpoints``; it writes
``report/quick/REPORT.md`` (figures in ``report/quick/figures``) so it never overwrites the full report.

``rerender(runs, out)`` (``python -m minigpt.reproduce --from-analyses``) rewrites ``REPORT.md`` from the saved
``runs/<setting>/seed<s>/analysis.json`` files without training or analysing again.

Workers are started with the ``spawn`` method after ``OPENBLAS_NUM_THREADS=1`` (and friends) are set, so
each worker uses one BLAS thread: OpenBLAS thrashes when several processes each start one thread per core.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time

from .runner import BLAS_ENV, pool_map, single_thread_env as _single_thread_env, train_or_reuse  # noqa: F401  (shared with minigpt sweep)

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
QUICK_DIR = "checkpoints"  # --quick reads <out>/checkpoints/*.npz ...
QUICK_OUT = "quick"  # ... and writes <out>/quick/REPORT.md and <out>/quick/figures, leaving <out>/REPORT.md alone
QUICK_SIZES = dict(n_eval=512, n_scores=256, n_abl=256, n_patch=64)  # --quick: smaller held-out sets, to stay under a minute


def _spec(overrides, steps, seed, preset="paper"):
    from . import presets

    spec = presets.apply_overrides(presets.get_preset(preset), list(overrides) + [f"train.steps={steps}", f"train.seed={seed}"])
    spec["train"]["checkpoint_every"] = steps  # one checkpoint at the end
    spec["train"]["eval_every"] = max(1, min(spec["train"]["eval_every"], steps // 6 or 1))
    return spec


def run_job(job):
    """Train (or reuse) one run and analyse it.  Runs in a worker process; returns the analysis dict."""
    _single_thread_env()
    from .checkpoint import load_checkpoint
    from .interp.analysis import analyse
    from .model import Transformer
    from .presets import build_task

    t0 = time.time()
    run_dir, spec = job["run_dir"], job.get("spec")
    ckpt = os.path.join(run_dir, "checkpoint.npz") if run_dir else job["checkpoint"]
    history, trained = [], False
    if spec is not None:
        trained = train_or_reuse(spec, run_dir, resume_partial=False)[0] != "reused"
    _, meta = load_checkpoint(ckpt)
    task = build_task(meta["data"])
    history = meta.get("history", [])
    model = Transformer.load(ckpt)
    t1 = time.time()
    res = analyse(model, task, fig_dir=job["fig_dir"], label=job["label"], seed=job["seed"], figures=job["figures"], **job.get("analysis_kw", {}))
    res.update(setting=job["setting"], seed=job["seed"], checkpoint=ckpt, history=history, trained_now=trained,
               train_seconds=t1 - t0, analysis_seconds=time.time() - t1, step=meta.get("step"),
               config={k: meta.get(k) for k in ("model", "train", "data")})
    if run_dir:
        with open(os.path.join(run_dir, "analysis.json"), "w") as f:
            json.dump(res, f)
    return res


def _run_pool(jobs, workers, log):
    return pool_map(run_job, jobs, workers, lambda j, r: log(
        f"  done {r['setting']} seed {r['seed']} ({r['train_seconds']:.0f}s train, {r['analysis_seconds']:.0f}s analysis)"))


def _jobs(setting, overrides, seeds, steps, runs, fig_dir, figures_for=1, preset="paper"):
    jobs = []
    for s in range(seeds):
        jobs.append(dict(setting=setting, seed=s, spec=_spec(overrides, steps, s, preset), run_dir=os.path.join(runs, setting, f"seed{s}"),
                         fig_dir=fig_dir, label=f"{setting}_s{s}", figures=s < figures_for))
    return jobs


def main(args) -> int:
    from .interp.report import verdicts, write_report

    root = args.out
    out = os.path.join(root, QUICK_OUT) if args.quick else root
    fig_dir = os.path.join(out, "figures")
    workers = args.workers or os.cpu_count() or 1
    log = (lambda m: None) if getattr(args, "quiet", False) else (lambda m: print(m, flush=True))
    t0 = time.time()
    groups = {}
    if args.quick:
        ckpts = sorted(glob.glob(os.path.join(root, QUICK_DIR, "*.npz")))
        if not ckpts:
            raise ValueError(f"--quick: no checkpoints in {os.path.join(root, QUICK_DIR)} (see its README for the commands that make them)")
        jobs = []
        for c in ckpts:
            label = os.path.splitext(os.path.basename(c))[0]
            setting, _, seed = label.rpartition("_s")
            jobs.append(dict(setting=setting or label, seed=int(seed) if seed.isdigit() else 0, run_dir=None, checkpoint=c,
                             fig_dir=fig_dir, label=label, figures=True, analysis_kw=QUICK_SIZES))
        log(f"reproduce --quick: analysing {len(jobs)} shipped checkpoint(s) with {min(workers, len(jobs))} worker(s)")
        for r in _run_pool(jobs, workers, log):
            groups.setdefault(r["setting"], []).append(r)
        meta = dict(mode="quick", command="minigpt reproduce --quick", checkpoints=ckpts)
    else:
        if args.seeds < 1:
            raise ValueError("--seeds must be at least 1")
        steps = args.steps or DEFAULT_STEPS
        preset = getattr(args, "preset", None) or "paper"
        log(f"reproduce: {preset} preset, {args.seeds} seeds x {steps} steps, {workers} worker(s) -> {args.runs}")
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
            for r in _run_pool(main_jobs + alt_jobs(), workers, log):
                groups.setdefault(r["setting"], []).append(r)
        else:
            groups[preset] = _run_pool(main_jobs, workers, log)
            v = verdicts(groups[preset])
            if mode == "auto" and not (v["copy"]["all"] and v["negsim"]["all"]):
                log(f"reproduce: the claims do not all hold under the {preset} preset; alternatives {', '.join(ALTERNATIVES)}: "
                    f"{alt_seeds} seeds x {alt_steps} steps")
                for r in _run_pool(alt_jobs(), workers, log):
                    groups.setdefault(r["setting"], []).append(r)
        cmd = f"minigpt reproduce --seeds {args.seeds} --steps {steps} --alternatives {mode} --alt-seeds {args.alt_seeds}"
        if preset != "paper":
            cmd += f" --preset {preset}"
        meta = dict(mode="full", command=cmd, steps=steps, workers=workers)
    meta["seconds"] = time.time() - t0
    meta["alternatives"] = {k: v[0] for k, v in ALTERNATIVES.items()}
    meta.update(report_root=root, runs=args.runs)
    path = write_report(out, groups, meta)
    log(f"wrote {path} ({meta['seconds']:.0f}s)")
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


def rerender(runs="runs", out="report", settings=None, command=None):
    """Rewrite ``out/REPORT.md`` from saved analyses (no training, no analysis).  Fields added to the analysis after
    the runs were made (idealised-head fits, closed-form baselines, bootstrap bands) are left out of the report with
    a note when absent.  Returns the report's path."""
    from .interp.report import write_report

    groups = load_analyses(runs, settings)
    if not groups:
        raise ValueError(f"no analysis.json under {runs}/<setting>/seed*/")
    steps = next(iter(groups.values()))[0].get("step")
    meta = dict(mode="full", command=command or f"minigpt reproduce (re-rendered from {runs}/*/seed*/analysis.json)", steps=steps, seconds=0.0,
                alternatives={k: v[0] for k, v in ALTERNATIVES.items()}, report_root=out, runs=runs)
    return write_report(out, groups, meta)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", default="report")
    p.add_argument("--runs", default="runs")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--preset", default="paper")
    p.add_argument("--alternatives", default="auto")
    p.add_argument("--alt-seeds", type=int, default=2)
    p.add_argument("--alt-steps", type=int, default=None)
    p.add_argument("--from-analyses", action="store_true", help="only rewrite REPORT.md from runs/<setting>/seed*/analysis.json")
    a = p.parse_args()
    if a.from_analyses:
        print(rerender(a.runs, a.out))
        sys.exit(0)
    sys.exit(main(a))
