"""Each dataset's description: which one a --dataset names, what the model
takes from it and how its batches are made."""
import numpy
import pytest

import chainer

from capsnet import data
from capsnet import datasets
from capsnet import multimnist
from capsnet.errors import UserError
from capsnet.model import BaselineCNN
from capsnet.model import CapsNet
from conftest import MNIST_FIXTURE


def test_a_name_or_a_path_picks_the_description(tmp_path):
    assert type(datasets.get('mnist')) is datasets.Dataset
    assert type(datasets.get('fashion-mnist')) is datasets.Dataset
    assert datasets.get('multimnist').pairs
    assert not datasets.get('mnist').pairs
    (tmp_path / 'mine').mkdir()
    assert type(datasets.get(str(tmp_path / 'mine'))) is datasets.OwnData
    assert type(datasets.get('mine.npz')) is datasets.OwnData
    with pytest.raises(UserError, match="unknown dataset 'cifar'; choose "
                       'from mnist, fashion-mnist, multimnist, or name a '
                       'folder or .npz of your own'):
        datasets.get('cifar')


def test_what_the_model_takes_and_how_batches_are_made():
    mnist = datasets.get('mnist', MNIST_FIXTURE)
    arrays = mnist.load()
    assert mnist.model_options(arrays, CapsNet) == {}
    assert mnist.model_options(arrays, CapsNet, canvas=40) == {'in_size': 40}
    splits = data.split_arrays(arrays, 0, 32, 8)
    train_converter, val, test, _ = mnist.batches(
        splits, 2, numpy.random.default_rng(0))
    assert val is None and len(test) == 8
    x, t = train_converter([(arrays['train'][0][0], 5)],
                           chainer.get_device('@numpy'))
    assert x.shape == (1, 1, 28, 28) and t.tolist() == [5]

    pairs = datasets.get('multimnist', MNIST_FIXTURE)
    assert pairs.model_options(arrays, CapsNet) == {
        'in_size': multimnist.CANVAS}
    with pytest.raises(UserError, match='do not apply'):
        pairs.model_options(arrays, BaselineCNN)
    _, val, test, _ = pairs.batches(data.split_arrays(arrays, 10, 32, 8), 2,
                                    numpy.random.default_rng(0))
    merged, labels, singles = test[0]
    assert merged.shape == (1, 36, 36) and labels.shape == (2,)
    assert len(val) == 10
