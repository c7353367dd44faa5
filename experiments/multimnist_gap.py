#!/usr/bin/env python
"""How a MultiMNIST model reads single digits of the training writers (the
validation digits: the last 5,000 of MNIST's training set) and of the test
writers (MNIST's 10,000 test digits), each digit alone on the 36x36 canvas,
centred and shifted by up to 4 pixels as in the pairs; one JSON line.

    python experiments/multimnist_gap.py saved_model/multimnist --data-dir DIR

docs/results.md ("Where the validation/test gap comes from") has the figures.
"""
import json
import os
import sys

import numpy

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import capsnet  # noqa: E402,F401  (before Chainer: it mends its imports)
import chainer  # noqa: E402

from capsnet import model_file  # noqa: E402
from capsnet import cli  # noqa: E402
from capsnet import data  # noqa: E402
from capsnet import multimnist  # noqa: E402

VAL_SIZE = 5000
BATCH = 100


def accuracy(model, images, labels, offsets):
    """Share of single digits (N, 1, 28, 28) placed at ``offsets`` (N, 2)
    on the canvas whose longest capsule is their class."""
    pairs = numpy.stack([offsets, offsets], axis=1)       # no partner drawn
    singles = multimnist.compose(images, numpy.zeros_like(images), pairs)[1]
    x = multimnist.to_model_input(singles[:, 0], multimnist.CANVAS)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        predicted = numpy.concatenate([
            model.predict(x[k:k + BATCH]).array.argmax(axis=1)
            for k in range(0, len(x), BATCH)])
    return float((predicted == labels).mean())


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('load', help='a MultiMNIST model (folder or .npz)')
    p.add_argument('--data-dir', default=None,
                   help='folder of the four MNIST IDX files')
    p.add_argument('--seed', type=cli.SEED, default=5,
                   help='of the shifts')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    model = model_file.load(model_file.path_for(args.load))
    arrays = data.load('mnist', args.data_dir)
    sets = {'validation': tuple(a[-VAL_SIZE:] for a in arrays['train']),
            'test': arrays['test']}
    rng = numpy.random.default_rng(args.seed)
    report = {}
    for name, (images, labels) in sets.items():
        centred = numpy.full((len(images), 2), multimnist.CENTRED)
        shifted = centred + rng.integers(-multimnist.MAX_SHIFT,
                                         multimnist.MAX_SHIFT + 1,
                                         size=centred.shape)
        for how, offsets in (('centred', centred), ('shifted', shifted)):
            report['{} {}'.format(name, how)] = accuracy(
                model, images, labels, offsets)
    print(json.dumps(report))


if __name__ == '__main__':
    sys.exit(cli.run(main))
