"""Model files: an .npz of a model's parameters plus its architecture and
constructor options under ``OPTIONS_KEY``, so that it rebuilds its own model;
written atomically (capsnet/files.py), read with pickle refused.
"""
import json
import os
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
NAME = 'model.npz'
# What a broken or foreign .npz raises while it is opened or read.
_READ_ERRORS = (OSError, EOFError, KeyError, TypeError, zipfile.BadZipFile,
                zlib.error)


def save(path, model, dtype=None):
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


def path_for(load):
    """--load names a save folder or a model file."""
    return os.path.join(load, NAME) if os.path.isdir(load) else load


def read_npz(path, read):
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


def renamed(npz):
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


def load(path):
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
        serializers.NpzDeserializer(renamed(npz)).load(models[0])

    failure = read_npz(path, read)
    if failure:
        raise UserError('cannot load model {}: {}'.format(path, failure))
    return models[0]
