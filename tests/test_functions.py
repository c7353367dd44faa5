"""squash, length, routing and the losses against hand-computed cases and
numerical gradients."""
import math

import numpy
import pytest

import chainer
import chainer.functions as F
from chainer import gradient_check

from capsnet.functions import OFFICIAL_MARGIN_SCALE
from capsnet.functions import dynamic_routing
from capsnet.functions import length
from capsnet.functions import margin_loss
from capsnet.functions import multi_accuracy
from capsnet.functions import reconstruction_loss
from capsnet.functions import squash


def rand(*shape, seed=0):
    return numpy.random.RandomState(seed).uniform(-1, 1, shape)


def test_squash_hand_computed():
    # |s| = 5: v = 25 / 26 * s / 5
    v = squash(numpy.array([[3.0, 4.0]])).array
    numpy.testing.assert_allclose(v, [[25 / 26 * 0.6, 25 / 26 * 0.8]],
                                  rtol=1e-6)
    assert numpy.linalg.norm(v) < 1


def test_squash_of_zero_is_zero_with_finite_gradient():
    s = chainer.Variable(numpy.zeros((2, 8), dtype=numpy.float32))
    v = squash(s)
    F.sum(v).backward()
    assert not v.array.any()
    assert numpy.isfinite(s.grad).all()


def test_squash_acts_along_the_given_axis():
    s = rand(3, 4, 5)
    numpy.testing.assert_allclose(squash(s, axis=1).array,
                                  squash(s.transpose(0, 2, 1)).array
                                  .transpose(0, 2, 1))


def test_squash_gradient():
    gradient_check.check_backward(squash, rand(4, 8), rand(4, 8, seed=1))


def test_length_hand_computed_and_gradient():
    numpy.testing.assert_allclose(
        length(numpy.array([[[3.0, 4.0], [0.0, 0.0]]])).array,
        [[5.0, 1e-4]], rtol=1e-6)
    gradient_check.check_backward(length, rand(2, 3, 4), rand(2, 3))


def routing_inputs(n=2, j=3, i=5, d=4):
    return rand(n, j, i, d)


def test_routing_shapes_and_couplings_sum_to_one_over_parents():
    v, c = dynamic_routing(routing_inputs(), 3)
    assert v.shape == (2, 3, 4) and c.shape == (2, 3, 5)
    numpy.testing.assert_allclose(c.array.sum(axis=1), 1, rtol=1e-6)


def test_one_iteration_couples_uniformly():
    u_hat = routing_inputs()
    v, c = dynamic_routing(u_hat, 1)
    numpy.testing.assert_allclose(c.array, 1 / 3)
    # s_j = sum_i u_hat_{j|i} / J
    numpy.testing.assert_allclose(
        v.array, squash(u_hat.sum(axis=2) / 3).array, rtol=1e-6)


def test_routing_hand_computed():
    # two children agree on parent 0 (u_hat = 1), parent 1 gets u_hat = 0
    u_hat = numpy.zeros((1, 2, 2, 1))
    u_hat[0, 0] = 1.0
    v1, _ = dynamic_routing(u_hat, 1)
    # c = 1/2: s_0 = 1, v_0 = 1 / 2 * 1; s_1 = 0
    numpy.testing.assert_allclose(v1.array[0, :, 0], [0.5, 0], atol=1e-6)
    v2, c2 = dynamic_routing(u_hat, 2)
    # b_0i = 1 * 0.5 -> c_0i = e^.5 / (e^.5 + 1); s_0 = 2 c_0i
    c0 = math.exp(0.5) / (math.exp(0.5) + 1)
    s0 = 2 * c0
    numpy.testing.assert_allclose(c2.array[0, 0], [c0, c0], rtol=1e-6)
    numpy.testing.assert_allclose(v2.array[0, 0, 0], s0 ** 2 / (1 + s0 ** 2),
                                  rtol=1e-6)


@pytest.mark.parametrize('iterations', [1, 3])
def test_routing_gradient_flows_through_every_iteration(iterations):
    def routed(u_hat):
        return dynamic_routing(u_hat, iterations)[0]
    gradient_check.check_backward(routed, routing_inputs(1, 3, 4, 2),
                                  rand(1, 3, 2, seed=2), atol=1e-6,
                                  rtol=1e-5)


def test_margin_loss_hand_computed():
    lengths = numpy.array([[0.95, 0.2], [0.5, 0.05]])
    # image 0: present 0 -> 0; absent 1 -> 0.5 * 0.1^2
    # image 1: present 0 -> 0.4^2; absent 1 -> 0
    loss = margin_loss(lengths, numpy.array([0, 0]))
    assert float(loss.array) == pytest.approx((0.005 + 0.16) / 2)


