"""The parallel map the kernels and Adam share."""
import threading

import numpy

from capsnet import parallel


def test_split_runs_its_slices_at_once(monkeypatch):
    monkeypatch.setattr(parallel, 'THREADS', 3)
    together = threading.Barrier(3, timeout=10)  # broken unless all 3 wait

    def work(lo, hi):
        together.wait()
        return lo, hi
    assert parallel.split(numpy, 7, work) == [(0, 2), (2, 4), (4, 7)]

    def bounds(lo, hi):
        return lo, hi
    assert parallel.split(numpy, 2, bounds) == [(0, 1), (1, 2)]  # none empty
    assert parallel.split(object(), 7, bounds) == [(0, 7)]    # CuPy: one call
