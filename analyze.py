#!/usr/bin/env python
"""Look inside a trained CapsNet.

    python analyze.py -g 0 --load saved_model            # render the figures
    python analyze.py --load saved_model --evaluate      # test accuracy, JSON
    python analyze.py --load saved_model --explorer      # explorer.html
    python analyze.py --load saved_model --serve         # the same, served
    python analyze.py --load saved_model --predict my_digit.png   # classify

Renders into --out (default: analysis/ inside the loaded folder):
reconstructions.png (inputs over their reconstructions), mask_grid.png (two
test images per digit, then one reconstruction row per digit mask),
interpolation_<d>.png for each digit d (16 capsule dimensions x 11 tweaks of
-0.25 .. +0.25, as the paper's Figure 4) and routing_<k>.png for each test
image k of --routing-images (its couplings to each digit capsule over the 6x6
grid; --routing-types adds one row per capsule type).

--explorer writes explorer.html, one page that opens from disk: pick a test
digit, see its capsules and routing, and move its 16 dimensions while the
decoder runs in the page. --serve serves it on 127.0.0.1:--port with a panel
to draw digits for the model.

With --dataset multimnist: multimnist.png (the paper's Figure 5), and with
--evaluate the fraction of test pairs whose two longest capsules are their
two digits.
"""
import json
import os
import sys

import numpy

import capsnet  # noqa: F401  (patches chainer before its first import)
import chainer

from capsnet import affine
from capsnet import analysis
from capsnet import checkpoint
from capsnet import cli
from capsnet import data
from capsnet import explorer
from capsnet import kernels
from capsnet import multimnist
from capsnet import predict
from capsnet.errors import UserError


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    cli.add_common_arguments(p)
    p.add_argument('--load', required=True,
                   help='a save folder of train.py, or a model .npz file')
    p.add_argument('--out', default=None, help='output folder for the PNGs')
    p.add_argument('--predict', nargs='+', metavar='FILE', default=None,
                   help='classify these image files instead (any format '
                   'Pillow reads; prepared as MNIST was): one JSON line '
                   'each; with --out, a figure each too')
    p.add_argument('--evaluate', action='store_true',
                   help='print the test accuracy as one JSON line instead')
    p.add_argument('--affine', action='store_true',
                   help='with --evaluate: warp each test digit by a random '
                   'affine map first (strengths below)')
    p.add_argument('--affine-rotation', type=cli.number(0, 180),
                   default=15.0, help='degrees, uniform in +-this')
    p.add_argument('--affine-scale', type=cli.number(0, 1, high_open=True),
                   default=0.1,
                   help='scaling uniform in [1 - this, 1 + this]')
    p.add_argument('--affine-shear', type=cli.number(0, 90, high_open=True),
                   default=10.0, help='degrees, uniform in +-this')
    p.add_argument('--affine-translation',
                   type=cli.number(0, data.SIDE, high_open=True), default=2.0,
                   help='pixels in y and in x, uniform in +-this')
    p.add_argument('--affine-seed', type=cli.SEED, default=0)
    p.add_argument('--affnist', default=None, metavar='FILE',
                   help='with --evaluate: the test images of an affNIST .mat '
                   'batch instead (40x40: needs a model built for them)')
    p.add_argument('--routing-images', type=cli.integer(0), nargs='*',
                   default=[0],
                   help='test images whose routing to render (default: 0)')
    p.add_argument('--routing-types', action='store_true',
                   help='also render the couplings of each capsule type')
    p.add_argument('--explorer', action='store_true',
                   help='write explorer.html instead: one self-contained page '
                   'to pick test digits and move their capsules')
    p.add_argument('--explorer-images', type=cli.integer(1, 500),
                   default=100, help='test digits in the explorer\'s gallery '
                   '(a tenth of them ones the model gets wrong)')
    p.add_argument('--serve', action='store_true',
                   help='serve the explorer on 127.0.0.1 with a panel to draw '
                   'digits for the model; Ctrl-C stops it')
    p.add_argument('--port', type=cli.integer(0, 65535), default=8000,
                   help='port for --serve (0: any free one)')
    p.add_argument('-b', '--batchsize', type=cli.BATCH, default=256)
    return p


