"""What keeps a training run safe: one writer per save folder, a snapshot
and a clean stop on Ctrl-C or SIGTERM, and a stop before a non-finite loss
reaches any file."""
import fcntl
import os
import signal
import time

import chainer

from capsnet.errors import Interrupted
from capsnet.errors import UserError

LOCK_FILE = '.lock'
_held = []       # the locks this process holds, kept open until it ends


def lock_folder(directory):
    """Hold ``directory`` for the rest of this process (see FolderLock)."""
    _held.append(FolderLock(directory))


def release_folders():
    """A run that ended cleanly lets its folders go and deletes their
    ``.lock`` files, which would otherwise hold the pid of a process long
    gone (harmless, the kernel's lock went with it, but misleading)."""
    while _held:
        lock = _held.pop()
        os.unlink(lock.file.name)
        lock.file.close()


class ProgressBar(chainer.training.extensions.ProgressBar):
    """Chainer's ProgressBar, whose first line gives the rate since the run
    (or its resume) began: Chainer's measures from its own first line, and
    so printed 'inf iters/sec' there."""

    def initialize(self, trainer):
        updater = trainer.updater
        self._pbar._recent_timing.append(
            (updater.iteration, updater.epoch_detail, time.time()))


class FolderLock:
    """Hold ``directory`` while this object lives: an exclusive flock on its
    ``.lock`` file, which holds our pid. The kernel drops the lock when the
    process ends, however it ends, so a lock left by a dead process is simply
    taken over; a live holder makes the constructor raise a UserError."""

    def __init__(self, directory):
        path = os.path.join(directory, LOCK_FILE)
        self.file = open(path, 'a+')
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            self.file.close()
            raise UserError('{} is in use by another training run (pid {}); '
                            'wait for it, stop it, or use another --save '
                            'folder'.format(directory, holder))
        self.file.seek(0)
        self.file.truncate()
        self.file.write('{}\n'.format(os.getpid()))
        self.file.flush()

    def _holder(self):
        # the holder writes its pid just after it locks: give it a moment
        for _ in range(20):
            self.file.seek(0)
            pid = self.file.read().strip()
            if pid:
                return pid
            time.sleep(0.05)
        return 'unknown'


class GracefulStop(chainer.training.Extension):
    """On SIGINT or SIGTERM, let the current iteration finish with all its
    extensions (the snapshot extension asks ``requested`` as a trigger),
    then stop the run with ``Interrupted``. A second signal stops at once.

    Under MPI the processes agree, once an iteration, on whether any of them
    got a signal, so that all snapshot and stop at the same iteration; only
    the first (``cluster.is_root``) says so. Use as a context manager around
    ``trainer.run()``: it installs the handlers and restores the old ones.
    """

    priority = -1000          # after everything, the snapshot (-100) included

    def __init__(self, cluster):
        self.cluster = cluster
        self.signal = None
        self._agreed = (None, 0)        # (iteration, signal number or 0)
        self._previous = {}

    def agreed_signal(self, trainer):
        """The signal any process got, or 0; one collective an iteration."""
        iteration = trainer.updater.iteration
        if self._agreed[0] != iteration:
            self._agreed = (iteration, self.cluster.max(self.signal or 0))
        return self._agreed[1]

    def requested(self, trainer):
        return self.agreed_signal(trainer) != 0

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self, trainer):
        sig = self.agreed_signal(trainer)
        if sig:
            raise Interrupted(
                '{} at iteration {}: its snapshot is saved in {}; run the '
                'same command to resume'.format(
                    signal.Signals(sig).name, trainer.updater.iteration,
                    trainer.out) if self.cluster.is_root else '', sig)


class FiniteLoss(chainer.training.Extension):
    """Stop the run with a UserError once the training loss has been NaN or
    infinite, before any writer (log, model, snapshot) sees an iteration
    since: the files on disk stay those of the last write before it.

    ``writes(trainer)``: whether anything is written this iteration. Only
    then is the loss read on the host; between reads the first bad
    iteration is kept on the device, so that a GPU step does not wait for
    the device each iteration.
    """

    priority = chainer.training.PRIORITY_WRITER + 1

    def __init__(self, writes):
        self.writes = writes
        self.first_bad = None   # on the device: first bad iteration, or -1

    def __call__(self, trainer):
        loss = chainer.as_array(trainer.observation['main/loss'])
        xp = chainer.backend.get_array_module(loss)
        iteration = trainer.updater.iteration
        if self.first_bad is None:
            self.first_bad = xp.array(-1)
        self.first_bad = xp.where((self.first_bad < 0) & ~xp.isfinite(loss),
                                  iteration, self.first_bad)
        if not self.writes(trainer):
            return
        first_bad, self.first_bad = int(self.first_bad), None
        if first_bad >= 0:
            raise UserError(
                'the training loss became NaN or infinite at iteration {}; '
                'the run stopped at iteration {} and its files are those of '
                'the last write before it (a smaller --lr may help)'.format(
                    first_bad, iteration))
