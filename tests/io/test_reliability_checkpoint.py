"""Hostile checkpoints (issue 15): bounded loading (zip bombs, member counts, duplicate members, member
sizes), files that are not regular files, outputs that would overwrite inputs, and write errors that
name their file.  Each guard is exercised on its own so removing it fails a test."""
import errno
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest

import minigpt
from minigpt.io import checkpoint as ck
from minigpt.io.checkpoint import CheckpointError, arrays_digest, load_checkpoint, save_checkpoint
from minigpt.cli import main
from minigpt.nn.config import ModelConfig

MCFG = ModelConfig(n_layers=1, d_model=8, n_heads=2, d_mlp=8, n_ctx=16)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "model.npz"
    minigpt.Transformer(MCFG, seed=1).save(p)
    return p


def _npy_header(shape, descr="<f4"):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _meta_member(meta=None):
    meta = dict(meta or {"format": ck.FORMAT, "version": ck.VERSION, "model": MCFG.to_dict()})
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return buf.getvalue()


def bomb(path, n_floats, name="params/embed.W_E"):
    """A valid record for MCFG and one deflated member of ``n_floats`` zeros (a few hundred KB on disk)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("__meta__.npy", _meta_member())
        with z.open(name + ".npy", "w", force_zip64=True) as f:
            f.write(_npy_header((n_floats,)))
            chunk = bytes(1 << 22)
            left = 4 * n_floats
            while left:
                f.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return path


def peak_rss_mb_loading(path):
    """Load ``path`` in a fresh interpreter; (its peak resident memory in MB, the error message).  The
    peak is VmHWM of /proc/self/status: the high-water mark of this interpreter's own memory (getrusage's
    ru_maxrss would carry over the maximum of the process it was forked from, e.g. a large pytest)."""
    code = (
        "import sys\n"
        "from minigpt.checkpoint import load_checkpoint, CheckpointError\n"
        "try:\n    load_checkpoint(sys.argv[1]); msg = 'LOADED'\n"
        "except CheckpointError as e:\n    msg = str(e)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(hwm); print(msg)\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rss, msg = out.stdout.splitlines()[:2]
    return int(rss) / 1024, msg


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_zip_bomb_is_refused_with_little_memory(tmp_path):
    """A ~120 KB file whose one member inflates to 120 MB: refused from the zip directory, peak < 100 MB."""
    p = bomb(tmp_path / "bomb.npz", 30_000_000)
    assert os.path.getsize(p) < 1 << 20
    rss, msg = peak_rss_mb_loading(p)
    assert rss < 100, f"peak memory {rss:.0f} MB loading a bomb ({msg})"
    assert "declares" in msg and "limit" in msg, msg


def _opened_members(monkeypatch):
    """Record every archive member the loader decompresses."""
    opened = []
    real = zipfile.ZipFile.open

    def spy(self, name, *a, **kw):
        opened.append(getattr(name, "filename", name))
        return real(self, name, *a, **kw)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return opened


def test_member_size_guard_refuses_before_decompressing(tmp_path, monkeypatch):
    """A member declaring more bytes than its array needs (plus a .npy header) is refused from the zip
    directory alone: only __meta__ was decompressed."""
    p = bomb(tmp_path / "big.npz", 3_000)  # 12 KB for an array of 8 floats
    opened = _opened_members(monkeypatch)
    with pytest.raises(CheckpointError, match=r"'params/embed.W_E.npy' declares 12\d\d\d bytes, more than the limit of 4128"):
        load_checkpoint(p)
    assert opened == ["__meta__.npy"]


def _sized(name, size):
    info = zipfile.ZipInfo(name + ".npy")
    info.file_size = size
    return info


def test_total_size_guard():
    """Every member within its own limit (array + NPY_HEADER_MAX) but the total beyond the arrays plus
    NPY_HEADER_AVG per member: refused from the directory."""
    expected = {f"params/x{i}": (np.dtype("float32"), (1000,)) for i in range(20)}
    fits = {n: _sized(n, 4000 + ck.NPY_HEADER_AVG) for n in expected}
    ck._check_directory("f.npz", fits, expected)  # real headers: fine
    fat = {n: _sized(n, 4000 + ck.NPY_HEADER_MAX) for n in expected}  # each at its own limit
    with pytest.raises(CheckpointError, match="in all, more than the limit"):
        ck._check_directory("f.npz", fat, expected)


def test_a_bomb_within_a_huge_but_valid_config_is_refused_by_its_inflation(tmp_path, monkeypatch):
    """A record may claim a large model (here W_pos of 65536 x 128 floats, 32 MiB): its members then fit the
    config, but 32 MiB of zeros deflate to ~32 KB; more than MAX_INFLATION x is refused before reading."""
    big = ModelConfig(n_layers=1, d_model=128, n_heads=2, d_mlp=8, n_ctx=65536)
    p = tmp_path / "big.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("__meta__.npy", _meta_member({"format": ck.FORMAT, "version": ck.VERSION, "model": big.to_dict()}))
        with z.open("params/pos_embed.W_pos.npy", "w", force_zip64=True) as f:
            f.write(_npy_header((65536, 128)))
            for _ in range(32):
                f.write(bytes(1 << 20))
    assert os.path.getsize(p) < 1 << 20
    opened = _opened_members(monkeypatch)
    with pytest.raises(CheckpointError, match="more than 100x"):
        load_checkpoint(p)
    assert opened == ["__meta__.npy"]


def test_inflation_is_bounded_over_the_whole_archive():
    """Many members each under 16 MiB (a deep model of 16 MiB matrices) inflate too: the ratio is checked
    over the archive, not per member."""
    expected = {f"params/w{i}": (np.dtype("float32"), (2048, 2048)) for i in range(8)}  # 16 MiB each
    infos = {}
    for n in expected:
        infos[n] = _sized(n, 16 * 2**20 + 128)
        infos[n].compress_size = 20_000
    with pytest.raises(CheckpointError, match="more than 100x"):
        ck._check_directory("f.npz", infos, expected)
    for info in infos.values():
        info.compress_size = 16 * 2**20 // 50  # 50x: e.g. sparse arrays, accepted
    ck._check_directory("f.npz", infos, expected)


def test_member_count_guard(tmp_path, monkeypatch):
    """10,000 tiny members (the filer's 2.9 MB file took 1.1 GB): refused from the directory."""
    p = tmp_path / "many.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("__meta__.npy", _meta_member())
        for i in range(10_000):
            z.writestr(f"a{i}.npy", b"")
    opened = _opened_members(monkeypatch)
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"10000 arrays in the archive, more than the limit of \d+ its config implies"):
        load_checkpoint(p)
    assert opened == ["__meta__.npy"] and time.perf_counter() - t < 5


