"""Fuzz ``minigpt.cli.main(argv)`` with hypothesis-generated argument lists: valid commands, valid
flags with bad values, and token soup.  It must always return an int and never raise; a non-zero
status comes with exactly one line on stderr; status 70 (an internal error, i.e. a bug) never occurs.

Training stays tiny: the presets are shrunk for the test (2 steps, small batches), and every
generated integer value is either small or far beyond every limit (refused before any work)."""
import contextlib
import io
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt import cli
from minigpt.tasks import presets
from minigpt.nn.config import ModelConfig
from minigpt.tasks.data import AffineRecurrence
from minigpt.fast.model import Transformer
from minigpt.training.loop import train

TINY_PRESETS = {
    name: {
        "model": dict(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=10),
        "train": dict(steps=2, batch_size=4, eval_every=1, eval_size=8, checkpoint_every=1, warmup_steps=1),
        "data": dict(a=("uniform", -1.0, 1.0), b=("uniform", -1.0, 1.0), x0=("uniform", -1.0, 1.0), length=6),
    }
    for name in ("paper", "tiny")
}

FIELDS = (
    [f"model.{f}" for f in ModelConfig.__dataclass_fields__]
    + [f"train.{f}" for f in ("steps", "batch_size", "lr", "warmup_steps", "weight_decay", "grad_clip", "eval_every",
                              "eval_size", "checkpoint_every", "seed", "beta1", "beta2", "min_lr_ratio")]
    + ["data.a", "data.b", "data.x0", "data.length", "data.noise", "data.name", "model.bogus", "optim.lr", "model", ""]
)
VALUES = [
    "-1", "0", "1", "2", "3", "4", "8", "1.5", "1e-3", "0.5", "10", "10000000000", "1e400", "NaN", "-Infinity",
    "abc", "null", "None", "true", "false", "", "[]", "{}", '{"a": 1}', '["uniform", -1, 1]', '["uniform", 1, -1]',
    '["normal", 0, 1]', '["beta", 0, 1]', '["uniform", -5, 5]', "[1, 2]", '["uniform", "x", 1]', "LN", "gelu", "relu",
    "float64", "float16", '"LN"', "\u00e9\u2028x", "1" * 400,
]
# no path escapes the per-example temporary folder that is the working directory
GARBAGE = st.text(max_size=12).filter(lambda s: ".." not in s and not s.startswith(("/", "~")))


# plausible values per field: most generated overrides are valid, so training, resuming and
# evaluation paths are reached, not only the parser's errors
PLAUSIBLE = {
    "model.n_layers": ["1", "2"], "model.d_model": ["4", "8", "6"], "model.n_heads": ["1", "2", "4"],
    "model.d_head": ["null", "2", "3"], "model.d_mlp": ["4", "8"], "model.n_ctx": ["5", "8", "12"],
    "model.attn_only": ["true", "false"], "model.normalization_type": ["null", "LN"],
    "model.act_fn": ["gelu", "relu", "gelu_new"], "model.dtype": ["float64", "float32"], "model.init_range": ["0.1", "1e3"],
    "train.steps": ["1", "2", "3"], "train.batch_size": ["1", "3"], "train.lr": ["1e-3", "10"],
    "train.grad_clip": ["0", "1"], "train.eval_every": ["1", "2"], "train.checkpoint_every": ["1", "2", "5"],
    "train.seed": ["0", "7"], "train.warmup_steps": ["0", "5"], "train.eval_size": ["1", "5"],
    "data.a": ['["uniform", -1, 1]', '["normal", 0, 0.3]', "0.5", '["uniform", -4, 4]'],
    "data.b": ['["uniform", 0, 0]', '["normal", 1, 2]'], "data.x0": ['["uniform", -1, 1]', "3"],
    "data.length": ["2", "6", "9", "13"], "data.noise": ["0", "0.1"],
}


def _set_values():
    return st.one_of(
        st.sampled_from(sorted(PLAUSIBLE)).flatmap(lambda k: st.sampled_from(PLAUSIBLE[k]).map(lambda v: f"{k}={v}")),
        st.sampled_from(sorted(PLAUSIBLE)).flatmap(lambda k: st.sampled_from(PLAUSIBLE[k]).map(lambda v: f"{k}={v}")),
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(FIELDS), st.sampled_from(VALUES)),
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(FIELDS), GARBAGE),
        GARBAGE,
    )


PATHS = st.sampled_from(["run", "run", "fresh/run", "existing", "existing", "afile", "afile/sub", "", " ", ".", "model.npz",
                         "existing/checkpoint.npz", "bad.npz", "half.npz", "missing.npz", "nul\0x"])
INTS = st.one_of(st.sampled_from(["1", "3", "7", "12345"]), st.sampled_from(["-1", "0", "10000000000", "abc", "", "1.5", "0x10"]))


