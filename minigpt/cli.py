"""The ``minigpt`` command line.  ``main(argv)`` returns an exit status and never raises for user errors:
bad input gets one line on stderr (``minigpt: error: ...``) and a non-zero status."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import numpy as np


class UsageError(Exception):
    """A command-line mistake: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _fmt_table(header, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header)] + [line(r) for r in rows])


# ----------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from . import presets
    from .training import train

    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other: pick one")
    if args.resume:
        cfg_path = os.path.join(args.out, "config.json")
        if not os.path.exists(cfg_path):
            raise UsageError(f"--resume: {args.out} holds no run (no config.json)")
        with open(cfg_path) as f:
            spec = json.load(f)
        if args.preset is not None or args.set:
            raise UsageError("--resume continues the run with its saved settings; drop --preset and --set")
        spec = {k: spec[k] for k in ("model", "train", "data")}
        for k in ("a", "b", "x0"):
            spec["data"][k] = tuple(spec["data"][k])
    else:
        spec = presets.apply_overrides(presets.get_preset(args.preset or "paper"), args.set)
    mcfg, tcfg, task = presets.build(spec)
    _check_overflow(task, mcfg)
    spec = {"model": mcfg.to_dict(), "train": tcfg.to_dict(), "data": task.spec()}
    result = train(mcfg, tcfg, task, out_dir=args.out, resume=args.resume, force=args.force, progress=not args.quiet, spec=spec)
    last = result.history[-1] if result.history else None
    if last is not None:
        mse = np.array(last["eval_mse_by_pos"])
        copy = np.array(last.get("baselines_by_pos", {}).get("copy", [np.nan] * len(mse)))
        print(f"trained {tcfg.steps} steps -> {args.out}/checkpoint.npz")
        if len(mse) > 2:
            print(
                f"held-out MSE over positions >= 2: model {mse[2:].mean():.3e}, copy {copy[2:].mean():.3e} "
                f"({copy[2:].mean() / mse[2:].mean():.0f}x better than copying)"
            )
    return 0


def _check_overflow(task, mcfg):
    limit = 1e30 if mcfg.dtype == "float32" else 1e300
    if task.max_abs_term() > limit:
        raise ValueError(
            f"data priors let terms reach |x| > {limit:.0e} within {task.length} terms ({mcfg.dtype} overflows); "
            "narrow data.a (|a| <= 1 keeps sequences bounded) or shorten data.length"
        )


