"""Snapshots are written off the training thread, whole and as they were;
what a killed run leaves half-written is cleared, and nothing else."""
import errno
import os
import threading

import numpy
import pytest

from capsnet import checkpoint


def test_a_snapshot_holds_the_state_it_was_given(tmp_path, monkeypatch):
    """The training thread goes on updating its arrays in place while the
    snapshot is written: the file holds them as they were at the call."""
    writing = threading.Event()
    written = threading.Event()
    savez = checkpoint._savez

    def slow_savez(path, arrays):
        writing.set()
        written.wait(10)
        savez(path, arrays)
    monkeypatch.setattr(checkpoint, '_savez', slow_savez)
    W = numpy.arange(6, dtype=numpy.float32)
    writer = checkpoint.BackgroundWriter()
    writer('snapshot_iter_1', str(tmp_path), {'updater/model:main/W': W})
    assert writing.wait(10)
    W += 100                                     # the next step, meanwhile
    written.set()
    writer.finalize()
    with numpy.load(tmp_path / 'snapshot_iter_1') as npz:
        numpy.testing.assert_array_equal(npz['updater/model:main/W'],
                                         numpy.arange(6))
    assert os.listdir(tmp_path) == ['snapshot_iter_1']


def test_a_failed_write_is_raised_on_the_training_thread(tmp_path,
                                                         monkeypatch):
    def full_disk(path, arrays):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoint, '_savez', full_disk)
    writer = checkpoint.BackgroundWriter()
    writer('snapshot_iter_1', str(tmp_path), {'x': numpy.zeros(1)})
    with pytest.raises(OSError, match='No space left'):
        writer.finalize()
    assert os.listdir(tmp_path) == []      # no file, no temporary folder
    writer.finalize()                      # raised once


def test_partial_files_go_and_finished_ones_stay(tmp_path):
    finished = ['model.npz', 'options.json', 'log', 'loss.png',
                'snapshot_iter_4', '.lock', 'log_notes.txt']
    partial_files = ['.model.npz.4242.partial', '.options.json.7.partial',
                     'loss.png.partial.png']
    # Chainer's snapshot and log writers write inside temporary folders
    partial_folders = ['tmpsnapshot_iter_8abc', 'logk2j3x']
    for name in finished + partial_files:
        (tmp_path / name).write_bytes(b'x')
    for name in partial_folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / 'inside').write_bytes(b'x')
    checkpoint.remove_partial_files(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(finished)
