"""The ``minigpt`` command line.  ``main(argv)`` returns an exit status and never raises for user errors:
bad input gets one line on stderr (``minigpt: error: ...``) and a non-zero status."""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import re
import sys
import warnings

import numpy as np

from theory import derive

from . import __version__
from .bench import main as bench_main
from .experiments import reproduce
from .experiments.sweep import main as sweep_main
from .fast import ops as fast_ops
from .fast.threads import usable_cores
from .io.checkpoint import CheckpointError, write_text_atomic
from .nn import ops as reference_ops
from .nn.config import ModelConfig, did_you_mean
from .nn.config import cut as _cut
from .nn.gradcheck import format_report, gradcheck_config
from .tasks import baselines, presets
from .tasks.presets import parse_value
from .training.loop import (
    TrainingError,
    TrainingInterrupted,
    load_run_spec,
    mse_by_position,
    predict,
    train,
)
from .training.run import load_run

MAX_EVAL_N = 1_000_000  # held-out sequences for ``minigpt eval --n``
INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in minigpt, not a user error


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
def _short_errors(fn):
    """Run ``fn(args)``; an error message that echoes a huge value (a long --set, a long path) comes out
    with every token longer than ``LONG_TOKEN`` characters cut to its first 80, and at most
    ``MAX_ERROR_CHARS`` in all (the field it names comes first, so it stays)."""

    @functools.wraps(fn)
    def run(args):
        try:
            return fn(args)
        except (ValueError, TypeError, TrainingError) as e:  # CheckpointError is a ValueError; all exit 1
            if len(str(e)) <= MAX_ERROR_CHARS:
                raise
            short = re.sub(r"\S{%d,}" % LONG_TOKEN, lambda m: _cut(m.group(0)), str(e))
            raise ValueError(_cut(short, MAX_ERROR_CHARS)) from None

    return run


LONG_TOKEN = 200  # characters; a longer word in an error message is cut to 80
MAX_ERROR_CHARS = 400


@_short_errors
def cmd_train(args) -> int:
    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other: pick one")
    if not args.out.strip():
        raise UsageError("--out needs a folder name")
    if args.resume:
        if args.preset is not None or args.set:
            raise UsageError("--resume continues the run with its saved settings; drop --preset and --set")
        spec = load_run_spec(args.out)  # from the verified checkpoint
    else:
        spec = presets.apply_overrides(presets.get_preset("paper" if args.preset is None else args.preset), _set_args(args.set))
    threads = _threads_arg(args.threads)
    mcfg, tcfg, task = presets.build(spec)  # validates every field, the context and float overflow
    result = train(mcfg, tcfg, task, out_dir=args.out, resume=args.resume, force=args.force, progress=not args.quiet,
                   threads=threads)
    last = result.history[-1] if result.history else None
    print(f"trained {tcfg.steps} steps -> {os.path.join(args.out, 'checkpoint.npz')!s}")
    if last is not None and "baselines_by_pos" in last:
        mse = np.array(last["eval_mse_by_pos"])
        copy = np.array(last["baselines_by_pos"].get("copy", [np.nan] * len(mse)))
        if len(mse) > 2:
            m, c = mse[2:].mean(), copy[2:].mean()
            ratio = f"{c / m:.3g}x" if m > 0 else "inf x"
            print(f"held-out MSE over positions >= 2: model {m:.3e}, copy {c:.3e} ({ratio} better than copying)")
    return 0


def _threads_arg(value):
    """``--threads``: None (not given), "auto" or a positive integer up to the usable cores."""
    if value is None or value == "auto":
        return value
    text = value.strip()
    n = int(text) if text.isdigit() and len(text) <= 9 else 0
    if n < 1:
        raise UsageError(f"--threads must be a positive integer or auto, got {_cut(repr(value))}")
    cap = usable_cores()
    if n > cap:
        raise UsageError(f"--threads {n} is more than the {cap} usable core(s) of this machine; use at most {cap} (or auto)")
    return n


MAX_SET_DEPTH = 32  # nesting levels of a --set value (a config needs 2)
MAX_SET_CHARS = 4096  # one --set item; a longer one is a mistake (and would be echoed in errors)


