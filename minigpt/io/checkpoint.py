"""Checkpoints: one ``.npz``, written atomically, verified on load, never unpickled; and the run-folder
lock and temporary-file names every writer of a run folder uses.

Layout: ``params/<name>`` for every parameter, any extra arrays (optimizer moments ``opt.m/<name>``,
``opt.v/<name>``), and ``__meta__``: a uint8 array holding UTF-8 JSON with the format name and
version, the configs, the step, the RNG state and a SHA-256 (``sha256``) over every other array
(name, dtype, shape, bytes) and, from version 2 on, over the rest of the JSON record as well.

Writing: a temporary file ``.tmp-<pid>-<random>.npz`` in the same folder, flushed and fsynced, renamed
over the target, then the folder is fsynced; a crash leaves either the old file or the new one, never a
mix (and a ``.tmp-`` file that the next writer of the folder removes, ``remove_stale_temps``).

Reading (``load_checkpoint``) is bounded: nothing is decompressed before the zip directory and the
``__meta__`` record have been checked.  The record (at most ``MAX_META_BYTES``) is read first; its
model config says exactly which arrays the file must hold, with which dtype and shape.  A file with more
members than that (plus ``MEMBER_MARGIN``), a member that declares more bytes than its array needs (plus
``NPY_HEADER_MAX`` for its ``.npy`` header), or a total beyond the arrays' sum (plus ``NPY_HEADER_AVG``
per member) is refused before any array is read; each array's ``.npy`` header is checked against the
config before its data is read.  A record without a model config may hold at most
``MAX_UNCONFIGURED_MEMBERS`` arrays of ``MAX_UNCONFIGURED_BYTES`` in total; and arrays of more than ``INFLATION_FROM`` bytes in all may not inflate more than
``MAX_INFLATION`` times their compressed size.  So a crafted file can never make the reader allocate
more than the record's own model (which ``ModelConfig`` itself bounds), nor, for the arrays, more than
the larger of 16 MiB and 100 times the file's size (plus at most 16 MiB for ``__meta__``).

``load_checkpoint`` refuses, with a ``CheckpointError`` naming the problem: missing paths, folders
and files that are not regular files (FIFOs, devices: opened without blocking and refused before any
read, so nothing hangs);
files that are not zip archives; zip members that are not plain ``.npy`` arrays, that appear twice, or
that exceed the limits above; object arrays and pickles (nothing is ever unpickled, so no code in the
file can run); a missing or malformed ``__meta__``; a foreign format or an unknown version; arrays with
non-numeric dtypes or NaN/inf values; a checksum mismatch; and, when the record holds a model config,
any parameter or optimizer array that is missing, unexpected, or has the wrong shape or dtype, and
training state (step, RNG, configs) that does not parse.

``FolderLock(folder)``: one writer per run folder (an advisory ``fcntl.flock`` on ``folder/.lock``, held
until released; on Windows ``msvcrt.locking``).  A second writer gets ``FolderInUseError`` naming the
holder's process id.  See docs/reliability.md.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import stat
import tempfile
import zipfile

import numpy as np

from ..nn.config import ModelConfig, TrainConfig, param_shapes
from ..nn.config import short_repr as _short
from ..tasks.presets import build_task, data_from_record

FORMAT = "minigpt-checkpoint"
VERSION = 2  # 2: the SHA-256 also covers the JSON record; 1 (arrays only) is still read
READABLE_VERSIONS = (1, 2)
_ALLOWED_KINDS = "fiub"  # float, signed/unsigned int, bool: never object arrays
MAX_META_BYTES = 16 << 20  # the JSON record (configs, RNG state, evaluation history)
NPY_HEADER_MAX = 4096  # bytes one member's .npy header may take besides its array data ...
NPY_HEADER_AVG = 256  # ... and on average over the archive (numpy writes 128)
MEMBER_MARGIN = 4  # members beyond those the record's config implies: refused before reading
MAX_INFLATION = 100  # arrays of more than INFLATION_FROM bytes in all may inflate at most 100x ...
INFLATION_FROM = 16 << 20  # ... their compressed size (float weights deflate ~1.1x; minigpt never compresses)
MAX_UNCONFIGURED_MEMBERS = 64  # a record without a model config (not written by minigpt itself) ...
MAX_UNCONFIGURED_BYTES = 64 << 20  # ... holds at most this many arrays and bytes
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_READ_CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"  # every temporary file minigpt writes in a folder: .tmp-<pid>-<random><suffix>
LOCK_FILE = ".lock"
MAX_SHARDS = 1 << 16  # the record's shard count (``threads`` of the run)


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, foreign or inconsistent (the message says which)."""


