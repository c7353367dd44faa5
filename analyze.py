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

import capsnet  # noqa: F401  (patches chainer before its first import)

from capsnet import affine
from capsnet import analysis
from capsnet import model_file
from capsnet import run_folder
from capsnet import cli
from capsnet import custom_data
from capsnet import data
from capsnet import datasets
from capsnet import doubt
from capsnet import evaluation
from capsnet import explorer
from capsnet import figures
from capsnet import kernels
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
    # default: mnist, or the data of one's own that the model was trained on
    p.set_defaults(dataset=None)
    return p


def own_dataset(path):
    """The --dataset PATH of one's own that trained the model at ``path``,
    from the options.json beside it, or None."""
    options = run_folder.read_json(
        os.path.dirname(path) or '.', 'options.json',
        'delete it, or name the data with --dataset') or {}
    dataset = options.get('train', {}).get('dataset') if isinstance(
        options, dict) else None
    return dataset if isinstance(dataset, str) and \
        custom_data.is_custom(dataset) else None


def classify_files(args, model):
    """--predict: a JSON line per image file, an error line per file that
    is not an image; exit status 1 if there was any."""
    out = cli.writable_dir(args.out) if args.out else None
    failed = 0
    for report, error in predict.predict_files(
            model, args.predict, out):
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
    path = model_file.path_for(args.load)
    model = model_file.load(path)
    model.to_device(device)
    if args.dataset is None:
        args.dataset = own_dataset(path) or 'mnist'
    if args.predict:
        return classify_files(args, predict.Model(model, device,
                                                  doubt.read(path)))
    dataset = datasets.get(args.dataset, args.data_dir, subtract_ground=
                           model.options['subtract_ground'])
    if args.affnist:
        images, labels = affine.read_affnist(args.affnist)
        if model.options['in_size'] != images.shape[-1]:
            raise UserError('affNIST images are 40x40; this model takes '
                            '{0}x{0}'.format(model.options['in_size']))
    else:
        images, labels = dataset.load(('test',))['test']
        if images.shape[1] != model.options['in_channels']:
            raise UserError('this model takes {} channel(s); the images of '
                            '--dataset {} have {}'.format(
                                model.options['in_channels'], args.dataset,
                                images.shape[1]))
    data.check_size('--test-size', args.test_size, len(images))
    images, labels = images[:args.test_size], labels[:args.test_size]
    for k in args.routing_images:
        if k >= len(images):
            raise UserError('--routing-images {} is outside the {} test '
                            'images'.format(k, len(images)))
    multi = dataset.pairs and not args.affnist
    if multi and args.affine:
        raise UserError('--affine applies to single digits, not MultiMNIST')
    with kernels.frozen_weights():
        if args.evaluate and not (args.explorer or args.serve):
            warp = dict(rotation=args.affine_rotation,
                        scale=args.affine_scale, shear=args.affine_shear,
                        translation=args.affine_translation,
                        seed=args.affine_seed) if args.affine else None
            print(json.dumps(evaluation.report(
                model, images, labels, device, args.batchsize, multi, warp)))
            return
        analysis.check_capsules(model)
        out = None if args.serve else cli.writable_dir(
            args.out or os.path.join(os.path.dirname(path), 'analysis'))
        if args.explorer or args.serve:
            if multi or args.affnist:
                raise UserError('the explorer shows single MNIST test digits')
            return explorer.explore(model, images, labels, device,
                                    args.explorer_images, args.batchsize, out,
                                    args.port if args.serve else None)
        if multi:
            paths = [figures.render_pairs(model, images, labels, device, out,
                                          args.batchsize)]
        else:
            paths = figures.render(model, images, labels, device, out)
            paths += figures.render_routing(
                model, images, labels, device, out, args.routing_images,
                args.routing_types)
        print('rendered {} images into {}'.format(len(paths), out))

if __name__ == '__main__':
    sys.exit(cli.run(main))
