"""Every planted bug of tests/mutation/bugs*.py still applies to the code: its ``find`` text occurs exactly once in its
file and its tests exist. Code moves; a bug whose text no longer matches would silently stop guarding anything."""
import importlib.util
import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def load_runner():
    spec = importlib.util.spec_from_file_location("mutation_runner", os.path.join(HERE, "mutation", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_planted_bug_applies_to_the_current_code():
    root = os.path.dirname(HERE)
    if subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout: the bug lists name tracked files")
    run = load_runner()
    bugs = run.load_bugs()
    assert len(bugs) > 100
    bad = run.check_bugs(bugs, root, run.tracked_files(root))
    assert not bad, "\n".join(f"{bugs[i]['id']}: {msg}" for i, msg in bad.items())