def test_member_count_guard_without_a_model_config(tmp_path):
    p = tmp_path / "many.npz"
    meta = {"format": ck.FORMAT, "version": ck.VERSION}
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("__meta__.npy", _meta_member(meta))
        for i in range(ck.MAX_UNCONFIGURED_MEMBERS + 1):
            z.writestr(f"a{i}.npy", b"")
    with pytest.raises(CheckpointError, match="without a model config"):
        load_checkpoint(p)


def test_duplicate_members_are_refused(model_file, tmp_path):
    p = tmp_path / "dup.npz"
    p.write_bytes(model_file.read_bytes())
    with zipfile.ZipFile(model_file) as src:
        data = src.read("params/embed.W_E.npy")
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(p, "a") as z:
        z.writestr("params/embed.W_E.npy", data)
    with pytest.raises(CheckpointError, match="appears twice"):
        load_checkpoint(p)


def test_meta_record_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "MAX_META_BYTES", 1000)
    p = tmp_path / "m.npz"
    meta = {"format": ck.FORMAT, "version": ck.VERSION, "pad": "x" * 5000}
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("__meta__.npy", _meta_member(meta))
    opened = _opened_members(monkeypatch)
    with pytest.raises(CheckpointError, match="__meta__ record declares"):
        load_checkpoint(p)
    assert opened == []


