"""Data-parallel training with ChainerMN over MPI processes (mpiexec from the
mpich wheel, the naive communicator, on the CPU)."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy
import pytest

from capsnet.model import CapsNet
from conftest import DATA
from conftest import ROOT
from conftest import TINY
from conftest import assert_same_training_state
from conftest import run

MPIEXEC = os.path.join(os.path.dirname(sys.executable), 'mpiexec')
# 64 training images: 32 a process, 4 iterations of 8 an epoch
RUN = [*TINY, '-b', '8', '--snapshot-interval', '3', '--communicator',
       'naive']
ONE_THREAD = {'OPENBLAS_NUM_THREADS': '1'}      # mpiexec passes it on


def mpiexec(n, *args, timeout=300):
    """``mpiexec -n N python ARGS...`` from the project's root, with one
    BLAS thread a process: N processes of 2 threads each on 2 cores made
    every GEMM wait for a descheduled thread (the suite's slowest tests)."""
    return subprocess.run([MPIEXEC, '-n', str(n), sys.executable, *args],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ,
                                                    **ONE_THREAD))


def train(n, out, *prefix, epochs=2):
    args = [*RUN, '-e', str(epochs), '--save', str(out)]
    script = ['tests/faults.py', *prefix, 'train.py'] if prefix else \
        ['train.py']
    return mpiexec(n, *script, *args)


@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp('mpi')
    result = train(2, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def parameters_after_sgd(n, tmp_path, *flags):
    out = tmp_path / 'params{}{}.npz'.format(n, ''.join(flags))
    result = mpiexec(n, 'tests/mpi_equivalence.py', str(out), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    with numpy.load(out) as npz:
        return dict(npz)


def test_two_processes_on_half_batches_equal_one_on_whole_ones(tmp_path):
    numpy.random.seed(0)
    start = {name: p.array for name, p in CapsNet().namedparams()}
    one = parameters_after_sgd(1, tmp_path)
    two = parameters_after_sgd(2, tmp_path)
    summed = parameters_after_sgd(2, tmp_path, '--sum')

    def differs(params):
        """The parameters whose change from ``start`` differs from the
        one-process run's by more than float32 rounding."""
        out = []
        for name, p in one.items():
            step = numpy.abs(p - start[name]).max()
            rounding = 4 * numpy.finfo(numpy.float32).eps * \
                numpy.abs(p).max()
            if numpy.abs(params[name] - p).max() > 1e-3 * step + rounding:
                out.append(name)
        return out
    assert not differs(two)
    # a gradient summed over the processes instead of averaged is caught
    assert len(differs(summed)) > 5


def test_a_two_process_run_writes_one_set_of_outputs(two_processes):
    out, result = two_processes
    files = set(os.listdir(out))
    assert {'model.npz', 'options.json', 'log', 'loss.png',
            'accuracy.png'} <= files
    # each process snapshots its own state
    assert {'snapshot_iter_8.0', 'snapshot_iter_8.1'} <= files
    assert not [f for f in files if f.startswith('snapshot_iter_') and
                not f.endswith(('.0', '.1'))]
    log = json.loads((out / 'log').read_text())
    assert [e['epoch'] for e in log] == [1, 2]
    assert 'validation/main/accuracy' in log[-1]
    # the progress is printed once, by rank 0
    assert result.stdout.count('validation/main/accuracy') == 1
    report = json.loads(run('analyze.py', '--load', str(out), *DATA,
                            '--test-size', '50', '--evaluate').stdout)
    assert report['n'] == 50


def test_a_killed_two_process_run_resumes_exactly(two_processes, tmp_path):
    out = tmp_path / 'killed'
    result = train(2, out, 'signal', 'KILL', '6')
    assert result.returncode != 0
    assert 'snapshot_iter_4.1' in os.listdir(out)
    result = train(2, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'resuming from' in result.stdout
    for rank in '01':
        assert_same_training_state(
            two_processes[0] / ('snapshot_iter_8.' + rank),
            out / ('snapshot_iter_8.' + rank))


def test_one_failing_process_ends_the_job(tmp_path):
    """Rank 1 cannot write its snapshot (a full disk): the whole job ends
    with its one-line error, instead of rank 0 waiting forever."""
    result = train(2, tmp_path / 'failing', 'enospc', 'snapshot_iter_*.1',
                   epochs=1000)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error: ')]
    assert errors and 'No space left on device' in errors[0], \
        result.stderr[-3000:]
    assert 'Traceback' not in result.stderr


def test_a_bug_on_one_process_ends_the_job_with_its_traceback(tmp_path):
    result = train(2, tmp_path / 'bug', 'bug', '3', '1', epochs=1000)
    assert result.returncode != 0
    assert 'RuntimeError: an injected bug' in result.stderr, \
        result.stderr[-3000:]


def test_a_grid_trains_its_runs_over_processes(tmp_path):
    result = run('experiments/grid.py', 'table1', '--epochs', '1',
                 '--seeds', '0',
                 '--rows', 'r1', '--train-size', '32', '-b', '8',
                 '--val-size', '50', '--test-size', '20', *DATA, '--out',
                 str(tmp_path), '--communicator', 'naive',
                 env=ONE_THREAD)
    assert 'r1 seed 0:' in result.stdout
    # two processes ran it: each trained on half of the 32 images, 8 a
    # batch, so the epoch ended at iteration 2 (4 in one process)
    log = json.loads((tmp_path / 'runs' / 'r1' / 'seed0' / 'log').read_text())
    assert [(e['epoch'], e['iteration']) for e in log] == [(1, 2)]


def test_an_aborting_process_waits_until_its_output_is_read():
    """mpiexec can drop the output it has not read when a process aborts:
    the error line waits in the pipe until it is read."""
    from capsnet.distributed import _wait_until_read
    read_fd, write_fd = os.pipe()
    read = []
    with os.fdopen(read_fd, 'rb') as reader, \
            os.fdopen(write_fd, 'w') as writer:
        writer.write('error: a full disk\n')
        writer.flush()
        late_reader = threading.Timer(0.3, lambda: read.append(
            reader.read1(100)))
        start = time.monotonic()
        late_reader.start()
        _wait_until_read(writer)
        assert time.monotonic() - start >= 0.3
        late_reader.join()
        assert read == [b'error: a full disk\n']


def test_snapshots_by_time_come_at_the_same_iteration_in_every_process(
        tmp_path):
    """Each process has its own clock; they agree every iteration, so that
    each snapshot has its two shards (a 0.06-s interval: about every
    iteration, where two clocks disagree most)."""
    args = [a for a in RUN if a not in ('--snapshot-interval', '3')]
    result = mpiexec(2, 'train.py', *args, '-e', '1', '--snapshot-minutes',
                     '0.001', '--save', str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    shards = [f for f in os.listdir(tmp_path) if f.startswith('snapshot')]
    iterations = {f.split('.')[0] for f in shards}
    assert shards and all('{}.{}'.format(i, rank) in shards
                          for i in iterations for rank in (0, 1)), shards
