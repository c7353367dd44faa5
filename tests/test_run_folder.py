"""What a killed run leaves half-written in its folder is cleared, and
nothing else."""
import os

from capsnet import run_folder


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
    run_folder.remove_partial_files(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted(finished)
