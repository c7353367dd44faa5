#!/usr/bin/env python
"""Training and evaluation speed of this CapsNet (or of the paper's baseline
CNN, --model baseline), one JSON line.

Same protocol as the PyTorch references (../shared/bench/torch_capsnet.py,
torch_baseline.py): random MNIST-shaped data; a training step is forward,
backward and an Adam update; evaluation is a forward pass without backprop
(test-mode masking, no dropout).
The evaluation steps run as train.py's Evaluator and analyze.py run theirs,
inside one kernels.frozen_weights() block: PrimaryCaps' kernel spectrum is
computed once for the pass, not once per batch (--per-batch-weights turns
that off).

    python bench/benchmark.py --batch 128 --steps 5 --warmup 2 [-g 0]
    python bench/benchmark.py --model baseline --batch 32 --steps 3 --warmup 1
    python bench/benchmark.py --readable squash length    # those two readable
    python bench/benchmark.py --router attention   # any of train.py's model flags
    python bench/benchmark.py --ema 0.999    # and the weights' average per step

--readable runs the named ops as their readable compositions (capsnet/ops.py)
and --plain every op, so that a kernel's worth is the ratio of two runs.
"""
import contextlib
import json
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
import capsnet  # noqa: E402  (before NumPy and Chainer: it sets up both)
import numpy  # noqa: E402
import chainer  # noqa: E402
import chainer.links as L  # noqa: E402

from capsnet import adam  # noqa: E402
from capsnet import cli  # noqa: E402
from capsnet import extensions  # noqa: E402
from capsnet import kernels  # noqa: E402
from capsnet import options  # noqa: E402
from capsnet.ops import fast_ops  # noqa: E402
from capsnet.model import ARCHITECTURES  # noqa: E402
from capsnet.model import CapsNetLoss  # noqa: E402


def synchronizer(xp):
    """A function that waits for the device to finish its queued work."""
    return xp.cuda.Device().synchronize if xp is not numpy else lambda: None


def timed(step, warmup, steps, sync):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def build_parser():
    p = cli.ArgumentParser(description=__doc__)
    p.add_argument('--model', default='capsnet', choices=list(ARCHITECTURES))
    p.add_argument('--batch', type=cli.BATCH, default=128)
    p.add_argument('--steps', type=cli.integer(1, 10000), default=5)
    p.add_argument('--warmup', type=cli.integer(0, 1000), default=2)
    p.add_argument('--readable', nargs='+', default=(), choices=fast_ops(),
                   metavar='OP', help='run these ops readable: {}'.format(
                       ', '.join(fast_ops())))
    p.add_argument('--plain', action='store_true',
                   help='run every op readable')
    p.add_argument('-g', '--gpu', type=cli.GPU, default=-1)
    p.add_argument('--seed', type=cli.SEED, default=0)
    p.add_argument('--ema', type=cli.number(0, 1, low_open=True,
                                         high_open=True), default=None,
                   metavar='DECAY', help="each training step also updates "
                   "the weights' moving average, as train.py --ema does")
    p.add_argument('--per-batch-weights', action='store_true',
                   help='evaluate without frozen_weights()')
    # the models' own options, as train.py takes them
    options.add_flags(p, ARCHITECTURES.values())
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = cli.get_device(args.gpu)
    xp = device.xp
    sync = synchronizer(xp)
    numpy.random.seed(args.seed)
    architecture = ARCHITECTURES[args.model]
    model = architecture(fused=not args.plain,
                         **options.from_flags(architecture, args))
    loss = (L.Classifier(model) if args.model == 'baseline'
            else CapsNetLoss(model))
    model.ops.readable = frozenset(args.readable)     # the router's too
    model.to_device(device)
    optimizer = adam.Adam(alpha=1e-3)
    optimizer.setup(loss)
    rng = numpy.random.RandomState(args.seed)
    x = device.send(rng.rand(args.batch, 1, 28, 28).astype(numpy.float32))
    t = device.send(rng.randint(0, 10, args.batch).astype(numpy.int32))

    def eval_step():
        with chainer.using_config('train', False), \
                chainer.no_backprop_mode():
            model(x)

    average = (extensions.WeightAverage(model, model.copy(mode='copy'),
                                        args.ema) if args.ema else None)

    def train_step():
        optimizer.update(loss, x, t)
        if average:
            average(None)

    train_times = timed(train_step, args.warmup, args.steps, sync)
    frozen = (contextlib.nullcontext() if args.per_batch_weights
              else kernels.frozen_weights())
    with frozen:
        eval_times = timed(eval_step, args.warmup, args.steps, sync)
    print(json.dumps({
        'impl': '{} (chainer {}, {})'.format(
            args.model, chainer.__version__,
            'cupy' if xp is not numpy else 'numpy'),
        'batch': args.batch,
        'routing': args.routing if args.model == 'capsnet' else None,
        'options': model.options,
        'readable': 'all' if args.plain else sorted(args.readable),
        'frozen_weights_in_eval': not args.per_batch_weights,
        'ema': args.ema,
        'warmup': args.warmup, 'steps': args.steps,
        'params': int(sum(p.size for p in model.params())),
        'train_img_s': round(args.batch * args.steps / sum(train_times), 2),
        'eval_img_s': round(args.batch * args.steps / sum(eval_times), 2),
        'train_step_s': [round(s, 4) for s in train_times],
        'eval_step_s': [round(s, 4) for s in eval_times],
        'max_rss_mib': round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        'machine': platform.machine(),
    }))


if __name__ == '__main__':
    sys.exit(cli.run(main))
