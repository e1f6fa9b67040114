"""minigpt.fast.threads: shards cover every row once, thread counts are checked, BLAS thread limits are restored."""
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt.fast import threads
from minigpt.fast.threads import limit_blas_threads, resolve_threads, shards
from tests.fast.helpers import shard_model

pytestmark = pytest.mark.usefixtures("four_cores")


@given(n_rows=st.integers(1, 300), n=st.integers(1, 12))
def test_shards_cover_every_row_once_nearly_evenly(n_rows, n):
    parts = shards(n_rows, n)
    assert len(parts) == min(n, n_rows)
    rows = np.concatenate([np.arange(n_rows)[p] for p in parts])
    np.testing.assert_array_equal(rows, np.arange(n_rows))  # in order, no gap, no overlap
    sizes = [p.stop - p.start for p in parts]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer or 'auto'"):
        resolve_threads(bad)
    with pytest.raises(ValueError, match="threads"):
        shard_model().loss_and_grad(np.zeros((2, 3)), np.zeros((2, 3)), threads=bad)


def test_auto_is_the_blas_thread_count_within_the_usable_cores():
    n = threads.blas_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    want = 1 if n is None else max(1, min(n, cores, threads.MAX_AUTO_THREADS))
    assert resolve_threads("auto") == want
    assert resolve_threads(None) == resolve_threads("auto")
    if n is not None:
        with limit_blas_threads(1):
            assert resolve_threads("auto") == 1  # e.g. a worker started with OPENBLAS_NUM_THREADS=1


@pytest.mark.skipif(threads.blas_threads() is None, reason="numpy's BLAS is not an OpenBLAS this process can control")
def test_limit_blas_threads_restores_the_count():
    before = threads.blas_threads()
    with limit_blas_threads(1):
        assert threads.blas_threads() == 1
    assert threads.blas_threads() == before
    with pytest.raises(KeyError):
        with limit_blas_threads(1):
            raise KeyError("inside")
    assert threads.blas_threads() == before
