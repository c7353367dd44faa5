"""Model files and snapshots, written atomically (capsnet/files.py).

A model file is an .npz of a model's parameters plus its architecture and
constructor options under ``OPTIONS_KEY``, so it rebuilds its own model.
"""
import glob
import json
import os
import re
import shutil
import zipfile
import zlib

import numpy

from chainer import serializers

from capsnet import options
from capsnet.files import atomic_write
from capsnet.errors import UserError
from capsnet.model import ARCHITECTURES
from capsnet.routing import ROUTERS

OPTIONS_KEY = 'capsnet_options'
MODEL_FILE = 'model.npz'
SNAPSHOT_FORMAT = 'snapshot_iter_{.updater.iteration}'
# What a broken or foreign .npz raises while it is opened or read.
_READ_ERRORS = (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile,
                zlib.error)


def save_model(path, model, dtype=None):
    """Parameters and options of ``model`` to the .npz file ``path``; with
    ``dtype`` (numpy.float16 halves the file), its float arrays in that
    type, which load_model casts back to the model's."""
    serializer = serializers.DictionarySerializer()
    serializer.save(model)
    arrays = dict(serializer.target)
    for name, array in arrays.items():
        if dtype and array.dtype.kind == 'f':
            with numpy.errstate(over='ignore'):     # refused below instead
                arrays[name] = array.astype(dtype)
            if numpy.isfinite(array).all() and not numpy.isfinite(
                    arrays[name]).all():
                raise UserError('{} holds values beyond {}: keep '
                                'float32'.format(name,
                                                 numpy.dtype(dtype).name))
    arrays[OPTIONS_KEY] = numpy.array(json.dumps(
        dict(model.options, arch=model.arch)))
    # uncompressed: zlib took 1.5 s for 7% of a CapsNet's 33 MB
    atomic_write(path, lambda f: numpy.savez(f, **arrays))


def model_path(load):
    """--load names a save folder or a model file."""
    return os.path.join(load, MODEL_FILE) if os.path.isdir(load) else load


def _read_npz(path, read):
    """``read(npz)`` on the .npz file ``path`` with pickle refused, so that
    no file can run code when it is loaded; the reason it failed, or None."""
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            read(npz)
    except ValueError as e:
        if 'allow_pickle' in str(e):
            return ('it needs pickle (it holds Python objects, or is no .npz '
                    'archive at all), which capsnet never writes and refuses '
                    'to load, since unpickling can run code')
        return '{} ({})'.format(type(e).__name__, e)
    except _READ_ERRORS as e:
        return '{} ({})'.format(type(e).__name__, e)
    return None


# Parameters that moved, by the name files written before the move hold:
# the capsule bias became dynamic routing's own
RENAMED = {'digit_b': 'router/bias'}


def _renamed(npz):
    """The arrays of ``npz`` by name, the old names of RENAMED as today's,
    wherever they stand in a path ('updater/model:main/model/digit_b')."""
    arrays = {}
    for key in npz.files:
        parts = key.split('/')
        arrays['/'.join(RENAMED.get(part, part) for part in parts)] = npz[key]
    return arrays


def _check_options(path, architecture, given):
    """Each option a model file holds is one that ``architecture`` declares,
    of its type and within what the model can be built with."""
    wrong = options.check(architecture.OPTIONS, given,
                          'a {} model'.format(architecture.arch))
    if wrong and wrong[0] == 'router':
        raise UserError('{}: option router holds {!r}; it names no router '
                        'registered here (there are {}): import the module '
                        'that registers it first'.format(
                            path, wrong[1], ', '.join(sorted(ROUTERS))))
    if wrong:
        raise UserError('{}: option {} holds {!r}; it {}'.format(path,
                                                                 *wrong))


def load_model(path):
    """Rebuild the model saved in ``path``, on the CPU."""
    if not os.path.isfile(path):
        raise UserError('no model file at {}'.format(path))
    models = []

    def read(npz):
        if OPTIONS_KEY not in npz.files:
            raise UserError('{} is not a capsnet model file (it has no '
                            '{})'.format(path, OPTIONS_KEY))
        held = json.loads(str(npz[OPTIONS_KEY]))
        # files without 'arch' predate the baseline: CapsNets
        arch = held.pop('arch', 'capsnet')
        if arch not in ARCHITECTURES:
            raise UserError('{}: its {} names the architecture {!r}; capsnet '
                            'has {}'.format(path, OPTIONS_KEY, arch,
                                            ', '.join(ARCHITECTURES)))
        architecture = ARCHITECTURES[arch]
        held = dict(architecture.IMPLICIT_OPTIONS, **held)
        _check_options(path, architecture, held)
        models.append(architecture(**held))
        serializers.NpzDeserializer(_renamed(npz)).load(models[0])

    failure = _read_npz(path, read)
    if failure:
        raise UserError('cannot load model {}: {}'.format(path, failure))
    return models[0]


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


def check_run_folder(directory, model):
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
    failure = _read_npz(path, lambda npz: serializers.NpzDeserializer(
        _renamed(npz)).load(trainer))
    if not failure:
        return
    model_file = []
    _read_npz(path, lambda npz: model_file.append(OPTIONS_KEY in npz.files))
    if any(model_file):
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


def _trained_so_far(directory):
    """(iterations, epochs) that trained the model of the run or shipped
    folder ``directory``: those of the log entry at which it was saved (the
    first with the best validation accuracy, else the last entry), plus
    those its own run started from (--init). (0, 0) without a log."""
    advice = 'delete it, or give --init the model file alone'
    log = read_json(directory, 'log', advice)
    if not log or not isinstance(log, list):
        return 0, 0
    key = 'validation/main/accuracy'
    scored = [entry for entry in log if key in entry]
    saved = (max(scored, key=lambda entry: entry[key]) if scored
             else log[-1])      # max() keeps the first of equal values
    train = (read_json(directory, 'options.json', advice) or {}).get(
        'train', {})
    return (saved['iteration'] + train.get('init_iteration', 0),
            saved['epoch'] + train.get('init_epoch', 0))


def init_from(path, model):
    """Copy into ``model`` the weights of the model file ``path`` (or of a
    folder's model.npz), which must have been built with the same options;
    returns (iterations, epochs) that trained it, where its folder's log
    says so, else (0, 0)."""
    path = model_path(path)
    trained = load_model(path)
    ignored = ('class_names',)      # fine-tuning may name the classes anew
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
    return _trained_so_far(os.path.dirname(path) or '.')
