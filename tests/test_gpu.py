"""The GPU path (CuPy, ``-g 0``) gives the CPU's values and gradients, and
computes them on the GPU.

Skipped where CuPy or a CUDA device is missing, as on CI; run on a machine
with a GPU. There ``CAPSNET_REQUIRE_GPU=1`` turns the skip into a failure,
so that a broken CuPy or driver cannot pass for a machine without a GPU.
Each case runs the same code on NumPy and on CuPy inputs.
"""
import os

import numpy
import pytest

import chainer
from chainer.backends import cuda

from capsnet import functions
from capsnet import kernels
from capsnet.model import BaselineCNN
from capsnet.model import CapsNet
from conftest import assert_same_loss_and_gradients
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


@pytest.fixture(autouse=True)
def gpu():
    if PROBLEM:
        required = os.environ.get('CAPSNET_REQUIRE_GPU') == '1'
        (pytest.fail if required else pytest.skip)(PROBLEM)


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
@pytest.mark.parametrize('n', [1, kernels.SPECTRAL_FROM])   # direct, DFT
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
