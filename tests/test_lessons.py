"""The lessons (lessons/*.py, jupytext percent format) run as plain scripts on a tiny setting, convert to
notebooks, and one of them executes as a notebook in a real kernel."""
import glob
import os
import runpy
import sys
import time

import jupytext
import matplotlib
import nbformat
import pytest
from nbclient import NotebookClient

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS_DIR = os.path.join(ROOT, "lessons")
LESSONS = sorted(glob.glob(os.path.join(LESSONS_DIR, "[0-9][0-9]_*.py")))
NAMES = [os.path.basename(p) for p in LESSONS]


@pytest.fixture
def lesson_env(monkeypatch, tmp_path):
    """FAST sizes, the reference solutions, figures in a temporary folder, lessons/ importable."""
    monkeypatch.setenv("MINIGPT_LESSON_FAST", "1")
    monkeypatch.setenv("MINIGPT_LESSON_SOLUTIONS", "1")
    monkeypatch.setenv("MINIGPT_LESSON_OUT", str(tmp_path))
    monkeypatch.delenv("MINIGPT_LESSON_CHECKPOINT", raising=False)
    monkeypatch.syspath_prepend(LESSONS_DIR)
    for mod in ("common", "solutions"):  # re-read the environment
        monkeypatch.delitem(sys.modules, mod, raising=False)
    yield tmp_path
    plt.close("all")


def test_there_are_six_lessons():
    assert [n[:2] for n in NAMES] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", LESSONS, ids=NAMES)
def test_lesson_runs_as_a_script(path, lesson_env, capsys):
    start = time.perf_counter()
    runpy.run_path(path, run_name="__main__")
    took = time.perf_counter() - start
    out = capsys.readouterr().out
    assert out.strip(), "a lesson prints what it finds"
    assert os.listdir(lesson_env) or "06_" in path, "lessons 1-5 save figures"
    with capsys.disabled():
        print(f"\n  {os.path.basename(path)}: {took:.1f} s")


@pytest.mark.parametrize("path", LESSONS, ids=NAMES)
def test_lesson_converts_to_a_notebook(path):
    nb = jupytext.read(path)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and nb.cells[0].source.startswith("# Lesson")
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3
    nbformat.validate(nbformat.reads(jupytext.writes(nb, fmt="ipynb"), as_version=4))
    assert not any("# %%" in c.source for c in nb.cells), "every cell marker was recognised"


def test_backprop_lesson_fails_without_the_exercise(monkeypatch, lesson_env):
    monkeypatch.setenv("MINIGPT_LESSON_SOLUTIONS", "0")
    with pytest.raises(NotImplementedError, match="layernorm_backward"):
        runpy.run_path(os.path.join(LESSONS_DIR, "06_backprop_by_hand.py"), run_name="__main__")


def test_backprop_lesson_executes_as_a_notebook(lesson_env):
    nb = jupytext.read(os.path.join(LESSONS_DIR, "06_backprop_by_hand.py"))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": LESSONS_DIR}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "relative errors" in text and "tensors failing with the wrong LayerNorm backward" in text
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