def _nesting(text):
    """The deepest bracket nesting of a JSON-like text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            escaped, in_str = (False, in_str) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _set_args(items):
    """Check every ``--set SECTION.FIELD=VALUE`` before it is parsed: a value too long, too deeply nested or
    with too many digits gets a one-line error naming the field (and at most 80 characters of the value)."""
    for item in items:
        key, _, value = item.partition("=")
        field = _cut(key.strip() or item, 60)
        if len(item) > MAX_SET_CHARS:
            raise UsageError(f"--set {field}: {len(item):,} characters, more than the limit of {MAX_SET_CHARS:,}: {_cut(value)}")
        if _nesting(value) > MAX_SET_DEPTH:  # counted, not left to RecursionError: the recursion limit varies by caller
            raise UsageError(f"--set {field}: the value is nested too deeply (more than {MAX_SET_DEPTH} levels): {_cut(value)}")
        try:
            parse_value(value)
        except RecursionError:
            raise UsageError(f"--set {field}: the value is nested too deeply: {_cut(value)}") from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise UsageError(f"--set {field}: cannot read the value {_cut(value)} ({_cut(e)})") from None
    return items


# ----------------------------------------------------------------------------- eval
@_short_errors
def cmd_eval(args) -> int:
    if not 1 <= args.n <= MAX_EVAL_N:
        raise UsageError(f"--n must be between 1 and {MAX_EVAL_N}, got {args.n}")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
    if args.json is not None:
        _check_output("--json", args.json, inputs=[args.checkpoint])
    run = load_run(args.checkpoint)  # verified: checksum, keys, shapes, dtypes, finiteness, configs
    model = run.model
    task = run.task if run.task is not None else presets.build(presets.get_preset(args.preset))[2]
    if task.length - 1 > model.cfg.n_ctx:
        raise ValueError(f"data.length - 1 = {task.length - 1} exceeds the model's n_ctx = {model.cfg.n_ctx}")
    presets.check_overflow(task, model.cfg)
    batch = task.sample(args.n, np.random.default_rng(args.seed))
    with np.errstate(all="ignore"):
        pred = predict(model, batch.inputs)
    results = {"model": mse_by_position(pred, batch.targets)}
    for name, pred in baselines.all_predictions(batch, task).items():
        results[name] = mse_by_position(pred, batch.targets)
    names = list(results)
    rows = [[t] + [f"{results[n][t]:.3e}" for n in names] for t in range(task.length - 1)]
    rows.append(["mean"] + [f"{results[n].mean():.3e}" for n in names])
    rows.append(["mean t>=2"] + [f"{results[n][2:].mean():.3e}" if task.length > 3 else "-" for n in names])
    print(f"MSE by position on {args.n} held-out sequences (seed {args.seed}); position t predicts term t+1")
    print(_fmt_table(["pos"] + names, rows))
    if args.json:

        write_text_atomic(args.json, json.dumps({n: v.tolist() for n, v in results.items()}, indent=1))
    return 0


def _check_output(option, path, inputs):
    """Refuse an output path that is one of the ``inputs`` (also through links) or an existing checkpoint."""
    if not path.strip():
        raise UsageError(f"{option} needs a file name")
    if os.path.isdir(path):
        raise UsageError(f"{option} {_cut(path)} is a folder; give a file name")
    for src in inputs:
        same = os.path.realpath(path) == os.path.realpath(src)
        try:
            same = same or os.path.samefile(path, src)
        except OSError:
            pass
        if same:
            raise UsageError(f"{option} {_cut(path)} is the input checkpoint; refusing to overwrite it")
    head = b""
    if os.path.isfile(path):  # a regular file (opening a FIFO would block)
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError:
            pass
    if head == b"PK\x03\x04":
        raise UsageError(f"{option} {_cut(path)} is an existing checkpoint (a zip archive); refusing to overwrite it")


# ----------------------------------------------------------------------------- gradcheck
def gradcheck_configs(preset: str):
    """The 8 combinations of attn_only x normalization_type x act_fn (one act_fn without an MLP) at a small size of ``preset``."""
    base = presets.get_preset(preset)["model"]
    for attn_only, norm, act in itertools.product((False, True), ("LN", None), ("gelu_new", "gelu", "relu")):
        if attn_only and act != "gelu_new":
            continue  # the activation is unused without an MLP
        yield ModelConfig(
            n_layers=base.get("n_layers", 3), d_model=8, n_heads=2, d_mlp=12, n_ctx=5,
            attn_only=attn_only, normalization_type=norm, act_fn=act, dtype="float64",
        )


OP_SETS = {"reference": reference_ops, "fast": fast_ops}  # minigpt.nn.ops, minigpt.fast.ops


def cmd_gradcheck(args) -> int:
    worst, failed = 0.0, 0
    for cfg, (name, ops) in itertools.product(list(gradcheck_configs(args.preset)), OP_SETS.items()):
        report = gradcheck_config(cfg, seed=args.seed, ops=ops)
        m = max(r.max_rel_diff for r in report)
        worst = max(worst, m)
        failed += sum(not r.ok for r in report)
        print(f"\n== {name} ops: attn_only={cfg.attn_only} normalization_type={cfg.normalization_type} act_fn={cfg.act_fn} "
              f"(n_layers={cfg.n_layers}, d_model={cfg.d_model}, n_heads={cfg.n_heads}, d_mlp={cfg.d_mlp}, pos={cfg.n_ctx}, float64)")
        print(format_report(report))
    print(f"\nworst max relative error: {worst:.3e} (tolerance 1e-6); {failed} tensor(s) failed")
    if failed:
        print(f"minigpt: error: gradcheck failed for {failed} tensor(s) (worst relative error {worst:.3e})", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- other commands
def cmd_reproduce(args) -> int:
    if args.full + args.quick + (args.from_checkpoint is not None) > 1:
        raise UsageError("--full, --quick and --from-checkpoint are different modes: pick one")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {args.steps}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be between 0 and 2**32 - 1, got {args.seed}")
    args.threads = _threads_arg(args.threads)
    return reproduce.main(args)


class _DeriveHelp(argparse.Action):
    """``minigpt derive --help``: the usual help plus one line per topic (imports sympy only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.epilog = "topics:\n" + derive.topic_list()
        parser.print_help()
        parser.exit()


def cmd_derive(args) -> int:
    if args.topic is None:
        print("topics (minigpt derive TOPIC [--latex]):\n" + derive.topic_list())
        return 0
    if args.topic not in derive.TOPICS:
        raise UsageError(f"unknown topic {args.topic!r}; topics: {', '.join(derive.TOPICS)}")
    print(derive.render(args.topic, latex=args.latex), end="")
    return 0


def cmd_bench(args) -> int:
    return bench_main(args)


def cmd_sweep(args) -> int:
    return sweep_main(args)


def _preset_list(presets) -> str:
    """The ``train --help`` epilog: every preset in ``minigpt.tasks.presets`` with its one-line description."""
    width = max(len(n) for n in presets.PRESETS)
    lines = [f"  {n:<{width}}  {presets.DESCRIPTIONS.get(n, '')}".rstrip() for n in presets.PRESETS]
    return "presets (--preset NAME):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="minigpt", description="A numpy GPT-style transformer that learns affine recurrences in context.")
    p.add_argument("--version", action="version", version=f"minigpt {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    p.commands = sub.choices  # name -> subparser, filled in below

    t = sub.add_parser("train", help=f"train a model (presets: {', '.join(presets.PRESETS)})",
                       description="Train one model and report its held-out MSE against copying the last term.",
                       epilog=_preset_list(presets), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--preset", default=None, metavar="NAME", help="named preset, listed below (default: paper)")
    t.add_argument("--out", required=True, help="run folder: config.json, metrics.jsonl, checkpoint.npz")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a setting, e.g. model.d_model=32, train.steps=200, data.length=12 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite the run in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--threads", default=None, metavar="N",
                   help="run each step's batch as N shards on N cores, at most the usable cores (default: auto, as many as "
                        "BLAS uses, at most 8; on --resume: the run's own count, so the result stays bitwise exact)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="MSE by position of a checkpoint against every baseline")
    e.add_argument("checkpoint", help="a checkpoint.npz written by minigpt train, or a bare model file")
    e.add_argument("--n", type=int, default=4096, help="held-out sequences (default 4096)")
    e.add_argument("--seed", type=int, default=12345, help="seed of the held-out sequences")
    e.add_argument("--preset", default="paper", help="data settings for a bare model file (default paper)")
    e.add_argument("--json", default=None, help="also write the table as JSON to this path")
    e.set_defaults(fn=cmd_eval)

    g = sub.add_parser("gradcheck", help="hand-written gradients against float64 central differences (reference and fast ops)")
    g.add_argument("--preset", default="paper", help="preset whose n_layers the small checked models use (default paper)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random parameters and inputs (default 0)")
    g.set_defaults(fn=cmd_gradcheck)

    r = sub.add_parser("reproduce", help="the copy-then-refine story of one paper model, in minutes (--full: the multi-seed report)",
                       description="Default: train one paper seed (or --from-checkpoint), print the story and write STORY.md and its "
                                   "figures to --out (runs/reproduce). --full: several seeds and every analysis, REPORT.md in --out "
                                   "(--out report rewrites the tracked report/REPORT.md). --quick: re-analyse the shipped checkpoints.")
    r.add_argument("--full", action="store_true", help="the multi-seed reproduction with alternatives (about 11 runs; tens of minutes)")
    r.add_argument("--quick", action="store_true", help="re-analyse the checkpoints in report/checkpoints; writes <out>/quick/REPORT.md")
    r.add_argument("--from-checkpoint", nargs="?", const="report/checkpoints/paper_s0.npz", default=None, metavar="PATH",
                   help="story of this checkpoint instead of training (default PATH: the shipped report/checkpoints/paper_s0.npz)")
    r.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce; 'report' rewrites the tracked report)")
    r.add_argument("--seed", type=int, default=0, help="story: the seed to train (default 0)")
    r.add_argument("--threads", default="auto", metavar="N", help="story: shards per training step (default auto)")
    r.add_argument("--checkpoints", default=None, metavar="DIR", help="--quick: folder of *.npz checkpoints (default report/checkpoints)")
    r.add_argument("--seeds", type=int, default=5, help="--full: seeds of the main preset (default 5)")
    r.add_argument("--runs", default="runs", help="--full: folder for the training runs")
    r.add_argument("--workers", type=int, default=None, help="--full/--quick: parallel processes (default: all cores)")
    r.add_argument("--steps", type=int, default=None,
                   help="training steps (story: the preset's, 2000 for paper; --full: minigpt.experiments.reproduce.DEFAULT_STEPS)")
    r.add_argument("--alternatives", choices=("auto", "always", "never"), default="auto",
                   help="--full: also train alternative settings: auto = when a claim fails under the paper preset")
    r.add_argument("--alt-seeds", type=int, default=2, help="--full: seeds per alternative setting (default 2)")
    r.add_argument("--alt-steps", type=int, default=None, help="--full: steps per alternative run (default: --steps)")
    r.add_argument("--quiet", action="store_true", help="no progress bars or lines")
    r.add_argument("--preset", default="paper", help="preset to train (default paper; tiny for a fast dry run)")
    r.set_defaults(fn=cmd_reproduce)

    d = sub.add_parser("derive", help="print a derivation from the theory package, step by step", add_help=False,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Print a derivation step by step: every step is an equation with the reason it holds.")
    d.add_argument("-h", "--help", action=_DeriveHelp, help="show this help, with the list of topics, and exit")
    d.add_argument("topic", nargs="?", default=None, help="a topic from the list below (omit it to list the topics)")
    d.add_argument("--latex", action="store_true", help="print a LaTeX document (article, amsmath) instead of text")
    d.set_defaults(fn=cmd_derive)

    b = sub.add_parser("bench", help="time a training step")
    b.add_argument("--config", default="paper", help="model to time: a name in minigpt.bench.CONFIGS, or all (default paper)")
    b.add_argument("--steps", type=int, default=20, help="timed training steps (default 20)")
    b.add_argument("--threads", type=int, default=None, help="shards per step (default: time both 1 and 2)")
    b.set_defaults(fn=cmd_bench)

    w = sub.add_parser("sweep", help="presets x overrides x seeds: train, probe emergence, analyse; one CSV/JSON table and report/sweep.md")
    w.add_argument("--preset", action="append", default=None, help="preset (repeatable; default paper)")
    w.add_argument("--seeds", type=int, default=5, help="seeds per setting (default 5)")
    w.add_argument("--first-seed", type=int, default=0, help="first seed (default 0)")
    w.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="override for every run (repeatable)")
    w.add_argument("--variant", action="append", default=None, metavar="'A=1;B=2'",
                   help="one override set, ';'-separated (repeatable; each is a setting; default: the preset as is)")
    w.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1|V2", help="cartesian product over values (repeatable)")
    w.add_argument("--steps", type=int, default=None, help="train.steps for every run (default: the preset's)")
    w.add_argument("--every", type=int, default=None, help="emergence probe every K steps (default steps // 20)")
    w.add_argument("--probe-n", type=int, default=256, help="sequences in the emergence probe batch (default 256)")
    w.add_argument("--small-analysis", action="store_true", help="smaller held-out sets for the final analysis")
    w.add_argument("--workers", type=int, default=None, help="local worker processes (default: all cores)")
    w.add_argument("--dask", default=None, metavar="ADDRESS", help="send the runs to this Dask scheduler ('local': start a LocalCluster)")
    w.add_argument("--out", default="runs/sweep", help="sweep folder: run folders, sweep.csv, sweep.json (default runs/sweep)")
    w.add_argument("--report", default="report", help="write REPORT/sweep.md here (default report; '' for none)")
    w.add_argument("--quiet", action="store_true", help="no progress lines")
    w.set_defaults(fn=cmd_sweep)
    return p


def check_command(argv, commands) -> None:
    """A mistyped command (``minigpt trian``) is one line with a suggestion, not argparse's list of choices."""
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        raise UsageError(f"invalid choice: {argv[0]!r} is not a command; {did_you_mean(None, argv[0], list(commands), kind='commands')}")


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) if str(e).strip() else type(e).__name__
    return msg


def main(argv=None) -> int:
    """Run the command line; returns the exit status.  Never raises: a user error is one line on stderr
    (``minigpt: error: ...``) and status 2 (usage) or 1 (bad input, failed run); Ctrl-C during training
    saves a checkpoint and returns 130 (143 for SIGTERM); an unexpected exception (a bug) is reported
    in one line with status 70 (set ``MINIGPT_DEBUG=1`` to see its traceback)."""


    def fail(msg, status):
        print(f"minigpt: {msg}", file=sys.stderr)
        return status

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            argv = sys.argv[1:] if argv is None else [a if isinstance(a, str) else os.fsdecode(a) for a in argv]
            parser = build_parser()
            check_command(argv, parser.commands)
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help()
                return fail("error: choose a command: " + ", ".join(parser.commands), 2)
            status = int(args.fn(args) or 0)
        except SystemExit as e:  # --help
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except UsageError as e:
            return fail(f"error: {_one_line(e)}", 2)
        except TrainingInterrupted as e:
            return fail(_one_line(e), e.exit_status)
        except KeyboardInterrupt:
            return fail("interrupted", 130)
        except MemoryError:
            return fail("error: out of memory; use smaller sizes (model.d_model, train.batch_size, --n, ...)", 1)
        except (CheckpointError, TrainingError, ValueError, TypeError, OSError) as e:
            if isinstance(e, OSError) and e.filename is not None and e.strerror:
                return fail(f"error: {_one_line(OSError(f'{e.filename}: {e.strerror}'))}", 1)
            return fail(f"error: {_one_line(e)}", 1)
        except Exception as e:  # a bug: still one line, never a traceback unless asked for
            if os.environ.get("MINIGPT_DEBUG"):
                raise
            return fail(f"internal error: {type(e).__name__}: {_one_line(e)} (set MINIGPT_DEBUG=1 for the traceback)", INTERNAL_ERROR)
    if status == 0:  # warnings only matter when the command worked; an error is reported in one line
        for w in caught:
            if not issubclass(w.category, RuntimeWarning):
                print(f"minigpt: warning: {_one_line(Exception(w.message))}", file=sys.stderr)
    return status


def entry_point():  # console script
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
