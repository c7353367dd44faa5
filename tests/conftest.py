import contextlib
import json
import importlib.util
import io
import os
import subprocess
import sys
import threading
import types
import urllib.error
import urllib.request

try:
    import pkg_resources  # noqa: F401
except ImportError:
    # chainer.testing, which chainer.gradient_check imports, imports
    # pkg_resources (gone in setuptools >= 82) for version checks these tests
    # never make: an empty stand-in lets it import.
    sys.modules['pkg_resources'] = types.ModuleType('pkg_resources')

# pytest-xdist gives each worker a core: one BLAS thread each, inherited by
# the commands it starts (two 2-thread processes on 2 cores make every matrix
# product wait for a thread that is not running)
if 'PYTEST_XDIST_WORKER' in os.environ:
    os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import capsnet  # noqa: E402,F401  (patches chainer before tests import it)
import chainer  # noqa: E402
import numpy  # noqa: E402
import pytest  # noqa: E402
from chainer.backends import cuda  # noqa: E402

from capsnet import cli  # noqa: E402
from capsnet import data  # noqa: E402
from capsnet import explorer  # noqa: E402
from capsnet import guards  # noqa: E402
from capsnet.model import CapsNetLoss  # noqa: E402

MNIST_FIXTURE = os.path.join(ROOT, 'tests', 'data', 'mnist')

DATA = ['--data-dir', MNIST_FIXTURE]
# a tiny run: 2 epochs of 4 iterations, small validation and test sets
TINY = DATA + ['--train-size', '64', '-b', '16', '--val-size', '200',
               '--test-size', '100', '-e', '2']


def run(script, *args, check=True, env=None):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env=None if env is None else dict(os.environ, **env))
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


_modules = {}


def script_module(script):
    """A script (train.py, analyze.py, ...) imported once as a module."""
    if script not in _modules:
        spec = importlib.util.spec_from_file_location(
            'script_' + os.path.basename(script)[:-3],
            os.path.join(ROOT, script))
        _modules[script] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_modules[script])
    return _modules[script]


def run_here(script, *args, check=True):
    """``script`` run in this process as its ``__main__`` runs it (through
    cli.run), with ``run``'s result. For what one command does; the process
    itself (exit, signals, output on a kill) is tested with ``run``."""
    main = script_module(script).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.run(lambda: main(list(args)))
        except SystemExit as e:                 # argparse's refusals
            status = e.code
        finally:
            # train.py holds its folder until its process ends: here, until
            # its main() does
            while guards._held:
                guards._held.pop().file.close()
    result = subprocess.CompletedProcess([script, *args], status,
                                         out.getvalue(), err.getvalue())
    if check:
        assert status == 0, result.stderr[-3000:]
    return result


def refuses(message, script, *args):
    """In this process: the command stops with status 1 and one
    'error: ...' line naming the problem; returns that line."""
    result = run_here(script, *args, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith('error: ') and message in lines[0], lines[0]
    return lines[0]


def assert_same_training_state(snapshot, other):
    with numpy.load(snapshot) as a, numpy.load(other) as b:
        keys = [k for k in a.files if k.startswith((
            'updater/model:main/', 'updater/optimizer:',
            'extensions/WeightAverage/'))]
        assert len(keys) > 20 and set(keys) <= set(b.files)
        for key in keys:
            numpy.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_same_loss_and_gradients(reference, other, x, t):
    """Two CapsNets with the same weights, each on its own device, give the
    same CapsNetLoss on (x, t) and the same gradient for every parameter,
    each computed on its model's device."""
    losses = []
    for model in (reference, other):
        loss = CapsNetLoss(model)
        loss.cleargrads()
        value = loss(model.device.send(x), model.device.send(t))
        value.backward()
        losses.append(float(value.array))
        assert all(chainer.backend.get_device_from_array(p.grad) ==
                   model.device for p in model.params())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (name, p), (_, q) in zip(sorted(reference.namedparams()),
                                 sorted(other.namedparams())):
        scale = numpy.abs(cuda.to_cpu(p.grad)).max()
        numpy.testing.assert_allclose(cuda.to_cpu(q.grad),
                                      cuda.to_cpu(p.grad),
                                      atol=1e-4 * scale, err_msg=name)


@contextlib.contextmanager
def explorer_server(model, gallery=8, device='@numpy'):
    """The explorer's server (explorer.make_server) on ``model`` (on
    ``device``) and the first ``gallery`` fixture test digits, in a thread
    of this process, on a free port: yields its URL."""
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    device = chainer.get_device(device)
    page = explorer.page_data(model, images, labels, numpy.arange(gallery),
                              device)
    server = explorer.make_server(model, device, page, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield 'http://127.0.0.1:{}/'.format(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def request(url, body=None, path='capsules'):
    """(status, parsed JSON or the text) of a GET (no body) or POST."""
    req = urllib.request.Request(url + path, data=body)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


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
