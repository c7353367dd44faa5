"""A training run meets the world: a second writer, Ctrl-C and SIGTERM, a
NaN, a full disk, damaged or hostile files in its folder."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy
import pytest

import capsnet.extensions as capsnet_extensions
from capsnet.errors import UserError
from conftest import ROOT
from conftest import TINY
from conftest import assert_same_training_state
from conftest import refuses
from conftest import run
from conftest import run_here

# 4 iterations an epoch; no validation, so the model is written every epoch
RUN = [*TINY, '--val-size', '0', '--snapshot-interval', '3']


def train(out, epochs, *prefix, check=True):
    """train.py on RUN for ``epochs`` into ``out``: behind a tests/faults.py
    ``prefix`` in a process of its own if one is given, else in this one."""
    args = [*RUN, '-e', str(epochs), '--save', str(out)]
    if prefix:
        return run('tests/faults.py', *prefix, 'train.py', *args,
                   check=check)
    return run_here('train.py', *args, check=check)


def contents(folder):
    """{name: bytes} of the files that hold what a run has done: snapshots,
    model and log, and any temporary file (options.json and the plots are
    written again whenever a run starts)."""
    return {name: (folder / name).read_bytes() for name in os.listdir(folder)
            if name not in ('.lock', 'options.json') and
            not name.endswith('.png')}


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """Two epochs in one go: snapshot_iter_8 is the state to reach."""
    out = tmp_path_factory.mktemp('uninterrupted')
    train(out, 2)
    return out


@pytest.fixture(scope='module')
def one_epoch(tmp_path_factory):
    """The same run stopped after its first epoch (iteration 4)."""
    out = tmp_path_factory.mktemp('one_epoch')
    train(out, 1)
    assert {'snapshot_iter_4', 'model.npz', 'log'} <= set(os.listdir(out))
    # one process keeps its newest snapshot alone: what resuming needs
    assert [n for n in os.listdir(out) if n.startswith('snapshot')] == [
        'snapshot_iter_4']
    return out


@pytest.fixture
def resumable(one_epoch, tmp_path):
    """A fresh copy of the one-epoch folder, to resume into."""
    out = tmp_path / 'run'
    shutil.copytree(one_epoch, out)
    return out


def plotted(snapshot):
    """{plot: {key: [(iteration, value), ...]}} of the PlotReports in a
    snapshot: the points its PNGs are drawn from."""
    with numpy.load(snapshot) as npz:
        return {k: json.loads(str(npz[k])) for k in npz.files
                if '/_plot_' in k}


def logged(folder):
    """The log's entries, without their wall-clock times."""
    with open(folder / 'log') as f:
        return [{k: v for k, v in entry.items() if k != 'elapsed_time'}
                for entry in json.load(f)]


def one_line(result, status):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status, result.stderr[-3000:]
    assert len(lines) == 1 and 'Traceback' not in result.stderr, \
        result.stderr
    return lines[0]


@pytest.mark.parametrize('name, iteration', [('INT', 5), ('TERM', 7)])
def test_a_signal_snapshots_its_iteration_and_the_run_resumes_exactly(
        resumable, uninterrupted, name, iteration):
    result = train(resumable, 2, 'signal', name, str(iteration), check=False)
    sig = signal.Signals['SIG' + name]
    line = one_line(result, 128 + sig)
    assert line.startswith('SIG{} at iteration {}'.format(name, iteration))
    assert 'run the same command to resume' in line
    assert (resumable / 'snapshot_iter_{}'.format(iteration)).exists()
    result = train(resumable, 2)
    assert '(iteration {})'.format(iteration) in result.stdout
    assert_same_training_state(uninterrupted / 'snapshot_iter_8',
                               resumable / 'snapshot_iter_8')
    # the plots and the log too: one point an epoch, the mean of all of it
    want = plotted(uninterrupted / 'snapshot_iter_8')
    assert len(want) == 2 and plotted(resumable / 'snapshot_iter_8') == want
    assert logged(resumable) == logged(uninterrupted)


def test_a_run_stopped_before_its_first_validation_resumes(tmp_path):
    """Its snapshot holds no pickled None for the best validation score."""
    out = tmp_path / 'run'
    args = ['--val-size', '200', '-e', '1', '--save', str(out)]
    result = run('tests/faults.py', 'signal', 'INT', '2', 'train.py', *RUN,
                 *args, check=False)
    assert one_line(result, 128 + signal.SIGINT).startswith(
        'SIGINT at iteration 2')
    result = run_here('train.py', *RUN, *args)
    assert '(iteration 2)' in result.stdout
    assert 'validation/main/accuracy' in (out / 'log').read_text()


