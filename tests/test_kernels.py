"""The fast kernels of capsnet/kernels/ give the same values and gradients
as the plain Chainer compositions in capsnet/functions.py, alone and inside
the whole model."""
import contextlib

import numpy
import pytest

import chainer
from chainer import gradient_check

from capsnet import functions
from capsnet import kernels
from capsnet import parallel
from capsnet.model import BaselineCNN
from capsnet.model import CapsNet
from conftest import assert_same_loss_and_gradients


def same_values_and_gradients(fast, plain, inputs, rtol=1e-4, atol=1e-5):
    """Run both on the same inputs and a random output gradient."""
    results = []
    for f in (fast, plain):
        xs = [chainer.Variable(a.copy()) for a in inputs]
        ys = f(*xs)
        ys = ys if isinstance(ys, tuple) else (ys,)
        rng = numpy.random.RandomState(7)
        gys = [chainer.Variable(numpy.asarray(rng.randn(*y.shape), y.dtype))
               for y in ys]
        grads = chainer.grad(list(ys), xs, grad_outputs=gys)
        results.append([y.array for y in ys] + [g.array for g in grads])
    for got, want in zip(*results):
        numpy.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def only(kernel):
    """A convolution through ``kernel`` alone, whatever the batch size."""
    def convolution(stride):
        def f(x, W, b):
            need_gx = isinstance(x, chainer.Variable) and x.requires_grad
            return kernel(stride, need_gx)(x, W, b)
        return f
    return convolution


spectral = only(kernels.convolution.SpectralConvolution2DNHWC)
direct = only(kernels.convolution.DirectConvolution2DNHWC)


