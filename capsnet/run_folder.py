"""Run folders: the options.json, log and snapshots a training run writes
(train.py --save), resumed from, and started from (--init).
"""
import glob
import json
import os
import re
import shutil

from chainer import serializers

from capsnet import model_file
from capsnet.errors import UserError

SNAPSHOT_FORMAT = 'snapshot_iter_{.updater.iteration}'
# train.py's options that name files or folders: options.json holds them
# absolute, a shipped one relative to where it was shipped from
PATH_OPTIONS = ('save', 'data_dir', 'resume', 'init')


def read_json(directory, name, advice):
    """The JSON file ``name`` of a run folder, or None where there is none;
    a damaged one is a UserError that ends with ``advice``."""
    path = os.path.join(directory, name)
    try:
        with open(path) as f:
            value = json.load(f)
        if value is None:
            raise ValueError('it holds null')
        return value
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:      # JSONDecodeError, bad UTF-8
        raise UserError('{} is {} ({}); {}'.format(
            path, 'empty' if os.path.getsize(path) == 0 else 'damaged',
            e, advice))


def check(directory, model):
    """Before a run uses ``directory``: its options.json and log, if any,
    must be readable, and it must hold a model with ``model``'s options."""
    options = read_json(directory, 'options.json', 'delete it if this folder '
                        'was made by the same command, or use another --save '
                        'folder')
    log = read_json(directory, 'log', 'delete it: a resumed run writes it '
                    'again in full from its snapshot at the next epoch')
    if log is not None and not isinstance(log, list):
        raise UserError('{} is damaged (not a list of log entries); delete '
                        'it: a resumed run writes it again in full from its '
                        'snapshot at the next epoch'.format(
                            os.path.join(directory, 'log')))
    if options is not None and not (isinstance(options, dict) and
                                    isinstance(options.get('model', {}),
                                               dict)):
        raise UserError('{} is damaged (not the options of a run); delete it '
                        'if this folder was made by the same command, or use '
                        'another --save folder'.format(
                            os.path.join(directory, 'options.json')))
    saved = (options or {}).get('model', model.options)
    if dict(type(model).IMPLICIT_OPTIONS, **saved) != model.options:
        raise UserError('{} was made with other model options ({}); use '
                        'another --save folder'.format(
                            os.path.join(directory, 'options.json'), saved))


def remove_partial_files(directory):
    """Delete what a killed run was still writing: our '.partial' files and
    the temporary folders of Chainer's snapshot and log writers. None of
    them carries a final name, so nothing finished is touched."""
    for path in glob.glob(os.path.join(directory, '.*.partial')) + \
            glob.glob(os.path.join(directory, '*.partial.png')):
        os.unlink(path)
    for prefix in ('tmpsnapshot_iter_', 'log'):
        for path in glob.glob(os.path.join(directory, prefix + '*')):
            if os.path.isdir(path):
                shutil.rmtree(path)


def snapshot_path(directory, iteration, suffix=''):
    return os.path.join(directory, 'snapshot_iter_{}{}'.format(iteration,
                                                               suffix))


def snapshot_iterations(directory, suffix=''):
    """The iterations of the snapshots in ``directory`` whose names end in
    ``suffix`` ('.RANK' for one process of a multi-process run)."""
    pattern = re.compile(r'snapshot_iter_(\d+){}$'.format(re.escape(suffix)))
    return {int(m.group(1)) for m in map(pattern.match, os.listdir(directory))
            if m}


def latest_snapshot(directory):
    """Path of the snapshot with the highest iteration, or None."""
    iterations = snapshot_iterations(directory)
    return snapshot_path(directory, max(iterations)) if iterations else None