class FolderInUseError(RuntimeError):
    """Another process holds the lock of a folder (``pid``: its process id, None if unknown)."""

    def __init__(self, folder, pid):
        who = f"process {pid}" if pid else "another process"
        super().__init__(f"{folder} is in use by {who}; wait for it to finish or stop it first")
        self.folder, self.pid = folder, pid


def arrays_digest(arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
    """SHA-256 over the arrays in name order (name, dtype, shape, raw bytes) and, if given, the JSON
    record without its ``sha256`` field (canonical form: sorted keys)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    if meta is not None:
        rest = {k: v for k, v in meta.items() if k != "sha256"}
        h.update(b"\0meta\0" + json.dumps(rest, sort_keys=True).encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing
def _folder_of(path: str) -> str:
    return os.path.dirname(path) or os.curdir  # as given (not made absolute): the same length the run-folder probe tried


def with_filename(e: OSError, path) -> OSError:
    """``e`` with ``path`` as its file name when it names none (e.g. ENOSPC from a write)."""
    if e.errno is not None and e.filename is None:
        return OSError(e.errno, e.strerror or os.strerror(e.errno), os.fspath(path))
    return e


def _atomic_write(path: str, suffix: str, write) -> None:
    """``write(f)`` into ``.tmp-<pid>-<random><suffix>`` beside ``path``, fsync, rename over ``path``,
    fsync the folder.  On any error the temporary file is removed and ``path`` is unchanged."""
    folder = _folder_of(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix, dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; the result gets the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise with_filename(e, path) from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_text_atomic(path, text: str) -> None:
    """Replace the file ``path`` with ``text`` atomically (a per-process temporary name, so two processes
    never write the same temporary file)."""
    path = os.fspath(path)
    _atomic_write(path, "-" + os.path.basename(path), lambda f: f.write(text.encode()))


def save_checkpoint(path, params: dict, meta: dict, extra: dict | None = None) -> None:
    """Write ``path`` atomically: a temporary file in the same folder, flushed, fsynced, then renamed.

    Refuses (``CheckpointError``, nothing written) arrays that are not numeric or hold NaN/inf: such a
    file could not be loaded again, and it must not replace a good checkpoint.  An ``OSError`` (e.g. a
    full disk) names ``path``."""
    arrays = {"params/" + k: np.asarray(v) for k, v in params.items()}
    for k, v in (extra or {}).items():
        arrays[k] = np.asarray(v)
    for name, a in arrays.items():
        if a.dtype.kind not in _ALLOWED_KINDS:
            raise CheckpointError(f"cannot save array {name!r} of dtype {a.dtype}: only numeric arrays are allowed")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"refusing to save array {name!r}: it holds NaN or infinite values")
    meta = dict(meta, format=FORMAT, version=VERSION)
    meta.pop("sha256", None)
    meta["sha256"] = arrays_digest(arrays, meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _atomic_write(os.fspath(path), ".npz", lambda f: np.savez(f, **arrays))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def temp_owner(name: str):
    """The process id in a temporary file name ``.tmp-<pid>-...``, or None (an older name without one)."""
    if not name.startswith(TEMP_PREFIX):
        return None
    pid = name[len(TEMP_PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_stale_temps(folder) -> list[str]:
    """Remove the temporary files (``.tmp-*``) in ``folder`` left by writers that died (SIGKILL during a
    write); files of a live process other than this one are kept.  Call it holding the folder's lock.
    Returns the names removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(TEMP_PREFIX):
            continue
        pid = temp_owner(name)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        try:
            os.unlink(os.path.join(folder, name))
            removed.append(name)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            pass
    return removed


def longest_temp_name(longest_file: str) -> str:
    """A name as long as the longest temporary name minigpt may write for ``longest_file`` (for the
    up-front check that a run folder's paths are not too long)."""
    return f"{TEMP_PREFIX}{'9' * 10}-{'x' * 8}-{longest_file}"


# ----------------------------------------------------------------------------- one writer per folder
class FolderLock:
    """An exclusive advisory lock on ``folder``, held from construction until ``release()`` (or the end of
    a ``with`` block, or the process: the kernel drops it when the process dies, even by SIGKILL).

    POSIX: ``fcntl.flock`` on ``folder/.lock`` (which also holds the owner's pid, for the message);
    Windows: ``msvcrt.locking`` on one byte of the same file.  Advisory: it stops other minigpt writers,
    not other programs.  On file systems without flock support (some network mounts) the lock may not
    exclude a writer on another machine.  Raises ``FolderInUseError`` when another process holds it."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock_fd(fd)
        except OSError as e:
            pid = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                raise FolderInUseError(self.folder, pid) from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only for the message
        self._fd = fd

    def release(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the lock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


def _lock_fd(fd):
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, 1 << 20, os.SEEK_SET)  # lock a byte past the pid, so the pid stays readable
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_pid(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32)
        return int(text.split()[0]) if text.split() else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- reading
def _check_regular_file(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except NotADirectoryError:
        raise CheckpointError(f"{path}: no such checkpoint (a part of the path is a file)") from None
    except ValueError as e:  # embedded NUL
        raise CheckpointError(f"{path!r}: invalid path ({e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")


def expected_arrays(path, meta: dict):
    """``{name: (dtype, shape)}`` of every array the record's configs imply (parameters, and optimizer
    moments for a training checkpoint), or None when the record has no model config."""
    if "model" not in meta:
        return None
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (ValueError, TypeError) as e:
        raise _schema_error(path, f"invalid model config in the record ({e})") from None
    dtype = np.dtype(cfg.dtype)
    expected = {"params/" + k: (dtype, tuple(s)) for k, s in param_shapes(cfg).items()}
    if "step" in meta:
        for k, s in param_shapes(cfg).items():
            expected["opt.m/" + k] = (dtype, tuple(s))
            expected["opt.v/" + k] = (dtype, tuple(s))
    return expected


def _nbytes(dtype, shape) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def _read_member(zf, info, path, name, want=None, max_bytes=None):
    """Read one ``.npy`` member: its header first (dtype, shape checked against ``want`` = (dtype, shape),
    or its size against ``max_bytes``), then exactly its data.  Never unpickles."""
    fmt = np.lib.format
    with zf.open(info) as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=NPY_HEADER_MAX)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=NPY_HEADER_MAX)
            else:
                raise CheckpointError(f"{path}: archive member {info.filename!r} is .npy version {version}, not a plain array")
        except ValueError as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{path}: archive member {info.filename!r} is not a readable .npy array ({e})") from None
        header = f.tell()
        if dtype.hasobject:
            raise CheckpointError(f"{path}: holds a pickled object array; refusing to load it (nothing was unpickled)")
        if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise CheckpointError(f"{path}: array {name!r} has dtype {dtype}, only numeric arrays are allowed")
        if name == "__meta__" and (dtype != np.uint8 or len(shape) != 1):
            raise CheckpointError(f"{path}: malformed __meta__ record (dtype {dtype}, {len(shape)} dims; expected 1-d uint8)")
        if want is not None:
            if dtype != want[0]:
                raise _schema_error(path, f"array {name!r} has dtype {dtype}, the config says {want[0]}")
            if tuple(shape) != want[1]:
                raise _schema_error(path, f"array {name!r} has shape {list(shape)}, the config says {list(want[1])}")
        nbytes = _nbytes(dtype, shape)
        if max_bytes is not None and nbytes > max_bytes:
            raise CheckpointError(f"{path}: array {name!r} has {nbytes} bytes, more than the limit of {max_bytes}")
        if header + nbytes != info.file_size:
            raise CheckpointError(f"{path}: archive member {info.filename!r} holds {info.file_size - header} bytes of data, "
                                  f"its header says {nbytes}; corrupt checkpoint")
        data = np.empty(nbytes, np.uint8)
        view, done = memoryview(data), 0
        while done < nbytes:
            chunk = f.read(min(_READ_CHUNK, nbytes - done))
            if not chunk:
                raise CheckpointError(f"{path}: archive member {info.filename!r} is truncated; corrupt checkpoint")
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
        if f.read(1):  # also makes zipfile check the member's CRC
            raise CheckpointError(f"{path}: archive member {info.filename!r} has trailing data; corrupt checkpoint")
    a = data.view(dtype)
    return a.reshape(shape[::-1]).T if fortran and len(shape) > 1 else a.reshape(shape)


def _parse_meta(path, raw) -> dict:
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError, too many digits, too deep
        raise CheckpointError(f"{path}: __meta__ record is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a minigpt checkpoint (format {_short(meta.get('format')) if isinstance(meta, dict) else None})")
    version = meta.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format version {_short(version)}; this minigpt reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    return meta


def _open_regular(path: str):
    """``path`` opened for reading, refused (CheckpointError) unless it is a regular file: opened without
    blocking (so a FIFO cannot hang the open), then checked on the open descriptor (no race between a
    check and the open)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: not a regular file (a FIFO, device or socket); refusing to read it")
    return os.fdopen(fd, "rb")


