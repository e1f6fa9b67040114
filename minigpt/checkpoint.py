"""Checkpoints: one ``.npz``, written atomically, verified on load, never unpickled.

Layout: ``params/<name>`` for every parameter, any extra arrays (optimizer moments ``opt.m/<name>``,
``opt.v/<name>``), and ``__meta__``: a uint8 array holding UTF-8 JSON with the format name and
version, the configs, the step, the RNG state and a SHA-256 (``sha256``) over every other array
(name, dtype, shape, bytes) and, from version 2 on, over the rest of the JSON record as well.

Writing: a temporary file in the same folder, flushed and fsynced, renamed over the target, then the
folder is fsynced; a crash leaves either the old file or the new one, never a mix.

Reading (``load_checkpoint``) refuses, with a ``CheckpointError`` naming the problem:
missing paths and folders; files that are not zip archives; zip members that are not plain ``.npy``
arrays or that declare absurd sizes; object arrays and pickles (``allow_pickle=False``: nothing is
ever unpickled, so no code in the file can run); a missing or malformed ``__meta__``; a foreign format or
an unknown version; arrays with non-numeric dtypes or NaN/inf values; a checksum mismatch; and, when
the record holds a model config, any parameter or optimizer array that is missing, unexpected, or has
the wrong shape or dtype, and training state (step, RNG, configs) that does not parse.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "minigpt-checkpoint"
VERSION = 2  # 2: the SHA-256 also covers the JSON record; 1 (arrays only) is still read
READABLE_VERSIONS = (1, 2)
_ALLOWED_KINDS = "fiub"  # float, signed/unsigned int, bool: never object arrays
MAX_MEMBER_BYTES = 1 << 33  # 8 GiB: larger declared members are refused before reading
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, foreign or inconsistent (the message says which)."""


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


def save_checkpoint(path, params: dict, meta: dict, extra: dict | None = None) -> None:
    """Write ``path`` atomically: a temporary file in the same folder, flushed, fsynced, then renamed.

    Refuses (``CheckpointError``, nothing written) arrays that are not numeric or hold NaN/inf: such a
    file could not be loaded again, and it must not replace a good checkpoint."""
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
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a checkpoint gets the usual mode
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _EMPTY_ZIP_MAGIC:
        raise CheckpointError(f"{path}: an empty archive, not a minigpt checkpoint")
    if head != _ZIP_MAGIC:
        what = "an empty file" if not head else "not a .npz archive"
        raise CheckpointError(f"{path}: {what}; not a minigpt checkpoint")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except PermissionError:
        raise
    except Exception as e:  # BadZipFile, EOFError, NotImplementedError (flipped version bytes), ...
        raise CheckpointError(f"{path}: corrupt or truncated archive ({type(e).__name__}: {e})") from None
    seen = set()
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"{path}: archive member {info.filename!r} is not a .npy array")
        if info.filename in seen:
            raise CheckpointError(f"{path}: archive member {info.filename!r} appears twice")
        seen.add(info.filename)
        if info.file_size > MAX_MEMBER_BYTES:
            raise CheckpointError(f"{path}: archive member {info.filename!r} declares {info.file_size} bytes; refusing it")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise CheckpointError(f"{path}: holds a pickled object array; refusing to load it (nothing was unpickled)") from None
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: corrupt or not a .npz checkpoint ({type(e).__name__}: {e})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: an array in the archive is too large to load") from None
    except Exception as e:  # zlib errors, truncated members, malformed .npy headers, ...
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e})") from None


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
    try:
        exists, isdir = os.path.exists(path), os.path.isdir(path)
    except ValueError as e:  # embedded NUL
        raise CheckpointError(f"{path!r}: invalid path ({e})") from None
    if not exists:
        raise CheckpointError(f"{path}: no such checkpoint")
    if isdir:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        arrays = _read_arrays(path)
    except PermissionError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a minigpt checkpoint (no __meta__ record)")
    raw = arrays.pop("__meta__")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: malformed __meta__ record (dtype {raw.dtype}, {raw.ndim} dims; expected 1-d uint8)")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path}: __meta__ record is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a minigpt checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this minigpt reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    for name, a in arrays.items():
        if a.dtype.kind not in _ALLOWED_KINDS:
            raise CheckpointError(f"{path}: array {name!r} has dtype {a.dtype}, only numeric arrays are allowed")
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
    optimizer's step count, and a PCG64 RNG state."""
    if "model" not in meta:
        return
    from .config import ModelConfig, TrainConfig
    from .model import param_shapes

    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (ValueError, TypeError) as e:
        raise _schema_error(path, f"invalid model config in the record ({e})") from None
    shapes = param_shapes(cfg)
    dtype = np.dtype(cfg.dtype)
    expected = {"params/" + k: s for k, s in shapes.items()}
    training = "step" in meta
    if training:
        for k, s in shapes.items():
            expected["opt.m/" + k] = s
            expected["opt.v/" + k] = s
    for name, shape in expected.items():
        if name not in arrays:
            raise _schema_error(path, f"array {name!r} is missing")
        a = arrays[name]
        if a.dtype != dtype:
            raise _schema_error(path, f"array {name!r} has dtype {a.dtype}, the config says {dtype}")
        if a.shape != tuple(shape):
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
        from .presets import build_task

        build_task(_tuples(meta.get("data")))
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


def _tuples(data):
    """JSON turns prior tuples into lists; turn them back."""
    if not isinstance(data, dict):
        return data
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
