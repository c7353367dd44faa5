"""The analysis views show what the model computed: routing maps are its
couplings, the accuracy counts its longest capsules, and the figures show
what they say (checked on the shipped model, and on stand-in models whose
answers are known)."""
import os

import numpy
import pytest

import chainer
from chainer.datasets import TupleDataset

from capsnet import analysis
from capsnet import model_file
from capsnet import data
from capsnet import functions
from capsnet.model import CapsNet
from conftest import MNIST_FIXTURE
from conftest import ROOT


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


@pytest.fixture(scope='module')
def shipped():
    """The shipped model and two fixture test digits of each class, in
    class order: (model, x (20, 1, 28, 28) in [0, 1], labels (20,))."""
    model = model_file.load(os.path.join(ROOT, 'saved_model',
                                               'model.npz'))
    images, labels = data.load('mnist', MNIST_FIXTURE, ('test',))['test']
    picks = numpy.concatenate([numpy.flatnonzero(labels == d)[:2]
                               for d in range(10)])
    return model, analysis.model_input(model, images[picks]), labels[picks]


def test_in_the_mask_grid_each_digits_own_row_reconstructs_it_best(shipped):
    model, x, labels = shipped
    rows = analysis.mask_grid(model, x)                   # (J, N, 28, 28)
    assert rows.shape == (10, 20, 28, 28)
    errors = ((rows - x[None, :, 0]) ** 2).sum(axis=(2, 3))   # (J, N)
    numpy.testing.assert_array_equal(errors.argmin(axis=0), labels)
    # by a margin: the second-best row is at least 1.5 times as far off
    best, second = numpy.sort(errors, axis=0)[:2]
    assert (second > 1.5 * best).all(), (best, second)


def test_the_interpolation_grid_moves_away_from_the_plain_reconstruction(
        shipped):
    model, x, labels = shipped
    digit = int(labels[0])
    grid = analysis.interpolation_grid(model, x[:1], digit)
    assert grid.shape == (16, len(analysis.DELTAS), 28, 28)
    untweaked = int(numpy.flatnonzero(analysis.DELTAS == 0)[0])
    v, _ = analysis.digit_capsules(model, x[:1])
    plain = analysis.decode(model, v, numpy.array([digit]))[0]
    for row in grid:                              # one capsule dimension
        numpy.testing.assert_allclose(row[untweaked], plain, atol=1e-5)
        # each step away from the capsule changes the image more
        change = numpy.abs(row - plain).mean(axis=(1, 2))
        assert (numpy.diff(change[untweaked:]) > 0).all(), change
        assert (numpy.diff(change[:untweaked + 1]) < 0).all(), change


class _FixedCapsules(chainer.Chain):
    """A stand-in CapsNet with given capsules v (N, J, D): decoding capsule
    j of any image gives an image filled with (j + 1) / 10."""

    def __init__(self, v, side):
        super().__init__()
        self.v = v
        self.options = {'in_size': side, 'reconstruct': True}

    def capsules(self, x):
        return chainer.Variable(self.v[:len(x)]), None

    def predict(self, x):
        return chainer.Variable(numpy.sqrt((self.v[:len(x)] ** 2).sum(
            axis=2)))

    def decode(self, v, labels):
        side = self.options['in_size']
        return chainer.Variable(numpy.repeat(
            (labels[:, None] + 1).astype(numpy.float32) / 10, side * side, 1))


def hand_made_pairs():
    """Three 36x36 pairs with labels (1, 2), (3, 4), (5, 6) and capsules of
    lengths such that the two longest are (2, 1), (3, 7) and (6, 5): the
    first and third pairs are named right, the second is not."""
    n = 3
    merged = numpy.arange(n * 36 * 36).reshape(n, 1, 36, 36) % 256
    labels = numpy.array([[1, 2], [3, 4], [5, 6]], dtype=numpy.int32)
    singles = numpy.zeros((n, 2, 1, 36, 36), dtype=numpy.uint8)
    pairs = TupleDataset(merged.astype(numpy.uint8), labels, singles)
    lengths = numpy.full((n, 10), 0.05, dtype=numpy.float32)
    lengths[0, [2, 1, 0]] = 0.9, 0.8, 0.3      # then 0: an absent digit
    lengths[1, [3, 7, 4]] = 0.9, 0.8, 0.7
    lengths[2, [6, 5, 9]] = 0.9, 0.6, 0.5
    v = numpy.zeros((n, 10, 16), dtype=numpy.float32)
    v[:, :, 3] = lengths                        # capsules along one axis
    return pairs, v


def test_pair_correct_on_pairs_with_known_answers():
    pairs, v = hand_made_pairs()
    device = chainer.get_device('@numpy')
    correct = analysis.pair_correct(_FixedCapsules(v, 36), pairs, device,
                                    batchsize=8)
    numpy.testing.assert_array_equal(correct, [True, False, True])


def test_pair_figure_shows_the_capsules_it_names():
    pairs, v = hand_made_pairs()
    x = numpy.stack([p[0] for p in pairs]).astype(numpy.float32) / 255
    labels = numpy.stack([p[1] for p in pairs])
    rows, longest, absent = analysis.pair_figure(_FixedCapsules(v, 36), x,
                                                 labels)
    assert rows.shape == (3, 3, 36, 36, 3)
    numpy.testing.assert_array_equal(longest, [[2, 1], [3, 7], [6, 5]])
    # the longest capsule of a digit not in the pair
    numpy.testing.assert_array_equal(absent, [0, 7, 9])
    # the inputs in grey; then red and green, each the decoder's image of
    # the capsule named: (j + 1) / 10 everywhere
    for channel in range(3):
        numpy.testing.assert_array_equal(rows[0][..., channel], x[:, 0])
    for row, (red, green) in zip(rows[1:], [longest.T, (labels[:, 0],
                                                         absent)]):
        numpy.testing.assert_allclose(row[..., 0].mean(axis=(1, 2)),
                                      (red + 1) / 10, rtol=1e-6)
        numpy.testing.assert_allclose(row[..., 1].mean(axis=(1, 2)),
                                      (green + 1) / 10, rtol=1e-6)
        assert (row[..., 2] == 0).all()
