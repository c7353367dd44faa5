import os
import subprocess
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
import numpy  # noqa: E402
import pytest  # noqa: E402
from chainer.backends import cuda  # noqa: E402

from capsnet.model import CapsNetLoss  # noqa: E402

MNIST_FIXTURE = os.path.join(ROOT, 'tests', 'data', 'mnist')

DATA = ['--data-dir', MNIST_FIXTURE]
# a tiny run: 2 epochs of 4 iterations, small validation and test sets
TINY = DATA + ['--train-size', '64', '-b', '16', '--val-size', '200',
               '--test-size', '100', '-e', '2']


def run(script, *args, check=True):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def fails_with(message, script, *args):
    """The script exits 1 with one 'error: ...' line naming the problem;
    returns that line."""
    result = run(script, *args, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    assert 'Traceback' not in result.stderr
    assert message in lines[0], lines[0]
    return lines[0]


def assert_same_training_state(snapshot, other):
    with numpy.load(snapshot) as a, numpy.load(other) as b:
        keys = [k for k in a.files if k.startswith(('updater/model:main/',
                                                    'updater/optimizer:'))]
        assert len(keys) > 20 and set(keys) <= set(b.files)
        for key in keys:
            numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_same_loss_and_gradients(reference, other, x, t):
    """Two CapsNets with the same weights, each on its own device, give the
    same CapsNetLoss on (x, t) and the same gradient for every parameter."""
    losses = []
    for model in (reference, other):
        loss = CapsNetLoss(model)
        loss.cleargrads()
        value = loss(model.device.send(x), model.device.send(t))
        value.backward()
        losses.append(float(value.array))
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (name, p), (_, q) in zip(sorted(reference.namedparams()),
                                 sorted(other.namedparams())):
        scale = numpy.abs(cuda.to_cpu(p.grad)).max()
        numpy.testing.assert_allclose(cuda.to_cpu(q.grad),
                                      cuda.to_cpu(p.grad),
                                      atol=1e-4 * scale, err_msg=name)


def start_explorer_server():
    """``analyze.py --serve`` on the shipped model and a free port:
    (the process, its URL)."""
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'analyze.py'), '--load',
         os.path.join(ROOT, 'saved_model'), *DATA, '--serve', '--port', '0',
         '--explorer-images', '8'],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith('serving the explorer at '):
        server.kill()
        raise AssertionError(line + server.stderr.read())
    return server, line.split(' at ')[1].split()[0]
