"""MultiMNIST (the paper's section 6): two digits of different classes, each
shifted by up to 4 pixels on a 36x36 canvas, overlaid pixel-wise.

Nothing is stored on disk: a pair is a partner index and the two digits'
positions, drawn from a NumPy Generator, and ``compose`` builds the images.
Training draws fresh pairs for every batch (``PairConverter``, so each epoch
sees new pairs, deterministically given the seed); validation and test use a
fixed list of pairs (``fixed_pairs``).

Shapes: N pairs; digits are (1, 28, 28) uint8; the canvas is S = 36. Offsets
(N, 2, 2) are the (top, left) of each digit's 28x28 frame on the canvas, in
[4 - max_shift, 4 + max_shift]: the frame centred (offset 4) and shifted by
up to 4 (the paper's), or more in training (``train.py --multimnist-shift
6``: the official code's ``mnist_shift --shift=6 --pad=4``), where a frame
may then lie partly off the canvas and is cropped.
"""
import numpy

from chainer.dataset import convert
from chainer.datasets import TupleDataset

CANVAS = 36
MAX_SHIFT = 4                   # the paper's
CENTRED = (CANVAS - 28) // 2    # the offset of a centred 28x28 frame
# Validation and test pairs are drawn from these seeds, never the training
# seed, so every run and every model is measured on the same pairs.
VAL_SEED, TEST_SEED = 1, 2


class PartnerSampler:
    """Draws, for digits of given classes, a partner of another class from
    a pool of labelled images, and both digits' positions.

    labels (M,) int: the pool's classes. The index by class is built once,
    so a draw costs O(N) for N pairs, whatever the pool's size.
    """

    def __init__(self, labels, max_shift=MAX_SHIFT):
        labels = numpy.asarray(labels)
        self.classes, self.counts = numpy.unique(labels, return_counts=True)
        if len(self.classes) < 2:
            raise ValueError('MultiMNIST needs images of two classes or more')
        self.by_class = numpy.argsort(labels, kind='stable')
        self.starts = numpy.cumsum(self.counts) - self.counts
        self.max_shift = max_shift

    def __call__(self, first_labels, rng):
        """first_labels (N,) -> (second (N,) pool indices, offsets (N, 2, 2)):
        the partner's class is uniform over the other classes, its image
        uniform within that class; each offset uniform in [4 - shift,
        4 + shift]."""
        n, k = len(first_labels), len(self.classes)
        own = numpy.searchsorted(self.classes, first_labels)      # (N,)
        other = (own + rng.integers(1, k, size=n)) % k
        within = (rng.random(n) * self.counts[other]).astype(numpy.int64)
        second = self.by_class[self.starts[other] + within]
        offsets = CENTRED + rng.integers(-self.max_shift, self.max_shift + 1,
                                         size=(n, 2, 2))
        return second, offsets


def compose(first, second, offsets, canvas=CANVAS):
    """Build the pairs' images.

    first, second (N, 1, H, W) uint8: the two digits; offsets (N, 2, 2).
    -> merged (N, 1, S, S): the two digits' pixel-wise sum, clipped at 255;
       singles (N, 2, 1, S, S): each digit alone where it sits in merged.
    """
    n, c, h, w = first.shape
    # a margin for frames partly off the canvas, cropped below
    margin = max(0, -int(offsets.min()), int(offsets.max()) + h - canvas)
    side = canvas + 2 * margin
    singles = numpy.zeros((n, 2, c, side, side), dtype=numpy.uint8)
    for k, digits in enumerate((first, second)):
        rows = margin + offsets[:, k, 0, None] + numpy.arange(h)  # (N, H)
        cols = margin + offsets[:, k, 1, None] + numpy.arange(w)  # (N, W)
        singles[numpy.arange(n)[:, None, None, None], k,
                numpy.arange(c)[None, :, None, None],
                rows[:, None, :, None], cols[:, None, None, :]] = digits
    singles = singles[..., margin:margin + canvas, margin:margin + canvas]
    merged = numpy.minimum(singles.sum(axis=1, dtype=numpy.uint16), 255)
    return merged.astype(numpy.uint8), singles


