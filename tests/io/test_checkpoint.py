"""Checkpoints: atomic writes, and every kind of damaged, forged or foreign file gets a clean
``CheckpointError`` naming the problem; pickles are never executed."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import minigpt
from minigpt.io import checkpoint as ck
from minigpt.io.checkpoint import CheckpointError, arrays_digest, load_checkpoint, save_checkpoint
from minigpt.cli import main
from minigpt.nn.config import ModelConfig, TrainConfig
from minigpt.tasks.data import AffineRecurrence
from minigpt.training.loop import train

MCFG = ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=6)
TCFG = TrainConfig(steps=4, batch_size=8, eval_every=2, eval_size=16, checkpoint_every=2, warmup_steps=1)
TASK = AffineRecurrence(length=6)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real training checkpoint (params, optimizer state, RNG, history)."""
    d = tmp_path_factory.mktemp("run")
    train(MCFG, TCFG, TASK, out_dir=d / "run", progress=False)
    return d / "run" / "checkpoint.npz"


def raw(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    return arrays, meta


def write(path, arrays, meta, rehash=True):
    """Write a forged checkpoint; ``rehash`` recomputes the checksum, as a careful forger would."""
    meta = dict(meta)
    if rehash:
        meta.pop("sha256", None)
        meta["sha256"] = arrays_digest(arrays, meta)
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return path


def refused(path, *words):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    for w in words:
        assert w in msg, msg
    return msg


def test_round_trip_is_bitwise(good, tmp_path):
    arrays, meta = load_checkpoint(good)
    assert meta["version"] == ck.VERSION and meta["step"] == 4
    model = minigpt.Transformer.load(good)
    p = tmp_path / "m.npz"
    model.save(p)
    again = minigpt.Transformer.load(p)
    for k, v in model.params.items():
        assert v.tobytes() == again.params[k].tobytes() == arrays["params/" + k].tobytes()


# ---------------------------------------------------------------- truncation and bit flips
@pytest.mark.parametrize("keep", [0, 1, 3, 4, 30, 100, 1000, -1000, -100, -22, -1])
def test_truncated(good, tmp_path, keep):
    data = good.read_bytes()
    p = tmp_path / "t.npz"
    p.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    refused(p)


def test_bit_flips_never_give_different_data(good, tmp_path):
    """Every flipped bit is either refused or harmless (zip timestamps, padding): never silently
    different arrays or record."""
    data = good.read_bytes()
    ref_arrays, ref_meta = load_checkpoint(good)
    rng = np.random.default_rng(0)
    positions = sorted(set(range(0, 200)) | set(rng.integers(0, len(data), 400).tolist()) | set(range(len(data) - 200, len(data))))
    refused_count = 0
    p = tmp_path / "f.npz"
    for pos in positions:
        b = bytearray(data)
        b[pos] ^= 1 << int(rng.integers(8))
        p.write_bytes(bytes(b))
        try:
            arrays, meta = load_checkpoint(p)
        except CheckpointError:
            refused_count += 1
            continue
        assert meta == ref_meta, pos
        assert arrays.keys() == ref_arrays.keys()
        for k in arrays:
            assert arrays[k].tobytes() == ref_arrays[k].tobytes(), (pos, k)
    assert refused_count > len(positions) // 2


def test_flipped_array_byte_with_valid_zip_crc_fails_checksum(good, tmp_path):
    """A forger who fixes the zip CRC still hits the SHA-256."""
    arrays, meta = raw(good)
    arrays["params/embed.W_E"] = arrays["params/embed.W_E"].copy()
    arrays["params/embed.W_E"].view(np.uint8)[0] ^= 1
    refused(write(tmp_path / "c.npz", arrays, meta, rehash=False), "checksum mismatch")


def test_altered_record_fails_checksum(good, tmp_path):
    arrays, meta = raw(good)
    meta["step"] = 2
    meta["opt_t"] = 2
    refused(write(tmp_path / "c.npz", arrays, meta, rehash=False), "checksum mismatch")


# ---------------------------------------------------------------- forged records
@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a, m: m.update(version=99), ["version 99"]),
        (lambda a, m: m.update(version="2"), ["version '2'"]),
        (lambda a, m: m.update(version=True), ["version True"]),
        (lambda a, m: m.update(format="somebody-else"), ["not a minigpt checkpoint"]),
        (lambda a, m: m.pop("format"), ["not a minigpt checkpoint"]),
        (lambda a, m: a.pop("params/unembed.b_U"), ["'params/unembed.b_U' is missing"]),
        (lambda a, m: a.pop("opt.v/embed.W_E"), ["'opt.v/embed.W_E' is missing"]),
        (lambda a, m: a.update({"params/extra": np.zeros(3, np.float32)}), ["unexpected array 'params/extra'"]),
        (lambda a, m: a.update({"params/embed.W_E": np.zeros((2, 8), np.float32)}), ["shape [2, 8]"]),
        (lambda a, m: a.update({"params/embed.W_E": np.zeros((1, 8), np.float64)}), ["dtype float64"]),
        (lambda a, m: a.update({"params/embed.W_E": np.zeros((1, 8), np.int32)}), ["dtype int32"]),
        (lambda a, m: a.update({"params/embed.W_E": np.zeros((1, 8), "U3")}), ["only numeric"]),
        (lambda a, m: a.update({"params/embed.W_E": np.full((1, 8), np.nan, np.float32)}), ["NaN or infinite"]),
        (lambda a, m: a.update({"opt.m/embed.W_E": np.full((1, 8), np.inf, np.float32)}), ["'opt.m/embed.W_E' holds NaN"]),
        (lambda a, m: m["model"].update(d_model=-1), ["invalid model config", "model.d_model"]),
        (lambda a, m: m["model"].update(bogus=1), ["invalid model config", "bogus"]),
        (lambda a, m: m.update(model="x"), ["invalid model config"]),
        (lambda a, m: m.update(step=-1), ["step must be an integer"]),
        (lambda a, m: m.update(step="4"), ["step must be an integer"]),
        (lambda a, m: m.update(opt_t=3), ["optimizer step count"]),
        (lambda a, m: m.update(step=99, opt_t=99), ["beyond train.steps"]),
        (lambda a, m: m["train"].update(lr="fast"), ["invalid train config", "train.lr"]),
        (lambda a, m: m["data"].update(a=["beta", 0, 1]), ["invalid data config", "data.a"]),
        (lambda a, m: m.update(rng={"bit_generator": "MT19937"}), ["invalid RNG state"]),
        (lambda a, m: m.update(rng=None), ["invalid RNG state"]),
        (lambda a, m: m.update(history={}), ["history"]),
    ],
)
def test_forged(good, tmp_path, change, words):
    arrays, meta = raw(good)
    change(arrays, meta)
    refused(write(tmp_path / "forged.npz", arrays, meta), *words)


