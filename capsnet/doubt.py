"""When an image is not what a model knows: its reconstruction distance.

The capsule way to notice it (Frosst, Sabour and Hinton 2018, "DARCCC:
Detecting Adversaries by Reconstruction from Class Conditional Capsules"):
decode the image from its longest capsule and measure how far the
reconstruction is from the image. A digit the model knows comes back close;
a letter, a garment or noise comes back as the digit the model took it for,
far from what was given. An image is *doubtful* where its distance is beyond
the PERCENTILE-th percentile of the validation images' distances, computed
when the model is trained and kept beside it in ``doubt.json``:

    python -m capsnet.doubt saved_model --data-dir DIR   # for a model made before

The distance is the L2 norm of image minus reconstruction, pixels in [0, 1]
(the square root of what the reconstruction loss sums).
"""
import json
import os
import sys

import numpy

import chainer

from capsnet import model_file
from capsnet import run_folder
from capsnet import cli
from capsnet import data
from capsnet import datasets
from capsnet.errors import UserError
from capsnet.files import write_json

PERCENTILE = 95     # DARCCC's: a false alarm on 1 known image in 20
FILE = 'doubt.json'
BATCH = 100


def distances(model, x):
    """Reconstruction distances (N,) of images x (N, C, S, S) on the
    model's device, each decoded from its longest capsule."""
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        _, reconstruction = model(x)                    # (N, C * S * S)
    difference = x.reshape(len(x), -1) - reconstruction.array
    return chainer.backend.CpuDevice().send(
        (difference ** 2).sum(axis=1) ** 0.5)


def calibrate(model, batches):
    """{'percentile', 'threshold', 'images', 'distance'} of the validation
    images, an iterable of batches x (N, C, S, S) on the model's device:
    the threshold beyond which an image is doubtful."""
    found = numpy.concatenate([distances(model, x) for x in batches])
    return {'percentile': PERCENTILE, 'images': len(found),
            'threshold': float(numpy.percentile(found, PERCENTILE)),
            'distance': 'L2 norm of the image minus its reconstruction from '
                        'the longest capsule, pixels in [0, 1]'}


def batches(dataset, converter, device, size=BATCH):
    """The images of ``dataset`` in batches, as ``converter`` makes them."""
    for k in range(0, len(dataset), size):
        yield converter(dataset[k:k + size], device)[0]


def write(directory, calibration):
    write_json(os.path.join(directory, FILE), calibration)


def read(model_file):
    """The threshold kept beside ``model_file``, or None where there is
    none (a model trained before the flag, or without validation images)."""
    found = run_folder.read_json(
        os.path.dirname(model_file) or '.', FILE,
        'delete it and run python -m capsnet.doubt on the model')
    if found is None:
        return None
    threshold = found.get('threshold') if isinstance(found, dict) else None
    if not isinstance(threshold, (int, float)) or not threshold > 0:
        raise UserError('{} holds no positive threshold; delete it and run '
                        'python -m capsnet.doubt on the model'.format(
                            os.path.join(os.path.dirname(model_file), FILE)))
    return float(threshold)


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('load', help='a save folder of train.py, or a shipped one')
    cli.add_common_arguments(p)
    p.add_argument('--val-size', type=cli.integer(1), default=None,
                   help="the validation images (default: the run's own, "
                   'from its options.json)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    path = model_file.path_for(args.load)
    model = model_file.load(path)
    if not model.options.get('reconstruct'):
        raise UserError('{} has no decoder: no reconstruction to measure'
                        .format(path))
    train = (run_folder.read_json(os.path.dirname(path) or '.',
                                  'options.json', 'delete it') or {}).get(
        'train', {})
    val_size = args.val_size or train.get('val_size')
    if not val_size:
        raise UserError('{} names no validation images; give --val-size'
                        .format(path))
    dataset = datasets.get(args.dataset, args.data_dir, subtract_ground=
                           model.options['subtract_ground'])
    if dataset.pairs:
        raise UserError('the doubt flag is for models of one object an '
                        'image, not MultiMNIST pairs')
    splits = data.split_arrays(dataset.load(), val_size)
    _, val, _, converter = dataset.batches(splits, 0, None,
                                           train.get('canvas'))
    device = cli.get_device(args.gpu)
    model.to_device(device)
    calibration = calibrate(model, batches(val, converter, device))
    write(os.path.dirname(path) or '.', calibration)
    print(json.dumps(calibration))


if __name__ == '__main__':
    sys.exit(cli.run(main))
