"""Files a run leaves behind, each written atomically (temp file + rename).

A model file is an .npz of a model's parameters plus its architecture and
constructor options under ``OPTIONS_KEY``, so it rebuilds its own model.
"""
import glob
import json
import os
import pickle
import re
import shutil
import zipfile
import zlib

import numpy

import chainer
from chainer import serializers
from chainer.training import extensions

from capsnet.errors import UserError
from capsnet.model import ARCHITECTURES

OPTIONS_KEY = 'capsnet_options'
MODEL_FILE = 'model.npz'
SNAPSHOT_FORMAT = 'snapshot_iter_{.updater.iteration}'
# What a broken or foreign .npz raises while it is opened or read.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError,
                zipfile.BadZipFile, zlib.error, pickle.UnpicklingError)


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file beside ``path``, then
    rename it over ``path``: readers see the old file or the new, never half."""
    tmp = os.path.join(os.path.dirname(path),
                       '.{}.{}.partial'.format(os.path.basename(path),
                                               os.getpid()))
    try:
        with open(tmp, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(
        (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode()))


def save_model(path, model):
    """Parameters and options of ``model`` to the .npz file ``path``."""
    serializer = serializers.DictionarySerializer()
    serializer.save(model)
    arrays = dict(serializer.target)
    arrays[OPTIONS_KEY] = numpy.array(json.dumps(
        dict(model.options, arch=model.arch)))
    atomic_write(path, lambda f: numpy.savez_compressed(f, **arrays))


def model_path(load):
    """--load names a save folder or a model file."""
    return os.path.join(load, MODEL_FILE) if os.path.isdir(load) else load


def load_model(path):
    """Rebuild the model saved in ``path``, on the CPU."""
    if not os.path.isfile(path):
        raise UserError('no model file at {}'.format(path))
    try:
        with numpy.load(path) as npz:
            if OPTIONS_KEY not in npz.files:
                raise UserError('{} is not a capsnet model file (it has no '
                                '{})'.format(path, OPTIONS_KEY))
            options = json.loads(str(npz[OPTIONS_KEY]))
            # files without 'arch' predate the baseline: CapsNets
            model = ARCHITECTURES[options.pop('arch', 'capsnet')](**options)
            serializers.NpzDeserializer(npz).load(model)
    except _READ_ERRORS as e:
        raise UserError('cannot load model {}: {} ({})'.format(
            path, type(e).__name__, e))
    return model


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


def latest_snapshot(directory):
    """Path of the snapshot with the highest iteration, or None."""
    def iteration(path):
        return int(re.search(r'(\d+)$', path).group(1))
    paths = glob.glob(os.path.join(directory, 'snapshot_iter_*[0-9]'))
    return max(paths, key=iteration) if paths else None


def load_snapshot(path, trainer):
    """Restore the whole training state (model, optimizer, iterator, log)."""
    try:
        serializers.load_npz(path, trainer)
    except _READ_ERRORS as e:
        raise UserError('cannot resume from {}: {} ({}); it is corrupt or '
                        'from another architecture'.format(
                            path, type(e).__name__, e))


class AtomicPlotReport(extensions.PlotReport):
    """PlotReport that draws to a temporary name and then renames, so a
    killed run never leaves a half-written PNG."""

    def __init__(self, y_keys, file_name, **kwargs):
        root, ext = os.path.splitext(file_name)
        self._final_name = file_name
        super().__init__(y_keys, file_name=root + '.partial' + ext, **kwargs)

    def __call__(self, trainer):
        super().__call__(trainer)
        partial = os.path.join(trainer.out, self._file_name)
        if os.path.exists(partial):
            os.replace(partial, os.path.join(trainer.out, self._final_name))


class RandomStates(chainer.training.Extension):
    """Carry NumPy Generators through snapshots, so a resumed run draws the
    same data order and shifts as one never interrupted. Does nothing when
    called; it exists for ``serialize``."""

    trigger = (1, 'epoch')

    def __init__(self, **generators):
        self.generators = generators

    def __call__(self, trainer):
        pass

    def serialize(self, serializer):
        for name, generator in self.generators.items():
            if isinstance(serializer, chainer.serializer.Serializer):
                serializer(name, json.dumps(generator.bit_generator.state))
            else:
                generator.bit_generator.state = json.loads(
                    serializer(name, ''))


class SaveBestModel(chainer.training.Extension):
    """Write the model to ``model.npz`` each time ``trigger`` fires."""

    def __init__(self, model):
        self.model = model

    def __call__(self, trainer):
        save_model(os.path.join(trainer.out, MODEL_FILE), self.model)
