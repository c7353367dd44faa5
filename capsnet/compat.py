"""Make Chainer 7.8.1, the last release, import and run on current stacks.

Import this module before ``chainer`` (``import capsnet`` does). It mends the
three breaks that stop Chainer from importing on NumPy 2, Python >= 3.12 or
setuptools >= 82:

1. ``chainer/functions/array/as_strided.py`` reads ``numpy.sctypes``, removed
   in NumPy 2.0: we put back the two entries it reads.
2. and 3. ``chainer/_environment_check.py`` imports ``numpy.distutils`` (gone
   with NumPy 2 and Python 3.12) and ``pkg_resources`` (gone with setuptools
   82), only to print advisory warnings. We register an empty stand-in for that
   module, so those imports never run. Outside the test helpers
   (``chainer.testing``, which ``chainer.gradient_check`` imports and which
   needs ``pkg_resources``), nothing else in Chainer uses them.

It also silences Chainer's cuDNN warning, which is wrong for current CuPy.
"""
import sys
import types
import warnings

import numpy

if not hasattr(numpy, 'sctypes'):
    numpy.sctypes = {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64],
        'complex': [numpy.complex64, numpy.complex128],
        'others': [bool, object, bytes, str, numpy.void],
    }

if 'chainer' not in sys.modules:
    _check = types.ModuleType('chainer._environment_check')
    _check.check = lambda: None
    sys.modules['chainer._environment_check'] = _check

# Chainer asks to reinstall CuPy with cuDNN whenever CuPy lacks it, which
# every CuPy >= 14 does (it dropped cuDNN); Chainer then convolves without
# it. The warning would be a second line under each one-line error.
warnings.filterwarnings('ignore', message='cuDNN is not enabled',
                        category=UserWarning)

import chainer  # noqa: E402,F401  (the fixes above must come first)
