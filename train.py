#!/usr/bin/env python
"""Train CapsNet (or the paper's baseline CNN) on MNIST with Chainer's Trainer.

    python train.py -g 0 --save saved_model --reconstruct
    python train.py -g 0 --save baseline --model baseline
    python train.py -g 0 --save multi --dataset multimnist
    mpiexec -n 2 python train.py --communicator naive --save result

The save folder gets the best-by-validation model (model.npz, options inside),
options.json, the JSON log, loss/accuracy plots and snapshots. Running the same
command again resumes from the newest snapshot there; Ctrl-C or SIGTERM
snapshots the current iteration first. With --communicator, the processes of
mpiexec train one model data-parallel (ChainerMN).
"""
import functools
import os
import sys

import capsnet  # noqa: F401  (before NumPy and Chainer: it sets up both)
import numpy
import chainer
from chainer import training
from chainer.datasets import TupleDataset
from chainer.training import extensions

import capsnet.extensions as capsnet_extensions
from capsnet import adam
from capsnet import model_file
from capsnet import run_folder
from capsnet import cli
from capsnet import data
from capsnet import datasets
from capsnet import distributed
from capsnet import doubt
from capsnet import files
from capsnet import guards
from capsnet import options
from capsnet.errors import UserError
from capsnet.model import ARCHITECTURES