def _read_archive(path: str):
    """(meta, arrays) of the checkpoint at ``path``, read within the limits above."""
    with _open_regular(path) as f:
        head = f.read(4)
        if head == _EMPTY_ZIP_MAGIC:
            raise CheckpointError(f"{path}: an empty archive, not a minigpt checkpoint")
        if head != _ZIP_MAGIC:
            what = "an empty file" if not head else "not a .npz archive"
            raise CheckpointError(f"{path}: {what}; not a minigpt checkpoint")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except Exception as e:  # BadZipFile, EOFError, NotImplementedError (flipped version bytes), ...
            raise CheckpointError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {_short(str(e))})") from None
        with zf:
            return _read_members(path, zf)


def _read_members(path, zf):
    """(meta, arrays) from the open archive ``zf``: its directory and ``__meta__`` checked first."""
    members = {}
    for info in zf.infolist():  # the zip directory: names and declared sizes, nothing decompressed yet
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"{path}: archive member {_short(info.filename)} is not a .npy array")
        name = info.filename[: -len(".npy")]
        if name in members:
            raise CheckpointError(f"{path}: archive member {_short(info.filename)} appears twice")
        members[name] = info
    if "__meta__" not in members:
        raise CheckpointError(f"{path}: not a minigpt checkpoint (no __meta__ record)")
    limit = NPY_HEADER_MAX + MAX_META_BYTES
    if members["__meta__"].file_size > limit:
        raise CheckpointError(f"{path}: the __meta__ record declares {members['__meta__'].file_size} bytes, more than the limit of {limit}")
    try:
        meta = _parse_meta(path, _read_member(zf, members.pop("__meta__"), path, "__meta__", max_bytes=MAX_META_BYTES))
        expected = expected_arrays(path, meta)
        _check_directory(path, members, expected)
        arrays = {name: _read_member(zf, info, path, name, want=None if expected is None else expected[name])
                  for name, info in members.items()}
    except CheckpointError:
        raise
    except MemoryError:
        raise CheckpointError(f"{path}: an array in the archive is too large to load") from None
    except PermissionError:
        raise
    except Exception as e:  # zlib errors, CRC mismatches, truncated members, encrypted members, ...
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {_short(str(e))})") from None
    return meta, arrays


