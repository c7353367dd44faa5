import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import capsnet  # noqa: E402,F401  (patches chainer before tests import it)

MNIST_FIXTURE = os.path.join(ROOT, 'tests', 'data', 'mnist')