@pytest.mark.parametrize('bad, stop', [(6, 6), (5, 6)])
def test_a_nan_loss_stops_the_run_and_touches_no_file(resumable, bad, stop):
    """Resumed at iteration 4, the run writes at 6 (its snapshot interval):
    a NaN at 5 is read there, before anything is written."""
    before = contents(resumable)
    line = one_line(train(resumable, 2, 'nan', str(bad), check=False), 1)
    assert line.startswith('error: the training loss became NaN or infinite '
                           'at iteration {}; the run stopped at iteration '
                           '{}'.format(bad, stop))
    assert contents(resumable) == before


def finite_loss_stops(xp, losses, writes):
    """Feed FiniteLoss the training losses of iterations 1, 2, ... (as
    ``xp`` arrays) with files written at the iterations in ``writes``:
    the UserError it raised, or None."""
    check = capsnet_extensions.FiniteLoss(
        lambda trainer: trainer.updater.iteration in writes)
    for iteration, loss in enumerate(losses, 1):
        trainer = SimpleNamespace(
            updater=SimpleNamespace(iteration=iteration),
            observation={'main/loss': xp.asarray(loss, dtype=xp.float32)})
        try:
            check(trainer)
        except UserError as e:
            return e
    return None


def test_finite_loss_reads_the_first_bad_iteration_where_files_are_written():
    nan, inf = float('nan'), float('inf')
    assert finite_loss_stops(numpy, [1, 2, 3, 4], writes={2, 4}) is None
    error = finite_loss_stops(numpy, [1, 2, inf, nan, 5], writes={2, 4})
    assert str(error).startswith('the training loss became NaN or infinite '
                                 'at iteration 3; the run stopped at '
                                 'iteration 4')
    # one bad iteration, read at the next write however long after
    error = finite_loss_stops(numpy, [1, nan, 3, 4, 5, 6], writes={6})
    assert 'at iteration 2; the run stopped at iteration 6' in str(error)
    error = finite_loss_stops(numpy, [1, 2, nan], writes={1, 3})
    assert 'at iteration 3; the run stopped at iteration 3' in str(error)


@pytest.mark.parametrize('pattern, kept', [
    ('snapshot_iter_*', ['snapshot_iter_4']),
    ('.model.npz.*', ['model.npz']),
    ('log.json', ['log']),
])
def test_a_full_disk_leaves_the_previous_files_intact(resumable, pattern,
                                                      kept):
    before = contents(resumable)
    line = one_line(train(resumable, 2, 'enospc', pattern, check=False), 1)
    assert line.startswith('error: cannot write to')
    assert 'No space left on device' in line
    after = contents(resumable)
    for name in kept:
        assert after[name] == before[name], name
    assert not [name for name in after
                if 'partial' in name or name.startswith('tmp')]
    if pattern.startswith('snapshot'):        # with room again, it goes on
        train(resumable, 2)
        assert (resumable / 'snapshot_iter_8').exists()


def test_one_writer_per_folder_and_a_dead_holders_lock_is_taken(tmp_path):
    out = tmp_path / 'run'
    args = [sys.executable, os.path.join(ROOT, 'train.py'), *RUN, '-e',
            '1000', '--save', str(out)]
    holder = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / 'snapshot_iter_3').exists():
            assert holder.poll() is None and time.time() < deadline
            time.sleep(0.05)
        assert (out / '.lock').read_text().strip() == str(holder.pid)
        refuses('in use by another training run (pid {})'.format(
            holder.pid), 'train.py', *RUN, '--save', str(out))
        # SIGTERM from outside: a snapshot of the current iteration, one line
        holder.send_signal(signal.SIGTERM)
        _, stderr = holder.communicate(timeout=60)
    finally:
        holder.kill()
    assert holder.returncode == 128 + signal.SIGTERM, stderr
    line, = stderr.strip().splitlines()
    iteration = int(line.split('at iteration ')[1].split(':')[0])
    assert (out / 'snapshot_iter_{}'.format(iteration)).exists()
    # the lock file still names the dead holder; the next run takes it over
    assert (out / '.lock').read_text().strip() == str(holder.pid)
    result = train(out, 1000 if iteration < 4 else 1)
    assert '(iteration {})'.format(iteration) in result.stdout


