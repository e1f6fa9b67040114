"""Fixtures of the tests of minigpt.fast."""
import os

import pytest

from minigpt.fast import threads


@pytest.fixture
def four_cores(monkeypatch):
    """Three shards are tested on any machine: ``resolve_threads`` refuses more threads than the usable
    cores (tests/training/test_reliability_runs.py checks that), so count at least four here."""
    monkeypatch.setattr(threads, "usable_cores", lambda: max(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4))