def test_meta_record_malformed(good, tmp_path):
    arrays, _ = raw(good)
    p = tmp_path / "m.npz"
    np.savez(p, __meta__=np.frombuffer(b"{not json", np.uint8), **arrays)
    refused(p, "not valid JSON")
    np.savez(p, __meta__=np.zeros((2, 2), np.uint8), **arrays)
    refused(p, "malformed __meta__")
    np.savez(p, __meta__=np.frombuffer(b"[1, 2]", np.uint8), **arrays)
    refused(p, "not a minigpt checkpoint")
    np.savez(p, **arrays)
    refused(p, "no __meta__")


# ---------------------------------------------------------------- pickles: no code runs
class Boom:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_array_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "PWNED"
    obj = np.empty(1, dtype=object)
    obj[0] = Boom(marker)
    p = tmp_path / "evil.npz"
    meta = {"format": ck.FORMAT, "version": ck.VERSION, "model": MCFG.to_dict()}
    np.savez(p, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **{"params/embed.W_E": obj})
    # control: the payload is live (loading it with pickles allowed runs it)
    with np.load(p, allow_pickle=True) as z:
        z["params/embed.W_E"]
    assert marker.exists()
    marker.unlink()
    refused(p, "pickled object")
    with pytest.raises(CheckpointError):
        minigpt.Transformer.load(p)
    assert main(["eval", str(p)]) == 1
    assert not marker.exists()


def test_pickled_meta_and_raw_pickle_file_are_refused(tmp_path):
    marker = tmp_path / "PWNED"
    obj = np.empty(1, dtype=object)
    obj[0] = Boom(marker)
    p = tmp_path / "evil_meta.npz"
    np.savez(p, __meta__=obj)
    refused(p, "pickled object")
    q = tmp_path / "evil.pkl"
    q.write_bytes(pickle.dumps(Boom(marker)))
    refused(q, "not a .npz")
    r = tmp_path / "evil.npy"
    np.save(r, obj, allow_pickle=True)
    refused(r, "not a .npz")
    assert not marker.exists()


