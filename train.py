#!/usr/bin/env python
"""Train CapsNet (or the paper's baseline CNN) on MNIST with Chainer's Trainer.

    python train.py -g 0 --save saved_model --reconstruct
    python train.py -g 0 --save baseline --model baseline
    python train.py -g 0 --save multi --dataset multimnist

The save folder gets the best-by-validation model (model.npz, options inside),
options.json, the JSON log, loss/accuracy plots and snapshots. Running the same
command again resumes from the newest snapshot there.
"""
import argparse
import json
import os
import sys

import numpy

import capsnet  # noqa: F401  (patches chainer before its first import)
import chainer
import chainer.links as L
from chainer import training
from chainer.datasets import TupleDataset
from chainer.training import extensions

from capsnet import checkpoint
from capsnet import cli
from capsnet import data
from capsnet import kernels
from capsnet import multimnist
from capsnet.errors import UserError
from capsnet.model import ARCHITECTURES
from capsnet.model import CapsNetLoss


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    cli.add_common_arguments(p)
    p.add_argument('--save', default='result', help='output folder')
    p.add_argument('--model', default='capsnet', choices=list(ARCHITECTURES),
                   help="capsnet, or the paper's baseline CNN (which "
                   'ignores the capsule flags below)')
    p.add_argument('-e', '--epoch', type=int, default=50)
    p.add_argument('-b', '--batchsize', type=int, default=128)
    p.add_argument('--lr', type=float, default=1e-3, help='Adam step size')
    p.add_argument('--lr-decay', type=float, default=0.9,
                   help='step size factor per epoch')
    p.add_argument('--routing', type=int, default=3,
                   help='routing iterations (1: no routing)')
    p.add_argument('--reconstruct', action=argparse.BooleanOptionalAction,
                   default=True, help='decoder and reconstruction loss')
    p.add_argument('--recon-weight', type=float, default=0.0005)
    p.add_argument('--shared-weights', action='store_true',
                   help="the seed's W shared across the grid per capsule type")
    p.add_argument('--leaky-slope', type=float, default=0.0,
                   help='leaky ReLU slope for conv1 (the seed used 0.05)')
    p.add_argument('--max-shift', type=int, default=2,
                   help='random shift of each training image, in pixels '
                   '(MultiMNIST always shifts each digit by up to 4)')
    p.add_argument('--canvas', type=int, default=None,
                   help='train on digits placed at random on a black canvas '
                   'of this side (40: the paper\'s affNIST setting); test '
                   'digits are centred on it')
    p.add_argument('--val-size', type=int, default=5000,
                   help='validation images held out of the 60,000 training '
                   'images; they pick the saved model (0: train on all)')
    p.add_argument('--train-size', type=int, default=None,
                   help='use only the first N training images')
    p.add_argument('--snapshot-interval', type=int, default=100,
                   help='snapshot every N iterations (and every epoch)')
    p.add_argument('--resume', default=None,
                   help='snapshot to resume from (default: the newest in '
                   '--save, if any)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def check_same_run(path, options):
    """A save folder holds one architecture: refuse to mix in another."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f).get('model')
    if saved != options:
        raise UserError('{} was made with other model options ({}); use '
                        'another --save folder'.format(path, saved))


class Evaluator(extensions.Evaluator):
    """Chainer's Evaluator; the weights stay fixed during a pass, so each
    convolution's kernel spectrum is computed once per pass."""

    def evaluate(self):
        with kernels.frozen_weights():
            return super().evaluate()


def snapshot_trigger(interval):
    def trigger(trainer):
        updater = trainer.updater
        return updater.is_new_epoch or updater.iteration % interval == 0
    return trigger


def main(argv=None):
    args = parse_args(argv)
    device = cli.get_device(args.gpu)
    out = cli.writable_dir(args.save)
    checkpoint.remove_partial_files(out)
    architecture = ARCHITECTURES[args.model]
    options = {} if args.model == 'baseline' else dict(
        routing=args.routing, reconstruct=args.reconstruct,
        shared_weights=args.shared_weights, leaky_slope=args.leaky_slope)
    multi = args.dataset == 'multimnist'
    if multi and (args.canvas or args.model != 'capsnet'):
        raise UserError('MultiMNIST trains CapsNet on 36x36 images: '
                        '--model baseline and --canvas do not apply')
    if multi or args.canvas:
        options['in_size'] = multimnist.CANVAS if multi else args.canvas
    options_path = os.path.join(out, 'options.json')

    splits = data.split_arrays(data.load(args.dataset, args.data_dir),
                               args.val_size, args.train_size, args.test_size)
    train, val, test = (TupleDataset(*split) if split else None
                        for split in splits)
    order_rng, shift_rng = (numpy.random.default_rng([args.seed, k])
                            for k in range(2))
    if multi:
        # each training digit gets a fresh partner and positions per batch
        train_converter = multimnist.PairConverter(*splits[0], shift_rng)
        val, test = (multimnist.evaluation_pairs(split, seed) for split, seed
                     in zip(splits[1:], (multimnist.VAL_SEED,
                                         multimnist.TEST_SEED)))
        eval_converter = multimnist.FixedPairConverter()
    else:
        train_converter = data.BatchConverter(args.max_shift, shift_rng,
                                              args.canvas)
        eval_converter = data.BatchConverter(canvas=args.canvas)

    numpy.random.seed(args.seed)
    if device.xp is not numpy:
        device.xp.random.seed(args.seed)
    model = architecture(**options)
    check_same_run(options_path, model.options)
    model.to_device(device)
    loss = (L.Classifier(model) if args.model == 'baseline'
            else CapsNetLoss(model, args.recon_weight))
    optimizer = chainer.optimizers.Adam(alpha=args.lr)
    optimizer.setup(loss)
    checkpoint.write_json(options_path, {'model': model.options,
                                         'train': vars(args)})

    train_iter = chainer.iterators.SerialIterator(
        train, args.batchsize,
        order_sampler=chainer.iterators.ShuffleOrderSampler(order_rng))
    updater = training.StandardUpdater(
        train_iter, optimizer, device=device,
        converter=train_converter)
    trainer = training.Trainer(updater, (args.epoch, 'epoch'), out=out)
    trainer.extend(checkpoint.RandomStates(order=order_rng, shift=shift_rng))

    for name, dataset in (('validation', val), ('test', test)):
        if dataset is not None:
            it = chainer.iterators.SerialIterator(
                dataset, args.batchsize, repeat=False, shuffle=False)
            trainer.extend(Evaluator(it, loss, converter=eval_converter,
                                     device=device), name=name)
    trainer.extend(extensions.ExponentialShift('alpha', args.lr_decay),
                   trigger=(1, 'epoch'))
    # validation picks the saved model; without it, the latest is saved
    best = (training.triggers.MaxValueTrigger('validation/main/accuracy')
            if val is not None else (1, 'epoch'))
    trainer.extend(checkpoint.SaveBestModel(model), trigger=best)
    trainer.extend(extensions.snapshot(
        filename=checkpoint.SNAPSHOT_FORMAT, n_retains=2),
        trigger=snapshot_trigger(args.snapshot_interval))
    trainer.extend(extensions.LogReport())
    trainer.extend(checkpoint.AtomicPlotReport(
        ['main/loss', 'validation/main/loss', 'test/main/loss'],
        'loss.png'))
    trainer.extend(checkpoint.AtomicPlotReport(
        ['main/accuracy', 'validation/main/accuracy', 'test/main/accuracy'],
        'accuracy.png'))
    trainer.extend(extensions.PrintReport(
        ['epoch', 'iteration', 'main/loss', 'main/accuracy',
         'validation/main/loss', 'validation/main/accuracy',
         'test/main/accuracy', 'elapsed_time']))
    trainer.extend(extensions.ProgressBar(update_interval=10))

    resume = args.resume or checkpoint.latest_snapshot(out)
    if resume:
        checkpoint.load_snapshot(resume, trainer)
        print('resuming from {} (iteration {})'.format(
            resume, updater.iteration))
    trainer.run()


if __name__ == '__main__':
    sys.exit(cli.run(main))
