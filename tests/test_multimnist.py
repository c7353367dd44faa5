"""MultiMNIST: the generator, the two-digit loss and the 36x36 CapsNet."""
import numpy
import pytest

import chainer

from capsnet import data
from capsnet import functions
from capsnet import kernels
from capsnet import multimnist
from capsnet.model import CapsNet
from capsnet.model import CapsNetLoss
from conftest import MNIST_FIXTURE
from conftest import TINY
from conftest import refuses
from conftest import run_here


@pytest.fixture(scope='module')
def mnist():
    return data.load('mnist', MNIST_FIXTURE)['train']


@pytest.fixture(scope='module')
def pairs(mnist):
    return multimnist.fixed_pairs(*mnist, 3, seed=0)


def test_pairs_are_two_digits_of_different_classes_on_36x36(mnist, pairs):
    images, labels = mnist
    assert len(pairs) == 3 * len(images)
    merged, pair_labels, singles = (numpy.stack(a) for a in zip(*pairs))
    assert merged.shape == (len(pairs), 1, 36, 36) and merged.dtype == 'uint8'
    assert singles.shape == (len(pairs), 2, 1, 36, 36)
    assert (pair_labels[:, 0] != pair_labels[:, 1]).all()
    # each image comes first in its own three pairs
    numpy.testing.assert_array_equal(pair_labels[:, 0],
                                     numpy.repeat(labels, 3))
    # the sum of the two digits, clipped at the maximum
    numpy.testing.assert_array_equal(
        merged, numpy.minimum(singles.astype(int).sum(axis=1), 255))
    # every partner class turns up
    assert set(pair_labels[:, 1]) == set(range(10))


