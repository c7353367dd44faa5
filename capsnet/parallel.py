"""Both cores for the memory-bound kernels: a parallel map over slices.

Routing, the capsule predictions and Adam's update are many small products
and element-wise passes (over u_hat: 94 MB at batch 128) that BLAS would
run on one thread. Split over the batch (or the grid, or the elements),
NumPy runs the parts at once, releasing the GIL inside each large
operation. As many parts as BLAS has threads, so that a process told to
use one core (OPENBLAS_NUM_THREADS=1, as under mpiexec) does.
"""
import concurrent.futures
import os

import numpy


def _thread_count():
    for name in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS'):
        if os.environ.get(name, '').isdigit():
            return max(1, int(os.environ[name]))
    if hasattr(os, 'sched_getaffinity'):                # not on macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


THREADS = _thread_count()
_pool = None, None                                      # (size, executor)


def split(xp, n, work, grain=1):
    """[work(lo, hi) for each of up to THREADS slices of range(n), none
    shorter than ``grain``], run at once on NumPy, as one call on CuPy."""
    global _pool
    parts = min(THREADS, n // grain) if xp is numpy else 1
    if parts <= 1:
        return [work(0, n)]
    if _pool[0] != THREADS:
        _pool = THREADS, concurrent.futures.ThreadPoolExecutor(THREADS)
    bounds = [n * k // parts for k in range(parts + 1)]
    futures = [_pool[1].submit(work, lo, hi)
               for lo, hi in zip(bounds[:-1], bounds[1:])]
    return [f.result() for f in futures]