def load_snapshot(path, trainer):
    """Restore the whole training state (model, optimizer, iterator, log)."""
    failure = model_file.read_npz(path, lambda npz: serializers.NpzDeserializer(
        model_file.renamed(npz)).load(trainer))
    if not failure:
        return
    is_model = []
    model_file.read_npz(path, lambda npz: is_model.append(
        model_file.OPTIONS_KEY in npz.files))
    if any(is_model):
        raise UserError('cannot resume from {}: it is a model file, not a '
                        'snapshot; --resume takes a snapshot_iter_N file of '
                        'a run folder'.format(path))
    ours = (os.path.dirname(os.path.abspath(path)) ==
            os.path.abspath(trainer.out) and
            re.fullmatch(r'snapshot_iter_\d+(\.\d+)?', os.path.basename(path)))
    raise UserError('cannot resume from {}: {}; {}'.format(
        path, failure, 'delete it to resume from the snapshot before it, or '
        'use another --save folder' if ours else 'give --resume a '
        'snapshot_iter_N file of a run with the same options'))


def trained_so_far(directory):
    """What trained the model of the run or shipped folder ``directory``,
    as two (iterations, epochs): those in all, and its place in its
    step-size schedule. Each is the log entry at which it was saved (the
    first with the best validation accuracy, else the last entry) plus
    where its own run started: the model it started from (--init), and
    that model's place, or 0 where the run restarted the schedule
    (--restart-schedule). Both (0, 0) without a log."""
    advice = 'delete it, or give --init the model file alone'
    log = read_json(directory, 'log', advice)
    if not log or not isinstance(log, list):
        return (0, 0), (0, 0)
    key = 'validation/main/accuracy'
    scored = [entry for entry in log if key in entry]
    saved = (max(scored, key=lambda entry: entry[key]) if scored
             else log[-1])      # max() keeps the first of equal values
    train = (read_json(directory, 'options.json', advice) or {}).get(
        'train', {})
    init, schedule = recorded_start(train)
    return ((saved['iteration'] + init[0], saved['epoch'] + init[1]),
            (saved['iteration'] + schedule[0], saved['epoch'] + schedule[1]))


def init_from(path, model):
    """Copy into ``model`` the weights of the model file ``path`` (or of a
    folder's model.npz), which must have been built with the same options;
    returns what trained it, in all and in its schedule, where its
    folder's log says so (trained_so_far)."""
    path = model_file.path_for(path)
    trained = model_file.load(path)
    # fine-tuning may name the classes anew, and take its own images'
    # ground to black, as MNIST's is
    ignored = ('class_names', 'subtract_ground')
    theirs, ours = ({key: value for key, value in options.items()
                     if key not in ignored}
                    for options in (trained.options, model.options))
    if trained.arch != model.arch or theirs != ours:
        differ = ['model {} vs {}'.format(trained.arch, model.arch)] if (
            trained.arch != model.arch) else [
            '{} {} vs {}'.format(key, theirs.get(key), ours.get(key))
            for key in sorted(set(theirs) | set(ours))
            if theirs.get(key) != ours.get(key)]
        raise UserError('--init {} holds a model of other options than this '
                        'run builds ({}; the file\'s first)'.format(
                            path, ', '.join(differ)))
    model.copyparams(trained)
    return trained_so_far(os.path.dirname(path) or '.')


def started_from(directory, trained, place):
    """What trained the model a run in ``directory`` started from, and its
    place in the schedule, as its options.json recorded them when it
    started; ``trained`` and ``place`` where it records none."""
    train = (read_json(directory, 'options.json', 'delete it if this '
                       'folder was made by the same command') or {}).get(
        'train', {})
    return (recorded_start(train) if 'init_iteration' in train
            else (trained, place))


def recorded_start(train):
    """(iterations, epochs) before a run and its schedule's start, from the
    'train' options of its options.json (0 where there are none)."""
    init = train.get('init_iteration', 0), train.get('init_epoch', 0)
    # runs from before --restart-schedule record only their init
    return init, (train.get('schedule_iteration', init[0]),
                  train.get('schedule_epoch', init[1]))