def test_each_digit_sits_whole_within_4_pixels_of_the_centre(mnist, pairs):
    images, _ = mnist
    for n in range(0, len(pairs), 97):
        _, _, singles = pairs[n]
        first = images[n // 3, 0]
        single = singles[0, 0]
        found = None
        for top in range(9):                      # offsets 0..8: centre +-4
            for left in range(9):
                window = single[top:top + 28, left:left + 28]
                if (window == first).all() and \
                        window.sum() == single.sum():
                    found = top, left
        assert found is not None, n


def test_shifts_stay_in_bounds_and_cover_them():
    labels = numpy.arange(1000) % 10
    rng = numpy.random.default_rng(0)
    second, offsets = multimnist.PartnerSampler(labels)(labels, rng)
    assert offsets.min() == 0 and offsets.max() == 8
    assert (labels[second] != labels).all()


def test_the_same_seed_gives_the_same_pairs(mnist):
    a = multimnist.fixed_pairs(*mnist, 1, seed=5)
    b = multimnist.fixed_pairs(*mnist, 1, seed=5)
    c = multimnist.fixed_pairs(*mnist, 1, seed=6)
    for pair_a, pair_b in zip(a[:20], b[:20]):
        for part_a, part_b in zip(pair_a, pair_b):   # image, labels, singles
            numpy.testing.assert_array_equal(part_a, part_b)
    assert not all((x[0] == y[0]).all() for x, y in zip(a[:20], c[:20]))


def test_frame_overlap_is_the_papers_80_percent():
    # hand cases: the same place overlaps fully; 8 px apart on both axes
    # leaves 20 x 20 of 28 x 28
    offsets = numpy.array([[[4, 4], [4, 4]], [[0, 0], [8, 8]]])
    numpy.testing.assert_allclose(multimnist.frame_overlap(offsets),
                                  [1, 400 / 784])
    labels = numpy.arange(50000) % 10
    _, offsets = multimnist.PartnerSampler(labels)(
        labels, numpy.random.default_rng(1))
    assert multimnist.frame_overlap(offsets).mean() == pytest.approx(0.80,
                                                                    abs=0.01)


def test_training_batches_are_fresh_pairs_of_the_batch_digits(mnist):
    images, labels = mnist
    batch = [(images[k], labels[k]) for k in range(16)]
    device = chainer.get_device('@numpy')
    converter = multimnist.PairConverter(images, labels,
                                         numpy.random.default_rng(3))
    x, t, singles = converter(batch, device)
    assert x.shape == (16, 1, 36, 36) and x.dtype == numpy.float32
    assert singles.shape == (16, 2, 1, 36, 36) and 0 <= x.min() <= x.max() <= 1
    numpy.testing.assert_array_equal(t[:, 0], labels[:16])
    numpy.testing.assert_allclose(singles[:, 0].sum(axis=(1, 2, 3)),
                                  images[:16].sum(axis=(1, 2, 3)) / 255,
                                  rtol=1e-5)
    x2, t2, _ = converter(batch, device)
    assert not (x2 == x).all()                        # new pairs each time
    again = multimnist.PairConverter(images, labels,
                                     numpy.random.default_rng(3))
    numpy.testing.assert_array_equal(again(batch, device)[0], x)


def test_model_input_crops_or_pads_the_canvas():
    canvas = numpy.zeros((1, 1, 36, 36), dtype=numpy.uint8)
    canvas[0, 0, 4, 4] = 255
    numpy.testing.assert_array_equal(
        numpy.nonzero(multimnist.to_model_input(canvas, 28)[0, 0]), [[0], [0]])
    numpy.testing.assert_array_equal(
        numpy.nonzero(multimnist.to_model_input(canvas, 40)[0, 0]), [[6], [6]])
    assert multimnist.to_model_input(canvas, 36).max() == 1


def test_capsnet_on_36x36_has_the_papers_parameter_count():
    model = CapsNet(in_size=36)
    assert model.grid == 10
    assert model.digit_W.shape[0] == 3200                # 10 x 10 x 32
    # conv1, PrimaryCaps, W_ij and a decoder to 36 x 36: "11.36M"
    assert sum(p.size for p in model.params()) == 11361808


class _StubCapsNet(chainer.Chain):
    """Fixed capsules v (N, J, D); decoding capsule j gives an image of j's."""
    options = {'reconstruct': True}

    def __init__(self, v, ops):
        super().__init__()
        self.v = v
        self.ops = ops

    def capsules(self, x):
        return chainer.Variable(self.v), None

    def decode(self, v, labels):
        return chainer.Variable(
            numpy.repeat(labels[:, None].astype(numpy.float32) / 10, 4, 1))


@pytest.mark.parametrize('ops', [functions, kernels])
def test_two_digit_loss_hand_computed(ops):
    # two images, three classes, 2-D capsules with lengths 0.95, 0.2, 0.3
    # and 0.5, 0.05, 0.95 (each a multiple of a unit vector)
    v = numpy.zeros((2, 3, 2), dtype=numpy.float32)
    v[0, :, 0] = [0.95, 0.2, 0.3]
    v[1, :, 1] = [0.5, 0.05, 0.95]
    t = numpy.array([[0, 1], [2, 0]], dtype=numpy.int32)
    singles = numpy.zeros((2, 2, 1, 2, 2), dtype=numpy.float32)
    singles[0, 1] = 0.5                   # image 0, digit 1 (decoded: 0.1)
    singles[1, 0] = 1.0                   # image 1, digit 2 (decoded: 0.2)
    loss = CapsNetLoss(_StubCapsNet(v, ops), recon_weight=0.0005)
    reporter = chainer.Reporter()
    reporter.add_observer('main', loss)
    observation = {}
    with reporter.scope(observation):
        value = float(loss(None, t, singles).array)
    observation = {k.split('/')[-1]: float(chainer.as_array(v))
                   for k, v in observation.items()}
    # margin, as in test_functions: image 0 0.49 + 0.02; image 1 0.16
    margin = (0.49 + 0.02 + 0.16) / 2
    # squared errors per image, each digit against its own single image:
    # image 0: digit 0 decodes to 0 against 0 (0); digit 1 decodes to 0.1
    #   against 0.5 (4 * 0.16); image 1: digit 2 decodes to 0.2 against 1
    #   (4 * 0.64); digit 0 to 0 against 0 (0)
    recon = (4 * 0.16 + 4 * 0.64) / 2
    assert observation['margin_loss'] == pytest.approx(margin)
    assert observation['recon_loss'] == pytest.approx(recon)
    assert value == pytest.approx(margin + 0.0005 * recon)
    # image 0's two longest capsules are 0 and 2, not its 0 and 1;
    # image 1's are its 2 and 0
    assert observation['accuracy'] == 0.5


def test_pair_accuracy_of_a_model(mnist):
    """analysis.pair_correct runs a 28x28 and a 36x36 model on the pairs."""
    from capsnet import analysis
    images, labels = mnist
    pairs = multimnist.fixed_pairs(images[:8], labels[:8], 1, seed=0)
    device = chainer.get_device('@numpy')
    for size in (28, 36):
        numpy.random.seed(0)
        correct = analysis.pair_correct(CapsNet(in_size=size), pairs,
                                        device, batchsize=5)
        assert correct.shape == (8,) and correct.dtype == bool


def test_training_pairs_shift_further_with_the_official_6_cropped():
    """--multimnist-shift 6: offsets 4 +- 6 (the official code's shift=6,
    pad=4); a frame off the canvas is cropped, and the pair still sums."""
    labels = numpy.arange(500) % 10
    _, offsets = multimnist.PartnerSampler(labels, 6)(
        labels, numpy.random.default_rng(0))
    assert offsets.min() == -2 and offsets.max() == 10
    digit = numpy.zeros((1, 1, 28, 28), numpy.uint8)
    digit[0, 0, 0, :] = 255                       # the frame's top row
    digit[0, 0, 27, :] = 100                      # and its bottom row
    merged, singles = multimnist.compose(
        digit, digit, numpy.array([[[-2, 0], [10, 8]]]))
    # first frame 2 rows above the canvas: its top row is cut, its bottom
    # row at 25; the second's top row at 10, its bottom (row 37) cut
    assert not singles[0, 0, 0].any(axis=1)[:25].any()
    assert (singles[0, 0, 0, 25, :28] == 100).all()
    assert (singles[0, 1, 0, 10, 8:] == 255).all()
    assert singles[0, 1, 0].sum() == 255 * 28
    numpy.testing.assert_array_equal(
        merged[0, 0], numpy.minimum(singles[0].sum(axis=0, dtype=int)[0],
                                    255))


def test_multimnist_shift_trains_and_is_refused_elsewhere(tmp_path):
    run_here('train.py', *TINY, '-e', '1', '--dataset', 'multimnist',
             '--multimnist-shift', '6', '--save', str(tmp_path / 'six'))
    refuses('--multimnist-shift applies to --dataset multimnist only',
            'train.py', *TINY, '--multimnist-shift', '6', '--save',
            str(tmp_path / 'mnist'))
