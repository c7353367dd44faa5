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


def test_the_shipped_model_fine_tunes_on_your_own_digits():
    """Your own data names its classes and takes its images' ground to
    black; neither stops --init from the MNIST model."""
    import numpy
    from capsnet.model import CapsNet
    from conftest import ROOT
    numpy.random.seed(0)
    model = CapsNet(subtract_ground=True, class_names=list('abcdefghij'))
    (iterations, _), _ = run_folder.init_from(
        os.path.join(ROOT, 'saved_model'), model)
    assert iterations > 0
    assert model.options['subtract_ground'] is True


def test_trained_so_far_counts_the_runs_before_and_the_schedules_restart(
        tmp_path):
    import json

    def folder(train):
        (tmp_path / 'log').write_text(json.dumps([
            {'epoch': 1, 'iteration': 10, 'validation/main/accuracy': 0.5},
            {'epoch': 2, 'iteration': 20, 'validation/main/accuracy': 0.7},
            {'epoch': 3, 'iteration': 30, 'validation/main/accuracy': 0.7}]))
        (tmp_path / 'options.json').write_text(json.dumps({'train': train}))
        return run_folder.trained_so_far(str(tmp_path))

    # saved at the first best epoch; a run from before --restart-schedule
    # continued its model's schedule
    assert folder({'init_iteration': 100, 'init_epoch': 5}) == (
        (120, 7), (120, 7))
    assert folder({'init_iteration': 100, 'init_epoch': 5,
                   'schedule_iteration': 0, 'schedule_epoch': 0}) == (
        (120, 7), (20, 2))
    assert folder({}) == ((20, 2), (20, 2))
    (tmp_path / 'log').unlink()
    assert run_folder.trained_so_far(str(tmp_path)) == ((0, 0), (0, 0))
