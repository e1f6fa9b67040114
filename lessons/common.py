"""Shared by the lessons: where figures go, the FAST switch used by the tests, and the shipped checkpoint.

``MINIGPT_LESSON_FAST=1`` shrinks batches and training runs so the whole lesson set runs in seconds
(tests/test_lessons.py); the numbers printed then are noisier than in a normal run.
``MINIGPT_LESSON_SOLUTIONS=1`` fills exercises with the reference solutions from ``solutions.py``.
``MINIGPT_LESSON_CHECKPOINT=path`` analyses another checkpoint in lessons 3-5 (default: the shipped paper_s0).
"""
import os
import sys

import matplotlib

if "ipykernel" not in sys.modules:  # plain script or test: no display; in a notebook figures show inline
    matplotlib.use("Agg")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout without installing: minigpt and theory live in ROOT
    sys.path.insert(0, ROOT)

FAST = os.environ.get("MINIGPT_LESSON_FAST", "") not in ("", "0")
SOLUTIONS = os.environ.get("MINIGPT_LESSON_SOLUTIONS", "") not in ("", "0")
OUT = os.environ.get("MINIGPT_LESSON_OUT", os.path.join(HERE, "figures"))
CHECKPOINT = os.environ.get("MINIGPT_LESSON_CHECKPOINT", os.path.join(ROOT, "report", "checkpoints", "paper_s0.npz"))


def out(name):
    """Path for a figure: lessons/figures/<name> (or $MINIGPT_LESSON_OUT/<name>)."""
    os.makedirs(OUT, exist_ok=True)
    return os.path.join(OUT, name)


def n(full, fast):
    """A size: ``full`` normally, ``fast`` under MINIGPT_LESSON_FAST=1."""
    return fast if FAST else full


def load_paper_model():
    """(model, task): the shipped ``paper`` preset checkpoint, seed 0 (2000 steps), and the task it was trained on."""
    if not os.path.exists(CHECKPOINT):
        raise SystemExit(f"lessons need the shipped checkpoint {os.path.relpath(CHECKPOINT, ROOT)}; "
                         "train it with: minigpt train --preset paper --out runs/paper && cp runs/paper/checkpoint.npz " + os.path.relpath(CHECKPOINT, ROOT))
    from minigpt.training import load_run  # after the sys.path line above: the lessons run from a checkout too

    run = load_run(CHECKPOINT)
    return run.model, run.task