# ---------------------------------------------------------------- foreign files and paths
def test_foreign_and_missing(tmp_path):
    refused(tmp_path / "nope.npz", "no such checkpoint")
    refused(tmp_path, "is a folder")
    (tmp_path / "empty").write_bytes(b"")
    refused(tmp_path / "empty", "empty file")
    (tmp_path / "text").write_text("hello\n")
    refused(tmp_path / "text", "not a .npz")
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    refused(tmp_path / "other.npz", "no __meta__")
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:
        z.writestr("readme.txt", "hi")
    refused(tmp_path / "zip.npz", "not a .npy")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    refused(tmp_path / "empty.npz", "empty archive")
    with pytest.raises(CheckpointError):
        load_checkpoint("")
    with pytest.raises(CheckpointError):
        load_checkpoint(12)
    with pytest.raises(CheckpointError):
        load_checkpoint("a\0b")


def test_version1_files_still_load(good, tmp_path):
    """Version 1 (checksum over the arrays only) is still readable."""
    arrays, meta = raw(good)
    meta["version"] = 1
    meta["sha256"] = arrays_digest(arrays)
    arrays2, meta2 = load_checkpoint(write(tmp_path / "v1.npz", arrays, meta, rehash=False))
    assert meta2["version"] == 1 and arrays2.keys() == arrays.keys()


def test_bare_model_file_loads_and_cannot_be_resumed(tmp_path):
    m = minigpt.Transformer(MCFG, seed=1)
    m.save(tmp_path / "model.npz")
    again = minigpt.Transformer.load(tmp_path / "model.npz")
    assert all(np.array_equal(again.params[k], v) for k, v in m.params.items())
    run = tmp_path / "run"
    run.mkdir()
    os.replace(tmp_path / "model.npz", run / "checkpoint.npz")
    with pytest.raises(CheckpointError, match="bare model file"):
        train(MCFG, TCFG, TASK, out_dir=run, resume=True, progress=False)


# ---------------------------------------------------------------- atomic save
def test_saved_file_has_the_usual_mode(tmp_path):
    """The temporary file is 0600; the checkpoint it becomes follows the umask like any other file."""
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"w": np.ones(2)}, {})
    mask = os.umask(0o022)
    os.umask(mask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~mask


def test_save_refuses_nonfinite_and_objects(tmp_path):
    p = tmp_path / "c.npz"
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(p, {"w": np.array([np.nan])}, {})
    with pytest.raises(CheckpointError, match="numeric"):
        save_checkpoint(p, {"w": np.array([object()])}, {})
    assert not p.exists() and os.listdir(tmp_path) == []


def test_crash_during_save_keeps_the_old_file(good, tmp_path, monkeypatch):
    p = tmp_path / "checkpoint.npz"
    p.write_bytes(good.read_bytes())
    before = p.read_bytes()

    def dying_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(ck.np, "savez", dying_savez)
    arrays, meta = load_checkpoint(good)
    params = {k[7:]: v for k, v in arrays.items() if k.startswith("params/")}
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, params, meta)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["checkpoint.npz"]  # no temporary file left behind


def test_crash_before_rename_keeps_the_old_file(good, tmp_path, monkeypatch):
    p = tmp_path / "checkpoint.npz"
    p.write_bytes(good.read_bytes())
    before = p.read_bytes()

    def no_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.os, "replace", no_rename)
    arrays, meta = load_checkpoint(good)
    params = {k[7:]: v for k, v in arrays.items() if k.startswith("params/")}
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, params, {})
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.npz"]


# ---------------------------------------------------------------- CLI on bad checkpoints
def test_cli_eval_on_bad_checkpoints(good, tmp_path, capsys):
    (tmp_path / "text").write_text("x")
    half = tmp_path / "half.npz"
    half.write_bytes(good.read_bytes()[:500])
    np.savez(tmp_path / "foreign.npz", a=np.ones(2))
    for p in (tmp_path / "missing.npz", tmp_path / "text", half, tmp_path / "foreign.npz", tmp_path):
        capsys.readouterr()
        assert main(["eval", str(p), "--n", "8"]) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("minigpt: error: ") and str(p) in err
    assert main(["eval", str(good), "--n", "8"]) == 0