def _check_directory(path, members: dict, expected) -> None:
    """Refuse, before reading any array, a member count, a member's declared size or a total that the
    record's config does not allow (``expected``: from ``expected_arrays``; None: the generic limits)."""
    if expected is None:
        max_members, total_limit = MAX_UNCONFIGURED_MEMBERS, MAX_UNCONFIGURED_BYTES
    else:
        max_members = len(expected) + MEMBER_MARGIN
        total_limit = sum(_nbytes(*w) for w in expected.values()) + NPY_HEADER_AVG * len(expected) + NPY_HEADER_MAX
    if len(members) > max_members:
        raise CheckpointError(f"{path}: {len(members)} arrays in the archive, more than the limit of {max_members} "
                              f"{'its config implies' if expected is not None else 'for a record without a model config'}")
    total = packed = 0
    for name, info in members.items():
        if expected is not None:
            if name not in expected:
                raise _schema_error(path, f"unexpected array {_short(name)}")
            limit = _nbytes(*expected[name]) + NPY_HEADER_MAX
        else:
            limit = MAX_UNCONFIGURED_BYTES
        if info.file_size > limit:
            raise CheckpointError(f"{path}: archive member {_short(info.filename)} declares {info.file_size} bytes, "
                                  f"more than the limit of {limit} its config allows; refusing it")
        total += info.file_size
        packed += info.compress_size
    if total > total_limit:
        raise CheckpointError(f"{path}: the archive declares {total} bytes in all, more than the limit of {total_limit}")
    if total > INFLATION_FROM and total > MAX_INFLATION * packed:
        raise CheckpointError(f"{path}: the arrays would inflate {packed} compressed bytes to {total} "
                              f"(more than {MAX_INFLATION}x); refusing a likely zip bomb")


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a checkpoint.  Returns (arrays by name, meta).  Raises ``CheckpointError``."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise CheckpointError(f"a checkpoint path must be a string or path, got {type(path).__name__}") from None
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise CheckpointError("empty checkpoint path")
    _check_regular_file(path)
    try:
        meta, arrays = _read_archive(path)
    except PermissionError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    version = meta["version"]
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{path}: array {name!r} holds NaN or infinite values")
    digest = arrays_digest(arrays, meta if version >= 2 else None)
    if not isinstance(meta.get("sha256"), str) or digest != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt or was altered")
    validate_contents(path, arrays, meta)
    return arrays, meta