def test_margin_loss_with_two_digits_per_image():
    lengths = numpy.array([[0.95, 0.2, 0.3], [0.5, 0.05, 0.95]])
    # image 0 holds 0 and 1: present 0 -> 0, present 1 -> 0.7^2,
    #   absent 2 -> 0.5 * 0.2^2
    # image 1 holds 2 and 0: present 2 -> 0, present 0 -> 0.4^2,
    #   absent 1 -> 0
    loss = margin_loss(lengths, numpy.array([[0, 1], [2, 0]]))
    expected = (0.49 + 0.5 * 0.04 + 0.16) / 2
    assert float(loss.array) == pytest.approx(expected)


def test_official_margin_loss_scale_on_the_official_test_case():
    """layers_test.py's testMarginLoss in the official code: its per-class
    costs sum to 0.5 * 2.14 and the loss is their mean over 2 images and
    3 classes. Labels [0, 0, 1] and [1, 1, 1], one image at a time."""
    lengths = numpy.array([[-0.3, 0.3, 0.9], [1.2, 0.5, -0.5]])
    official = 0.5 * (0.5 * 0.2 ** 2 + 0.4 ** 2 + 1.4 ** 2) / 6
    scale = OFFICIAL_MARGIN_SCALE / 3
    losses = [float(margin_loss(lengths[k:k + 1], labels, scale=scale).array)
              for k, labels in enumerate((numpy.array([2]),
                                          numpy.array([[0, 1, 2]])))]
    assert numpy.mean(losses) == pytest.approx(official)
    # the paper's Eq. 4 of the same images is 2 * 3 times as large
    paper = [float(margin_loss(lengths[:1], numpy.array([2])).array),
             float(margin_loss(lengths[1:], numpy.array([[0, 1, 2]])).array)]
    assert numpy.mean(paper) == pytest.approx(6 * official)


def test_routing_bias_enters_s_j_in_every_iteration():
    """With all predictions zero, s_j is the bias alone in every
    iteration: v = squash(bias), whatever the couplings."""
    bias = numpy.array([[3.0, 4.0], [0.0, 1.0]])
    for iterations in (1, 3):
        v, _ = dynamic_routing(numpy.zeros((2, 2, 5, 2)), iterations,
                               bias=bias)
        numpy.testing.assert_allclose(
            v.array, numpy.broadcast_to(squash(bias).array, (2, 2, 2)))
    # and it changes the agreements: the couplings differ from no bias
    u_hat = rand(1, 2, 3, 2, seed=4)
    _, c_plain = dynamic_routing(u_hat, 3)
    _, c_bias = dynamic_routing(u_hat, 3, bias=bias)
    assert not numpy.allclose(c_plain.array, c_bias.array)


def test_routing_bias_gradient():
    gradient_check.check_backward(
        lambda u, b: dynamic_routing(u, 3, bias=b)[0],
        (rand(1, 3, 4, 2, seed=5), rand(3, 2, seed=6)),
        rand(1, 3, 2, seed=7), atol=1e-6, rtol=1e-5)


def test_multi_accuracy_needs_both_digits_among_the_two_longest():
    lengths = chainer.Variable(numpy.array([[0.9, 0.1, 0.8],
                                            [0.2, 0.7, 0.6],
                                            [0.3, 0.35, 0.4]]))
    # image 0: longest {0, 2} = {2, 0}; image 1: {1, 2} != {0, 1};
    # image 2: {1, 2} = {1, 2}, however short
    labels = numpy.array([[2, 0], [0, 1], [1, 2]])
    assert float(multi_accuracy(lengths, labels)) == pytest.approx(2 / 3)


def test_margin_loss_gradient():
    t = numpy.array([0, 2, 1])
    gradient_check.check_backward(
        lambda x: margin_loss(x, t),
        numpy.array([[0.3, 0.5, 0.95], [0.2, 0.15, 0.6], [0.5, 0.85, 0.05]]),
        None)


def test_reconstruction_loss_hand_computed_and_gradient():
    recon = numpy.array([[0.5, 0.5], [1.0, 1.0]])
    x = numpy.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    # per image: 0.25 + 0.25 and 0 + 1; averaged over 2 images
    assert float(reconstruction_loss(recon, x).array) == pytest.approx(0.75)
    gradient_check.check_backward(
        lambda r: reconstruction_loss(r, x), rand(2, 2), None)
