"""minigpt.cli: --version, python -m minigpt, "did you mean" for a mistyped command, help text on every option,
every preset listed by ``train --help`` (bad arguments: tests/test_cli_validation.py, random ones: tests/test_cli_fuzz.py)."""
import os
import pathlib
import pydoc
import re
import subprocess
import sys

import pytest

import minigpt
from minigpt import cli
from minigpt.tasks import presets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(capsys, argv):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_version(capsys):
    status, out, err = run(capsys, ["--version"])
    assert status == 0 and out.strip() == f"minigpt {minigpt.__version__}" and err == ""


def test_python_m_minigpt():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "minigpt", "--version"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert ok.returncode == 0 and ok.stdout.strip() == f"minigpt {minigpt.__version__}", ok.stderr
    bad = subprocess.run([sys.executable, "-m", "minigpt", "trian"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == ["minigpt: error: invalid choice: 'trian' is not a command; did you mean train?"]


@pytest.mark.parametrize("typo, suggestion", [("trian", "train"), ("evl", "eval"), ("gradchek", "gradcheck"), ("reproduec", "reproduce")])
def test_did_you_mean_command(capsys, typo, suggestion):
    status, out, err = run(capsys, [typo, "--out", "x"])
    assert status == 2 and out == ""
    assert err.splitlines() == [f"minigpt: error: invalid choice: {typo!r} is not a command; did you mean {suggestion}?"]


def test_unknown_command_lists_the_commands(capsys):
    status, _, err = run(capsys, ["xyzzy"])
    commands = list(cli.build_parser().commands)
    assert status == 2 and err.splitlines() == [f"minigpt: error: invalid choice: 'xyzzy' is not a command; commands: {', '.join(commands)}"]
    assert {"train", "eval", "gradcheck", "reproduce", "derive", "bench", "sweep"} <= set(commands)


def _options(parser):
    """Every argument of ``parser`` but -h/--help and the subcommand choice (argparse has no public listing)."""
    commands = getattr(parser, "commands", None)
    return [a for a in parser._actions if a.dest != "help" and (commands is None or a.choices is not commands)]


def test_every_option_has_help():
    parser = cli.build_parser()
    assert parser.commands, "no subcommands found"
    missing = [f"minigpt {a.option_strings or a.dest}" for a in _options(parser) if not (a.help or "").strip()]
    for name, sub in parser.commands.items():
        opts = _options(sub)
        assert opts, name
        missing += [f"minigpt {name} {'/'.join(a.option_strings) or a.dest}" for a in opts if not (a.help or "").strip()]
    assert not missing, f"options without help text: {missing}"


def test_train_help_lists_every_preset(capsys):
    assert set(presets.DESCRIPTIONS) == set(presets.PRESETS), "every preset needs a one-line description"
    status, out, _ = run(capsys, ["train", "--help"])
    assert status == 0
    for name in presets.PRESETS:
        desc = presets.DESCRIPTIONS[name]
        assert desc.strip() and "\n" not in desc, name
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(desc)}$", out, re.M), f"preset {name} not listed:\n{out}"
    status, out, _ = run(capsys, ["--help"])
    assert status == 0 and all(name in out for name in presets.PRESETS)


def test_help_of_minigpt_train_is_the_real_function():
    from minigpt.experiments import extensions
    from minigpt.training import loop as training

    assert minigpt.train is training.train and minigpt.extensions_report is extensions.extensions_report
    doc = pydoc.render_doc(minigpt.train)
    assert "minigpt.training" in doc and "model_cfg" in doc  # the module that exists, and the real signature
    with pytest.raises(AttributeError):
        minigpt.no_such_name