def frame_overlap(offsets, side=28):
    """Intersection of the two digits' side x side frames over a frame's
    area, per pair: offsets (N, 2, 2) -> (N,). The paper's "80% overlap"
    is this statistic's mean for shifts of up to 4 pixels."""
    d = numpy.abs(offsets[:, 0] - offsets[:, 1])                  # (N, 2)
    return numpy.prod(side - d, axis=1) / side ** 2


def fixed_pairs(images, labels, per_image, seed, max_shift=MAX_SHIFT):
    """A TupleDataset of ``per_image`` pairs for each image, which comes
    first in its pairs: examples (merged (1, S, S) uint8, labels (2,) int32,
    singles (2, 1, S, S) uint8), the same for the same seed."""
    rng = numpy.random.default_rng(seed)
    first = numpy.repeat(numpy.arange(len(images)), per_image)
    second, offsets = PartnerSampler(labels, max_shift)(labels[first], rng)
    merged, singles = compose(images[first], images[second], offsets)
    pair_labels = numpy.stack([labels[first], labels[second]], axis=1)
    return TupleDataset(merged, pair_labels.astype(numpy.int32), singles)


def evaluation_pairs(split, seed, per_image=1):
    """``fixed_pairs`` of a split's (images, labels); a missing or empty
    split (``--test-size 0``) gives None."""
    return (fixed_pairs(*split, per_image, seed) if split and len(split[0])
            else None)


def to_model_input(images, size):
    """uint8 images (..., S, S) -> float32 in [0, 1], (..., size, size):
    centred, cropped or padded with black. A 28x28 model sees the central
    28x28 of the 36x36 canvas, which holds a digit shifted by up to 4
    pixels whole (MNIST digits have a 4-pixel blank border)."""
    s = images.shape[-1]
    if s > size:
        cut = (s - size) // 2
        images = images[..., cut:cut + size, cut:cut + size]
    elif s < size:
        pad = (size - s) // 2
        width = [(0, 0)] * (images.ndim - 2) + [(pad, size - s - pad)] * 2
        images = numpy.pad(images, width)
    x = images.astype(numpy.float32)
    x *= 1 / 255
    return x


class PairConverter(convert.Converter):
    """Training batches of fresh pairs.

    [(image (1, 28, 28) uint8, label)] -> x (N, 1, S, S) float32, labels
    (N, 2) int32 and singles (N, 2, 1, S, S) float32 on the device: each
    batch image is paired with a random image of another class from the
    pool (images (M, 1, 28, 28), labels (M,)), both at random positions.
    """

    def __init__(self, images, labels, rng, max_shift=MAX_SHIFT):
        self.images = images
        self.labels = numpy.asarray(labels)
        self.partners = PartnerSampler(self.labels, max_shift)
        self.rng = rng

    def __call__(self, batch, device):
        images, labels = convert.concat_examples(batch)
        second, offsets = self.partners(labels, self.rng)
        merged, singles = compose(images, self.images[second], offsets)
        pair_labels = numpy.stack([labels, self.labels[second]], axis=1)
        return (device.send(to_model_input(merged, CANVAS)),
                device.send(pair_labels.astype(numpy.int32)),
                device.send(to_model_input(singles, CANVAS)))


class FixedPairConverter(convert.Converter):
    """Batches of ``fixed_pairs`` examples for a model of input ``size``:
    -> x (N, 1, size, size), labels (N, 2), singles (N, 2, 1, size, size)."""

    def __init__(self, size=CANVAS):
        self.size = size

    def __call__(self, batch, device):
        merged, labels, singles = convert.concat_examples(batch)
        return (device.send(to_model_input(merged, self.size)),
                device.send(labels),
                device.send(to_model_input(singles, self.size)))
