"""What train.py and analyze.py share: flags, device, folders, errors."""
import ctypes
import ctypes.util
import os
import sys
import tempfile

import chainer
from chainer.backends import cuda

from capsnet.errors import UserError


def add_common_arguments(parser):
    parser.add_argument('-g', '--gpu', type=int, default=-1,
                        help='GPU id; -1 runs on the CPU (default)')
    parser.add_argument('--dataset', default='mnist',
                        choices=['mnist', 'fashion-mnist', 'multimnist'],
                        help='multimnist: two overlapping MNIST digits on a '
                        '36x36 canvas (the paper, section 6)')
    parser.add_argument('--data-dir', default=None,
                        help='folder of the four IDX files (.gz or not); by '
                        "default they are downloaded once to Chainer's cache")
    parser.add_argument('--test-size', type=int, default=None,
                        help='use only the first N test images')


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
    """Run a script's ``main()``: a UserError becomes one line on stderr and
    exit status 1."""
    keep_freed_memory()
    try:
        main()
    except UserError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0