def render_routing(model, images, labels, device, out, indices, per_type):
    """routing_<k>.png (and routing_types_<k>.png) for test images k;
    returns their paths."""
    paths = []
    for k in indices:
        image = analysis.model_input(model, images[k:k + 1])
        x = device.send(image)
        types, mean = analysis.routing_maps(model, x)
        predicted = int(chainer.backend.CpuDevice().send(
            analysis.digit_capsules(model, x)[1])[0])
        paths.append(os.path.join(out, 'routing_{}.png'.format(k)))
        analysis.save_routing(paths[-1], image[0, 0], mean[0],
                              int(labels[k]), predicted)
        if per_type:
            paths.append(os.path.join(out, 'routing_types_{}.png'.format(k)))
            # rows: capsule types; columns: digit capsules
            analysis.save_grid(
                paths[-1], types[0].transpose(1, 0, 2, 3) / types[0].max(),
                ['type {}'.format(t) for t in range(types.shape[2])],
                ['capsule {}'.format(j) for j in range(types.shape[1])],
                title='Image {}: coupling of each capsule type (scaled to '
                'its maximum, {:.3f})'.format(k, float(types[0].max())))
    return paths


def check_capsules(model):
    """The figures need capsules and a decoder."""
    if model.arch != 'capsnet':
        raise UserError('the {} has no capsules to look inside: only '
                        '--evaluate applies'.format(model.arch))
    if not model.options['reconstruct']:
        raise UserError('this model has no decoder (trained with '
                        '--no-reconstruct): only --evaluate applies')


def render_pairs(model, images, labels, device, out, batchsize, shown=6,
                 wrong=2):
    """multimnist.png, the paper's Figure 5: the first ``shown`` test
    pairs, then the next ``wrong`` ones the model gets wrong (within the
    first 1,000), each over its reconstructions; returns its path."""
    pairs = multimnist.evaluation_pairs((images[:1000], labels[:1000]),
                                        multimnist.TEST_SEED)
    correct = analysis.pair_correct(model, pairs, device, batchsize)
    shown = min(shown, len(pairs))
    picks = numpy.concatenate([numpy.arange(shown), shown + numpy.flatnonzero(
        ~correct[shown:])[:wrong]])
    converter = multimnist.FixedPairConverter(model.options['in_size'])
    x, t, _ = converter([pairs[k] for k in picks], device)
    t = chainer.backend.CpuDevice().send(t)
    rows, longest, absent = analysis.pair_figure(model, x, t)
    path = os.path.join(out, 'multimnist.png')
    analysis.save_grid(
        path, rows, ['input', 'R: 2 longest', 'R: 1st, absent*'],
        ['L {},{}\nR {},{}\n* {},{}'.format(*t[n], *longest[n], t[n][0],
                                            absent[n])
         for n in range(len(picks))],
        title='MultiMNIST test pairs (L: labels) and reconstructions (R: '
        'from which capsules) in red and green; *: from a digit not present')
    return path


def render(model, images, labels, device, out):
    """The reconstruction, mask and interpolation figures; returns paths."""
    n_classes = model.options['n_classes']
    paths = []

    def path(name):
        paths.append(os.path.join(out, name))
        return paths[-1]

    # two test images per digit, in digit order
    picks = numpy.concatenate(
        [numpy.flatnonzero(labels == d)[:2] for d in range(n_classes)])
    if len(picks) < 2 * n_classes:
        raise UserError('the test images hold fewer than two of each digit')
    inputs = analysis.model_input(model, images[picks])
    x = device.send(inputs)
    inputs = inputs[:, 0]
    v, predicted = analysis.digit_capsules(model, x)
    predicted = chainer.backend.CpuDevice().send(predicted)
    reconstructed = analysis.decode(model, v, predicted)
    truth = ['{}'.format(t) for t in labels[picks]]
    analysis.save_grid(
        path('reconstructions.png'), [inputs, reconstructed],
        ['input', 'recon.'], ['{}->{}'.format(t, p)
                              for t, p in zip(labels[picks], predicted)],
        title='Inputs and their reconstructions from the longest capsule '
        '(true->predicted)')
    masks = analysis.mask_grid(model, x)
    analysis.save_grid(
        path('mask_grid.png'), [inputs, *masks],
        ['input'] + ['mask {}'.format(j) for j in range(n_classes)], truth,
        title='Reconstruction from each digit capsule alone')
    deltas = analysis.DELTAS
    for d in range(n_classes):
        # the first test image of digit d
        grid = analysis.interpolation_grid(model, x[2 * d:2 * d + 1], d)
        analysis.save_grid(
            path('interpolation_{}.png'.format(d)), grid,
            ['dim {}'.format(k) for k in range(len(grid))],
            ['{:+.2f}'.format(t) for t in deltas],
            title='Digit {}: each capsule dimension tweaked '
            '(red: untweaked)'.format(d),
            marked_col=int(numpy.flatnonzero(deltas == 0)[0]))
    return paths


