"""What the scripts share: checked flags, device, folders, errors."""
import argparse
import ctypes
import ctypes.util
import math
import os
import re
import sys
import tempfile

import chainer
from chainer.backends import cuda

from capsnet import distributed
from capsnet.errors import Interrupted
from capsnet.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: --flag ...``, with exit
    status 1, like every other bad input to the scripts."""

    def __init__(self, **kwargs):
        kwargs.setdefault('formatter_class', argparse.RawTextHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message):
        # argparse says 'argument -b/--batchsize: ...'; name the long flag
        match = re.match(r'argument (\S+): (.*)', message, re.S)
        if match:
            message = '{} {}'.format(match.group(1).split('/')[-1],
                                     match.group(2))
        self.exit(1, 'error: {}\n'.format(' '.join(message.split())))


class Range:
    """An argparse ``type``: a finite int or float within bounds.

    ``integer(1, 2048)`` accepts 1 .. 2048; ``number(0, 1, low_open=True)``
    accepts (0, 1]. A bound of None is no bound. Anything else, NaN and
    infinities included, is refused with the allowed range.
    """

    def __init__(self, kind, low=None, high=None, low_open=False,
                 high_open=False):
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open = low_open, high_open

    def __str__(self):
        noun = 'an integer' if self.kind is int else 'a number'
        if self.high is None:
            return '{} {} {}'.format(noun, '>' if self.low_open else '>=',
                                     self.low)
        return '{} in {}{}, {}{}'.format(
            noun, '(' if self.low_open else '[', self.low, self.high,
            ')' if self.high_open else ']')

    def __call__(self, text):
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not (
                (self.low is None or value > self.low or
                 (value == self.low and not self.low_open)) and
                (self.high is None or value < self.high or
                 (value == self.high and not self.high_open))):
            raise argparse.ArgumentTypeError(
                'must be {}, got {}'.format(self, text))
        return value

    def __repr__(self):     # argparse names the type in some messages
        return str(self)


def integer(low=None, high=None):
    return Range(int, low, high)


def number(low=None, high=None, low_open=False, high_open=False):
    return Range(float, low, high, low_open, high_open)


# Ranges that several scripts share. Training takes about 6 MB an image on
# the CPU (800 MiB peak at batch 128), so 2,048 images are 12 GB, half of a
# 24 GiB machine; 1,000 epochs or 100 routing iterations are far past any
# use and would only make a typo run for days.
GPU = integer(-1)
SEED = integer(0, 2 ** 32 - 1)          # what numpy.random.seed takes
BATCH = integer(1, 2048)
EPOCHS = integer(1, 1000)
ROUTING = integer(1, 100)


def add_common_arguments(parser, min_test_size=1):
    parser.add_argument('-g', '--gpu', type=GPU, default=-1,
                        help='GPU id; -1 runs on the CPU (default)')
    parser.add_argument('--dataset', default='mnist',
                        help='mnist, fashion-mnist, multimnist (two '
                        'overlapping MNIST digits on a 36x36 canvas, the '
                        "paper's section 6), or your own: a folder of class "
                        'folders of images, or an .npz with x_train, '
                        'y_train (capsnet/custom_data.py)')
    parser.add_argument('--data-dir', default=None,
                        help='folder of the four IDX files (.gz or not); by '
                        "default they are downloaded once to Chainer's cache")
    parser.add_argument('--test-size', type=integer(min_test_size),
                        default=None, help='use only the first N test images'
                        + (' (0: none)' if min_test_size == 0 else ''))


def get_device(gpu):
    """The chainer Device for -g: NumPy for -1, else CuPy on that GPU."""
    if gpu < 0:
        return chainer.get_device('@numpy')
    if not cuda.available:
        raise UserError('-g {} asks for a GPU, but CuPy with CUDA is not '
                        'available here; use -g -1 for the CPU'.format(gpu))
    try:
        count = cuda.cupy.cuda.runtime.getDeviceCount()
    except Exception as e:          # CuPy is installed, CUDA is not usable
        raise UserError('-g {} asks for a GPU, but CUDA reports: {}; use -g '
                        '-1 for the CPU'.format(gpu, e))
    if gpu >= count:
        raise UserError('-g {}: this machine has {} GPU(s)'.format(gpu, count))
    device = chainer.get_device('@cupy:{}'.format(gpu))
    device.use()
    return device


def keep_freed_memory():
    """Have glibc's malloc keep freed memory for reuse instead of returning
    it to the system. Every batch allocates the same large temporaries (u_hat
    alone is 94 MB at batch 128), and memory fresh from the system costs a
    page fault per page: a fifth of a CPU training step. Peak memory is
    unchanged. Does nothing where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library('c')).mallopt
    except (OSError, AttributeError, TypeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4   # from malloc.h
    mallopt(m_mmap_max, 0)                  # large blocks from the heap too
    mallopt(m_trim_threshold, 1 << 30)      # and keep them once freed
    mallopt(m_top_pad, 64 << 20)


def writable_dir(path):
    """Create ``path`` if needed and check that files can be written in it."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UserError('cannot write to {}: {}'.format(
            path, e.strerror or e))
    return path


def run(main):
    """Run a script's ``main()``: a UserError, or running out of memory,
    becomes one line on stderr and exit status 1; an Interrupted run, its
    line and 128 + the signal's number. Under MPI an error ends every
    process of the job."""
    keep_freed_memory()
    try:
        main()
    except UserError as e:
        print('error: {}'.format(e), file=sys.stderr)
        distributed.abort_others(1)
        return 1
    except MemoryError as e:          # CuPy's OutOfMemoryError is one too
        print('error: out of memory ({}); use a smaller batch (-b)'.format(
            ' '.join(str(e).split()) or type(e).__name__), file=sys.stderr)
        distributed.abort_others(1)
        return 1
    except Interrupted as e:          # every process stops at once
        if str(e):
            print(e, file=sys.stderr)
        return 128 + e.signal
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0
