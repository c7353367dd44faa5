#!/usr/bin/env python
"""PrimaryCaps' convolution, direct (one GEMM over the patches) against
spectral (through the DFT), forward and backward, per batch size: where
kernels.convolution.SPECTRAL_FROM should sit on this machine. One markdown table.

    python bench/convolution.py [--batches 1 4 8 ...] [-g 0]

Forward runs inside kernels.frozen_weights(), as evaluation does; a
training step is forward plus backward with fresh weights.
"""
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import capsnet  # noqa: E402,F401  (before NumPy and Chainer: it sets up both)
import numpy  # noqa: E402
import chainer  # noqa: E402

from benchmark import synchronizer  # noqa: E402
from benchmark import timed  # noqa: E402
from capsnet import cli  # noqa: E402
from capsnet import kernels  # noqa: E402

METHODS = {
    'direct': lambda: kernels.convolution.DirectConvolution2DNHWC(2, True),
    'spectral': lambda: kernels.convolution.SpectralConvolution2DNHWC(2, True),
}


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('--batches', type=cli.BATCH, nargs='+',
                   default=[1, 4, 8, 12, 16, 32, 40, 48, 64])
    p.add_argument('--steps', type=cli.integer(1, 10000), default=10)
    p.add_argument('-g', '--gpu', type=cli.GPU, default=-1)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = cli.get_device(args.gpu)
    sync = synchronizer(device.xp)
    rng = numpy.random.RandomState(0)
    W = device.send(rng.randn(256, 9, 9, 256).astype(numpy.float32) * 0.01)
    b = device.send(numpy.zeros(256, numpy.float32))
    print('| batch | ' + ' | '.join(
        '{} {} ms'.format(m, phase) for phase in ('forward', 'train')
        for m in METHODS) + ' |')
    print('|---:' * (1 + 2 * len(METHODS)) + '|')
    for n in args.batches:
        x = device.send(rng.rand(n, 20, 20, 256).astype(numpy.float32))
        gy = device.send(rng.randn(n, 6, 6, 256).astype(numpy.float32))
        times = {}
        for name, make in METHODS.items():
            with kernels.frozen_weights():
                times[name, 'forward'] = timed(
                    lambda: make().forward((x, W, b)), 2, args.steps, sync)

            def step():
                f = make()
                f.forward((x, W, b))
                f.backward((x, W, b), (gy,))
            times[name, 'train'] = timed(step, 2, args.steps, sync)
        print('| {} | '.format(n) + ' | '.join(
            '{:.2f}'.format(1e3 * statistics.median(times[m, phase]))
            for phase in ('forward', 'train') for m in METHODS) + ' |')


if __name__ == '__main__':
    sys.exit(cli.run(main))