@st.composite
def argv_lists(draw):
    kind = draw(st.sampled_from(["train"] * 4 + ["eval"] * 2 + ["gradcheck", "derive", "reproduce", "bench", "soup", "top"]))
    a = []
    if kind == "train":
        a = ["train"]
        if draw(st.integers(0, 9)):
            a += ["--out", draw(PATHS)]
        if draw(st.booleans()):
            a += ["--preset", draw(st.one_of(st.sampled_from(["tiny", "paper"]), st.sampled_from(["tiny", "paper"]), GARBAGE))]
        for s in draw(st.lists(_set_values(), max_size=4)):
            a += ["--set", s]
        for flag in ("--resume", "--force", "--quiet"):
            if draw(st.integers(0, 3)) == 0:
                a.append(flag)
        if "--resume" in a and draw(st.booleans()):  # a clean resume, sometimes
            a = ["train", "--resume", "--out", draw(PATHS)]
    elif kind == "eval":
        a = ["eval"]
        if draw(st.integers(0, 5)):
            a.append(draw(st.one_of(st.sampled_from(["existing/checkpoint.npz", "model.npz"]), PATHS)))
        a += ["--n", draw(INTS)]  # the default (4096) would be slow-ish
        if draw(st.booleans()):
            a += ["--seed", draw(INTS)]
        if draw(st.booleans()):
            a += ["--preset", draw(st.one_of(st.sampled_from(["tiny", "paper"]), st.sampled_from(["tiny", "paper"]), GARBAGE))]
        if draw(st.integers(0, 3)) == 0:
            a += ["--json", draw(PATHS)]
    elif kind == "gradcheck":
        a = ["gradcheck"]
        if draw(st.booleans()):
            a += ["--preset", draw(st.one_of(st.sampled_from(["tiny", "paper"]), GARBAGE))]
        if draw(st.booleans()):
            a += ["--seed", draw(INTS)]
    elif kind in ("derive", "reproduce", "bench"):
        a = [kind] + draw(st.lists(st.one_of(GARBAGE, st.sampled_from(["--latex", "--quick", "--seeds", "2", "--steps", "1"])), max_size=3))
    elif kind == "soup":
        tokens = st.one_of(
            st.sampled_from(["train", "eval", "gradcheck", "--out", "--set", "--preset", "--resume", "--force", "--n",
                             "--seed", "--json", "--quiet", "-h", "--", "-", "tiny", "paper"]),
            PATHS, _set_values(), GARBAGE,
        )
        a = draw(st.lists(tokens, max_size=8))
    else:
        a = draw(st.sampled_from([[], ["--bogus"], ["-h"], ["--help"], ["train", "-h"], ["eval", "--help"]]))
    return a


@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory):
    """A finished tiny run, a bare model file and damaged files, copied into each example's folder."""
    d = tmp_path_factory.mktemp("fuzz-src")
    spec = TINY_PRESETS["tiny"]
    train(ModelConfig(**spec["model"]), presets.build({"train": spec["train"]})[1], AffineRecurrence(**spec["data"]),
          out_dir=d / "existing", progress=False)
    Transformer(ModelConfig(**spec["model"]), seed=0).save(d / "model.npz")
    (d / "afile").write_text("not a folder")
    np.savez(d / "bad.npz", weights=np.ones(3))
    data = (d / "existing" / "checkpoint.npz").read_bytes()
    (d / "half.npz").write_bytes(data[: len(data) // 2])
    return d


@pytest.fixture
def quick(monkeypatch):
    """Tiny presets; gradcheck on one small config; the other engineers' long-running commands stubbed."""
    monkeypatch.setattr(presets, "PRESETS", TINY_PRESETS)

    def one_config(preset):
        presets.get_preset(preset)  # keep the unknown-preset error
        yield ModelConfig(n_layers=1, d_model=4, n_heads=1, d_mlp=4, n_ctx=3, dtype="float64")

    monkeypatch.setattr(cli, "gradcheck_configs", one_config)
    monkeypatch.setattr(cli, "cmd_reproduce", lambda args: 0)
    monkeypatch.setattr(cli, "cmd_bench", lambda args: 0)
    monkeypatch.setattr(cli, "cmd_derive", lambda args: 0)


def check(argv, src):
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        for name in os.listdir(src):
            p = os.path.join(src, name)
            (shutil.copytree if os.path.isdir(p) else shutil.copy)(p, os.path.join(d, name))
        os.chdir(d)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = cli.main(list(argv))
        finally:
            os.chdir(cwd)
    err = err.getvalue()
    assert isinstance(status, int) and not isinstance(status, bool), (argv, status)
    assert status != cli.INTERNAL_ERROR, (argv, err)
    if status != 0:
        assert len(err.splitlines()) == 1 and err.endswith("\n"), (argv, status, err)
    return status


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(argv=argv_lists())
def test_cli_fuzz(argv, fixtures_dir, quick):
    check(argv, fixtures_dir)


def test_fuzz_harness_sees_successes_and_failures(fixtures_dir, quick):
    """The harness itself: valid commands succeed, a bad one fails with one line."""
    assert check(["train", "--out", "run", "--preset", "tiny", "--quiet"], fixtures_dir) == 0
    assert check(["train", "--out", "existing", "--resume"], fixtures_dir) == 0
    assert check(["eval", "existing/checkpoint.npz", "--n", "3"], fixtures_dir) == 0
    assert check(["eval", "model.npz", "--n", "3", "--preset", "tiny"], fixtures_dir) == 0
    assert check(["gradcheck"], fixtures_dir) == 0
    assert check(["train", "--out", "run", "--set", "train.steps=abc"], fixtures_dir) == 1