def evaluate(args, model, images, labels, device, multi):
    """The --evaluate report: accuracy on the test images (warped first with
    --affine), or on their MultiMNIST pairs."""
    report = {}
    if multi:
        pairs = multimnist.evaluation_pairs((images, labels),
                                            multimnist.TEST_SEED)
        accuracy = analysis.pair_correct(model, pairs, device,
                                         args.batchsize).mean()
        report['dataset'] = 'multimnist'
    else:
        if args.affine:
            strength = dict(rotation=args.affine_rotation,
                            scale=args.affine_scale, shear=args.affine_shear,
                            translation=args.affine_translation)
            images = affine.random_affine(images, args.affine_seed,
                                          **strength)
            report['affine'] = dict(strength, seed=args.affine_seed)
        accuracy = analysis.accuracy(model, images, labels, device,
                                     args.batchsize)
    return dict({'accuracy': round(float(accuracy), 6),
                 'error_percent': round(100 * (1 - float(accuracy)), 4),
                 'n': len(images)}, **report)


def explore(args, model, images, labels, device, model_file):
    """--explorer writes explorer.html; --serve serves it with the model."""
    check_capsules(model)
    if args.dataset == 'multimnist' or args.affnist:
        raise UserError('the explorer shows single MNIST test digits')
    data.check_size('--explorer-images', args.explorer_images, len(images))
    gallery = explorer.gallery(model, images, labels, device,
                               args.explorer_images, args.batchsize)
    page = explorer.page_data(model, images, labels, gallery, device)
    if args.serve:
        return explorer.serve(model, device, page, args.port)
    out = cli.writable_dir(
        args.out or os.path.join(os.path.dirname(model_file), 'analysis'))
    path = os.path.join(out, explorer.PAGE)
    checkpoint.atomic_write(path, lambda f: f.write(
        explorer.render_page(page).encode()))
    print('wrote {} ({:.1f} MB): open it in a browser'.format(
        path, os.path.getsize(path) / 1e6))


def classify_files(args, model, device):
    """--predict: a JSON line per image file, an error line per file that
    is not an image; exit status 1 if there was any."""
    out = cli.writable_dir(args.out) if args.out else None
    failed = 0
    for report, error in predict.predict_files(
            predict.Model(model, device), args.predict, out):
        if error:
            failed += 1
            print('error: {}'.format(error), file=sys.stderr, flush=True)
        else:
            print(json.dumps(report), flush=True)
    if failed:
        sys.exit(1)


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = cli.get_device(args.gpu)
    path = checkpoint.model_path(args.load)
    model = checkpoint.load_model(path)
    model.to_device(device)
    if args.predict:
        return classify_files(args, model, device)
    if args.affnist:
        images, labels = affine.read_affnist(args.affnist)
        if model.options['in_size'] != images.shape[-1]:
            raise UserError('affNIST images are 40x40; this model takes '
                            '{0}x{0}'.format(model.options['in_size']))
    else:
        images, labels = data.load(args.dataset, args.data_dir,
                                   ('test',))['test']
    data.check_size('--test-size', args.test_size, len(images))
    images, labels = images[:args.test_size], labels[:args.test_size]
    for k in args.routing_images:
        if k >= len(images):
            raise UserError('--routing-images {} is outside the {} test '
                            'images'.format(k, len(images)))
    multi = args.dataset == 'multimnist' and not args.affnist
    if multi and args.affine:
        raise UserError('--affine applies to single digits, not MultiMNIST')
    with kernels.frozen_weights():
        if args.explorer or args.serve:
            return explore(args, model, images, labels, device, path)
        if args.evaluate:
            print(json.dumps(evaluate(args, model, images, labels, device,
                                      multi)))
            return
        out = cli.writable_dir(
            args.out or os.path.join(os.path.dirname(path), 'analysis'))
        check_capsules(model)
        if multi:
            paths = [render_pairs(model, images, labels, device, out,
                                  args.batchsize)]
        else:
            paths = render(model, images, labels, device, out)
            paths += render_routing(model, images, labels, device, out,
                                    args.routing_images, args.routing_types)
        print('rendered {} images into {}'.format(len(paths), out))


if __name__ == '__main__':
    sys.exit(cli.run(main))
