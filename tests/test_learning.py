"""A short training run on real MNIST (the fixture) learns: a broken model
(wrong routing, masking or gradients) stays far below this accuracy."""
import numpy

import chainer
from chainer.datasets import TupleDataset

from capsnet import data
from capsnet.model import CapsNet
from capsnet.model import CapsNetLoss

from conftest import MNIST_FIXTURE


def test_short_training_run_learns_mnist():
    arrays = data.load('mnist', MNIST_FIXTURE)
    train, _, test = (TupleDataset(*split) if split else None for split in
                      data.split_arrays(arrays, val_size=0))
    numpy.random.seed(0)
    model = CapsNet()
    loss = CapsNetLoss(model)
    optimizer = chainer.optimizers.Adam(alpha=1e-3)
    optimizer.setup(loss)
    device = chainer.get_device('@numpy')
    converter = data.BatchConverter(2, numpy.random.default_rng(0))
    order = chainer.iterators.ShuffleOrderSampler(numpy.random.RandomState(0))
    batches = chainer.iterators.SerialIterator(train, 32, order_sampler=order)
    for _ in range(80):                  # 1.3 epochs of the 2,000 images
        optimizer.update(loss, *converter(batches.next(), device))
    x, t = data.BatchConverter()(test[:], device)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        lengths, _ = model(x)
    accuracy = float((lengths.array.argmax(axis=1) == t).mean())
    # 0.89 here (0.94 after 120 steps); chance is 0.1
    assert accuracy > 0.8, accuracy
