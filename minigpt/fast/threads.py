"""How many cores a training step uses, and numpy's BLAS threads.

``loss_and_grad(threads=n)`` cuts the batch into ``n`` shards: this process computes the first, helper
processes the others (``minigpt.fast.shardpool``).  Meanwhile BLAS must run one thread per call: a
multi-threaded OpenBLAS call competing with the helpers for the same cores can run a hundred times slower.

    blas_threads()                    -> the number of threads numpy's BLAS uses now (None if unknown)
    with limit_blas_threads(1): ...   BLAS runs one thread inside, its previous count is restored after
    default_threads()                 -> what ``threads="auto"`` means: BLAS's thread count (1 if unknown)
    usable_cores()                    -> the cores this process may run on: the most threads anyone may ask for
    shards(n_rows, n)                 -> n nearly equal, contiguous row ranges

Only OpenBLAS (what numpy's wheels ship) is controlled; with another BLAS, ``default_threads()`` is 1 and
steps run on one core, as before.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading

import numpy as np

BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")  # read by BLAS when numpy loads

_SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_", "openblas_get_num_threads")

_lock = threading.Lock()
_api: list = []  # [[(get, set), ...]] once looked up


def _candidate_libraries():
    """Paths of OpenBLAS libraries: numpy's own first (its wheels ship one next to the package), then any
    other this process has loaded (Linux; e.g. a system OpenBLAS numpy links to, or scipy's own copy)."""
    here = os.path.dirname(np.__file__)
    paths = []
    for pattern in ("../numpy.libs/*openblas*", ".dylibs/*openblas*"):
        paths += sorted(glob.glob(os.path.join(here, pattern)))
    try:
        with open("/proc/self/maps") as f:
            paths += [line.split()[-1] for line in f if "openblas" in os.path.basename(line.split()[-1]).lower()]
    except OSError:
        pass
    unique = []
    for path in map(os.path.realpath, paths):
        if path not in unique:
            unique.append(path)
    return unique


def _openblas() -> list:
    """[(get_num_threads, set_num_threads)] of every OpenBLAS found, numpy's first; [] if none."""
    with _lock:
        if not _api:
            found = []
            for path in _candidate_libraries():
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    continue
                get = next((getattr(lib, n) for n in _GET_NAMES if hasattr(lib, n)), None)
                set_ = next((getattr(lib, n) for n in _SET_NAMES if hasattr(lib, n)), None)
                if get is not None and set_ is not None:
                    get.restype, get.argtypes = ctypes.c_int, []
                    set_.restype, set_.argtypes = None, [ctypes.c_int]
                    found.append((get, set_))
            _api.append(found)
        return _api[0]


def blas_threads() -> int | None:
    """The number of threads numpy's BLAS uses now, or None when it cannot be queried."""
    api = _openblas()
    return int(api[0][0]()) if api else None


@contextlib.contextmanager
def limit_blas_threads(n: int):
    """``with limit_blas_threads(1):`` every OpenBLAS found uses at most ``n`` threads inside, and its
    previous count after (a no-op when none can be controlled)."""
    changed = []
    for get, set_ in _openblas():
        before = int(get())
        if before > n:
            set_(n)
            changed.append((set_, before))
    try:
        yield
    finally:
        for set_, before in changed:
            set_(before)


MAX_AUTO_THREADS = 8  # "auto" never starts more than 7 helper processes (each holds its own numpy, ~60 MB)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """``threads="auto"``: as many threads as BLAS would use (1 in a worker started with
    ``OPENBLAS_NUM_THREADS=1``, or when BLAS cannot be controlled), at most the cores this process may run
    on and at most ``MAX_AUTO_THREADS``."""
    n = blas_threads()
    if n is None:
        return 1
    return max(1, min(n, usable_cores(), MAX_AUTO_THREADS))


def resolve_threads(threads) -> int:
    """``"auto"``/None -> ``default_threads()``; a positive int up to ``usable_cores()`` -> itself (each
    thread beyond the first is a helper process of ~60 MB; more than the cores only slows steps down);
    anything else: ValueError."""
    if threads is None or threads == "auto":
        return default_threads()
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer or 'auto', got {repr(threads)[:80]}")
    cap = usable_cores()
    if threads > cap:
        raise ValueError(f"threads = {int(threads)} is more than the {cap} usable core(s) of this machine; use at most {cap} (or 'auto')")
    return int(threads)


def shards(n_rows: int, n: int) -> list[slice]:
    """``n`` contiguous, nearly equal row ranges covering ``range(n_rows)`` (fewer if there are fewer rows)."""
    n = max(1, min(n, n_rows))
    bounds = [round(i * n_rows / n) for i in range(n + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(n)]
