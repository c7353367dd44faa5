"""train.py and analyze.py as a user runs them: end to end, killed and
resumed, and every kind of bad input. The commands run in this process
(their main(), as their scripts run it) where the process is not what is
under test: a kill, and the exit status and stderr of an error, are."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy
import pytest
import scipy.io

from conftest import DATA
from conftest import MNIST_FIXTURE
from conftest import ROOT
from conftest import TINY
from conftest import assert_same_training_state
from conftest import fails_with
from conftest import refuses
from conftest import run
from conftest import run_here

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp('run')
    run_here('train.py', *TINY, '--save', str(out), '--snapshot-interval', '3')
    return out


def test_train_leaves_model_log_plots_snapshots(trained):
    files = set(os.listdir(trained))
    assert {'model.npz', 'options.json', 'log', 'loss.png',
            'accuracy.png'} <= files
    assert any(f.startswith('snapshot_iter_') for f in files)
    assert not [f for f in files if 'partial' in f or f.startswith('tmp')]
    assert '.lock' not in files         # a clean run lets its folder go
    log = json.loads((trained / 'log').read_text())
    assert [e['epoch'] for e in log] == [1, 2]
    assert log[-1]['iteration'] == 8
    for key in ('main/loss', 'validation/main/accuracy', 'test/main/accuracy'):
        assert key in log[-1]
    options = json.loads((trained / 'options.json').read_text())
    assert options['model']['routing'] == 3 and options['train']['epoch'] == 2
    assert options['train']['lr_warmup'] == 0         # the paper's, on MNIST


def test_the_progress_bar_gives_a_rate_from_its_first_line(tmp_path):
    result = run('train.py', *TINY, '-b', '4', '-e', '1', '--save',
                 str(tmp_path))
    rates = [line.split()[0] for line in result.stdout.splitlines()
             if 'iters/sec' in line]
    assert rates and all(float(rate) < 1e6 for rate in rates), rates


def test_analyze_renders_the_figures(trained, tmp_path):
    out = tmp_path / 'figures'
    result = run_here('analyze.py', '--load', str(trained), *DATA,
                      '--test-size', '100', '--out', str(out))
    assert sorted(os.listdir(out)) == sorted(
        ['reconstructions.png', 'mask_grid.png', 'routing_0.png'] +
        ['interpolation_{}.png'.format(d) for d in range(10)])
    assert 'rendered 13 images' in result.stdout
    # the default output folder is analysis/ beside the model
    run_here('analyze.py', '--load', str(trained / 'model.npz'), *DATA,
             '--test-size', '100', '--routing-images', '5', '7',
             '--routing-types')
    assert {'routing_5.png', 'routing_types_5.png', 'routing_7.png',
            'routing_types_7.png'} <= set(os.listdir(trained / 'analysis'))
    refuses('outside the 100 test images', 'analyze.py', '--load',
            str(trained), *DATA, '--test-size', '100',
            '--routing-images', '100', '--out', str(out))


def test_analyze_evaluate_prints_one_json_line(trained):
    result = run_here('analyze.py', '--load', str(trained), *DATA,
                      '--test-size', '100', '--evaluate')
    line, = result.stdout.strip().splitlines()
    report = json.loads(line)
    assert report['n'] == 100 and 0 <= report['accuracy'] <= 1
    assert report['error_percent'] == pytest.approx(
        100 * (1 - report['accuracy']), abs=1e-3)
    # the log's test accuracy of the saved (best-by-validation) epoch is the
    # same count, though its last batch holds 4 of the 100 images, not 16
    log = json.loads((trained / 'log').read_text())
    best = max(log, key=lambda e: e['validation/main/accuracy'])
    assert best['test/main/accuracy'] == pytest.approx(report['accuracy'],
                                                       abs=1e-6)


def test_export_ships_model_options_and_log_without_machine_paths(
        trained, tmp_path):
    ship = tmp_path / 'ship'
    run_here('capsnet/export.py', str(trained), str(ship), '--float16')
    assert sorted(os.listdir(ship)) == ['log', 'model.npz', 'options.json']
    assert (ship / 'log').read_bytes() == (trained / 'log').read_bytes()
    options = json.loads((ship / 'options.json').read_text())
    run_options = json.loads((trained / 'options.json').read_text())
    assert options['model'] == run_options['model']
    assert os.path.isabs(run_options['train']['save'])
    assert options['train']['save'] == os.path.relpath(trained)
    assert options['train']['data_dir'] == os.path.relpath(MNIST_FIXTURE)
    assert (ship / 'model.npz').stat().st_size < 0.51 * (
        trained / 'model.npz').stat().st_size
    # the shipped model is what analyze.py loads, and evaluates as the run's
    # (half precision changes no answer of this tiny model on 100 images)
    shipped, run_model = (json.loads(run_here(
        'analyze.py', '--load', str(folder), *DATA, '--test-size', '100',
        '--evaluate').stdout) for folder in (ship, trained))
    assert shipped == run_model
    refuses('is not a folder', 'capsnet/export.py', str(tmp_path / 'none'),
            str(ship))
    (tmp_path / 'bare').mkdir()
    shutil.copy(trained / 'model.npz', tmp_path / 'bare')
    refuses('has no options.json or no log', 'capsnet/export.py',
            str(tmp_path / 'bare'), str(ship))


def test_init_continues_a_shipped_model_where_its_schedule_left_off(
        trained, tmp_path):
    # a shipped folder: its model, and the place its log gives the model
    ship = tmp_path / 'ship'
    run_here('capsnet/export.py', str(trained), str(ship))
    log = json.loads((trained / 'log').read_text())
    best = max(log, key=lambda e: e['validation/main/accuracy'])
    out = tmp_path / 'more'
    # a step size of 1e-9 keeps the weights: the first validation is the
    # shipped model's own (same images, same options)
    # given relative, its paths are recorded absolute: the folder a
    # relative one was relative to is not in options.json
    run_here('train.py', *TINY, '-e', '1', '--save', os.path.relpath(out),
             '--init', os.path.relpath(ship), '--lr', '1e-9')
    train = json.loads((out / 'options.json').read_text())['train']
    assert (train['save'], train['init']) == (str(out), str(ship))
    assert (train['init_iteration'], train['init_epoch']) == (
        best['iteration'], best['epoch'])
    first = json.loads((out / 'log').read_text())[0]
    assert first['validation/main/accuracy'] == pytest.approx(
        best['validation/main/accuracy'], abs=1e-6)
    # continued from the continuation, the counts add up
    from capsnet import model_file
    from capsnet import run_folder
    trained = best['iteration'] + 4, best['epoch'] + 1
    assert run_folder.init_from(str(out), model_file.load(
        str(out / 'model.npz'))) == (trained, trained)
    # a schedule that shrinks a hundredfold every update has decayed to
    # nothing at the model's place, and moves the weights where it starts
    # again at --lr
    schedule = ['-e', '1', '--lr', '1e-2', '--lr-decay', '0.01',
                '--lr-decay-steps', '1', '--init', str(ship)]
    moved = {}
    for restart in (False, True):
        run = tmp_path / 'restart{}'.format(restart)
        run_here('train.py', *TINY, '--save', str(run), *schedule,
                 *['--restart-schedule'] * restart)
        before, after = (model_file.load(str(path)) for path in (
            ship / 'model.npz', run / 'model.npz'))
        moved[restart] = max(abs(a.array - b.array).max() for a, b in zip(
            before.params(), after.params()))
        train = json.loads((run / 'options.json').read_text())['train']
        assert (train['init_iteration'], train['schedule_iteration']) == (
            best['iteration'], 0 if restart else best['iteration'])
    assert moved[False] < 1e-6 < 1e-3 < moved[True], moved
    # shipped into the folder it started from and resumed, the run keeps
    # the start it recorded (the shipped folder now counts its own epoch)
    run_here('capsnet/export.py', str(out), str(ship))
    run_here('train.py', *TINY, '-e', '2', '--save', str(out), '--init',
             str(ship), '--lr', '1e-9')
    train = json.loads((out / 'options.json').read_text())['train']
    assert (train['init_iteration'], train['schedule_epoch']) == (
        best['iteration'], best['epoch'])
    assert [e['epoch'] for e in json.loads((out / 'log').read_text())] == [
        1, 2]
    refuses('--restart-schedule needs --init', 'train.py', *TINY, '--save',
            str(tmp_path / 'n'), '--restart-schedule')
    refuses('holds a model of other options than this run builds (routing '
            '3 vs 1', 'train.py', *TINY, '--save', str(tmp_path / 'r1'),
            '--init', str(ship), '--routing', '1')
    refuses('(model capsnet vs baseline', 'train.py', *TINY, '--save',
            str(tmp_path / 'b'), '--init', str(ship), '--model', 'baseline')
    refuses('no model file at', 'train.py', *TINY, '--save',
            str(tmp_path / 'n'), '--init', str(tmp_path / 'none'))


def test_variants_train_and_analyze(tmp_path):
    out = tmp_path / 'seed'
    run_here('train.py', *TINY, '-e', '1', '--save', str(out), '--routing',
             '1', '--shared-weights', '--leaky-slope', '0.05',
             '--no-reconstruct')
    options = json.loads((out / 'options.json').read_text())['model']
    assert options == dict(options, routing=1, shared_weights=True,
                           leaky_slope=0.05, reconstruct=False)
    refuses('no decoder', 'analyze.py', '--load', str(out), *DATA)
    run_here('analyze.py', '--load', str(out), *DATA, '--evaluate',
             '--test-size', '50')


def test_killed_training_resumes_where_its_snapshot_left_off(tmp_path):
    out = tmp_path / 'run'
    args = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY,
            '-e', '3', '--save', str(out), '--snapshot-interval', '2']
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / 'snapshot_iter_6').exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    snapshots = sorted(int(f.rsplit('_', 1)[1]) for f in os.listdir(out)
                       if f.startswith('snapshot_iter_'))
    result = run_here('train.py', *TINY, '-e', '3', '--save', str(out),
                      '--snapshot-interval', '2')
    resumed = int(result.stdout.split('(iteration ')[1].split(')')[0])
    assert resumed == snapshots[-1] >= 6
    log = json.loads((out / 'log').read_text())
    assert [e['epoch'] for e in log] == [1, 2, 3]
    assert log[-1]['iteration'] == 12
    assert not [f for f in os.listdir(out)
                if 'partial' in f or f.startswith('tmp')]


def test_patience_stops_a_stalled_run_and_counts_across_resumes(tmp_path):
    """A step size too small to change any answer keeps validation accuracy
    at epoch 1's: --patience 2 stops the run after epoch 3, also when it
    was stopped at its epoch limit after epoch 2 and resumed."""
    out = tmp_path / 'stalled'
    stalled = [*TINY, '--lr', '1e-9', '--patience', '2', '--save', str(out)]
    run_here('train.py', *stalled, '-e', '2')       # best at 1, 2 no better
    for _ in range(2):          # a stopped run, resumed, stays stopped
        result = run_here('train.py', *stalled, '-e', '9')
        assert 'not improved for 2 epochs' in result.stdout
        assert 'stopped at epoch 3' in result.stdout
        log = json.loads((out / 'log').read_text())
        assert [e['epoch'] for e in log] == [1, 2, 3]
    # a run started without patience counts from its resume: best at 2
    plain = tmp_path / 'plain'
    run_here('train.py', *TINY, '--lr', '1e-9', '-e', '1', '--save',
             str(plain))
    result = run_here('train.py', *TINY, '--lr', '1e-9', '--patience', '1',
                      '-e', '9', '--save', str(plain))
    assert 'stopped at epoch 3' in result.stdout, result.stdout
    refuses('--patience needs validation images', 'train.py', *TINY,
            '--val-size', '0', '--patience', '3', '--save',
            str(tmp_path / 'none'))


def test_bad_data(tmp_path):
    fails_with('is not a folder', 'train.py', '--data-dir',
               str(tmp_path / 'none'), '--save', str(tmp_path / 'a'))
    shutil.copytree(MNIST_FIXTURE, tmp_path / 'm')
    path = tmp_path / 'm' / 'train-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:1000])
    refuses('cannot read', 'train.py', '--data-dir', str(tmp_path / 'm'),
            '--save', str(tmp_path / 'b'))
    os.remove(path)
    refuses('has no train-images-idx3-ubyte', 'train.py', '--data-dir',
            str(tmp_path / 'm'), '--save', str(tmp_path / 'c'))


def test_bad_checkpoints(trained, tmp_path):
    refuses('no model file', 'analyze.py', '--load',
            str(tmp_path / 'nothing.npz'), *DATA)
    corrupt = tmp_path / 'corrupt.npz'
    corrupt.write_bytes(b'this is not a zip file')
    refuses('cannot load model', 'analyze.py', '--load', str(corrupt),
            *DATA)
    truncated = tmp_path / 'truncated.npz'
    truncated.write_bytes((trained / 'model.npz').read_bytes()[:100000])
    refuses('cannot load model', 'analyze.py', '--load', str(truncated),
            *DATA)
    foreign = tmp_path / 'foreign.npz'
    numpy.savez(foreign, **{'fc/W': numpy.zeros((3, 4))})
    refuses('not a capsnet model file', 'analyze.py', '--load',
            str(foreign), *DATA)
    # parameters of one architecture under the options of another
    with numpy.load(trained / 'model.npz') as npz:
        arrays = dict(npz)
    arrays['capsnet_options'] = numpy.array(json.dumps(
        dict(json.loads(str(arrays['capsnet_options'])),
             shared_weights=True)))
    other = tmp_path / 'other.npz'
    numpy.savez(other, **arrays)
    refuses('cannot load model', 'analyze.py', '--load', str(other),
            *DATA)


def test_bad_snapshots_and_mixed_runs(trained, tmp_path):
    bad = tmp_path / 'snapshot'
    bad.write_bytes(b'garbage')
    refuses('cannot resume from', 'train.py', *TINY, '--save',
            str(tmp_path / 'r'), '--resume', str(bad))
    refuses('other model options', 'train.py', *TINY, '--save',
            str(trained), '--routing', '2')


def test_unwritable_outputs_and_missing_gpu(trained, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('a file, not a folder')
    refuses('cannot write to', 'train.py', *TINY, '--save',
            str(blocker / 'out'))
    refuses('cannot write to', 'analyze.py', '--load', str(trained),
            *DATA, '--out', str(blocker / 'out'))
    # no machine has GPU 63: the error says so with or without CUDA
    refuses('-g 63', 'train.py', *TINY, '-g', '63',
            '--save', str(tmp_path / 'g'))
    refuses('-g 63', 'analyze.py', '--load', str(trained),
            '-g', '63', *DATA)


def test_baseline_trains_and_evaluates_through_the_same_commands(tmp_path):
    out = tmp_path / 'baseline'
    run_here('train.py', *DATA, '--model', 'baseline', '--train-size', '32',
             '-b', '16', '-e', '1', '--val-size', '100', '--test-size', '50',
             '--save', str(out))
    log = json.loads((out / 'log').read_text())
    assert 'validation/main/accuracy' in log[-1]
    options = json.loads((out / 'options.json').read_text())
    assert options['train']['model'] == 'baseline'
    result = run_here('analyze.py', '--load', str(out), *DATA, '--evaluate',
                      '--test-size', '50')
    assert json.loads(result.stdout)['n'] == 50
    refuses('no capsules to look inside', 'analyze.py', '--load',
            str(out), *DATA)


def test_affine_evaluation_and_affnist(trained, tmp_path):
    result = run_here('analyze.py', '--load', str(trained), *DATA,
                      '--evaluate', '--test-size', '100', '--affine',
                      '--affine-rotation', '30')
    report = json.loads(result.stdout)
    assert report['n'] == 100 and report['affine']['rotation'] == 30
    path = tmp_path / 'affnist.mat'
    scipy.io.savemat(path, {'affNISTdata': {
        'image': numpy.zeros((1600, 2), dtype=numpy.uint8),
        'label_int': numpy.array([1, 2])}})
    refuses('affNIST images are 40x40', 'analyze.py', '--load',
            str(trained), '--evaluate', '--affnist', str(path))


def test_a_resumed_run_continues_exactly_as_if_never_stopped(trained,
                                                             tmp_path):
    """Weights, optimizer state, data order and shifts all carry over: the
    final snapshot equals the uninterrupted run's, array for array."""
    resumed = tmp_path / 'resumed'
    stopped = run('tests/faults.py', 'signal', 'INT', '6', 'train.py',
                  *TINY, '--save', str(resumed), '--snapshot-interval', '3',
                  check=False)
    assert 'SIGINT at iteration 6' in stopped.stderr, stopped.stderr[-2000:]
    result = run_here('train.py', *TINY, '--save', str(resumed),
                      '--snapshot-interval', '3')
    assert '(iteration 6)' in result.stdout
    assert_same_training_state(trained / 'snapshot_iter_8',
                               resumed / 'snapshot_iter_8')


