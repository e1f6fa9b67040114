"""Every bad input gets one clear line and a non-zero status from the CLI, and a precise exception
from the API (configs, presets, ``--set`` overrides, paths, checkpoints, shapes)."""
import os

import numpy as np
import pytest

import minigpt
from minigpt.tasks import presets
from minigpt.cli import main
from minigpt.nn.config import ModelConfig, TrainConfig
from minigpt.tasks.data import AffineRecurrence
from minigpt.training.loop import TrainingError, train


def run(capsys, argv):
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    assert isinstance(status, int)
    if status != 0:
        assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    return status, err


def T(out, *sets):
    argv = ["train", "--preset", "tiny", "--quiet", "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    return argv


BAD_SETS = [
    ("train.steps=abc", "train.steps must be an integer"),
    ("train.steps=1.5", "train.steps must be an integer"),
    ("train.steps=true", "train.steps must be an integer"),
    ("train.steps=0", "train.steps must be an integer in [1,"),
    ("train.steps=10000000000", "train.steps must be an integer in [1,"),
    ("train.lr=-1", "train.lr must be > 0"),
    ("train.lr=NaN", "train.lr must be a finite number"),
    ("train.lr=1e400", "train.lr must be a finite number"),
    ("train.lr=fast", "train.lr must be a finite number"),
    ("train.beta2=1", "train.beta2 must be"),
    ("train.batch_size=null", "train.batch_size must be an integer"),
    ("train.seed=-3", "train.seed"),
    ("model.d_model=-1", "model.d_model must be an integer"),
    ("model.d_model=1000000", "model.d_model must be an integer in [1, 65536]"),
    ("model.n_heads=3", "divisible by model.n_heads"),
    ("model.dtype=float16", "model.dtype must be one of"),
    ("model.act_fn=swish", "model.act_fn"),
    ("model.normalization_type=RMS", "model.normalization_type"),
    ("model.attn_only=yes", "model.attn_only must be true or false"),
    ("model.eps=0", "model.eps must be > 0"),
    ("model.n_ctx=4", "exceed model.n_ctx"),
    ("model.d_in=2", "set model.d_in = model.d_out = 1"),
    ('data.a=["beta",0,1]', "data.a: prior kind"),
    ("data.a=[1,2]", "data.a: a prior is"),
    ('data.a=["uniform",1,-1]', "lo <= hi"),
    ('data.b=["normal",0,-1]', "std >= 0"),
    ('data.x0=["uniform","a",1]', "prior parameters must be numbers"),
    ("data.length=1", "data.length must be an integer >= 2"),
    ("data.length=abc", "data.length"),
    ("data.noise=-1", "data.noise"),
    ("data.name=x", "unknown field 'data.name'"),
    ("model.bogus=1", "unknown field 'model.bogus'"),
    ("foo.bar=1", "unknown override section 'foo'"),
    ("train=3", "must be section.field"),
    ("nonsense", "must look like section.field=value"),
]


@pytest.mark.parametrize("override, words", BAD_SETS)
def test_bad_overrides(tmp_path, capsys, override, words):
    status, err = run(capsys, T(tmp_path / "run", override))
    assert status == 1 and words in err and err.startswith("minigpt: error: ")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_too_many_parameters_refused_before_allocation(tmp_path, capsys):
    status, err = run(capsys, T(tmp_path / "run", "model.d_model=4096", "model.d_mlp=65536"))
    assert status == 1 and "parameters, more than the limit" in err


def test_usage_errors(tmp_path, capsys):
    cases = [
        ([], "choose a command"),
        (["bogus"], "invalid choice"),
        (["train"], "--out"),
        (["train", "--out", str(tmp_path / "r"), "--bogus"], "unrecognized arguments"),
        (["train", "--out", ""], "--out needs a folder name"),
        (["train", "--out", "   "], "--out needs a folder name"),
        (["eval"], "checkpoint"),
        (["eval", "x.npz", "--n", "abc"], "invalid int value"),
        (["eval", "x.npz", "--n", "0"], "--n must be between 1"),
        (["eval", "x.npz", "--n", "10000000000"], "--n must be between 1"),
        (["eval", "x.npz", "--seed", "-1"], "--seed must be between"),
        (["gradcheck", "--seed", "x"], "invalid int value"),
    ]
    for argv, words in cases:
        status, err = run(capsys, argv)
        assert status == 2 and words in err, (argv, err)


def test_bad_preset_and_paths(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    cases = [
        (["train", "--preset", "nope", "--out", str(tmp_path / "r")], "unknown preset 'nope'"),
        (["gradcheck", "--preset", "nope"], "unknown preset 'nope'"),
        (T(f), "exists and is not a folder"),
        (T(f / "sub"), "a part of the path is a file"),
        (T(tmp_path / "nul\0byte"), "NUL"),
        (["train", "--out", str(tmp_path / "none"), "--resume"], "does not exist"),
        (["eval", str(tmp_path / "missing.npz")], "no such checkpoint"),
        (["eval", str(f)], "not a .npz"),
    ]
    for argv, words in cases:
        status, err = run(capsys, argv)
        assert status == 1 and words in err, (argv, err)
    assert f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_run_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        status, err = run(capsys, T(ro / "run"))
        assert status == 1 and "cannot create the run folder" in err
        status, err = run(capsys, T(ro))
        assert status == 1 and "not writable" in err
    finally:
        ro.chmod(0o700)


def test_unwritable_system_path(capsys):
    if os.path.exists("/sys/minigpt-test-run") or not os.path.isdir("/sys"):
        pytest.skip("no /sys")
    status, err = run(capsys, T("/sys/minigpt-test-run"))
    assert status == 1 and "run folder" in err


def test_eval_checks_data_against_the_model(tmp_path, capsys):
    m = minigpt.Transformer(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=4), seed=0)
    m.save(tmp_path / "m.npz")
    status, err = run(capsys, ["eval", str(tmp_path / "m.npz"), "--preset", "tiny"])  # tiny data: length 10 > n_ctx 4
    assert status == 1 and "n_ctx" in err
    status, err = run(capsys, ["eval", str(tmp_path / "m.npz"), "--preset", "nope"])
    assert status == 1 and "unknown preset" in err
    status, err = run(capsys, ["eval", str(tmp_path / "m.npz"), "--n", "4", "--json", str(tmp_path)])
    assert status == 2 and "is a folder" in err  # refused before evaluating, like every bad option


# ---------------------------------------------------------------- API
def test_api_refuses_bad_arguments(tmp_path):
    mcfg = ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=6)
    tcfg = TrainConfig(steps=2, batch_size=4, eval_size=8)
    task = AffineRecurrence(length=6)
    with pytest.raises(TypeError, match="model_cfg must be"):
        train({"d_model": 8}, tcfg, task)
    with pytest.raises(TypeError, match="train_cfg must be"):
        train(mcfg, {"steps": 2}, task)
    with pytest.raises(TypeError, match="task must be a minigpt.tasks.data task"):
        train(mcfg, tcfg, "affine")
    with pytest.raises(ValueError, match="contradict"):
        train(mcfg, tcfg, task, out_dir=tmp_path / "r", resume=True, force=True)
    with pytest.raises(TypeError, match="callbacks"):
        train(mcfg, tcfg, task, callbacks=[3])
    with pytest.raises(ValueError, match="exceed model.n_ctx"):
        train(mcfg, tcfg, AffineRecurrence(length=9))
    with pytest.raises(TrainingError, match="empty"):
        train(mcfg, tcfg, task, out_dir="")
    train(mcfg, tcfg, task, out_dir=tmp_path / "r", progress=False)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(mcfg, tcfg, task, out_dir=tmp_path / "r", progress=False)