def _schema_error(path, what):
    return CheckpointError(f"{path}: {what}")


def validate_contents(path, arrays: dict, meta: dict) -> None:
    """Check that the arrays are exactly what the record's configs imply (CheckpointError if not).

    A record with a ``model`` config must hold ``params/<name>`` for exactly the parameters of that
    config, in its dtype and shapes.  A training checkpoint (with ``step``) must also hold the
    optimizer moments for each, a valid train and data config, an integer step equal to the
    optimizer's step count, a PCG64 RNG state and, if recorded, a sane shard count."""
    expected = expected_arrays(path, meta)
    if expected is None:
        return
    training = "step" in meta
    for name, (dtype, shape) in expected.items():
        if name not in arrays:
            raise _schema_error(path, f"array {name!r} is missing")
        a = arrays[name]
        if a.dtype != dtype:
            raise _schema_error(path, f"array {name!r} has dtype {a.dtype}, the config says {dtype}")
        if a.shape != shape:
            raise _schema_error(path, f"array {name!r} has shape {list(a.shape)}, the config says {list(shape)}")
    for name in arrays:
        if name not in expected:
            raise _schema_error(path, f"unexpected array {name!r}")
    if not training:
        return
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise _schema_error(path, f"step must be an integer >= 0, got {step!r}")
    if meta.get("opt_t") != step:
        raise _schema_error(path, f"optimizer step count {meta.get('opt_t')!r} differs from the step {step}")
    try:
        tcfg = TrainConfig.from_dict(meta.get("train"))
    except (ValueError, TypeError) as e:
        raise _schema_error(path, f"invalid train config in the record ({e})") from None
    if step > tcfg.steps:
        raise _schema_error(path, f"step {step} is beyond train.steps = {tcfg.steps}")
    try:
        build_task(data_from_record(meta.get("data")))
    except (ValueError, TypeError) as e:
        raise _schema_error(path, f"invalid data config in the record ({e})") from None
    rng = meta.get("rng")
    try:
        g = np.random.PCG64()
        g.state = rng
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise _schema_error(path, f"invalid RNG state in the record ({type(e).__name__}: {e})") from None
    if not isinstance(meta.get("history", []), list):
        raise _schema_error(path, "history must be a list of evaluation records")
    shards = meta.get("shards", 1)  # absent in checkpoints written before the shard count was recorded
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= MAX_SHARDS:
        raise _schema_error(path, f"shards must be an integer in [1, {MAX_SHARDS}], got {_short(shards)}")
