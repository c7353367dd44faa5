"""MNIST-format data: IDX files, downloads, splits and per-image shifts.

Images stay uint8 (N, 1, 28, 28) in memory; ``BatchConverter`` turns a batch
into float32 in [0, 1] on the target device, shifting each image on the way.
"""
import gzip
import hashlib
import math
import os
import sys
import urllib.request
import zlib

import numpy

import chainer
from chainer.dataset import convert

from capsnet.errors import UserError
from capsnet.files import atomic_write

FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}

# Mirrors are tried in order (yann.lecun.com has been answering 403); each
# file is verified by the md5 of its *uncompressed* bytes, which identifies
# the data whatever gzip settings a mirror used.
DATASETS = {
    'mnist': {
        'mirrors': [
            'https://ossci-datasets.s3.amazonaws.com/mnist/',
            'https://storage.googleapis.com/cvdf-datasets/mnist/',
            'http://yann.lecun.com/exdb/mnist/',
        ],
        'md5': {
            'train-images-idx3-ubyte': '6bbc9ace898e44ae57da46a324031adb',
            'train-labels-idx1-ubyte': 'a25bea736e30d166cdddb491f175f624',
            't10k-images-idx3-ubyte': '2646ac647ad5339dbf082846283269ea',
            't10k-labels-idx1-ubyte': '27ae3e4e09519cfbb04c329615203637',
        },
    },
    'fashion-mnist': {
        'mirrors': [
            'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
            'https://github.com/zalandoresearch/fashion-mnist/raw/master/'
            'data/fashion/',
        ],
        'md5': {
            'train-images-idx3-ubyte': 'f4a8712d7a061bf5bd6d2ca38dc4d50a',
            'train-labels-idx1-ubyte': '9018921c3c673c538a1fc5bad174d6f9',
            't10k-images-idx3-ubyte': '8181f5470baa50b63fa0f6fddb340f0a',
            't10k-labels-idx1-ubyte': '15d484375f8d13e6eb1aabb0c3f46965',
        },
    },
}

SIDE = 28                                   # an MNIST image is SIDE x SIDE
N_CLASSES = 10                              # and its label 0 to 9
_IDX_DTYPES = {0x08: numpy.uint8}


def _idx_header(raw, name):
    """(header length, shape) of the IDX file whose first bytes are ``raw``;
    UserError if they are not an IDX header of unsigned bytes."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError('{} is not an IDX file of unsigned bytes'.format(name))
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise UserError('{} is truncated (incomplete header)'.format(name))
    return header, tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], 'big')
                         for k in range(raw[3]))


def parse_idx(raw, name):
    """Bytes of an uncompressed IDX file -> uint8 array of its shape."""
    header, shape = _idx_header(raw, name)
    size = math.prod(shape)                 # Python ints: no overflow
    if len(raw) - header != size:
        raise UserError('{} is truncated or corrupt: {} data bytes for shape '
                        '{}, expected {}'.format(
                            name, len(raw) - header, shape, size))
    return numpy.frombuffer(raw, numpy.uint8, offset=header).reshape(shape)


def _gunzip_idx(raw, name):
    """The IDX file gzipped in ``raw``, decompressed no further than its
    header says it reaches (plus one byte, to notice more): a file whose
    data outgrow its header is refused before all of it is unpacked."""
    unpack = zlib.decompressobj(wbits=31)                   # gzip format
    head = unpack.decompress(raw, 4 + 4 * 255)              # the largest header
    header, shape = _idx_header(head, name)
    room = header + math.prod(shape) + 1 - len(head)
    if room > 0 and unpack.unconsumed_tail:
        head += unpack.decompress(unpack.unconsumed_tail,
                                  min(room, sys.maxsize))
    if unpack.unconsumed_tail or len(head) > header + math.prod(shape):
        raise UserError('{} holds more data than its header says (shape '
                        '{})'.format(name, shape))
    if not unpack.eof:
        raise EOFError('the gzip stream ends early')
    return head


def _read_bytes(path):
    """Contents of ``path``, gunzipped if it is a .gz file."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
        return _gunzip_idx(raw, path) if path.endswith('.gz') else raw
    except (OSError, EOFError, zlib.error) as e:
        raise UserError('cannot read {}: {}'.format(path, e))