# ----------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from . import baselines, presets
    from .checkpoint import load_checkpoint
    from .data import AffineRecurrence
    from .model import Transformer
    from .training import mse_by_position

    model = Transformer.load(args.checkpoint)
    _, meta = load_checkpoint(args.checkpoint)
    if "data" in meta:
        task = AffineRecurrence(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["data"].items()})
    else:
        task = presets.build(presets.get_preset(args.preset))[2]
    if task.length - 1 > model.cfg.n_ctx:
        raise ValueError(f"data.length - 1 = {task.length - 1} exceeds the model's n_ctx = {model.cfg.n_ctx}")
    if args.n < 1:
        raise UsageError("--n must be at least 1")
    batch = task.sample(args.n, np.random.default_rng(args.seed))
    results = {"model": mse_by_position(model(batch.inputs), batch.targets)}
    for name, pred in baselines.all_predictions(batch, task).items():
        results[name] = mse_by_position(pred, batch.targets)
    names = list(results)
    rows = [[t] + [f"{results[n][t]:.3e}" for n in names] for t in range(task.length - 1)]
    rows.append(["mean"] + [f"{results[n].mean():.3e}" for n in names])
    rows.append(["mean t>=2"] + [f"{results[n][2:].mean():.3e}" if task.length > 3 else "-" for n in names])
    print(f"MSE by position on {args.n} held-out sequences (seed {args.seed}); position t predicts term t+1")
    print(_fmt_table(["pos"] + names, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({n: v.tolist() for n, v in results.items()}, f, indent=1)
    return 0


# ----------------------------------------------------------------------------- gradcheck
def gradcheck_configs(preset: str):
    """The 12 combinations of attn_only x normalization_type x act_fn at a small size of ``preset``."""
    from . import presets
    from .config import ModelConfig

    base = presets.get_preset(preset)["model"]
    for attn_only, norm, act in itertools.product((False, True), ("LN", None), ("gelu_new", "gelu", "relu")):
        if attn_only and act != "gelu_new":
            continue  # the activation is unused without an MLP
        yield ModelConfig(
            n_layers=base.get("n_layers", 3), d_model=8, n_heads=2, d_mlp=12, n_ctx=5,
            attn_only=attn_only, normalization_type=norm, act_fn=act, dtype="float64",
        )


def cmd_gradcheck(args) -> int:
    from .gradcheck import format_report, gradcheck_config

    worst, failed = 0.0, 0
    for cfg in gradcheck_configs(args.preset):
        report = gradcheck_config(cfg, seed=args.seed)
        m = max(r.max_rel_diff for r in report)
        worst = max(worst, m)
        failed += sum(not r.ok for r in report)
        print(f"\n== attn_only={cfg.attn_only} normalization_type={cfg.normalization_type} act_fn={cfg.act_fn} "
              f"(n_layers={cfg.n_layers}, d_model={cfg.d_model}, n_heads={cfg.n_heads}, d_mlp={cfg.d_mlp}, pos={cfg.n_ctx}, float64)")
        print(format_report(report))
    print(f"\nworst max relative error: {worst:.3e} (tolerance 1e-6); {failed} tensor(s) failed")
    return 0 if failed == 0 else 1


# ----------------------------------------------------------------------------- other commands
def cmd_reproduce(args) -> int:
    try:
        from .reproduce import main as reproduce_main
    except ImportError:
        raise UsageError("minigpt reproduce is not available in this version yet; use minigpt train --preset paper") from None
    return reproduce_main(args)


def cmd_derive(args) -> int:
    try:
        from theory import derive
    except ImportError:
        raise UsageError("the theory package is not installed") from None
    if args.topic is None:
        print("topics: " + ", ".join(derive.TOPICS))
        return 0
    if args.topic not in derive.TOPICS:
        raise UsageError(f"unknown topic {args.topic!r}; topics: {', '.join(derive.TOPICS)}")
    print(derive.render(args.topic, latex=args.latex))
    return 0


def cmd_bench(args) -> int:
    try:
        from .bench import main as bench_main
    except ImportError:
        raise UsageError("minigpt bench is not available in this version") from None
    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="minigpt", description="A numpy GPT-style transformer that learns affine recurrences in context.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model (presets: paper, tiny)")
    t.add_argument("--preset", default=None, help="named preset (default: paper)")
    t.add_argument("--out", required=True, help="run folder: config.json, metrics.jsonl, checkpoint.npz")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a setting, e.g. model.d_model=32, train.steps=200, data.length=12 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite the run in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="MSE by position of a checkpoint against every baseline")
    e.add_argument("checkpoint")
    e.add_argument("--n", type=int, default=4096, help="held-out sequences (default 4096)")
    e.add_argument("--seed", type=int, default=12345, help="seed of the held-out sequences")
    e.add_argument("--preset", default="paper", help="data settings for a bare model file (default paper)")
    e.add_argument("--json", default=None, help="also write the table as JSON to this path")
    e.set_defaults(fn=cmd_eval)

    g = sub.add_parser("gradcheck", help="hand-written gradients against float64 central differences")
    g.add_argument("--preset", default="paper")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(fn=cmd_gradcheck)

    r = sub.add_parser("reproduce", help="train several seeds, run every analysis, write report/REPORT.md")
    r.add_argument("--quick", action="store_true", help="analyse the checkpoints shipped in the repository")
    r.add_argument("--seeds", type=int, default=5)
    r.add_argument("--out", default="report")
    r.add_argument("--runs", default="runs", help="folder for the training runs")
    r.add_argument("--workers", type=int, default=None, help="parallel training processes (default: all cores)")
    r.set_defaults(fn=cmd_reproduce)

    d = sub.add_parser("derive", help="print a derivation from the theory package, step by step")
    d.add_argument("topic", nargs="?", default=None)
    d.add_argument("--latex", action="store_true")
    d.set_defaults(fn=cmd_derive)

    b = sub.add_parser("bench", help="time a training step")
    b.add_argument("--config", default="paper")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--threads", type=int, default=None)
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv=None) -> int:
    from .checkpoint import CheckpointError
    from .training import TrainingError, TrainingInterrupted

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.fn(args) or 0)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except UsageError as e:
        print(f"minigpt: error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"minigpt: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("minigpt: interrupted", file=sys.stderr)
        return 130
    except (CheckpointError, TrainingError, ValueError, TypeError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"minigpt: error: {msg}", file=sys.stderr)
        return 1


def entry_point():  # console script
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
