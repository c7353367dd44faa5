"""Your own labelled images, for ``train.py --dataset PATH``.

PATH is either
- a folder with one subfolder of images per class: the subfolders' names,
  sorted, are the classes; every file in them must be an image that Pillow
  reads, all of one size; or
- an ``.npz`` with ``x_train`` and ``y_train`` (and optionally ``x_test``,
  ``y_test`` and ``class_names``): images (N, H, W) or (N, H, W, C), C 1 or
  3, uint8 in [0, 255] or float in [0, 1]; labels whole numbers 0 to K-1.

Without test images a seeded tenth of them is cut off as the test split.
Images come out as MNIST's do: (N, C, H, W) uint8 with labels (N,) int32;
colour (C = 3) if any image has colour, else grey (C = 1).
"""
import os

import numpy

from capsnet.options import MAX_SIDE
from capsnet.errors import UserError
from capsnet.images import read as read_image

TEST_FRACTION = 0.1
TEST_SEED = 0


def is_custom(dataset):
    """Whether --dataset names a path rather than a known dataset."""
    return os.sep in dataset or dataset.endswith('.npz') or \
        os.path.isdir(dataset)


def load(path):
    """-> ({'train': (x, y), 'test': (x, y)}, class names)."""
    if os.path.isdir(path):
        images, labels, names = _read_folders(path)
        return _cut_test(images, labels), names
    if not os.path.isfile(path):
        raise UserError('--dataset {} is neither a known dataset, a folder '
                        'nor a file'.format(path))
    return _read_npz(path)


def _read_folders(root):
    names = sorted(d for d in os.listdir(root) if not d.startswith('.') and
                   os.path.isdir(os.path.join(root, d)))
    if len(names) < 2:
        raise UserError('{} holds {} class folder(s); it needs one folder of '
                        'images per class, 2 classes or more'.format(
                            root, len(names)))
    images, labels, colour = [], [], False
    for label, name in enumerate(names):
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if not f.startswith('.'))
        if not files:
            raise UserError('the class folder {} is empty'.format(folder))
        for f in files:
            path = os.path.join(folder, f)
            # no larger than a model takes: a folder of huge images is
            # refused before it fills the memory
            image, has_colour = read_image(path, max_side=MAX_SIDE)
            colour |= has_colour
            images.append(numpy.asarray(image.convert('RGB')))
            if images[-1].shape != images[0].shape:
                raise UserError('{} is {}x{}, but {} is {}x{}: the images '
                                'must be of one size'.format(
                                    path, *images[-1].shape[:2],
                                    os.path.join(root, names[0]),
                                    *images[0].shape[:2]))
            labels.append(label)
    x = numpy.stack(images).transpose(0, 3, 1, 2)            # (N, 3, H, W)
    if not colour:
        x = x[:, :1]
    return numpy.ascontiguousarray(x), numpy.array(labels, numpy.int32), \
        names


def _images(a, key, path):
    """(N, H, W) or (N, H, W, C) uint8 or [0, 1] floats -> (N, C, H, W)
    uint8."""
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3) or len(a) == 0:
        raise UserError('{} of {} has shape {}; images are (N, H, W) or '
                        '(N, H, W, C) with C 1 or 3'.format(key, path,
                                                            a.shape))
    if a.dtype != numpy.uint8:
        if a.dtype.kind not in 'fiu' or not (
                numpy.isfinite(a).all() and 0 <= a.min() and a.max() <= 1):
            raise UserError('{} of {} must be uint8, or numbers in [0, '
                            '1]'.format(key, path))
        a = numpy.round(a * 255).astype(numpy.uint8)
    return numpy.ascontiguousarray(a.transpose(0, 3, 1, 2))


def _labels(a, n, key, path, n_classes=None):
    if a.shape != (n,) or a.dtype.kind not in 'fiu' or not numpy.all(
            numpy.isfinite(a)) or not numpy.all(a == numpy.round(a)) or \
            a.min() < 0 or (n_classes is not None and a.max() >= n_classes):
        raise UserError('{} of {} must be {} whole numbers in [0, {})'.format(
            key, path, n, n_classes if n_classes is not None else 'K'))
    return a.astype(numpy.int32)


def _read_npz(path):
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as e:
        raise UserError('cannot read {} as an .npz ({})'.format(path, e))
    missing = [k for k in ('x_train', 'y_train') if k not in arrays]
    if missing or (('x_test' in arrays) != ('y_test' in arrays)):
        raise UserError('{} needs x_train and y_train (and x_test with '
                        'y_test, or neither)'.format(path))
    names = [str(n) for n in arrays['class_names']] if \
        'class_names' in arrays else None
    parts = {}
    for part in ('train', 'test'):
        if 'x_' + part in arrays:
            x = _images(arrays['x_' + part], 'x_' + part, path)
            y = _labels(arrays['y_' + part], len(x), 'y_' + part, path,
                        len(names) if names else None)
            parts[part] = x, y
    if 'test' in parts and parts['test'][0].shape[1:] != \
            parts['train'][0].shape[1:]:
        raise UserError('x_test of {} is not of x_train\'s image shape'
                        .format(path))
    k = 1 + max(int(y.max()) for _, y in parts.values())
    names = names or [str(c) for c in range(k)]
    if len(names) < 2:
        raise UserError('{} has 1 class; it needs 2 or more'.format(path))
    if 'test' not in parts:
        parts = _cut_test(*parts['train'])
    return parts, names


def _cut_test(images, labels):
    """A seeded TEST_FRACTION of the images as the test split."""
    order = numpy.random.default_rng(TEST_SEED).permutation(len(images))
    n_test = max(1, int(round(len(images) * TEST_FRACTION)))
    test, train = order[:n_test], order[n_test:]
    return {'train': (images[train], labels[train]),
            'test': (images[test], labels[test])}
