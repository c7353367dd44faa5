"""The GPU path (CuPy, ``-g 0``) gives the CPU's values and gradients, and
computes them on the GPU.

Skipped where CuPy or a CUDA device is missing, as on CI; run on a machine
with a GPU. There ``CAPSNET_REQUIRE_GPU=1`` turns the skip into a failure,
so that a broken CuPy or driver cannot pass for a machine without a GPU.
Each case runs the same code on NumPy and on CuPy inputs.
"""
import json
import os

import numpy
import pytest

import chainer
from chainer.backends import cuda

import capsnet
from capsnet import data
from capsnet import functions
from capsnet import kernels
from capsnet.model import BaselineCNN
from capsnet.model import CapsNet
from conftest import DATA
from conftest import MNIST_FIXTURE
from conftest import ROOT
from conftest import TINY
from conftest import assert_same_loss_and_gradients
from conftest import explorer_server
from conftest import request
from conftest import run_here
from test_custom_data import colour_npz  # noqa: F401  (a fixture)
from test_guards import finite_loss_stops


def _gpu_problem():
    """Why the GPU path cannot run here, or None."""
    if not cuda.available:
        return 'CuPy is missing or cannot load CUDA'
    try:
        count = cuda.cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return 'CUDA does not work: {}'.format(e)
    return None if count else 'no CUDA device'


PROBLEM = _gpu_problem()


def on_gpu(array):
    return isinstance(array, cuda.cupy.ndarray)


def require_gpu():
    if PROBLEM:
        required = os.environ.get('CAPSNET_REQUIRE_GPU') == '1'
        (pytest.fail if required else pytest.skip)(PROBLEM)


@pytest.fixture(autouse=True)
def gpu():
    require_gpu()


def values_and_gradients(f, inputs, device):
    """f's outputs and input gradients, for a fixed output gradient."""
    xs = [chainer.Variable(device.send(a.copy())) for a in inputs]
    ys = f(*xs)
    ys = ys if isinstance(ys, tuple) else (ys,)
    rng = numpy.random.RandomState(7)
    gys = [chainer.Variable(device.send(
        numpy.asarray(rng.randn(*y.shape), dtype=y.dtype))) for y in ys]
    grads = chainer.grad(list(ys), xs, grad_outputs=gys)
    results = [v.array for v in list(ys) + list(grads)]
    # computed where the inputs are: a result made on the host would match
    # the CPU's values too
    assert all(chainer.backend.get_device_from_array(a) == device
               for a in results), [type(a) for a in results]
    return [cuda.to_cpu(a) for a in results]


def same_on_cpu_and_gpu(f, inputs, rtol=1e-4, atol=1e-4):
    cpu = values_and_gradients(f, inputs, chainer.get_device('@numpy'))
    gpu = values_and_gradients(f, inputs, chainer.get_device('@cupy:0'))
    for want, got in zip(cpu, gpu):
        numpy.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize('module', [functions, kernels])
def test_squash_and_margin_loss(module):
    rng = numpy.random.RandomState(0)
    s = rng.randn(4, 10, 16).astype(numpy.float32)
    t = numpy.array([0, 3, 5, 9], dtype=numpy.int32)

    def f(s):
        labels = chainer.backend.get_device_from_array(s.array).send(t)
        return module.margin_loss(module.length(module.squash(s)), labels)

    same_on_cpu_and_gpu(f, (s,))


@pytest.mark.parametrize('module', [functions, kernels])
def test_masked_decoder_and_reconstruction_loss(module):
    rng = numpy.random.RandomState(3)
    v = rng.randn(4, 10, 16).astype(numpy.float32) * 0.3
    layers = [rng.randn(*shape).astype(numpy.float32) * 0.05 for shape in
              ((512, 160), (512,), (1024, 512), (1024,), (784, 1024),
               (784,))]
    t = numpy.array([0, 3, 5, 9], dtype=numpy.int32)
    x = rng.uniform(0, 1, (4, 1, 28, 28)).astype(numpy.float32)

    def f(v, *layers):
        device = chainer.backend.get_device_from_array(v.array)
        masked = module.masked_capsules(v, device.send(t))
        return module.reconstruction_loss(module.decoder(masked, *layers),
                                          device.send(x))

    same_on_cpu_and_gpu(f, (v, *layers))


@pytest.mark.parametrize('module', [functions, kernels])
@pytest.mark.parametrize('n', [1, kernels.convolution.SPECTRAL_FROM])   # direct, DFT
def test_primary_convolution(module, n):
    rng = numpy.random.RandomState(1)
    x = rng.randn(n, 20, 20, 16).astype(numpy.float32)
    W = rng.randn(8, 9, 9, 16).astype(numpy.float32)
    b = rng.randn(8).astype(numpy.float32)
    same_on_cpu_and_gpu(
        lambda *a: module.convolution_2d_nhwc(*a, stride=2), (x, W, b))