def test_ema_saves_the_weights_average_and_resumes_it_exactly(tmp_path):
    ema = [*TINY, '-e', '1', '--ema', '0.5', '--snapshot-interval', '2']
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    run_here('train.py', *ema, '--save', str(whole))
    run('tests/faults.py', 'signal', 'INT', '2', 'train.py', *ema, '--save',
        str(resumed), check=False)
    assert '(iteration 2)' in run_here('train.py', *ema, '--save',
                                       str(resumed)).stdout
    assert_same_training_state(whole / 'snapshot_iter_4',
                               resumed / 'snapshot_iter_4')
    # validation picked the only epoch's average, not its weights
    with numpy.load(whole / 'snapshot_iter_4') as snapshot, \
            numpy.load(whole / 'model.npz') as saved:
        for name in ('conv1/W', 'digit_W', 'fc3/b'):
            numpy.testing.assert_array_equal(
                saved[name],
                snapshot['extensions/WeightAverage/average/' + name])
            assert not numpy.array_equal(
                saved[name], snapshot['updater/model:main/model/' + name])
    refuses('--ema', 'train.py', *TINY, '--save', str(tmp_path / 'one'),
            '--ema', '1')


def test_canvas_training_evaluates_on_mnist_and_affnist(tmp_path):
    out = tmp_path / 'canvas'
    run_here('train.py', *TINY, '-e', '1', '--canvas', '40', '--save',
             str(out))
    options = json.loads((out / 'options.json').read_text())['model']
    assert options['in_size'] == 40
    mnist = json.loads(run_here('analyze.py', '--load', str(out), *DATA,
                                '--evaluate', '--test-size', '50').stdout)
    assert mnist['n'] == 50
    path = tmp_path / 'affnist.mat'
    scipy.io.savemat(path, {'affNISTdata': {
        'image': numpy.zeros((1600, 3), dtype=numpy.uint8),
        'label_int': numpy.array([1, 2, 3])}})
    affnist = json.loads(run_here('analyze.py', '--load', str(out),
                                  '--evaluate', '--affnist',
                                  str(path)).stdout)
    assert affnist['n'] == 3
    run_here('analyze.py', '--load', str(out), *DATA, '--test-size', '100')
    assert len(os.listdir(out / 'analysis')) == 13