def _find(directory, stem):
    for name in (stem + '.gz', stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise UserError('{} has no {}[.gz]: give --data-dir a folder holding the '
                    'four MNIST-format IDX files'.format(directory, stem))


def read_split(directory, part):
    """(images uint8 (N, 1, H, W), labels int32 (N,)) of 'train' or 'test'."""
    image_path, label_path = (_find(directory, s) for s in FILES[part])
    images = parse_idx(_read_bytes(image_path), image_path)
    labels = parse_idx(_read_bytes(label_path), label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError('{}: {} images {} do not match labels {}'.format(
            directory, part, images.shape, labels.shape))
    if images.shape[1:] != (SIDE, SIDE):
        raise UserError('{}: the images are {}x{}; MNIST-format images are '
                        '{}x{}'.format(image_path, *images.shape[1:],
                                       SIDE, SIDE))
    if len(labels) and labels.max() >= N_CLASSES:
        raise UserError('{}: the labels hold {}; MNIST-format labels are 0 '
                        'to {}'.format(label_path, labels.max(),
                                       N_CLASSES - 1))
    return images[:, None], labels.astype(numpy.int32)


def download(directory, md5s, mirrors):
    """Fetch each file named in ``md5s`` (as .gz) into ``directory`` unless a
    verified copy is there; try the mirrors in order."""
    os.makedirs(directory, exist_ok=True)
    for stem, md5 in md5s.items():
        path = os.path.join(directory, stem + '.gz')
        if os.path.exists(path):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror + stem + '.gz'
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    raw = response.read()
                digest = hashlib.md5(gzip.decompress(raw)).hexdigest()
            except (OSError, EOFError, gzip.BadGzipFile) as e:
                errors.append('{}: {}'.format(url, e))
                continue
            if digest != md5:
                errors.append('{}: checksum {} != {}'.format(url, digest, md5))
                continue
            atomic_write(path, lambda f: f.write(raw))
            break
        else:
            raise UserError(
                'could not download {} ({}); if offline, put the four IDX '
                'files in a folder and pass --data-dir'.format(
                    stem, '; '.join(errors)))


def load(dataset='mnist', data_dir=None, parts=('train', 'test')):
    """{part: (images, labels)} for each of ``parts`` ('train', 'test') of
    an IDX dataset (DATASETS; capsnet.datasets describes them all).

    From ``data_dir`` if given, else from Chainer's dataset cache
    (``$CHAINER_DATASET_ROOT``, by default ~/.chainer/dataset), downloading
    once.
    """
    if dataset not in DATASETS:
        raise UserError('unknown dataset {!r}; choose from {}'.format(
            dataset, ', '.join(DATASETS)))
    if data_dir is None:
        data_dir = chainer.dataset.get_dataset_directory('capsnet/' + dataset)
        info = DATASETS[dataset]
        download(data_dir, {stem: info['md5'][stem] for part in parts
                            for stem in FILES[part]}, info['mirrors'])
    elif not os.path.isdir(data_dir):
        raise UserError('--data-dir {} is not a folder'.format(data_dir))
    return {part: read_split(data_dir, part) for part in parts}


def check_size(flag, size, available):
    """A --*-size flag can ask for at most the images there are."""
    if size is not None and size > available:
        raise UserError('{} {} is more than the {} images there are'.format(
            flag, size, available))


def split_arrays(arrays, val_size=5000, train_size=None, test_size=None):
    """Train, validation and test (images, labels), validation None if 0.

    Validation is the last ``val_size`` training images; then
    ``train_size`` and ``test_size`` keep the first N images of the rest.
    """
    images, labels = arrays['train']
    if not 0 <= val_size < len(images):
        raise UserError('--val-size must be in [0, {})'.format(len(images)))
    n_train = len(images) - val_size
    test_images, test_labels = arrays['test']
    check_size('--train-size', train_size, n_train)
    check_size('--test-size', test_size, len(test_images))
    train = images[:n_train][:train_size], labels[:n_train][:train_size]
    val = (images[n_train:], labels[n_train:]) if val_size else None
    return train, val, (test_images[:test_size], test_labels[:test_size])


def random_shift(images, max_shift, rng):
    """Move each image by its own (dy, dx) in [-max_shift, max_shift]^2,
    filling with zeros: (N, C, H, W) -> (N, C, H, W)."""
    n, c, h, w = images.shape
    m = max_shift
    padded = numpy.pad(images, ((0, 0), (0, 0), (m, m), (m, m)))
    # (N, C, 2m+1, 2m+1, H, W): every shifted window, as a view
    windows = numpy.lib.stride_tricks.sliding_window_view(
        padded, (h, w), axis=(2, 3))
    dy, dx = rng.integers(0, 2 * m + 1, size=(2, n))
    return windows[numpy.arange(n), :, dy, dx]


def place_on_canvas(images, size, rng=None):
    """Put each image (N, C, H, W) on a black size x size canvas: at a
    random position if ``rng`` is given, else at the centre."""
    n, c, h, w = images.shape
    if rng is None:
        top = numpy.full(n, (size - h) // 2)
        left = numpy.full(n, (size - w) // 2)
    else:
        top, left = rng.integers(0, size - h + 1, size=(2, n))
    canvas = numpy.zeros((n, c, size, size), dtype=images.dtype)
    rows = (top[:, None] + numpy.arange(h))[:, None, :, None]    # N,1,H,1
    cols = (left[:, None] + numpy.arange(w))[:, None, None, :]   # N,1,1,W
    canvas[numpy.arange(n)[:, None, None, None],
           numpy.arange(c)[None, :, None, None], rows, cols] = images
    return canvas


class BatchConverter(convert.Converter):
    """[(image uint8 (1, H, W), label)] -> x float32 (N, 1, H, W) in [0, 1]
    and t int32 (N,) on the device; each image shifted by up to
    ``max_shift`` pixels (0: no augmentation, for evaluation).

    ``canvas``: place the images on a larger black canvas first, at random
    positions when training (``rng`` given) and at the centre otherwise, as
    the paper's affNIST experiment trained on 40x40.
    """

    def __init__(self, max_shift=0, rng=None, canvas=None):
        if max_shift and rng is None:
            raise ValueError('random shifts need a numpy Generator (rng)')
        self.max_shift = max_shift
        self.rng = rng
        self.canvas = canvas

    def __call__(self, batch, device):
        images, labels = convert.concat_examples(batch)
        if self.canvas and self.canvas != images.shape[-1]:
            images = place_on_canvas(images, self.canvas, self.rng)
        if self.max_shift:
            images = random_shift(images, self.max_shift, self.rng)
        x = images.astype(numpy.float32)
        x *= 1 / 255
        return device.send(x), device.send(labels)
