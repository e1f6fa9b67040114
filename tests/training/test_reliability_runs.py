"""Run folders under stress (issue 15): two writers into one folder, stale temporary files of killed
writers, paths too long for the files a run writes, the shard count of a resumed run, and one-line
errors for hostile --set / --preset / --threads values."""
import multiprocessing as mp
import os
import warnings

import numpy as np
import pytest

from minigpt.io import checkpoint as ck
from minigpt.tasks import presets
from minigpt.fast import threads
from minigpt.training import loop as training
from minigpt.io.checkpoint import FolderLock, load_checkpoint
from minigpt.cli import main
from minigpt.training.loop import TrainingError, train

SPEC = presets.apply_overrides(presets.get_preset("tiny"), [
    "model.n_layers=1", "model.d_model=8", "model.d_mlp=8", "train.steps=12", "train.eval_every=3",
    "train.checkpoint_every=6", "train.batch_size=8", "train.eval_size=16", "train.warmup_steps=2",
])


def build(seed=0):
    return presets.build(presets.apply_overrides(SPEC, [f"train.seed={seed}"]))


class Stop(Exception):
    """Raised by a callback after the step-6 checkpoint: a run that stops half-way."""


def stop_at_9(step, model, record):
    if step == 9:
        raise Stop


def params_of(path):
    arrays, meta = load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith("params/")}, meta


def bitwise_equal(a, b):
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def _writer(out, seed, force, barrier, results):
    mcfg, tcfg, task = build(seed)
    barrier.wait()
    try:
        train(mcfg, tcfg, task, out_dir=out, force=force, progress=False, callbacks=[stop_at_9], threads=1)
        results.put((seed, "finished"))
    except Stop:
        results.put((seed, "stopped"))  # it held the folder: the half-way run is its own
    except TrainingError as e:
        results.put((seed, "refused: " + str(e)))
    except BaseException as e:  # noqa: BLE001 - reported to the test
        results.put((seed, f"crashed: {type(e).__name__}: {e}"))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("force", [False, True])
def test_two_writers_started_together_one_is_refused_and_the_survivor_resumes_bitwise(tmp_path, force):
    out = str(tmp_path / "run")
    if force:
        os.makedirs(out)
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(out, seed, force, barrier, results)) for seed in (1, 2)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    winners = [s for s, r in got.items() if r == "stopped"]
    assert len(winners) == 1, got
    loser = 3 - winners[0]
    assert got[loser].startswith("refused: ") and ("is in use by process" in got[loser] or "already holds a run" in got[loser]
                                                  # the loser looked before the winner had written its PID into the lock file
                                                  or "is in use by another process" in got[loser]), got
    # the folder is the winner's, through and through: config, checkpoint, metrics
    mcfg, tcfg, task = build(winners[0])
    assert training.load_run_spec(out)["train"]["seed"] == winners[0]
    import json

    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["train"]["seed"] == winners[0]
    train(mcfg, tcfg, task, out_dir=out, resume=True, progress=False)
    ref = str(tmp_path / "ref")
    train(mcfg, tcfg, task, out_dir=ref, progress=False, threads=1)
    (p_run, m_run), (p_ref, m_ref) = params_of(os.path.join(out, "checkpoint.npz")), params_of(os.path.join(ref, "checkpoint.npz"))
    assert bitwise_equal(p_run, p_ref) and m_run["history"] == m_ref["history"]
    with open(os.path.join(out, "metrics.jsonl")) as f, open(os.path.join(ref, "metrics.jsonl")) as g:
        assert f.read() == g.read()


@pytest.mark.parametrize("extra", [[], ["--force"], ["--resume"]])
def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, capsys, extra):
    out = tmp_path / "run"
    mcfg, tcfg, task = build(0)
    if extra == ["--resume"]:
        train(mcfg, tcfg, task, out_dir=out, progress=False, threads=1)
    out.mkdir(exist_ok=True)
    before = sorted(os.listdir(out))
    with FolderLock(out):  # another process holds it (the lock is per open file: this process counts as another writer)
        args = ["train", "--out", str(out), "--quiet", "--threads", "1"] + (extra or ["--preset", "tiny"])
        assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is in use by process {os.getpid()}" in err, err
    assert sorted(os.listdir(out)) == sorted(set(before) | {".lock"})