def test_multimnist_trains_evaluates_and_renders_figure_5(trained, tmp_path):
    out = tmp_path / 'multi'
    multi = [*TINY, '-e', '1', '--dataset', 'multimnist',
             '--snapshot-interval', '2']
    run_here('train.py', *multi, '--save', str(out))
    # resumed halfway, it draws the same pairs and ends in the same state;
    # the test pairs can be left out of training, as the long runs do
    halfway = [*multi, '--save', str(tmp_path / 'resumed'), '--test-size',
               '0']
    run('tests/faults.py', 'signal', 'INT', '2', 'train.py', *halfway,
        check=False)
    assert '(iteration 2)' in run_here('train.py', *halfway).stdout
    assert_same_training_state(out / 'snapshot_iter_4',
                               tmp_path / 'resumed' / 'snapshot_iter_4')
    log = json.loads((tmp_path / 'resumed' / 'log').read_text())
    assert 'validation/main/accuracy' in log[-1]
    assert not any(key.startswith('test/') for key in log[-1])
    assert json.loads((out / 'options.json').read_text())['model'][
        'in_size'] == 36
    log = json.loads((out / 'log').read_text())
    assert {'main/recon_loss', 'test/main/accuracy'} <= set(log[-1])
    result = run_here('analyze.py', '--load', str(out), *DATA, '--dataset',
                      'multimnist', '--test-size', '50', '--evaluate')
    report = json.loads(result.stdout)
    assert report['n'] == 50 and report['dataset'] == 'multimnist'
    run_here('analyze.py', '--load', str(out), *DATA, '--dataset',
             'multimnist', '--test-size', '50', '--out',
             str(tmp_path / 'figures'))
    assert os.listdir(tmp_path / 'figures') == ['multimnist.png']
    # a model trained on single digits is measured on the same pairs
    run_here('analyze.py', '--load', str(trained), *DATA, '--dataset',
             'multimnist', '--test-size', '50', '--evaluate')
    refuses('do not apply', 'train.py', *TINY, '--dataset', 'multimnist',
            '--model', 'baseline', '--save', str(tmp_path / 'b'))
    refuses('not MultiMNIST', 'analyze.py', '--load', str(out), *DATA,
            '--dataset', 'multimnist', '--evaluate', '--affine')
