"""One writer per save folder: a lock that the kernel drops with its
process. (The snapshot on Ctrl-C and the stop before a non-finite loss are
Trainer extensions: capsnet/extensions.py.)"""
import fcntl
import os
import time


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