class Trace:
    """Unpickling this creates the file ``path``: a trace of code run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


def with_pickled_object(npz_path, key, trace, out_path):
    """Copy ``npz_path`` to ``out_path`` with array ``key`` replaced by a
    pickled object whose unpickling would create ``trace``."""
    with numpy.load(npz_path) as npz:
        arrays = dict(npz)
    assert key in arrays
    arrays[key] = numpy.array([Trace(trace)], dtype=object)
    with open(out_path, 'wb') as f:
        numpy.savez(f, **arrays)


def test_loading_never_unpickles(one_epoch, tmp_path):
    trace = tmp_path / 'trace'
    # a snapshot, picked by hand and found in the save folder
    hostile = tmp_path / 'hostile'
    shutil.copytree(one_epoch, hostile)
    with_pickled_object(one_epoch / 'snapshot_iter_4',
                        'updater/model:main/model/conv1/W', trace,
                        hostile / 'snapshot_iter_9')
    for extra in (['--resume', str(hostile / 'snapshot_iter_9')], []):
        refuses('needs pickle', 'train.py', *RUN, '-e', '3', '--save',
                str(hostile), *extra)
    # a model file
    with_pickled_object(one_epoch / 'model.npz', 'conv1/W', trace,
                        tmp_path / 'model.npz')
    refuses('needs pickle', 'analyze.py', '--load',
            str(tmp_path / 'model.npz'), '--evaluate', *TINY[:2])
    assert not trace.exists()
    # the test can fail: with pickle allowed, the trace appears
    with numpy.load(tmp_path / 'model.npz', allow_pickle=True) as npz:
        npz['conv1/W']
    assert trace.exists()


@pytest.mark.parametrize('name, content, message', [
    ('options.json', b'', 'options.json is empty'),
    ('options.json', b'{"model": ', 'options.json is damaged'),
    ('log', b'', 'log is empty'),
    ('log', b'[{"epoch": 1}', 'log is damaged'),
    ('log', b'{}', 'log is damaged'),
    ('snapshot_iter_4', b'', 'snapshot_iter_4: EOFError'),
    ('snapshot_iter_4', b'PK\x03\x04 cut short', 'snapshot_iter_4: '),
])
def test_a_damaged_file_in_the_folder_is_named_with_what_to_do(
        resumable, name, content, message):
    (resumable / name).write_bytes(content)
    advice = {'options.json': 'delete it if this folder was made by the '
              'same command', 'log': 'delete it: a resumed run writes it',
              'snapshot_iter_4': 'delete it to resume from the snapshot '
              'before it'}[name]
    line = refuses(message, 'train.py', *RUN, '-e', '2', '--save',
                   str(resumable))
    assert advice in line


@pytest.mark.parametrize('saved, ok', [
    ({}, True),                                    # made before the option
    ({'capsule_bias': False}, True),
    ({'capsule_bias': True}, False),
    ({'routing': 1}, False),
    ({'dropout': 0.5}, False),                     # another architecture
])
def test_a_folder_made_before_an_option_existed_resumes(tmp_path, saved, ok):
    from capsnet import run_folder
    from capsnet.errors import UserError
    from capsnet.model import CapsNet
    model = CapsNet(reconstruct=False)
    options = {k: v for k, v in model.options.items() if k != 'capsule_bias'}
    (tmp_path / 'options.json').write_text(json.dumps(
        {'model': dict(options, **saved)}))
    if ok:
        run_folder.check(str(tmp_path), model)
    else:
        with pytest.raises(UserError, match='other model options'):
            run_folder.check(str(tmp_path), model)


def test_a_baseline_saved_before_dropout_after_existed_keeps_both(tmp_path):
    from capsnet import model_file
    from capsnet.model import BaselineCNN
    model = BaselineCNN(dropout_after='both')
    del model.options['dropout_after']
    model_file.save(str(tmp_path / 'old.npz'), model)
    loaded = model_file.load(str(tmp_path / 'old.npz'))
    assert loaded.options['dropout_after'] == 'both'


def test_a_model_file_given_to_resume_is_named_as_one(tmp_path):
    line = refuses('is a model file, not a snapshot', 'train.py', *RUN,
                   '--save', str(tmp_path / 'run'), '--resume',
                   os.path.join(ROOT, 'saved_model', 'model.npz'))
    assert 'delete' not in line


@pytest.mark.parametrize('change, message', [
    ({'in_size': 1000}, 'option in_size holds 1000; it must be an integer '
     'in [17, 64]'),
    ({'class_names': ['a', 'b']}, "option class_names holds ['a', 'b']; it "
     'must be n_classes names'),
    ({'routing': 0}, 'option routing holds 0'),
    ({'reconstruct': 'yes'}, "option reconstruct holds 'yes'; it must be "
     'true or false'),
    ({'dropout': 0.5}, 'option dropout holds 0.5; it is not an option of a '
     'capsnet model'),
    ({'arch': 'resnet'}, "names the architecture 'resnet'"),
])
def test_a_model_files_options_are_checked_before_it_is_built(
        tmp_path, change, message):
    """Rewritten options of the shipped model: one line naming the option,
    never a model built from them (in_size 1000 would ask for 40 GB)."""
    import json as json_module
    from capsnet import model_file
    with numpy.load(os.path.join(ROOT, 'saved_model', 'model.npz')) as npz:
        arrays = {k: npz[k] for k in npz.files}
    options = json_module.loads(str(arrays[model_file.OPTIONS_KEY]))
    arrays[model_file.OPTIONS_KEY] = numpy.array(json_module.dumps(
        dict(options, **change)))
    numpy.savez(tmp_path / 'model.npz', **arrays)
    refuses(message, 'analyze.py', '--load', str(tmp_path / 'model.npz'),
            '--evaluate', *TINY[:2])