DEFAULT_VAL_SIZE = 5000
PICKED_BY = 'validation/main/accuracy'      # the saved model's, --patience's


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    cli.add_common_arguments(p, min_test_size=0)
    p.add_argument('--save', default='result', help='output folder')
    p.add_argument('--model', default='capsnet', choices=list(ARCHITECTURES),
                   help="capsnet, or the paper's baseline CNN (which "
                   'ignores the capsule flags below)')
    p.add_argument('-e', '--epoch', type=cli.EPOCHS, default=50)
    p.add_argument('--patience', type=cli.integer(1), default=None,
                   help='stop once validation accuracy has not improved for '
                   'N epochs (default: train all --epoch epochs)')
    p.add_argument('-b', '--batchsize', type=cli.BATCH, default=128)
    p.add_argument('--lr', type=cli.number(0, 1, low_open=True), default=1e-3,
                   help='Adam step size')
    p.add_argument('--lr-decay', type=cli.number(0, 1, low_open=True),
                   default=0.9, help='step size factor per epoch, or per '
                   '--lr-decay-steps')
    p.add_argument('--lr-decay-steps', type=cli.integer(1), default=None,
                   help='decay continuously, by --lr-decay every N steps '
                   "(the official code: --lr-decay 0.96 --lr-decay-steps "
                   "2000 --lr-min 1e-6); default: once an epoch")
    p.add_argument('--lr-min', type=cli.number(0, 1), default=0.0,
                   help='the step size never decays below this')
    p.add_argument('--lr-warmup', type=cli.integer(0), default=None,
                   help="grow Adam's steps linearly over this run's first N "
                   'updates (default: 100 for your own data, where it takes '
                   'a small set out of chance sooner; 0, the paper\'s, for '
                   'the others)')
    p.add_argument('--ema', type=cli.number(0, 1, low_open=True,
                                         high_open=True),
                   default=None, metavar='DECAY',
                   help='validate, test and save an exponential moving '
                   'average of the weights, updated after every update with '
                   'this decay (0.999 averages over about 1,000 updates), '
                   'instead of the weights themselves; the training '
                   'accuracy stays that of the weights')
    p.add_argument('--plain', action='store_true',
                   help='run every op as its readable composition in '
                   'capsnet/functions.py instead of its fast kernel, so '
                   'that an edit there reaches the run (about 5x slower)')
    # the models' own options, as their OPTIONS declare them
    options.add_flags(p, ARCHITECTURES.values())
    p.add_argument('--recon-weight', type=cli.number(0, 1), default=0.0005)
    p.add_argument('--margin-loss', choices=['paper', 'official'],
                   default='paper',
                   help="paper: Eq. 4 summed over classes; official: the "
                   "official code's, halved and averaged over classes")
    p.add_argument('--max-shift', type=cli.integer(0, data.SIDE - 1),
                   default=2,
                   help='random shift of each training image, in pixels '
                   '(MultiMNIST always shifts each digit by up to 4)')
    p.add_argument('--multimnist-shift', type=cli.integer(0, 8), default=None,
                   help='MultiMNIST: shift each digit of a training pair by '
                   "up to N pixels (default 4, the paper's; 6 is the "
                   "official code's, cropped at the 36x36 canvas' edge); "
                   "validation and test pairs keep the paper's 4")
    p.add_argument('--canvas', type=cli.integer(data.SIDE, 64), default=None,
                   help='train on digits placed at random on a black canvas '
                   'of this side (40: the paper\'s affNIST setting); test '
                   'digits are centred on it')
    p.add_argument('--val-size', type=cli.integer(0), default=None,
                   help='validation images held out of the training images '
                   '(default: {} of MNIST\'s 60,000; a tenth of your own); '
                   'they pick the saved model (0: train on all)'.format(
                       DEFAULT_VAL_SIZE))
    p.add_argument('--train-size', type=cli.integer(1), default=None,
                   help='use only the first N training images')
    when = p.add_mutually_exclusive_group()
    when.add_argument('--snapshot-minutes', type=cli.number(0, 1440,
                                                            low_open=True),
                      default=capsnet_extensions.SNAPSHOT_MINUTES,
                      help='snapshot once this many minutes have passed '
                      'since the last (and at every epoch\'s end, and on '
                      'Ctrl-C); default: %(default)s')
    when.add_argument('--snapshot-interval', type=cli.integer(1),
                      default=None, help='snapshot every N iterations '
                      'instead (and every epoch)')
    p.add_argument('--resume', default=None,
                   help='snapshot to resume from (default: the newest in '
                   '--save, if any)')
    p.add_argument('--init', default=None,
                   help='start from the weights of this model (a model file, '
                   'or a folder holding model.npz) and from its place in the '
                   "step-size schedule, read from its folder's log (unless "
                   "--restart-schedule); Adam's "
                   'moments start fresh. The model must have this run\'s '
                   'options (architecture, input side, classes, ...)')
    p.add_argument('--restart-schedule', action='store_true',
                   help='with --init: the step-size schedule starts at --lr '
                   "on this run's first update, not at the model's place in "
                   'it (to fine-tune, or to anneal a long run anew)')
    p.add_argument('--seed', type=cli.SEED, default=0)
    p.add_argument('--communicator', default=None,
                   choices=distributed.COMMUNICATORS,
                   help='train data-parallel over the processes of mpiexec '
                   '-n N with this ChainerMN communicator (naive on the '
                   'CPU); -b is then per process')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    for key in run_folder.PATH_OPTIONS:   # so options.json reads the same
        if getattr(args, key):            # from any folder
            setattr(args, key, os.path.abspath(getattr(args, key)))
    if args.restart_schedule and not args.init:
        raise UserError('--restart-schedule needs --init: a run of its own '
                        'starts its schedule at --lr anyway')
    cluster = distributed.create(args.communicator, args.gpu)
    device = cli.get_device(cluster.device_id(args.gpu))
    out = cli.writable_dir(args.save)
    if cluster.is_root:
        guards.lock_folder(out)
        run_folder.remove_partial_files(out)
    cluster.barrier()           # no process writes before the clean-up
    architecture = ARCHITECTURES[args.model]
    model_options = options.from_flags(architecture, args)
    dataset = datasets.get(args.dataset, args.data_dir,
                           args.multimnist_shift)
    arrays = dataset.load()
    if args.lr_warmup is None:
        args.lr_warmup = dataset.warmup
    model_options.update(dataset.model_options(arrays, architecture,
                                               args.canvas))
    if args.val_size is None:                 # recorded in options.json
        args.val_size = min(DEFAULT_VAL_SIZE, len(arrays['train'][0]) // 10)
    splits = data.split_arrays(arrays, args.val_size, args.train_size,
                               args.test_size)
    order_rng, shift_rng = (numpy.random.default_rng(cluster.seeds(
        args.seed, k)) for k in range(2))
    # --test-size 0: the test set is not looked at during training
    train = TupleDataset(*splits[0])
    train_converter, val, test, eval_converter = dataset.batches(
        splits, args.max_shift, shift_rng, args.canvas)
    # each process trains on its own part, and evaluates its own part
    train = cluster.shard(train, shuffle=True, seed=args.seed)
    val, test = cluster.shard(val), cluster.shard(test)
    if args.batchsize > len(train):
        raise UserError('--batchsize {} is more than the {} training images '
                        '{}'.format(args.batchsize, len(train),
                                    'of each process' if cluster.size > 1
                                    else 'there are'))

    numpy.random.seed(args.seed)
    if device.xp is not numpy:
        device.xp.random.seed(args.seed)
    model = architecture(fused=not args.plain, **model_options)
    if cluster.is_root:
        run_folder.check(out, model)
    # the updates and epochs that trained the model before this run, and
    # where its step-size schedule starts (options.json records both); a
    # resumed run keeps its record, since --init's folder may hold a model
    # shipped from this very run by now
    resume = (args.resume + cluster.snapshot_suffix if args.resume
              else cluster.latest_snapshot(out))
    trained, place = (run_folder.init_from(args.init, model) if args.init
                      else ((0, 0), (0, 0)))
    if resume:
        trained, place = run_folder.started_from(out, trained, place)
    args.init_iteration, args.init_epoch = trained
    args.schedule_iteration, args.schedule_epoch = (
        (0, 0) if args.restart_schedule else place)
    model.to_device(device)
    with_loss = functools.partial(type(model).with_loss,
                                  recon_weight=args.recon_weight,
                                  margin_loss=args.margin_loss)
    loss = with_loss(model)
    # --ema: the evaluators and the saved model see the weights' average
    average = model.copy(mode='copy') if args.ema else model
    average_loss = with_loss(average) if args.ema else loss
    optimizer = cluster.optimizer(adam.Adam(alpha=args.lr),
                                  loss)

    train_iter = chainer.iterators.SerialIterator(
        train, args.batchsize,
        order_sampler=chainer.iterators.ShuffleOrderSampler(order_rng))
    updater = training.StandardUpdater(
        train_iter, optimizer, device=device,
        converter=train_converter)
    if args.patience and not args.val_size:
        raise UserError('--patience needs validation images: it watches '
                        'their accuracy (--val-size 0 holds none out)')
    patience = (capsnet_extensions.Patience(PICKED_BY, args.patience)
                if args.patience else None)
    trainer = training.Trainer(updater, capsnet_extensions.StopTrigger(
        args.epoch, patience), out=out)
    if patience:
        trainer.extend(patience)
    trainer.extend(capsnet_extensions.RandomStates(order=order_rng,
                                                   shift=shift_rng))
    stop = capsnet_extensions.GracefulStop(cluster)
    trainer.extend(stop)
    writes = capsnet_extensions.WriteTrigger(
        stop, cluster, args.snapshot_interval, args.snapshot_minutes)
    trainer.extend(capsnet_extensions.FiniteLoss(writes))

    for name, images in (('validation', val), ('test', test)):
        if images is not None:
            it = chainer.iterators.SerialIterator(
                images, args.batchsize, repeat=False, shuffle=False)
            trainer.extend(cluster.evaluator(capsnet_extensions.Evaluator(
                it, average_loss, converter=eval_converter, device=device)),
                name=name)
    if args.ema:
        trainer.extend(capsnet_extensions.WeightAverage(model, average,
                                                        args.ema))
    if args.lr_warmup:
        trainer.extend(capsnet_extensions.Warmup(args.lr_warmup))
    if args.lr_decay_steps:
        trainer.extend(capsnet_extensions.ContinuousDecay(
            args.lr, args.lr_decay, args.lr_decay_steps, args.lr_min,
            start=args.schedule_iteration))
    else:
        trainer.extend(extensions.ExponentialShift(
            'alpha', args.lr_decay, init=max(
                args.lr * args.lr_decay ** args.schedule_epoch, args.lr_min),
            target=args.lr_min or None), trigger=(1, 'epoch'))
    # uncompressed: zlib took 2.75 s for the 99 MB of a CapsNet snapshot;
    # written before training goes on, so that a killed run has it. A
    # snapshot is written whole or not at all, so one process keeps one;
    # processes keep two, since one may be killed before writing the
    # iteration the others wrote, and they resume from one they all have.
    trainer.extend(cluster.snapshot(extensions.snapshot(
        filename=run_folder.SNAPSHOT_FORMAT,
        n_retains=1 if cluster.size == 1 else 2,
        savefun=functools.partial(chainer.serializers.save_npz,
                                  compression=False))), trigger=writes)
    if cluster.is_root:         # one writer of the model, log and plots
        files.write_json(os.path.join(out, 'options.json'),
                              {'model': model.options, 'train': vars(args)})
        add_reports(trainer, average, val is not None)

    if resume:
        run_folder.load_snapshot(resume, trainer)
        if cluster.is_root:
            print('resuming from {} (iteration {})'.format(
                resume, updater.iteration))
    try:
        with stop:
            trainer.run(show_loop_exception_msg=False)
        if cluster.is_root and val is not None and not dataset.pairs and \
                model.options.get('reconstruct'):
            calibrate_doubt(out, val, eval_converter, device)
        if cluster.is_root:
            guards.release_folders()
        if patience and patience.exhausted() and cluster.is_root:
            print('validation accuracy has not improved for {} epochs (best '
                  '{:.4%}): stopped at epoch {}'.format(
                      args.patience, patience.best, updater.epoch))
    except OSError as e:        # a full disk, say: every file is atomic
        raise UserError('cannot write to {}: {}; the files there are those '
                        'of the last complete write: make room, then run the '
                        'same command to resume'.format(
                            out, e.strerror or e))


def calibrate_doubt(out, val, converter, device):
    """doubt.json beside the saved model: how far its reconstructions of
    the validation images lie from them (capsnet/doubt.py)."""
    model = model_file.load(os.path.join(out, model_file.NAME))
    model.to_device(device)
    doubt.write(out, doubt.calibrate(model, doubt.batches(val, converter,
                                                          device)))


def add_reports(trainer, model, validated):
    """The best model, the log, the plots and the progress on the terminal."""
    # validation picks the saved model; without it, the latest is saved
    best = (capsnet_extensions.MaxValueTrigger(PICKED_BY)
            if validated else (1, 'epoch'))
    trainer.extend(capsnet_extensions.SaveBestModel(model), trigger=best)
    trainer.extend(extensions.LogReport())
    trainer.extend(capsnet_extensions.AtomicPlotReport(
        ['main/loss', 'validation/main/loss', 'test/main/loss'],
        'loss.png'))
    trainer.extend(capsnet_extensions.AtomicPlotReport(
        ['main/accuracy', 'validation/main/accuracy', 'test/main/accuracy'],
        'accuracy.png'))
    trainer.extend(extensions.PrintReport(
        ['epoch', 'iteration', 'main/loss', 'main/accuracy',
         'validation/main/loss', 'validation/main/accuracy',
         'test/main/accuracy', 'elapsed_time']))
    trainer.extend(capsnet_extensions.ProgressBar(update_interval=10))


if __name__ == '__main__':
    sys.exit(cli.run(main))