def test_npy_header_lying_about_the_shape_is_refused_before_reading_data(tmp_path, monkeypatch):
    """A member within its size limit whose header declares a huge shape: the header is checked first."""
    p = tmp_path / "h.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("__meta__.npy", _meta_member())
        z.writestr("params/embed.W_E.npy", _npy_header((10**12,)))
    with pytest.raises(CheckpointError, match=r"shape \[1000000000000\], the config says \[1, 8\]"):
        load_checkpoint(p)


def test_legitimate_files_still_load(model_file, tmp_path):
    """The guards leave real files alone: a model, a compressed copy, and Fortran-ordered arrays."""
    arrays, meta = load_checkpoint(model_file)
    q = tmp_path / "compressed.npz"
    raw = {k: np.asfortranarray(v) for k, v in arrays.items()}
    meta2 = dict(meta)
    meta2["sha256"] = arrays_digest(raw, meta2)
    np.savez_compressed(q, __meta__=np.frombuffer(json.dumps(meta2).encode(), np.uint8), **raw)
    arrays2, _ = load_checkpoint(q)
    for k, v in arrays.items():
        assert arrays2[k].tobytes() == v.tobytes() and arrays2[k].shape == v.shape


# ---------------------------------------------------------------- not regular files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_within_a_second(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    result = {}

    def load():
        try:
            load_checkpoint(fifo)
        except CheckpointError as e:
            result["error"] = str(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(1.0)
    if t.is_alive():  # unblock the reader so the test process can finish
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
    assert "not a regular file" in result.get("error", "hung"), result


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused_and_eval_answers_in_one_line(capsys):
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint("/dev/zero")
    assert main(["eval", "/dev/zero"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a regular file" in err


# ---------------------------------------------------------------- outputs never overwrite inputs
def test_eval_json_never_overwrites_the_checkpoint(model_file, tmp_path, capsys):
    before = model_file.read_bytes()
    link = tmp_path / "alias.npz"
    os.symlink(model_file, link)
    for target in (model_file, link, os.path.relpath(model_file)):
        assert main(["eval", str(model_file), "--n", "4", "--preset", "tiny", "--json", str(target)]) == 2
        err = capsys.readouterr().err
        assert "--json" in err and "checkpoint" in err and err.count("\n") == 1, err
    other = tmp_path / "other.npz"
    other.write_bytes(before)  # another existing checkpoint is an input-like file too: refused
    assert main(["eval", str(model_file), "--n", "4", "--preset", "tiny", "--json", str(other)]) == 2
    assert model_file.read_bytes() == before and other.read_bytes() == before
    out = tmp_path / "table.json"
    assert main(["eval", str(model_file), "--n", "4", "--preset", "tiny", "--json", str(out)]) == 0
    assert "model" in json.loads(out.read_text())


# ---------------------------------------------------------------- write errors name the file
def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    def full(f, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.np, "savez", full)
    p = tmp_path / "c.npz"
    with pytest.raises(OSError) as e:
        save_checkpoint(p, {"w": np.ones(2)}, {})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(p)
    assert os.listdir(tmp_path) == []


def test_temporary_names_carry_the_process_id(tmp_path, monkeypatch):
    seen = []
    real = ck.os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(ck.os, "replace", spy)
    save_checkpoint(tmp_path / "c.npz", {"w": np.ones(2)}, {})
    ck.write_text_atomic(tmp_path / "x.json", "{}")
    assert all(n.startswith(f".tmp-{os.getpid()}-") for n in seen) and len(seen) == 2