@pytest.mark.parametrize('method', [spectral, direct])
@pytest.mark.parametrize('shape,stride', [
    ((3, 20, 20, 16), 2),        # PrimaryCaps' geometry, fewer channels
    ((2, 11, 11, 3), 2),         # odd size: padded before space-to-depth
    ((2, 7, 9, 2), 1),           # stride 1, not square
    ((1, 12, 12, 2), 3),
])
def test_convolution(method, shape, stride):
    rng = numpy.random.RandomState(0)
    x = rng.randn(*shape).astype(numpy.float32)
    W = rng.randn(4, 5, 5, shape[3]).astype(numpy.float32)
    if stride == 2 and shape[1] == 20:
        W = rng.randn(4, 9, 9, shape[3]).astype(numpy.float32)
    b = rng.randn(4).astype(numpy.float32)

    def plain(x, W, b):
        return functions.convolution_2d_nhwc(x, W, b, stride)

    same_values_and_gradients(method(stride), plain, (x, W, b),
                              rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('method', [spectral, direct])
def test_convolution_gradient_check(method):
    rng = numpy.random.RandomState(1)
    x, W, b = rng.randn(2, 7, 7, 2), rng.randn(3, 3, 3, 2), rng.randn(3)
    x, W, b = (a.astype(numpy.float32) for a in (x, W, b))
    gradient_check.check_backward(
        method(2), (x, W, b), rng.randn(2, 3, 3, 3).astype(numpy.float32),
        atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize('frozen,n,method', [
    (False, kernels.convolution.SPECTRAL_FROM - 1, kernels.convolution.DirectConvolution2DNHWC),
    (False, kernels.convolution.SPECTRAL_FROM, kernels.convolution.SpectralConvolution2DNHWC),
    (True, kernels.convolution.SPECTRAL_FROM_FROZEN - 1, kernels.convolution.DirectConvolution2DNHWC),
    (True, kernels.convolution.SPECTRAL_FROM_FROZEN, kernels.convolution.SpectralConvolution2DNHWC),
])
def test_convolution_picks_by_batch_size(frozen, n, method):
    x = numpy.zeros((n, 5, 5, 1), dtype=numpy.float32)
    W = numpy.zeros((2, 3, 3, 1), dtype=numpy.float32)
    with kernels.frozen_weights() if frozen else contextlib.nullcontext():
        y = kernels.convolution_2d_nhwc(x, W, numpy.zeros(2, numpy.float32))
    assert isinstance(y.creator, method)


@pytest.mark.parametrize('x_shape,k,pad', [
    ((2, 3, 28, 28), 5, 2),      # the baseline CNN's geometry, few channels
    ((3, 1, 8, 8), 5, 2),        # one input channel, as its first layer
    ((2, 2, 7, 9), 3, 0),        # no padding, not square
    ((1, 2, 6, 5), 3, 4),        # padding wider than the kernel
])
def test_fourier_convolution(x_shape, k, pad):
    rng = numpy.random.RandomState(11)
    x = rng.randn(*x_shape).astype(numpy.float32)
    W = rng.randn(4, x_shape[1], k, k).astype(numpy.float32)
    b = rng.randn(4).astype(numpy.float32)
    same_values_and_gradients(
        lambda x, W, b: kernels.convolution_2d(x, W, b, pad),
        lambda x, W, b: functions.convolution_2d(x, W, b, pad), (x, W, b),
        rtol=1e-4, atol=1e-4)


def test_fourier_convolution_gradient_check():
    rng = numpy.random.RandomState(12)
    x, W, b = rng.randn(2, 2, 6, 6), rng.randn(3, 2, 3, 3), rng.randn(3)
    gradient_check.check_backward(
        lambda x, W, b: kernels.convolution_2d(x, W, b, 1), (x, W, b),
        rng.randn(2, 3, 6, 6), atol=1e-5, rtol=1e-4)


def test_fourier_convolution_of_an_input_without_gradient():
    """The first layer's input needs no gradient: none is computed."""
    rng = numpy.random.RandomState(13)
    W = chainer.Variable(rng.randn(2, 1, 3, 3).astype(numpy.float32))
    y = kernels.convolution_2d(rng.randn(1, 1, 5, 5).astype(numpy.float32),
                               W, numpy.zeros(2, numpy.float32), 1)
    assert not y.creator.need_gx
    chainer.functions.sum(y).backward()
    assert W.grad is not None


def test_baseline_unchanged_by_the_kernels():
    numpy.random.seed(0)
    fast, plain = BaselineCNN(fused=True), BaselineCNN(fused=False)
    plain.copyparams(fast)
    x = numpy.random.RandomState(1).rand(3, 1, 28, 28).astype(numpy.float32)
    t = numpy.array([1, 7, 3], dtype=numpy.int32)
    grads = []
    for model in (plain, fast):
        model.cleargrads()
        with chainer.using_config('train', False):     # no dropout
            loss = chainer.functions.softmax_cross_entropy(model(x), t)
        loss.backward()
        grads.append((float(loss.array),
                      {name: p.grad for name, p in model.namedparams()}))
    assert grads[1][0] == pytest.approx(grads[0][0], rel=1e-5)
    for name, want in grads[0][1].items():
        numpy.testing.assert_allclose(grads[1][1][name], want, rtol=1e-3,
                                      atol=1e-4 * numpy.abs(want).max(),
                                      err_msg=name)


@pytest.fixture(params=[1, 3], ids=['one part', 'three parts'])
def threads(request, monkeypatch):
    """The kernels' work split into this many parts (under xdist conftest
    leaves one BLAS thread a worker, so THREADS would be 1)."""
    monkeypatch.setattr(parallel, 'THREADS', request.param)
    return request.param


@pytest.mark.parametrize('slope', [0.0, 0.05])
@pytest.mark.parametrize('channels', [1, 3])
def test_convolution_relu(slope, channels):
    rng = numpy.random.RandomState(15)
    x = rng.randn(2, channels, 12, 11).astype(numpy.float32)
    W = rng.randn(5, channels, 4, 4).astype(numpy.float32)
    b = rng.randn(5).astype(numpy.float32)
    same_values_and_gradients(
        lambda *a: kernels.convolution_relu_nhwc(*a, slope),
        lambda *a: functions.convolution_relu_nhwc(*a, slope), (x, W, b))
    gradient_check.check_backward(
        lambda *a: kernels.convolution_relu_nhwc(*a, slope),
        tuple(a.astype(numpy.float64) for a in (x, W, b)),
        rng.randn(2, 9, 8, 5), atol=1e-6, rtol=1e-5)


def test_convolution_relu_of_an_image_computes_no_input_gradient():
    W = chainer.Variable(numpy.ones((2, 1, 3, 3), dtype=numpy.float32))
    y = kernels.convolution_relu_nhwc(numpy.ones((1, 1, 5, 5), numpy.float32),
                                      W, numpy.zeros(2, numpy.float32))
    assert not y.creator.need_gx
    chainer.functions.sum(y).backward()
    numpy.testing.assert_array_equal(W.grad, numpy.full((2, 1, 3, 3), 9))


@pytest.mark.parametrize('shared', [False, True])
def test_capsule_predictions(shared, threads):
    rng = numpy.random.RandomState(2)
    u = rng.randn(3, 2, 2, 2, 8).astype(numpy.float32)      # N, G, G, T, K
    W = rng.randn(2 if shared else 8, 5, 6, 8).astype(numpy.float32)
    same_values_and_gradients(kernels.capsule_predictions,
                              functions.capsule_predictions, (u, W))


@pytest.mark.parametrize('iterations', [1, 2, 3])
def test_dynamic_routing(iterations, threads):
    u_hat = numpy.random.RandomState(3).randn(2, 3, 7, 4).astype('f') * 0.3
    same_values_and_gradients(
        lambda u: kernels.dynamic_routing(u, iterations),
        lambda u: functions.dynamic_routing(u, iterations), (u_hat,))


@pytest.mark.parametrize('iterations', [1, 3])
def test_dynamic_routing_with_bias(iterations, threads):
    rng = numpy.random.RandomState(14)
    u_hat = rng.randn(2, 3, 7, 4).astype('f') * 0.3
    bias = rng.randn(3, 4).astype('f') * 0.3
    same_values_and_gradients(
        lambda u, b: kernels.dynamic_routing(u, iterations, bias=b),
        lambda u, b: functions.dynamic_routing(u, iterations, bias=b),
        (u_hat, bias))
    gradient_check.check_backward(
        lambda u, b: kernels.dynamic_routing(u, iterations, bias=b)[0],
        (u_hat.astype(numpy.float64), bias.astype(numpy.float64)),
        rng.randn(2, 3, 4), atol=1e-6, rtol=1e-5)


def test_dynamic_routing_gradient_check():
    u_hat = numpy.random.RandomState(4).randn(1, 3, 4, 2)
    gradient_check.check_backward(
        lambda u: kernels.dynamic_routing(u, 3)[0], u_hat,
        numpy.random.RandomState(5).randn(1, 3, 2), atol=1e-6, rtol=1e-5)


def test_dynamic_routing_of_zero_predictions_is_finite():
    u_hat = chainer.Variable(numpy.zeros((1, 2, 3, 4), dtype=numpy.float32))
    v, _ = kernels.dynamic_routing(u_hat, 3)
    chainer.functions.sum(v).backward()
    assert not v.array.any() and numpy.isfinite(u_hat.grad).all()


def test_squash_and_length():
    s = numpy.random.RandomState(8).randn(3, 5, 8).astype(numpy.float32)
    for name in ('squash', 'length'):
        same_values_and_gradients(getattr(kernels, name),
                                  getattr(functions, name), (s,))
    s = s.astype(numpy.float64)
    gradient_check.check_backward(kernels.squash, s, s[::-1].copy())
    gradient_check.check_backward(kernels.length, s, s[:, :, 0].copy())


@pytest.mark.parametrize('scale', [1.0, functions.OFFICIAL_MARGIN_SCALE / 5])
@pytest.mark.parametrize('labels', [[0, 3, 1], [[0, 1], [2, 3], [1, 4]]])
def test_margin_loss(labels, scale):
    t = numpy.array(labels, dtype=numpy.int32)
    # lengths on both sides of m- = 0.1 and m+ = 0.9
    lengths = numpy.random.RandomState(9).uniform(0, 1, (3, 5))
    same_values_and_gradients(
        lambda a: kernels.margin_loss(a, t, scale=scale),
        lambda a: functions.margin_loss(a, t, scale=scale),
        (lengths.astype(numpy.float32),))
    gradient_check.check_backward(
        lambda a: kernels.margin_loss(a, t, scale=scale), lengths, None)


def test_masked_capsules_decoder_and_reconstruction_loss():
    rng = numpy.random.RandomState(10)
    v = rng.randn(3, 5, 4)
    labels = numpy.array([4, 0, 2], dtype=numpy.int32)
    layers = (rng.randn(7, 20), rng.randn(7), rng.randn(6, 7), rng.randn(6),
              rng.randn(9, 6), rng.randn(9))
    x = rng.uniform(0, 1, (3, 1, 3, 3))

    def pipeline(module):
        def run(v, *layers):
            masked = module.masked_capsules(v, labels)
            return module.reconstruction_loss(module.decoder(masked, *layers),
                                              x.astype(v.dtype))
        return run
    inputs = tuple(a.astype(numpy.float32) for a in (v, *layers))
    same_values_and_gradients(pipeline(kernels), pipeline(functions), inputs)
    gradient_check.check_backward(pipeline(kernels), (v, *layers), None,
                                  atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('options,n', [
    ({}, 4),                                               # direct conv
    ({'shared_weights': True, 'leaky_slope': 0.05}, kernels.convolution.SPECTRAL_FROM),
    ({'capsule_bias': True}, 3),
])
def test_whole_model_unchanged_by_the_kernels(options, n):
    """Loss and every parameter gradient, fused and plain, same weights."""
    numpy.random.seed(0)
    fast = CapsNet(fused=True, **options)
    plain = CapsNet(fused=False, **options)
    plain.copyparams(fast)
    rng = numpy.random.RandomState(0)
    x = rng.rand(n, 1, 28, 28).astype(numpy.float32)
    t = numpy.arange(n, dtype=numpy.int32) * 3 % 10
    assert_same_loss_and_gradients(plain, fast, x, t)


@pytest.mark.parametrize('kernel,x_shape,W_shape,bias', [
    (spectral(2), (2, 11, 11, 3), (4, 5, 5, 3), True),
    (kernels.capsule_predictions, (2, 4, 2, 8), (8, 5, 6, 8), False),
    (lambda x, W, b: kernels.convolution_2d(x, W, b, 2), (2, 3, 9, 9),
     (4, 3, 5, 5), True),
])
def test_frozen_weights_reuse_each_weight_form_only_inside_the_block(
        kernel, x_shape, W_shape, bias):
    rng = numpy.random.RandomState(6)
    x = rng.randn(*x_shape).astype(numpy.float32)
    W = rng.randn(*W_shape).astype(numpy.float32)
    extra = (numpy.zeros(W_shape[0], dtype=numpy.float32),) if bias else ()

    def apply(weights):
        return kernel(x, weights, *extra).array

    expected = apply(W)
    with kernels.frozen_weights():
        numpy.testing.assert_array_equal(apply(W), expected)
        W *= 3                           # broken promise: the form is kept
        numpy.testing.assert_array_equal(apply(W), expected)
        other = W * 2                                         # new array
        numpy.testing.assert_allclose(apply(other), 6 * expected,
                                      rtol=1e-4, atol=1e-4)
        assert len(kernels.frozen._frozen) == 2
    assert kernels.frozen._frozen is None
    numpy.testing.assert_allclose(apply(W), 3 * expected, rtol=1e-4,
                                  atol=1e-4)


def test_dft_matrices_are_made_once_per_device():
    """On the CPU as on a GPU (test_gpu.py), the same array every call: no
    copy of a DFT matrix per call."""
    x = numpy.zeros(1, numpy.float32)
    first = kernels.convolution._beside(x, kernels.convolution._dft, (10, 10),
                                        (10, 10), False, True)
    assert kernels.convolution._beside(
        x, kernels.convolution._dft, (10, 10), (10, 10), False,
        True) is first
    assert first.shape == (104, 100)        # 52 frequencies, re and im


@pytest.mark.parametrize('hidden', [(), (7,), (7, 6, 5)])
def test_decoders_of_any_depth(hidden):
    """The model's decoder has two hidden layers (model.DECODER_HIDDEN);
    both versions take any number."""
    rng = numpy.random.RandomState(11)
    sizes = (20,) + hidden + (9,)
    layers = [a for n_in, n_out in zip(sizes, sizes[1:])
              for a in (rng.randn(n_out, n_in), rng.randn(n_out))]
    x = rng.randn(3, 20)
    inputs = tuple(a.astype(numpy.float32) for a in (x, *layers))
    same_values_and_gradients(kernels.decoder, functions.decoder, inputs)
    gradient_check.check_backward(kernels.decoder, (x, *layers),
                                  rng.randn(3, 9), atol=1e-4, rtol=1e-4)
