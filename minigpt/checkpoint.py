"""Checkpoints: one ``.npz``, written atomically, verified on load, never unpickled.

Layout: ``params/<name>`` for every parameter, any extra arrays (optimizer moments ``opt.m/<name>``,
``opt.v/<name>``), and ``__meta__``: a uint8 array holding UTF-8 JSON with the format version, the
configs, the step, the RNG state and a SHA-256 over every other array (name, dtype, shape, bytes).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "minigpt-checkpoint"
VERSION = 1
_ALLOWED_KINDS = "fiub"  # float, signed/unsigned int, bool: never object arrays


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, foreign or inconsistent (the message says which)."""


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays in name order: name, dtype, shape and raw little-endian bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path, params: dict, meta: dict, extra: dict | None = None) -> None:
    """Write ``path`` atomically: a temporary file in the same folder, flushed, fsynced, then renamed."""
    arrays = {"params/" + k: np.asarray(v) for k, v in params.items()}
    for k, v in (extra or {}).items():
        arrays[k] = np.asarray(v)
    meta = dict(meta, format=FORMAT, version=VERSION, sha256=arrays_digest(arrays))
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
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


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a checkpoint.  Returns (arrays by name, meta).  Raises ``CheckpointError``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {}
            for name in z.files:
                arrays[name] = z[name]
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise CheckpointError(f"{path}: holds a pickled object array; refusing to load it") from None
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: corrupt or not a .npz checkpoint ({type(e).__name__}: {e})") from None
    except Exception as e:  # zlib errors, truncated members, ...
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e})") from None
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a minigpt checkpoint (no __meta__ record)")
    raw = arrays.pop("__meta__")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: malformed __meta__ record")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: __meta__ record is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a minigpt checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}, this minigpt reads version {VERSION}")
    for name, a in arrays.items():
        if a.dtype.kind not in _ALLOWED_KINDS:
            raise CheckpointError(f"{path}: array {name!r} has dtype {a.dtype}, only numeric arrays are allowed")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{path}: array {name!r} holds NaN or infinite values")
    if arrays_digest(arrays) != meta.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt or was altered")
    return arrays, meta