def test_a_second_sweep_is_refused(tmp_path):
    from minigpt.experiments import sweep

    out = tmp_path / "sweep"
    jobs = sweep.make_jobs(["tiny"], [[]], seeds=1, out=str(out), steps=2)
    out.mkdir()
    with FolderLock(out):
        with pytest.raises(ValueError, match=f"is in use by process {os.getpid()}"):
            sweep.run_sweep(jobs, str(out), workers=1, log=lambda m: None)
    assert not os.path.exists(jobs[0]["run_dir"])  # nothing trained


def test_the_lock_is_released_after_a_run_and_after_an_error(tmp_path):
    out = tmp_path / "run"
    mcfg, tcfg, task = build(0)
    with pytest.raises(Stop):
        train(mcfg, tcfg, task, out_dir=out, progress=False, callbacks=[stop_at_9], threads=1)
    FolderLock(out).release()  # free again
    train(mcfg, tcfg, task, out_dir=out, resume=True, progress=False)
    FolderLock(out).release()


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    out = tmp_path / "run"
    mcfg, tcfg, task = build(0)
    with pytest.raises(Stop):
        train(mcfg, tcfg, task, out_dir=out, progress=False, callbacks=[stop_at_9], threads=1)
    dead = out / ".tmp-999999999-abcdefgh.npz"  # pid beyond any pid_max: its writer is gone
    old = out / ".tmp-k2j4h5g6.npz"  # the name an older minigpt used
    for p in (dead, old):
        p.write_bytes(b"PK\x03\x04 half a checkpoint")
    train(mcfg, tcfg, task, out_dir=out, resume=True, progress=False)
    assert not dead.exists() and not old.exists()
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_a_path_too_long_for_the_checkpoint_fails_before_training(tmp_path):
    """The filer's case: config.json.tmp still fits, the checkpoint's temporary name does not."""
    limit = os.pathconf(str(tmp_path), "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    base = str(tmp_path)
    want = limit - 1 - len(".tmp-12345678.npz")  # a path to the checkpoint's temp file of length PATH_MAX
    parts = []
    while len(os.path.join(base, *parts)) < want - 200:
        parts.append("d" * 200)
    parts.append("e" * (want - len(os.path.join(base, *parts)) - 1))
    out = os.path.join(base, *parts)
    assert len(out) == want and len(out) + 1 + len("config.json.tmp") < limit
    seen = []
    mcfg, tcfg, task = build(0)
    with pytest.raises(TrainingError, match="too long"):
        train(mcfg, tcfg, task, out_dir=out, progress=False, callbacks=[lambda s, m, r: seen.append(s)], threads=1)
    assert seen == []  # refused before the first step


def test_resume_rewrites_a_wrong_config_json(tmp_path):
    out = tmp_path / "run"
    mcfg, tcfg, task = build(0)
    with pytest.raises(Stop):
        train(mcfg, tcfg, task, out_dir=out, progress=False, callbacks=[stop_at_9], threads=1)
    (out / "config.json").write_text('{"train": {"seed": 99}}')  # e.g. left by a losing writer
    train(mcfg, tcfg, task, out_dir=out, resume=True, progress=False)
    import json

    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 0


# ---------------------------------------------------------------- the shard count of a resumed run
def test_resume_uses_the_recorded_shard_count(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)  # two shards on any machine
    monkeypatch.setattr(training, "usable_cores", lambda: 2)
    out, ref = tmp_path / "run", tmp_path / "ref"
    mcfg, tcfg, task = build(0)
    with pytest.raises(Stop):
        train(mcfg, tcfg, task, out_dir=out, progress=False, callbacks=[stop_at_9], threads=2)
    assert params_of(out / "checkpoint.npz")[1]["shards"] == 2
    monkeypatch.setattr(threads, "default_threads", lambda: 1)  # "auto" on this machine says 1 ...
    train(mcfg, tcfg, task, out_dir=out, resume=True, progress=False)  # ... the record says 2
    train(mcfg, tcfg, task, out_dir=ref, progress=False, threads=2)
    assert bitwise_equal(params_of(out / "checkpoint.npz")[0], params_of(ref / "checkpoint.npz")[0])


def test_resume_with_another_shard_count_warns_or_refuses(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    out = tmp_path / "run"
    mcfg, tcfg, task = build(0)
    with pytest.raises(Stop):
        train(mcfg, tcfg, task, out_dir=out, progress=False, callbacks=[stop_at_9, ], threads=2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)  # a smaller machine
    monkeypatch.setattr(training, "usable_cores", lambda: 1)
    with pytest.raises(TrainingError, match="2 shards.*1 usable core"):
        train(mcfg, tcfg, task, out_dir=out, resume=True, progress=False)
    with pytest.warns(UserWarning, match="no longer bitwise identical"):
        train(mcfg, tcfg, task, out_dir=out, resume=True, progress=False, threads=1)


# ---------------------------------------------------------------- one-line errors for hostile values
def _one_line(capsys, argv, status):
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minigpt: error: ") and "Traceback" not in err, err
    assert len(err) < 400, f"{len(err)} characters"
    return err


def test_threads_is_capped_at_the_usable_cores(tmp_path, capsys):
    cap = threads.usable_cores()
    err = _one_line(capsys, ["train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--threads", "100000"], 2)
    assert f"at most {cap}" in err and not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match=f"more than the {cap} usable core"):
        threads.resolve_threads(cap + 1)


def test_hostile_set_values_name_the_field_and_stay_short(tmp_path, capsys):
    out = str(tmp_path / "r")
    err = _one_line(capsys, ["train", "--out", out, "--set", "model.d_model=" + "[" * 100_000 + "]" * 100_000], 2)
    assert "model.d_model" in err
    err = _one_line(capsys, ["train", "--out", out, "--set", "train.seed=" + "9" * 100_000], 2)
    assert "train.seed" in err
    err = _one_line(capsys, ["train", "--out", out, "--set", "train.seed=" + "[" * 1500 + "]" * 1500], 2)  # RecursionError in json
    assert "train.seed" in err and "nested too deeply" in err
    err = _one_line(capsys, ["train", "--out", out, "--set", "data.a=" + "x" * 4000], 1)  # echoed by the data section's check
    assert "data.a" in err
    err = _one_line(capsys, ["train", "--out", out, "--set", "model.act_fn=" + "x" * 900], 1)
    assert "model.act_fn" in err
    assert not os.path.exists(out)


def test_an_empty_preset_name_is_refused(tmp_path, capsys):
    err = _one_line(capsys, ["train", "--preset", "", "--out", str(tmp_path / "r"), "--set", "train.steps=1", "--quiet"], 1)
    assert "unknown preset ''" in err and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- targets
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e39])
def test_non_finite_or_overflowing_targets_are_refused(bad):
    from minigpt import ModelConfig, Transformer

    m = Transformer(ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=8), seed=0)
    x, y = np.ones((2, 5)), np.zeros((2, 5))
    y[1, 3] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw RuntimeWarning on the way
        for fn in (m.loss_and_grad, m.loss):
            with pytest.raises(ValueError, match="target contains NaN or infinite values, or values beyond the float32 range"):
                fn(x, y)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_during_the_metrics_log_names_the_file(tmp_path):
    out = tmp_path / "run"
    mcfg, tcfg, task = build(0)

    def disk_fills_up(step, model, record):
        if step == 3:  # from now on every write to the log fails with ENOSPC
            os.unlink(out / "metrics.jsonl")
            os.symlink("/dev/full", out / "metrics.jsonl")

    with pytest.raises(OSError) as e:
        train(mcfg, tcfg, task, out_dir=out, progress=False, callbacks=[disk_fills_up], threads=1)
    assert e.value.errno == 28 and e.value.filename == str(out / "metrics.jsonl")
