"""Run a script with one fault injected, as a user's machine would meet it.

    python tests/faults.py enospc PATTERN SCRIPT [ARGS...]
        every file opened for writing whose name matches PATTERN (fnmatch)
        gets half of its first write, then fails with ENOSPC: a full disk
    python tests/faults.py nan ITERATION SCRIPT [ARGS...]
        the training batch of that iteration (1-based) is all NaN
    python tests/faults.py signal NAME ITERATION SCRIPT [ARGS...]
        the process sends itself SIGNAME while it runs that iteration
    python tests/faults.py bug ITERATION RANK SCRIPT [ARGS...]
        the MPI process RANK raises a RuntimeError (a bug) at that iteration

The script then runs as ``python SCRIPT ARGS...`` would run it.
"""
import builtins
import errno
import fnmatch
import os
import runpy
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import capsnet  # noqa: E402,F401  (patches chainer before its first import)
from chainer.dataset import convert  # noqa: E402
from chainer.training.updaters import StandardUpdater  # noqa: E402


class FullDisk:
    """A file on a full disk: part of the first write lands, then ENOSPC."""

    def __init__(self, file):
        self._file = file

    def write(self, data):
        self._file.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def fill_disk(pattern):
    real_open = builtins.open

    def open_(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if set(mode) & set('wax') and isinstance(file, (str, os.PathLike)) \
                and fnmatch.fnmatch(os.path.basename(file), pattern):
            return FullDisk(f)
        return f
    builtins.open = open_


def at_iteration(iteration, fault):
    """Call ``fault(updater)`` just before the updater runs ``iteration``."""
    update_core = StandardUpdater.update_core

    def patched(self):
        if self.iteration + 1 == iteration:
            fault(self)
        update_core(self)
    StandardUpdater.update_core = patched


def nan_batch(updater):
    call_converter = convert._call_converter

    def poisoned(converter, batch, device):
        convert._call_converter = call_converter      # this batch only
        x, *rest = call_converter(converter, batch, device)
        return (x * float('nan'), *rest)
    convert._call_converter = poisoned


def bug_on(rank):
    def raise_(updater):
        from mpi4py import MPI
        if MPI.COMM_WORLD.rank == rank:
            raise RuntimeError('an injected bug')
    return raise_


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == 'enospc':
        fill_disk(args.pop(0))
    elif mode == 'nan':
        at_iteration(int(args.pop(0)), nan_batch)
    elif mode == 'signal':
        sig = signal.Signals['SIG' + args.pop(0)]
        at_iteration(int(args.pop(0)),
                     lambda updater: os.kill(os.getpid(), sig))
    elif mode == 'bug':
        at_iteration(int(args.pop(0)), bug_on(int(args.pop(0))))
    else:
        sys.exit('unknown fault {}'.format(mode))
    sys.argv = args
    runpy.run_path(args[0], run_name='__main__')


if __name__ == '__main__':
    main()
