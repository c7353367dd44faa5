"""The analysis views show what the model computed: routing maps are its
couplings, and the accuracy counts its longest capsules."""
import numpy
import pytest

import chainer

from capsnet import analysis
from capsnet import functions
from capsnet.model import CapsNet


@pytest.fixture(scope='module')
def images():
    return numpy.random.RandomState(0).rand(2, 1, 28, 28).astype('f')


def test_routing_maps_are_the_couplings_the_model_used(images):
    numpy.random.seed(1)
    model = CapsNet()
    per_type, mean = analysis.routing_maps(model, images)
    assert per_type.shape == (2, 10, 32, 6, 6) and mean.shape == (2, 10, 6, 6)
    # the couplings of the model's own routing, from the plain composition
    u_hat = model.predictions(model.primary_capsules(images))
    _, c = functions.dynamic_routing(u_hat, 3)
    n, j, y, x, t = 1, 4, 2, 5, 17
    i = (y * 6 + x) * 32 + t                  # capsule i's grid cell and type
    assert per_type[n, j, t, y, x] == pytest.approx(float(c.array[n, j, i]),
                                                    rel=1e-4)
    # softmax over the digit capsules: each child's couplings sum to 1
    numpy.testing.assert_allclose(per_type.sum(axis=1), 1, rtol=1e-5)
    numpy.testing.assert_allclose(mean.sum(axis=1), 1, rtol=1e-5)
    numpy.testing.assert_allclose(mean, per_type.mean(axis=2), rtol=1e-6)


def test_without_routing_every_coupling_is_one_tenth(images):
    _, mean = analysis.routing_maps(CapsNet(routing=1), images)
    numpy.testing.assert_allclose(mean, 0.1, rtol=1e-6)


def test_accuracy_counts_the_longest_capsule(images):
    model = CapsNet(reconstruct=False)
    uint8 = (images * 255).astype(numpy.uint8)
    with chainer.using_config('train', False):
        predicted = model(uint8 / numpy.float32(255))[0].array.argmax(axis=1)
    device = chainer.get_device('@numpy')
    assert analysis.accuracy(model, uint8, predicted, device) == 1
    assert analysis.accuracy(model, uint8, (predicted + 1) % 10, device) == 0