@pytest.mark.parametrize('module', [functions, kernels])
@pytest.mark.parametrize('slope', [0.0, 0.05])
def test_first_convolution(module, slope):
    rng = numpy.random.RandomState(4)
    x = rng.rand(2, 1, 28, 28).astype(numpy.float32)
    W = rng.randn(16, 1, 9, 9).astype(numpy.float32)
    b = rng.randn(16).astype(numpy.float32)
    same_on_cpu_and_gpu(
        lambda *a: module.convolution_relu_nhwc(*a, slope), (x, W, b))


@pytest.mark.parametrize('module', [functions, kernels])
@pytest.mark.parametrize('bias', [False, True])
def test_predictions_and_routing(module, bias):
    rng = numpy.random.RandomState(2)
    u = rng.randn(3, 4, 2, 8).astype(numpy.float32)              # N, P, T, K
    W = rng.randn(8, 5, 6, 8).astype(numpy.float32) * 0.3         # P*T, ...
    b = rng.randn(5, 6).astype(numpy.float32) * 0.3               # J, D

    def f(u, W, *b):
        return module.dynamic_routing(module.capsule_predictions(u, W), 3,
                                      bias=b[0] if b else None)

    same_on_cpu_and_gpu(f, (u, W, b) if bias else (u, W))


@pytest.mark.parametrize('fused', [True, False])
def test_whole_model(fused):
    """Loss and every parameter gradient after one step, CPU against GPU."""
    numpy.random.seed(0)
    cpu = CapsNet(fused=fused)
    gpu = CapsNet(fused=fused)
    gpu.copyparams(cpu)
    gpu.to_device('@cupy:0')
    rng = numpy.random.RandomState(0)
    x = rng.rand(4, 1, 28, 28).astype(numpy.float32)
    t = numpy.array([0, 3, 5, 9], dtype=numpy.int32)
    assert_same_loss_and_gradients(cpu, gpu, x, t)