def test_spec_validation():
    with pytest.raises(ValueError, match="unknown field model.widht"):
        ModelConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="unknown field train.step; did you mean train.steps"):
        TrainConfig.from_dict({"step": 3})
    with pytest.raises(ValueError, match="mapping"):
        TrainConfig.from_dict([1])
    with pytest.raises(ValueError, match="unknown spec section 'optim'"):
        presets.build({"optim": {}})
    with pytest.raises(ValueError, match="unknown field data.alpha"):
        presets.build({"data": {"alpha": 1}})
    with pytest.raises(ValueError, match="mapping"):
        presets.build([])
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get_preset(["tiny"])
    for name in presets.PRESETS:
        presets.build(presets.get_preset(name))


def test_model_input_shapes_are_checked():
    m = minigpt.Transformer(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=6), seed=0)
    for x, words in [
        (np.zeros(3), "shape"),
        (np.zeros((2, 7)), "n_ctx"),
        (np.zeros((0, 3)), "at least one"),
        (np.zeros((2, 3, 2)), "shape"),
        (np.array([["a", "b"]]), "real numbers"),
        (np.full((1, 3), np.nan), "NaN"),
    ]:
        with pytest.raises(ValueError, match=words):
            m(x)
    with pytest.raises(ValueError, match="target"):
        m.loss_and_grad(np.zeros((2, 3)), np.zeros((2, 4)))


def test_internal_errors_are_one_line_with_status_70(capsys, monkeypatch):
    from minigpt import cli

    def buggy(args):
        raise ZeroDivisionError("a bug\nover two lines")

    monkeypatch.setattr(cli, "cmd_gradcheck", buggy)
    status, err = run(capsys, ["gradcheck"])
    assert status == cli.INTERNAL_ERROR and "internal error: ZeroDivisionError: a bug over two lines" in err
    monkeypatch.setenv("MINIGPT_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["gradcheck"])


@pytest.mark.parametrize("field", ["lr", "weight_decay", "grad_clip"])
def test_an_int_too_large_for_a_float_is_a_range_error(field):
    """Found by the CLI fuzz: ``--set train.lr=111...1`` (400 digits) raised OverflowError."""
    from minigpt import TrainConfig

    with pytest.raises(ValueError, match=rf"train\.{field} must be .*got 1111"):
        TrainConfig(**{field: int("1" * 400)})
