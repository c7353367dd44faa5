"""Data-parallel training over MPI processes with ChainerMN, behind one
interface that a single process implements too, so train.py reads the same
either way.

``create(None)`` is this one process; ``create('naive')`` (or another
ChainerMN communicator) joins the processes ``mpiexec`` started. Only then
are mpi4py and ChainerMN imported. Each process trains on its own shard of
the training split with its own generators; ChainerMN's optimizer averages
the gradients, its evaluator averages validation and test over the
processes, and every process snapshots its own state (``.RANK`` files).
"""
import fcntl
import struct
import sys
import termios
import time

from capsnet import run_folder
from capsnet.errors import UserError

# ChainerMN 7.8.1's communicators; all but 'naive' need CuPy (and NCCL, or a
# CUDA-aware MPI for 'flat')
COMMUNICATORS = ('naive', 'flat', 'non_cuda_aware', 'pure_nccl')
CPU_COMMUNICATORS = ('naive',)


class SingleProcess:
    """No communication: the shapes of the calls train.py makes."""

    rank, size, is_root = 0, 1, True
    snapshot_suffix = ''

    def device_id(self, gpu):
        return gpu

    def seeds(self, seed, k):
        return [seed, k]

    def shard(self, dataset, shuffle=False, seed=None):
        return dataset

    def optimizer(self, optimizer, target):
        """``optimizer`` set up on ``target``."""
        optimizer.setup(target)
        return optimizer

    def evaluator(self, evaluator):
        return evaluator

    def snapshot(self, snapshot):
        return snapshot

    def max(self, value):
        return value

    def latest_snapshot(self, directory):
        return run_folder.latest_snapshot(directory)

    def barrier(self):
        pass


class MPIProcesses(SingleProcess):
    """This process among those ``mpiexec`` started."""

    def __init__(self, name, gpu):
        if name not in CPU_COMMUNICATORS and gpu < 0:
            raise UserError('--communicator {} needs GPUs (-g 0); on the CPU '
                            'use naive'.format(name))
        import chainermn                  # imports mpi4py and starts MPI
        # a crash on one process (a traceback) aborts them all, not a hang;
        # ChainerMN's global_except_hook would too, but can lose the traceback
        sys.excepthook = _aborting(sys.excepthook)
        self.comm = chainermn.create_communicator(name)
        self.rank, self.size = self.comm.rank, self.comm.size
        self.is_root = self.rank == 0
        self.snapshot_suffix = '.{}'.format(self.rank)
        self._chainermn = chainermn

    def device_id(self, gpu):
        """One GPU per process on each machine: the rank within it."""
        return self.comm.intra_rank if gpu >= 0 else gpu

    def seeds(self, seed, k):
        return [seed, k, self.rank]

    def shard(self, dataset, shuffle=False, seed=None):
        """This process's part of ``dataset`` (equal parts: a few items
        repeat when the size does not divide)."""
        if dataset is None:
            return None
        return self._chainermn.scatter_dataset(dataset, self.comm,
                                               shuffle=shuffle, seed=seed)

    def optimizer(self, optimizer, target):
        """``optimizer`` on ``target``, averaging the gradients of all
        processes. ChainerMN's first update() would only broadcast rank 0's
        parameters (and train nothing): that broadcast is made here instead,
        so every update trains, resumed runs included."""
        optimizer = self._chainermn.create_multi_node_optimizer(optimizer,
                                                                self.comm)
        optimizer.setup(target)
        self._reduce_contiguous_gradients()
        self.comm.bcast_data(target)
        optimizer.is_changed(target)      # records the parameters
        return optimizer

    def _reduce_contiguous_gradients(self):
        """ChainerMN all-reduces a non-contiguous gradient through a
        contiguous copy and then drops the copy, leaving that gradient
        unaveraged. Chainer's transposes (and numpy's matmul, which keeps
        its inputs' memory order) make such gradients, CapsNet's W_ij among
        them: make each contiguous before it is reduced."""
        mean_grad = self.comm.multi_node_mean_grad

        def contiguous_mean_grad(model, zero_fill=False):
            for param in model.params():
                if param.grad is not None and \
                        not param.grad.flags.c_contiguous:
                    param.grad = param.xp.ascontiguousarray(param.grad)
            mean_grad(model, zero_fill)
        self.comm.multi_node_mean_grad = contiguous_mean_grad

    def evaluator(self, evaluator):
        return self._chainermn.create_multi_node_evaluator(evaluator,
                                                           self.comm)

    def snapshot(self, snapshot):
        """Every process writes its own state, as FILE.RANK. The wrapper
        runs when the snapshot would (after the log and the best model),
        not at the default priority ChainerMN gives it."""
        wrapper = self._chainermn.extensions.multi_node_snapshot(
            self.comm, snapshot, [[r] for r in range(self.size)])
        wrapper.priority = snapshot.priority
        return wrapper

    def max(self, value):
        """The largest of every process's int ``value`` (a collective)."""
        from mpi4py import MPI
        return self.comm.mpi_comm.allreduce(value, op=MPI.MAX)

    def latest_snapshot(self, directory):
        """This process's file of the newest iteration that every process
        has a snapshot of, or None."""
        own = run_folder.snapshot_iterations(directory, self.snapshot_suffix)
        common = set.intersection(*self.comm.mpi_comm.allgather(own))
        if not common:
            return None
        return run_folder.snapshot_path(directory, max(common),
                                        self.snapshot_suffix)

    def barrier(self):
        self.comm.mpi_comm.Barrier()


def create(name, gpu=-1):
    return SingleProcess() if name is None else MPIProcesses(name, gpu)


def abort_others(status):
    """After an error on this process, end every process of the job (they
    would wait for it forever), if it runs under MPI with others."""
    mpi = sys.modules.get('mpi4py.MPI')
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized() \
            and mpi.COMM_WORLD.Get_size() > 1:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            _wait_until_read(stream)
        mpi.COMM_WORLD.Abort(status)


def _aborting(excepthook):
    """``excepthook`` (which prints the traceback), then abort_others."""
    def hook(*exc_info):
        excepthook(*exc_info)
        abort_others(1)
    return hook


def _wait_until_read(stream, timeout=2.0):
    """Wait (at most ``timeout`` seconds) until the reader of ``stream``'s
    pipe has read all it holds. mpiexec forwards each process's output from
    such a pipe, and after an MPI_Abort it can drop what it has not read
    yet: about 1 run in 100 lost the error line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:                    # bytes not yet read (a file at its end: 0)
            unread, = struct.unpack('i', fcntl.ioctl(
                stream.fileno(), termios.FIONREAD, b'\0' * 4))
        except (OSError, ValueError):     # closed, or no FIONREAD
            return
        if not unread:
            return
        time.sleep(0.01)
