import os
import sys
import types

try:
    import pkg_resources  # noqa: F401
except ImportError:
    # chainer.testing, which chainer.gradient_check imports, imports
    # pkg_resources (gone in setuptools >= 82) for version checks these tests
    # never make: an empty stand-in lets it import.
    sys.modules['pkg_resources'] = types.ModuleType('pkg_resources')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import capsnet  # noqa: E402,F401  (patches chainer before tests import it)

MNIST_FIXTURE = os.path.join(ROOT, 'tests', 'data', 'mnist')
