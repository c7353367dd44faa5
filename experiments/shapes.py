#!/usr/bin/env python
"""A small, easy dataset of your own, for measuring how soon a model learns
it: filled, upright shapes at random places and sizes (--rotate: at random
angles too), written as the .npz that train.py --dataset takes.

    python experiments/shapes.py shapes.npz                      # 3 classes
    python experiments/shapes.py shapes10.npz --classes 10 --side 32 --colour
    python train.py --dataset shapes.npz --save runs/shapes -b 32 -e 4

Grey images are dark shapes on a light, uneven ground (ink on paper, as a
user's own drawings or scans come); --ground dark draws light shapes on a
dark ground, as MNIST is. Colour images draw a shape of one random colour
on a ground of another, at least --contrast apart. --subtract-ground
writes them as a model of your own data sees them (train.py takes your
images' ground to black: capsnet/images.py).
"""
import os
import sys

import numpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from capsnet import cli  # noqa: E402
from capsnet import files  # noqa: E402
from capsnet.images import subtract_ground  # noqa: E402

SHAPES = ['circle', 'square', 'triangle', 'diamond', 'cross', 'ring',
          'bar', 'half-disc', 'hexagon', 'frame']


def inside(shape, y, x, radius):
    """Mask of ``shape`` on the grid (y, x), centred at 0, upright, of
    radius ``radius`` (pixels)."""
    r = numpy.hypot(y, x)
    if shape == 'circle':
        return r <= radius
    if shape == 'square':
        return numpy.maximum(abs(y), abs(x)) <= radius * 0.8
    if shape == 'triangle':         # equilateral, pointing up
        return ((y <= radius * 0.5) & (numpy.sqrt(3) * x - y <= radius) &
                (-numpy.sqrt(3) * x - y <= radius))
    if shape == 'diamond':
        return abs(y) + abs(x) <= radius
    if shape == 'cross':
        return (numpy.maximum(abs(y), abs(x)) <= radius) & (
            numpy.minimum(abs(y), abs(x)) <= radius * 0.3)
    if shape == 'ring':
        return (r <= radius) & (r >= radius * 0.55)
    if shape == 'bar':
        return (abs(y) <= radius * 0.3) & (abs(x) <= radius)
    if shape == 'half-disc':
        return (r <= radius) & (y >= 0)
    if shape == 'hexagon':
        return numpy.maximum(abs(x) * numpy.sqrt(3) / 2 + abs(y) / 2,
                             abs(y)) <= radius * 0.9
    if shape == 'frame':
        edge = numpy.maximum(abs(y), abs(x))
        return (edge <= radius * 0.85) & (edge >= radius * 0.5)
    raise ValueError(shape)


def draw(rng, shape, side, colour, ground, contrast, rotate):
    """One image (side, side, C) in [0, 1]."""
    channels = 3 if colour else 1
    radius = rng.uniform(0.25, 0.4) * side
    centre = rng.uniform(radius, side - radius, size=2)
    angle = rng.uniform(0, 2 * numpy.pi) if rotate else 0.0
    yy, xx = numpy.mgrid[:side, :side] + 0.5 - centre[:, None, None]
    y = numpy.cos(angle) * yy - numpy.sin(angle) * xx
    x = numpy.sin(angle) * yy + numpy.cos(angle) * xx
    mask = inside(shape, y, x, radius)[..., None]
    if colour:
        while True:
            back, fore = rng.uniform(0, 1, size=(2, channels))
            if numpy.abs(back - fore).mean() >= contrast:
                break
    else:
        low, high = rng.uniform(0, 0.35), rng.uniform(0.65, 1)
        back, fore = (high, low) if ground == 'light' else (low, high)
        back, fore = numpy.full(1, back), numpy.full(1, fore)
    # an uneven ground: a gentle gradient and a little noise
    slope = rng.uniform(-0.1, 0.1, size=2)
    shade = (slope[0] * yy + slope[1] * xx)[..., None] / side
    image = numpy.where(mask, fore, back + shade)
    image = image + rng.normal(0, 0.03, size=image.shape)
    return numpy.clip(image, 0, 1)


def make(n, classes=3, side=28, colour=False, ground='light', contrast=0.4,
         seed=0, ground_to_black=False, rotate=False):
    """(x (n, side, side[, 3]) uint8, y (n,) int, class names)."""
    rng = numpy.random.default_rng(seed)
    labels = numpy.arange(n) % classes
    rng.shuffle(labels)
    images = numpy.stack([draw(rng, SHAPES[k], side, colour, ground,
                               contrast, rotate) for k in labels])
    if ground_to_black:       # as train.py does to your own images
        images = subtract_ground(images.transpose(0, 3, 1, 2)).transpose(
            0, 2, 3, 1)
    if not colour:
        images = images[..., 0]
    return ((images * 255).round().astype(numpy.uint8),
            labels.astype(numpy.int64), SHAPES[:classes])


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('out', help='the .npz to write')
    p.add_argument('-n', type=cli.integer(1, 1000000), default=1800)
    p.add_argument('--classes', type=cli.integer(2, len(SHAPES)), default=3)
    p.add_argument('--side', type=cli.integer(17, 64), default=28)
    p.add_argument('--colour', action='store_true')
    p.add_argument('--ground', choices=['light', 'dark'], default='light')
    p.add_argument('--contrast', type=cli.number(0, 0.9), default=0.4)
    p.add_argument('--rotate', action='store_true',
                   help='turn each shape by a random angle (harder)')
    p.add_argument('--subtract-ground', action='store_true')
    p.add_argument('--seed', type=cli.SEED, default=0)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    x, y, names = make(args.n, args.classes, args.side, args.colour,
                       args.ground, args.contrast, args.seed,
                       args.subtract_ground, args.rotate)
    files.atomic_write(args.out, lambda f: numpy.savez(
        f, x_train=x, y_train=y, class_names=numpy.array(names)))
    print('{}: {} images of {} classes, {}x{}{}'.format(
        args.out, len(x), args.classes, args.side, args.side,
        ' colour' if args.colour else ''))


if __name__ == '__main__':
    sys.exit(cli.run(main))
