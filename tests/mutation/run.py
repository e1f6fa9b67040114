"""Mutation check: plant each known bug in a copy of the repository and see whether its tests notice.

    python tests/mutation/run.py                    # every bug of every tests/mutation/bugs*.py
    python tests/mutation/run.py --only core.ops.   # bugs whose id starts with "core.ops." (repeatable)
    python tests/mutation/run.py --list             # list the bugs (and any malformed one), run nothing
    python tests/mutation/run.py --jobs 2 --json out.json

A bug is ``dict(id, file, find, replace, tests, why)``: ``find`` must occur exactly once in ``file``.
The runner snapshots the tracked files (``git ls-files``, as they are in the working tree) to a temporary
directory; for each bug it copies the snapshot, replaces ``find`` by ``replace`` there and runs
``python -m pytest -x -q <tests>`` in the copy with PYTHONPATH set to it. caught: the tests failed;
survived: they passed (the tests miss the bug); error: timeout, malformed bug, or pytest could not run. The user's working tree is only read, never written.
Before any mutant, each distinct test set runs once unmutated: a failing baseline stops the run.
Exit status: 0 every bug caught, 1 some bug survived or errored, 2 a bad baseline or command line.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("id", "file", "find", "replace", "tests", "why")
LIVE: set = set()  # running pytest processes, killed if the runner is interrupted
STOP = threading.Event()  # set when interrupted: no new pytest run starts


def repo_root():
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=HERE, capture_output=True, text=True)
    if out.returncode:
        print(f"tests/mutation/run.py needs a git checkout (it copies the tracked files): {out.stderr.strip()}", file=sys.stderr)
        sys.exit(2)
    return out.stdout.strip()


def tracked_files(root):
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(root, p))]


def load_bugs():
    """Every ``BUGS`` entry of ``tests/mutation/bugs*.py``, in file order, each tagged with its module."""
    bugs = []
    for path in sorted(glob.glob(os.path.join(HERE, "bugs*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(f"mutation_{name}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # a broken bug file: say which, not a traceback
            print(f"cannot load tests/mutation/{name}.py: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(2)
        for bug in getattr(module, "BUGS", []):
            bugs.append(dict(bug, module=name))
    return bugs


def problems(bug, root, tracked, seen):
    """Why ``bug`` cannot be applied (an empty list when it can)."""
    missing = [k for k in KEYS if k not in bug]
    if missing:
        return [f"missing key(s) {', '.join(missing)}"]
    out = []
    if bug["id"] in seen:
        out.append(f"duplicate id (also in {seen[bug['id']]})")
    if bug["file"] not in tracked:
        return out + [f"{bug['file']} is not a tracked file"]
    if not isinstance(bug["tests"], (list, tuple)) or not bug["tests"]:
        out.append("tests must be a non-empty list")
    else:
        out += [f"test file {t.split('::')[0]} is not tracked" for t in bug["tests"] if t.split("::")[0] not in tracked]
    if bug["find"] == bug["replace"]:
        out.append("find and replace are the same")
    with open(os.path.join(root, bug["file"]), encoding="utf-8") as f:
        count = f.read().count(bug["find"])
    if count != 1:
        out.append(f"find occurs {count} times in {bug['file']} (must be exactly once)")
    return out


def copy_tree(root, files, mutation=None):
    """A temporary copy of the tracked ``files``; ``mutation = (file, find, replace)`` is applied to it."""
    dst = tempfile.mkdtemp(prefix="minigpt-mutant-")
    for rel in files:
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copyfile(os.path.join(root, rel), os.path.join(dst, rel))
    if mutation is not None:
        rel, find, replace = mutation
        path = os.path.join(dst, rel)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(find, replace, 1))
    return dst


def run_pytest(copy, tests, timeout):
    """(status, first failing test or note, seconds) of ``pytest -x`` on ``tests`` inside ``copy``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([copy, HERE]),  # HERE: mutation_plugin
               PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="mutation")  # tests/conftest.py loads that profile
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider", "-p", "mutation_plugin", *tests]
    if STOP.is_set():
        return "error", "interrupted", 0.0
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: a timeout kills all it started
    LIVE.add(proc)
    if STOP.is_set():
        kill(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        proc.communicate()
        return "error", f"timeout after {timeout:.0f} s", time.monotonic() - start
    finally:
        LIVE.discard(proc)
    seconds = time.monotonic() - start
    failed = [line.split(" - ")[0].split(" ", 1)[1] for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    if proc.returncode == 0:
        return "passed", "", seconds
    if proc.returncode in (1, 2) and failed:  # 1: a test failed; 2: an error while collecting
        return "failed", failed[0], seconds
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    return "error", f"pytest exit {proc.returncode}: {tail}", seconds


def kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def interrupted(signum, frame):
    """Ctrl-C or SIGTERM: stop the pytest runs (they are in their own sessions), then exit; copies are removed."""
    STOP.set()
    for proc in list(LIVE):
        kill(proc)
    sys.exit(128 + signum)


def baseline(snapshot, test_sets, jobs):
    """Run each distinct test set unmutated in ``snapshot``; return ({tests: seconds}, [failure messages])."""
    check = subprocess.run([sys.executable, "-c", "import minigpt, theory; print(minigpt.__file__, theory.__file__)"],
                           cwd=snapshot, env=dict(os.environ, PYTHONPATH=snapshot), capture_output=True, text=True)
    if check.returncode or not all(p.startswith(snapshot) for p in check.stdout.split()):
        return {}, [f"the copy's packages are not the ones imported: {check.stdout.strip()} {check.stderr.strip()}"]
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        results = dict(zip(test_sets, pool.map(lambda t: run_pytest(snapshot, list(t), None), test_sets)))
    fails = [f"{' '.join(t)}: {status} {note}" for t, (status, note, _) in results.items() if status != "passed"]
    return {t: s for t, (_, _, s) in results.items()}, fails


def run_bug(snapshot, files, bug, timeout, keep):
    copy = copy_tree(snapshot, files, (bug["file"], bug["find"], bug["replace"]))
    try:
        status, note, seconds = run_pytest(copy, list(bug["tests"]), timeout)
    finally:
        if not keep:
            shutil.rmtree(copy, ignore_errors=True)
    result = {"passed": "survived", "failed": "caught", "error": "error"}[status]
    return dict(id=bug["id"], file=bug["file"], result=result, first_failure=note, seconds=round(seconds, 1),
                copy=copy if keep else None)


def print_table(rows):
    head = ("id", "file", "result", "first failure", "s")
    cells = [(r["id"], r["file"], r["result"], r["first_failure"], f"{r['seconds']:.1f}") for r in rows]
    widths = [max(len(str(c[i])) for c in cells + [head]) for i in range(4)]
    for c in [head] + cells:
        print("  ".join(str(v).ljust(w) for v, w in zip(c[:4], widths)) + "  " + c[4].rjust(5))
    counts = {k: sum(r["result"] == k for r in rows) for k in ("caught", "survived", "error")}
    print(f"\n{len(rows)} bugs: {counts['caught']} caught, {counts['survived']} survived, {counts['error']} error")


def check_bugs(bugs, src, files):
    """{index: "malformed ...: reasons"} for the bugs that cannot be applied to the tree ``src``."""
    seen, bad = {}, {}
    for i, bug in enumerate(bugs):
        msgs = problems(bug, src, set(files), seen)
        if msgs:
            bad[i] = f"malformed ({bug['module']}.py): " + "; ".join(msgs)
        seen.setdefault(bug.get("id"), bug["module"])
    return bad


def run_all(args, bugs, snapshot, files):
    """Baseline, then every well-formed bug; the table's rows (None if the baseline fails)."""
    bad = check_bugs(bugs, snapshot, files)
    for i, msg in bad.items():
        print(f"{bugs[i].get('id', '?')}: {msg}", file=sys.stderr)
    good = [b for i, b in enumerate(bugs) if i not in bad]
    test_sets = sorted({tuple(b["tests"]) for b in good})
    print(f"baseline: {len(test_sets)} test set(s) unmutated ...", flush=True)
    times, fails = baseline(snapshot, test_sets, args.jobs)
    if fails:
        print("the unmutated tests fail, so a mutant's failure would mean nothing; fix these first:", file=sys.stderr)
        for f in fails:
            print("  " + f, file=sys.stderr)
        return None
    print(f"running {len(good)} mutant(s) with {args.jobs} job(s) ...", flush=True)

    def one(bug):
        timeout = args.timeout or max(60.0, 10 * times[tuple(bug["tests"])])
        row = run_bug(snapshot, files, bug, timeout, args.keep)
        print(f"  {row['result']:8} {row['id']} ({row['seconds']:.1f} s)", flush=True)
        return row

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip([id(b) for b in good], pool.map(one, good)))
    rows = []
    for i, bug in enumerate(bugs):
        if i in bad:
            rows.append(dict(id=bug.get("id", "?"), file=bug.get("file", "?"), result="error", first_failure=bad[i],
                             seconds=0.0, copy=None))
        else:
            rows.append(dict(done[id(bug)], why=bug["why"], tests=list(bug["tests"])))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", metavar="ID_PREFIX", action="append", help="run only the bugs whose id starts with this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the bugs and exit")
    ap.add_argument("--jobs", type=int, default=1, help="mutants run side by side (default 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    ap.add_argument("--timeout", type=float, help="seconds per mutant (default: 10x its baseline, at least 60)")
    ap.add_argument("--keep", action="store_true", help="keep each mutant's copy (paths in the JSON) for inspection")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.json and not os.access(os.path.dirname(os.path.abspath(args.json)), os.W_OK):
        ap.error(f"--json {args.json}: its folder does not exist or is not writable")
    root = repo_root()
    files = tracked_files(root)
    bugs = [b for b in load_bugs() if not args.only or str(b.get("id", "")).startswith(tuple(args.only))]
    if not bugs:
        print(f"no bugs match --only {' '.join(args.only)}" if args.only else "no bugs found in tests/mutation/bugs*.py", file=sys.stderr)
        return 2
    if args.list:
        bad = check_bugs(bugs, root, files)
        for i, bug in enumerate(bugs):
            print(f"{bug.get('id', '?'):44} {bug.get('file', '?'):26} {' '.join(bug.get('tests', []))}"
                  + (f"   [{bad[i]}]" if i in bad else ""))
        return 1 if bad else 0
    snapshot = copy_tree(root, files)  # the tree as it is now: later edits do not leak into the run
    try:
        rows = run_all(args, bugs, snapshot, files)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    if rows is None:
        return 2
    print()
    print_table(rows)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        except OSError as e:
            print(f"cannot write --json {args.json}: {e.strerror}", file=sys.stderr)
            return 2
    return 0 if all(r["result"] == "caught" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