def test_evaluation_with_frozen_weights():
    numpy.random.seed(1)
    model = CapsNet()
    x = numpy.random.RandomState(3).rand(5, 1, 28, 28).astype(numpy.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        want = model.predict(x).array
        model.to_device('@cupy:0')
        with kernels.frozen_weights():
            got = model.predict(model.device.send(x)).array
    assert on_gpu(got)
    got = cuda.to_cpu(got)
    numpy.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fourier_convolution():
    rng = numpy.random.RandomState(5)
    x = rng.randn(2, 3, 28, 28).astype(numpy.float32)
    W = rng.randn(4, 3, 5, 5).astype(numpy.float32)
    b = rng.randn(4).astype(numpy.float32)
    same_on_cpu_and_gpu(lambda x, W, b: kernels.convolution_2d(x, W, b, 2),
                        (x, W, b))


def test_baseline_runs():
    model = BaselineCNN()
    model.to_device('@cupy:0')
    x = model.device.send(numpy.zeros((2, 1, 28, 28), dtype=numpy.float32))
    with chainer.using_config('train', False):
        y = model.predict(x)
    assert y.shape == (2, 10) and on_gpu(y.array)


def test_finite_loss_with_the_loss_on_the_device():
    nan = float('nan')
    cupy = cuda.cupy
    assert finite_loss_stops(cupy, [1, 2, 3], writes={3}) is None
    error = finite_loss_stops(cupy, [1, nan, 3], writes={3})
    assert 'at iteration 2; the run stopped at iteration 3' in str(error)


# --- the commands end to end on the GPU, each against the same on the CPU --
#
# At fixture size: a few updates each, so the GPU and the CPU should agree
# to rounding, and a wrong device anywhere (a host copy CuPy refuses, an
# array made on the host, a DFT matrix on the wrong GPU) fails the command.

CPU, GPU = ['-g', '-1'], ['-g', '0']
MULTI = os.path.join(ROOT, 'saved_model', 'multimnist')


def trained_on_both(tmp_path, *args):
    """The logs of the same tiny run on the CPU and on GPU 0."""
    logs = []
    for name, device in (('cpu', CPU), ('gpu', GPU)):
        out = tmp_path / name
        run_here('train.py', *args, *device, '--save', str(out))
        logs.append(json.loads((out / 'log').read_text()))
    return logs


def assert_logs_agree(cpu, gpu, rel=1e-2):
    assert len(cpu) == len(gpu)
    for a, b in zip(cpu, gpu):
        for key, value in a.items():
            if key.endswith('loss') or key.endswith('accuracy'):
                assert b[key] == pytest.approx(value, rel=rel, abs=0.02), key


@pytest.mark.parametrize('args', [
    TINY,                                                   # MNIST
    [*TINY, '--dataset', 'multimnist', '-e', '1'],
    [*TINY, '--model', 'baseline', '-e', '1'],
    [*TINY, '--ema', '0.9'],               # validation reads the average
], ids=['mnist', 'multimnist', 'baseline', 'ema'])
def test_train_on_the_gpu_as_on_the_cpu(args, tmp_path):
    assert_logs_agree(*trained_on_both(tmp_path, *args))


def test_own_colour_data_at_32_trains_on_the_gpu(colour_npz, tmp_path):
    assert_logs_agree(*trained_on_both(
        tmp_path, '--dataset', str(colour_npz), '-b', '8', '-e', '1'))


def test_a_gpu_run_resumes_as_if_never_stopped(tmp_path):
    whole, halves = tmp_path / 'whole', tmp_path / 'halves'
    run_here('train.py', *TINY, *GPU, '--save', str(whole))
    run_here('train.py', *TINY, *GPU, '-e', '1', '--save', str(halves))
    run_here('train.py', *TINY, *GPU, '--save', str(halves))
    a, b = (json.loads((out / 'log').read_text()) for out in (whole, halves))
    assert_logs_agree(a, b, rel=1e-5)


@pytest.fixture(scope='module')
def gpu_run(tmp_path_factory):
    require_gpu()               # made before the autouse check runs
    out = tmp_path_factory.mktemp('gpu_run')
    run_here('train.py', *TINY, *GPU, '--save', str(out))
    return out


@pytest.mark.parametrize('extra', [[], ['--affine']], ids=['clean', 'affine'])
def test_evaluate_on_the_gpu_as_on_the_cpu(gpu_run, extra):
    # batch 100: the frozen spectral path (12 images and more)
    reports = [json.loads(run_here(
        'analyze.py', '--load', str(gpu_run), *DATA, '--test-size', '100',
        '--evaluate', *extra, *device).stdout) for device in (CPU, GPU)]
    assert reports[1]['accuracy'] == pytest.approx(reports[0]['accuracy'],
                                                   abs=0.011)


def test_figures_explorer_and_predict_on_the_gpu(gpu_run, tmp_path):
    result = run_here('analyze.py', '--load', str(gpu_run), *DATA, *GPU,
                      '--test-size', '100', '--out', str(tmp_path / 'fig'))
    assert 'rendered 13 images' in result.stdout
    run_here('analyze.py', '--load', str(gpu_run), *DATA, *GPU,
             '--test-size', '100', '--explorer', '--out',
             str(tmp_path / 'page'))
    assert os.listdir(tmp_path / 'page')
    images, _ = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    from PIL import Image
    files = []
    for k in range(3):
        files.append(str(tmp_path / '{}.png'.format(k)))
        Image.fromarray(255 - images[k, 0]).save(files[-1])
    lines = [[json.loads(line) for line in run_here(
        'analyze.py', '--load', str(gpu_run), '--predict', *files,
        *device).stdout.splitlines()] for device in (CPU, GPU)]
    assert [r['predicted'] for r in lines[0]] == \
        [r['predicted'] for r in lines[1]]


def test_load_on_the_gpu_takes_paths_numpy_and_cupy_arrays(tmp_path):
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    x = images[:20, 0]
    cpu = capsnet.load(os.path.join(ROOT, 'saved_model'))
    gpu = capsnet.load(os.path.join(ROOT, 'saved_model'), gpu=0)
    from PIL import Image
    paths = []
    for k in range(3):
        paths.append(str(tmp_path / '{}.png'.format(k)))
        Image.fromarray(255 - x[k]).save(paths[-1])
    assert gpu.classify(paths)[0].tolist() == cpu.classify(paths)[0].tolist()
    numpy.testing.assert_allclose(gpu.doubt(paths)[0], cpu.doubt(paths)[0],
                                  rtol=1e-4)
    want, lengths = cpu.classify(x)
    for given in (x, cuda.to_gpu(x)):
        predicted, got = gpu.classify(given)
        assert predicted.tolist() == want.tolist()
        numpy.testing.assert_allclose(got, lengths, rtol=1e-4, atol=1e-5)
    pictures = gpu.reconstruct(cuda.to_gpu(x[:2]))
    numpy.testing.assert_allclose(cuda.to_cpu(pictures),
                                  cpu.reconstruct(x[:2]), atol=1e-4)


def test_the_shipped_float16_multimnist_model_on_the_gpu():
    reports = [json.loads(run_here(
        'analyze.py', '--load', MULTI, '--dataset', 'multimnist', *DATA,
        '--evaluate', *device).stdout) for device in (CPU, GPU)]
    assert reports[1]['accuracy'] == pytest.approx(reports[0]['accuracy'],
                                                   abs=0.005)


def test_dft_matrices_are_copied_to_each_device_once():
    x = cuda.cupy.zeros(1, numpy.float32)
    first = kernels.convolution._beside(x, kernels.convolution._dft, (10, 10), (10, 10), False, True)
    assert on_gpu(first) and first.device.id == x.device.id
    assert kernels.convolution._beside(x, kernels.convolution._dft, (10, 10), (10, 10), False,
                           True) is first


def test_the_server_answers_from_the_models_gpu():
    from capsnet import model_file
    model = model_file.load(os.path.join(ROOT, 'saved_model',
                                               'model.npz'))
    image = [0.0] * 784
    with explorer_server(model) as url:
        want = request(url, json.dumps({'image': image}).encode())[1]
    model.to_device('@cupy:0')
    with explorer_server(model, device='@cupy:0') as url:
        status, got = request(url, json.dumps({'image': image}).encode())
    assert status == 200 and got['predicted'] == want['predicted']
    numpy.testing.assert_allclose(got['lengths'], want['lengths'], atol=1e-4)
